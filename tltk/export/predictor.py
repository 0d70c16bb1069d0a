"""`tltk.load_exported`: one predictor for `.keras`, SavedModel and `.tflite` files."""

from __future__ import annotations

import io
import json
import pathlib
import zipfile

import numpy as np

from tltk import atomic
from tltk.export.heads import LABELLED_TASKS, head_class_names, labels_file, read_heads
from tltk.export.images import image_batch
from tltk.export.record import RECORD_FILE
from tltk.export.runtime import NUM_THREADS, KerasRunner, SavedModelRunner, TFLiteRunner
from tltk.export.saved_model import EXTRA_ASSETS, LABELS_FILE, read_labels
from tltk.model_file import load_model
from tltk.transfer_model import class_names_of


class Predictor:
    """Predicts class names and probabilities from images (or texts) with an exported model.

    Attributes:
        path: Path. The model file or folder.
        kind: str. `"keras"`, `"saved_model"` or `"tflite"`.
        class_names: list or dict. One name per class; for a model with several heads
            `{head: names}` of its classification and multi-label heads.
        heads: tuple or None. The head names of a model with several heads, in its order;
            `None` for one output.
        input_shape: tuple. `(height, width, channels)` the model takes; `()` for texts.
        takes_text: bool. Whether `predict` takes strings (a text classifier's `.keras` file or
            SavedModel) rather than images.

    Example:

    ```python
    predictor = tltk.load_exported("exports/pets/model_int8.tflite")
    names, probabilities = predictor.predict(["cat.jpg", "dog.png"])
    topics = tltk.load_exported("exports/topics")          # a text classifier's export
    names, probabilities = topics.predict(["Rain all week in the north."])
    predictions = tltk.load_exported("exports/digits").predict(images)   # several heads
    (digits, probabilities), thickness = predictions["digit"], predictions["thick"]
    ```
    """

    def __init__(self, runner, *, path, kind, class_names):
        self._runner = runner
        self.path = pathlib.Path(path)
        self.kind = kind
        self.input_shape = tuple(runner.input_shape)
        self.takes_text = bool(getattr(runner, "takes_text", False))
        self.heads = getattr(runner, "heads", None)
        if self.heads is None:
            self.class_names = list(class_names)
        else:
            self.class_names = {head: list(names) for head, names in class_names.items()}

    def predict(self, inputs, *, crop_to_aspect_ratio=False):
        """Returns `(names, probabilities)` for one image or text, or many.

        Image files are decoded by the training pipeline's decoder (`tltk.data.load_image`: EXIF
        orientation applied, the same resize), so a file gets the pixels it got in training; a
        grayscale model gets them through `tltk.data.decode.to_grayscale`. Arrays and files are
        prepared by `tltk.export.images.image_batch`.

        Args:
            inputs: for an image model, array-like, str or Path, or a list of paths: raw pixels
                0..255, one image `(H, W, C)` or a batch `(N, H, W, C)`, or image files (other
                sizes are resized). For a text model, a string or a list of strings.
            crop_to_aspect_ratio: bool. Center crop images to the model's aspect ratio before
                resizing; pass what the training data was loaded with. Defaults to `False`.

        Returns:
            A tuple: a list of the top class name per input, and a float32 `(N, classes)` array of
            probabilities. For a model with several heads, a dict in head order: `{head: (top
            names, (N, units) scores)}` for a classification or multi-label head (probabilities
            or sigmoid scores), `{head: (N, units) values}` for a regression head.

        Raises:
            ValueError: an image file cannot be read (the error names it and says why), or the
                inputs do not fit the model.
        """
        if self.takes_text:
            batch = _texts(inputs)
        else:
            batch = image_batch(
                inputs, self.input_shape, name="images", crop_to_aspect_ratio=crop_to_aspect_ratio
            )
        outputs = self._runner(batch)
        if self.heads is None:
            return self._named(outputs, self.class_names, "")
        return {
            head: self._named(outputs[head], self.class_names[head], f"head {head!r}: ")
            if head in self.class_names
            else np.asarray(outputs[head], "float32")
            for head in self.heads
        }

    __call__ = predict

    def _named(self, probabilities, class_names, where):
        probabilities = np.asarray(probabilities, "float32")
        if probabilities.shape[-1] != len(class_names):
            raise ValueError(
                f"{where}{self.path} outputs {probabilities.shape[-1]} classes but has "
                f"{len(class_names)} class names. Received: class_names={class_names!r}"
            )
        return [class_names[i] for i in probabilities.argmax(-1)], probabilities

    def __repr__(self):
        if self.heads is None:
            outputs = f"classes={len(self.class_names)}"
        else:
            outputs = f"heads={list(self.heads)}"
        return (
            f"Predictor({self.kind}, {str(self.path)!r}, input_shape={self.input_shape}, {outputs})"
        )


def load_exported(path, *, class_names=None, num_threads=NUM_THREADS):
    """Loads a `.keras` file, a SavedModel or a `.tflite` file as a `Predictor`.

    A path in a `tltk.export` folder is read through the export as it is when loading starts,
    held until loading ends (`tltk.atomic.reading`): the files loaded (SavedModel graph and
    variables, labels) come from one export even while another process replaces it. TFLite
    files run with the LiteRT interpreter (`ai-edge-litert`). Class names come from the file
    itself when it carries them (a `TransferModel`'s `class_names`, the labels embedded in a tltk
    `.tflite`, a tltk SavedModel's `assets.extra/labels.txt`), else from a `labels.txt` beside
    it, else `"0"`, `"1"`, ...
    A model with several heads predicts a dict (see `Predictor.predict`); its heads' names come
    from `labels_<head>.txt` (in the TFLite file, the SavedModel's `assets.extra`, or beside the
    file). A TFLite file's heads are named by its signature's outputs; a head without a labels
    file is taken as a regression head (values, no names).
    A tltk export folder loads its SavedModel, or its first TFLite file when it has none. Text
    classifiers load from their `.keras` file or SavedModel and predict from strings (their
    TFLite file takes token ids, see `tltk.export_text`).

    Args:
        path: str or Path. A `.keras` file, a SavedModel folder, a `.tflite` file, or a folder
            written by `tltk.export`.
        class_names: list or dict. Overrides the class names found with the model; for a model
            with several heads `{head: names}` for some of its heads. Defaults to `None`.
        num_threads: int. TFLite interpreter threads. Defaults to `2`.

    Returns:
        A `Predictor`; its `path` is `path`, or the model file picked in an export folder.

    Raises:
        ValueError: `path` is none of these, or the folder's `export.json` is damaged or names a
            file outside the folder.

    Example:

    ```python
    predictor = tltk.load_exported("exports/pets")
    names, probabilities = predictor.predict(images)
    ```
    """
    path = pathlib.Path(path)
    with atomic.reading(path) as held:
        return _load(held, path, class_names=class_names, num_threads=num_threads)


def _load(held, path, *, class_names, num_threads):
    """Loads from `held` (where the files are read); `path` names it in messages and the result."""
    if (held / RECORD_FILE).is_file() and not (held / "saved_model.pb").is_file():
        name = _pick_from_export(held, path)
        held, path = held / name, path / name
    if held.is_file() and held.suffix == ".keras":
        model = load_model(held)
        runner, kind, found = KerasRunner(model), "keras", class_names_of(model)
    elif held.is_dir() and (held / "saved_model.pb").is_file():
        runner, kind = SavedModelRunner(held), "saved_model"
        found = _labels_file(held / EXTRA_ASSETS / LABELS_FILE)
    elif held.is_file() and held.suffix == ".tflite":
        runner, kind = TFLiteRunner(held, num_threads=num_threads), "tflite"
        found = _embedded_labels(held, LABELS_FILE)
    else:
        raise ValueError(
            "`path` must be a .keras file, a SavedModel folder, a .tflite file or a tltk export "
            f"folder. Received: path={str(path)!r}"
        )
    if runner.heads is not None:
        names = _head_labels(runner, kind, held)
        if class_names is not None:
            names.update(_check_head_override(class_names, runner.heads, path))
        return Predictor(runner, path=path, kind=kind, class_names=names)
    if class_names is None:
        class_names = (
            found
            or _labels_file(held.parent / LABELS_FILE)
            or [str(i) for i in range(_count_classes(runner))]
        )
    return Predictor(runner, path=path, kind=kind, class_names=class_names)


def _pick_from_export(folder, shown):
    """The name of the model file to load in the export `folder` (called `shown` in messages)."""
    if (folder / "saved_model" / "saved_model.pb").is_file():
        return "saved_model"
    for entry in _record_files(folder, shown):
        if entry.get("format") == "tflite" and (folder / entry["path"]).is_file():
            return entry["path"]
    raise ValueError(
        f"The export folder {shown} holds no model file. Received: path={str(shown)!r}"
    )


def _record_files(folder, shown):
    """The `files` entries of an export folder's record, each path checked to stay inside it."""
    record_path = shown / RECORD_FILE
    try:
        files = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))["files"]
        paths = [entry["path"] for entry in files]
        if not all(isinstance(p, str) and p for p in paths):
            raise TypeError("a file's path is not a name")
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError, UnicodeDecodeError too
        raise ValueError(
            f"{record_path} is damaged ({type(error).__name__}: {error}); export the model "
            "again, or load one of the folder's model files by its path."
        ) from None
    inside = folder.resolve()
    for name in paths:
        if not (folder / name).resolve().is_relative_to(inside):
            raise ValueError(
                f"{record_path} names {name!r}, outside the export folder; tltk loads only files "
                "inside it. Export the model again, or load that file by its own path."
            )
    return files


def _head_labels(runner, kind, held):
    """`{head: names}` of the labelled heads of a model with several heads (see `_load`)."""
    if kind == "keras":
        heads = runner.model_heads
        found = head_class_names(runner.model, heads)
    elif kind == "saved_model":
        heads = read_heads(held / EXTRA_ASSETS)
        found = {h.name: _labels_file(held / EXTRA_ASSETS / labels_file(h.name)) for h in heads}
    else:
        found = {head: _embedded_labels(held, labels_file(head)) for head in runner.heads}
        heads = ()
    names = {}
    for head in runner.heads:
        names[head] = found.get(head) or _labels_file(held.parent / labels_file(head))
    for head in heads:
        if head.task in LABELLED_TASKS and not names[head.name]:
            names[head.name] = [str(i) for i in range(head.units)]
    return {head: labels for head, labels in names.items() if labels}


def _check_head_override(class_names, heads, path):
    if not isinstance(class_names, dict) or not set(class_names) <= set(heads):
        raise ValueError(
            f"{path} has several heads {list(heads)}: pass `class_names` as a dict "
            f"{{head: names}} over them. Received: class_names={class_names!r}"
        )
    return {head: list(names) for head, names in class_names.items()}


def _embedded_labels(path, name):
    # tltk's TFLite files end with a zip archive holding the labels (see tltk.export.metadata).
    try:
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
            if name in archive.namelist():
                return archive.read(name).decode("utf-8").splitlines()
    except zipfile.BadZipFile:
        pass
    return None


def _labels_file(path):
    return read_labels(path) if path.is_file() else None


def _texts(inputs):
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not (isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts)):
        raise ValueError(
            "This model takes text: pass a string or a non-empty list of strings. "
            f"Received: inputs of type {type(inputs).__name__}"
        )
    return list(texts)


def _count_classes(runner):
    if getattr(runner, "takes_text", False):
        return int(runner([""]).shape[-1])
    return int(runner(np.zeros((1, *runner.input_shape), "float32")).shape[-1])
