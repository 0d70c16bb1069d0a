"""`tltk.export`: the one export driver; an adapter per modality supplies what differs.

The driver checks the arguments (formats, labels, the destination), runs the parity gate, times
and sizes every file, writes `labels.txt` and `export.json`, and swaps the staged folder into
place. An adapter (`ImageAdapter`, `TextAdapter`) supplies the rest: which quantizations it
allows (`check_quantization`), its data and parity inputs (`prepare`), the SavedModel
(`write_saved_model`), the TFLite files (`write_tflite`) and how to run them (`tflite_runner`),
and its entries in the record (`record_fields`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import warnings

from tltk import atomic
from tltk.export.heads import check_head_labels, head_class_names, labels_file
from tltk.export.image_adapter import ImageAdapter
from tltk.export.parity import ParityError, compare, compare_heads, gate
from tltk.export.record import RECORD_FILE, write_record
from tltk.export.report import ExportedFile, ExportReport
from tltk.export.runtime import KerasRunner, SavedModelRunner
from tltk.export.saved_model import LABELS_FILE, write_label_files
from tltk.export.text import TextAdapter
from tltk.text import is_text_model
from tltk.transfer_model import class_names_of

FORMATS = ("saved_model", "tflite")
PARITY_MODES = ("raise", "warn")
SAVED_MODEL_DIR = "saved_model"
LATENCY_RUNS = 20


def export(
    model,
    export_dir,
    *,
    formats=FORMATS,
    quantization="float32",
    representative_data=None,
    labels=None,
    parity_data=None,
    parity="raise",
    overwrite=False,
):
    """Exports a classifier as a SavedModel and TFLite files, each checked against Keras.

    Every file takes what the Keras model takes (raw pixels 0..255, or strings) and returns
    probabilities, with the model's preprocessing inside. For an image classifier the folder gets:

    - `saved_model/`: a `serving_default` signature, `image` (float32, `(batch, H, W, C)`) ->
      `{"probabilities": (batch, classes)}`; it loads with `tf.saved_model.load` and with
      `keras.layers.TFSMLayer(path, call_endpoint="serving_default")`.
    - `model_<quantization>.tflite`, one per quantization, converted from that SavedModel with
      TFLite builtin ops only, carrying TFLite metadata (input normalization: mean 0, std 1; the
      labels file), so MediaPipe Tasks' `ImageClassifier` runs it and returns class names.
      `"int8"` is full integer: uint8 raw-pixel input, uint8 probabilities (scale 1/256).
    - `labels.txt` and `export.json` (backbone, input size, class names, preprocessing,
      quantization, parity figures, tltk / TensorFlow / Keras versions).

    A model with LoRA (`lora_rank=...` in `tltk.build_classifier` or `build_text_classifier`)
    is written from a plain copy with each low-rank update merged into its kernel
    (`tltk.lora.merged_copy`): its files have the ops and size of a plain model's, and the
    parity gate compares them with the LoRA model.

    A model with several heads (`tltk.build_classifier(backbone, num_classes={head: ...})`)
    gets one output per head everywhere, named by the head, in the model's order: the SavedModel
    returns `{head: ...}`; each TFLite file's signature outputs are named by head, its output
    tensors are in head order and named by head, and its metadata has one output entry per head
    (a classification or multi-label head with its labels file). A classification head gives
    probabilities (a softmax added to logits), a multi-label head sigmoid scores, a regression
    head raw values (int8: a uint8 output covering the range seen in calibration; values beyond
    it are clipped, so give `representative_data` spanning the targets). `labels.txt` is
    replaced by `labels_<head>.txt` per classification or multi-label head, and `export.json`
    has a `heads` entry (task, units, class names and labels file per head). Each head passes
    the parity gate on its own (see `tltk.export.parity`). MediaPipe Tasks' `ImageClassifier`
    runs such files: its result has one `classifications` entry per head with `head_name` set;
    a regression head comes out as one unnamed category per value, its score the value.

    A text classifier (`tltk.build_text_classifier`) gets a SavedModel taking strings and a
    float32 TFLite file taking token ids, with its tokenizer's vocabulary: see
    `tltk.export_text`. Text models have no quantized files and take no `representative_data`.

    The parity gate runs Keras and every file on the same inputs (see `tltk.export.parity` for
    the measurements behind each bound). Float32 files (and the SavedModel) must match the
    probabilities within 2e-4 and agree on the top class for at least 99.5% of inputs; float16
    files within 2e-2 and 99.5%; dynamic and int8 files must agree on the top class for at least
    98%. A mixed-precision model (`mixed_float16`, `mixed_bfloat16`) is written from its float32
    copy (`tltk.precision.float32_copy`: TFLite has no bfloat16 kernels), and its files are
    compared with the mixed model itself within at least 5e-3 (float16) or 8e-2 (bfloat16),
    top-1 agreement as above. The inputs are `parity_data` (held out, preferably), else
    `representative_data`; with neither, image files are checked on 32 random-pixel images on
    the bound alone (top classes of noise mean nothing), and a dynamic file cannot be judged:
    `parity="raise"` refuses up front, `"warn"` warns and leaves it unchecked.

    Everything is written to a hidden folder beside `export_dir`, flushed to disk, and renamed
    to `export_dir` in one step (`tltk.atomic.publish`; a previous export is swapped out with
    `RENAME_EXCHANGE`), so `export_dir` is a real folder (`cp -r`, `rsync`, `tar` copy it whole),
    a failure, a failed gate with `parity="raise"`, or a killed process leaves any previous
    export whole, and `load_exported` reads one whole export while another process replaces it.
    Exports to one folder take turns under a lock file beside it (`.NAME.tltk-lock`); what is at
    `export_dir` is checked again at that moment, and only an empty folder or a complete tltk
    export (with its `export.json`) is replaced, only with `overwrite=True`; anything else raises
    and is left untouched. A replaced export is removed as soon as no reader holds it (until
    then it waits beside `export_dir` as `.NAME.tltk-old-...`).

    Args:
        model: keras.Model. An image classifier with one fixed-size image input taking raw pixels
            and one `(batch, classes)` output (softmax, sigmoid, or logits: a softmax is then
            added) or several heads (a `tltk.TransferModel` with a dict output), or a text
            classifier taking a `(batch,)` string tensor.
        export_dir: str or Path. Folder to write.
        formats: tuple. Any of `"saved_model"`, `"tflite"`. Defaults to both.
        quantization: str or list. `"float32"`, `"float16"`, `"dynamic"`, `"int8"`, or a list of
            them (one `.tflite` each); `"float32"` only for text. Defaults to `"float32"`.
        representative_data: `tf.data.Dataset` (of images or `(images, labels)`, batched or not),
            numpy array or list of image paths. Training images for int8 calibration; 300 are
            drawn from the first 1,200. Required for `"int8"`. Defaults to `None`.
        labels: list or tuple of str. Class names in output order: one per output, non-empty,
            distinct, without line breaks (any that `str.splitlines` splits on). Defaults to
            the model's `class_names`, else `"0"`, `"1"`, ... With several heads, a dict
            `{head: names}` for some or all classification and multi-label heads (the others
            as above).
        parity_data: same types as `representative_data` (a list of strings for text).
            Held-out inputs for the parity gate; up to 500 are used. Defaults to `None` (use
            `representative_data`).
        parity: str. `"raise"`: a failing file raises `tltk.export.ParityError` (with the report)
            and nothing is written; `"warn"`: the export is kept and a warning names the file.
            Defaults to `"raise"`.
        overwrite: bool. Replace an existing export (or empty folder) at `export_dir`. Defaults to
            `False`.

    Returns:
        An `ExportReport`: paths, sizes, parity figures and single-input CPU latency per file.

    Example:

    ```python
    import numpy as np, tltk
    model = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    images = np.random.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    report = tltk.export(model, "/tmp/tltk_export", quantization=["float32", "int8"],
                         representative_data=images, labels=["a", "b", "c"], overwrite=True)
    print(report)
    predictor = tltk.load_exported("/tmp/tltk_export/model_int8.tflite")
    names, probabilities = predictor.predict(images[:4])
    ```
    """
    adapter = adapter_for(model)
    formats = _check_formats(formats)
    quantizations = adapter.check_quantization(quantization)
    if parity not in PARITY_MODES:
        raise ValueError(f"`parity` must be one of {PARITY_MODES}. Received: parity={parity!r}")
    heads = getattr(adapter, "heads", None)
    if heads is None:
        class_names = check_labels(
            class_names_of(model) if labels is None else labels, adapter.num_classes
        )
    else:
        class_names = check_head_labels(labels, heads, head_class_names(model, heads), check_labels)
    export_dir = check_destination(export_dir, overwrite=overwrite)
    tflite = quantizations if "tflite" in formats else ()
    inputs, source = adapter.prepare(tflite, representative_data, parity_data)
    unjudged = [q for q in tflite if gate(q, source) is None]
    if unjudged and parity == "raise":
        raise ValueError(
            f"The parity gate of a {unjudged[0]!r} file compares top-1 classes, which needs real "
            "inputs: pass `parity_data` (held-out images) or `representative_data`, or "
            "parity='warn' to export it unchecked. Received: parity_data=None, "
            "representative_data=None"
        )
    reference = KerasRunner(model)(inputs)

    def checked(runner, path, kind, quantization):
        parity_result = None
        if gate(quantization, source) is not None and heads is None:
            parity_result = compare(
                reference, runner(inputs), quantization, data=source, precision=adapter.precision
            )
        elif gate(quantization, source) is not None:
            parity_result = compare_heads(
                reference,
                runner(inputs),
                quantization,
                data=source,
                heads=heads,
                precision=adapter.precision,
            )
        return ExportedFile(
            path=export_dir / path.name,
            format=kind,
            quantization=quantization,
            size_bytes=_size(path),
            latency_ms=runner.latency_ms(inputs[0], runs=LATENCY_RUNS),
            parity=parity_result,
        )

    with atomic.staged(export_dir) as folder:
        files = []
        saved_model = adapter.write_saved_model(folder / SAVED_MODEL_DIR, class_names)
        if "saved_model" in formats:
            runner = SavedModelRunner(saved_model)
            files.append(checked(runner, saved_model, "saved_model", "float32"))
        for name, path in adapter.write_tflite(saved_model, folder, tflite, class_names):
            files.append(checked(adapter.tflite_runner(path), path, "tflite", name))
        if "saved_model" not in formats:
            shutil.rmtree(saved_model)
        write_label_files(folder, class_names)
        if heads is None:
            labels_path = export_dir / LABELS_FILE
        else:
            labels_path = {head: export_dir / labels_file(head) for head in class_names}
        report = ExportReport(
            export_dir=export_dir,
            files=tuple(files),
            labels_path=labels_path,
            record_path=export_dir / RECORD_FILE,
        )
        write_record(
            folder / RECORD_FILE,
            model,
            class_names=class_names,
            output_activation=adapter.activation,
            report=report,
            fields=adapter.record_fields(),
            heads=heads,
        )
        _gate(report, parity)
        _publish(folder, export_dir, overwrite=overwrite)
    return report


def adapter_for(model):
    """The adapter for `model`'s modality: the one place where export tells text from images.

    Args:
        model: keras.Model. The model to export.

    Returns:
        A `TextAdapter` for a model taking strings (`tltk.text.is_text_model`), else an
        `ImageAdapter` (which checks that the model is an image classifier).

    Example:

    ```python
    adapter_for(tltk.build_classifier("mobilenet_v2", 3, weights=None))   # an ImageAdapter
    ```
    """
    return TextAdapter(model) if is_text_model(model) else ImageAdapter(model)


def check_labels(labels, num_classes):
    """Returns the class names: `labels` checked against the output width, or `"0"`, `"1"`, ...

    Args:
        labels: list, tuple or None. One class name per output: non-empty strings without line
            breaks (any that `str.splitlines` splits on, `\\u2028` and `\\x0c` too: the labels
            file holds one name per line), all distinct.
        num_classes: int. The model's output width.

    Returns:
        A list of `num_classes` strings.

    Example:

    >>> check_labels(("cat", "dog"), 2)
    ['cat', 'dog']
    >>> check_labels(None, 3)
    ['0', '1', '2']
    """
    if labels is None:
        return [str(i) for i in range(num_classes)]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise ValueError(
            "`labels` must be a list or tuple of class names (strings), one per class. "
            f"Received: labels={labels!r}"
        )
    if len(labels) != num_classes:
        raise ValueError(
            f"`labels` must name each of the model's {num_classes} classes. "
            f"Received: {len(labels)} labels"
        )
    broken = [x for x in labels if x and x.splitlines() != [x]]
    if broken:
        raise ValueError(
            "`labels` must not hold line breaks (`str.splitlines` splits the labels file on "
            "\\n, \\r, \\x0b, \\x0c, \\x1c-\\x1e, \\x85, \\u2028, \\u2029): replace them with "
            f"spaces. Received: {broken!r}"
        )
    if any(not x.strip() for x in labels) or len(set(labels)) != len(labels):
        raise ValueError(f"`labels` must be distinct, non-empty names. Received: labels={labels!r}")
    return list(labels)


def check_destination(export_dir, *, overwrite):
    """Checks that `export_dir` may be written, and returns it as an absolute `Path`.

    An existing folder is replaced only with `overwrite=True`, and only when it is empty or holds
    a tltk export (`export.json`), so a mistyped path never wipes an unrelated folder.

    Example:

    ```python
    path = check_destination("exports/pets", overwrite=False)
    ```
    """
    path = pathlib.Path(export_dir).expanduser().absolute()
    if path.is_symlink() and not path.exists():
        raise ValueError(
            "`export_dir` is a link to a folder that is gone; remove the link or export to "
            f"another folder. Received: export_dir={str(path)!r}"
        )
    if not path.exists():
        return path
    if not path.is_dir():
        raise ValueError(
            f"`export_dir` exists and is not a folder. Received: export_dir={str(path)!r}"
        )
    if not overwrite:
        raise ValueError(
            f"`export_dir` already exists; pass overwrite=True to replace it. "
            f"Received: export_dir={str(path)!r}"
        )
    if any(path.iterdir()) and not (path / RECORD_FILE).is_file():
        raise ValueError(
            f"`export_dir` is not a tltk export (no {RECORD_FILE}), so tltk will not replace it, "
            f"even with overwrite=True. Received: export_dir={str(path)!r}"
        )
    return path


def _publish(folder, export_dir, *, overwrite):
    """Publishes `folder` at `export_dir`, re-checking what is there at that moment."""
    try:
        atomic.publish(folder, export_dir, replaceable=_replaceable if overwrite else None)
    except FileExistsError:
        if overwrite:
            why, what = "it is not a tltk export (no export.json)", "to another folder"
        else:
            why, what = "overwrite=False", "with overwrite=True to replace a tltk export"
        raise ValueError(
            f"`export_dir` was written by someone else while this export ran, and {why}: tltk "
            f"replaced nothing and discarded this export. Export again {what}. "
            f"Received: export_dir={str(export_dir)!r}"
        ) from None


def _replaceable(path):
    return path.is_dir() and (not any(path.iterdir()) or (path / RECORD_FILE).is_file())


def _gate(report, parity):
    unchecked = [f.path.name for f in report.files if f.parity is None]
    if unchecked:
        warnings.warn(
            f"Parity gate not run for {', '.join(unchecked)}: no parity_data or "
            "representative_data to compare top-1 classes on.",
            stacklevel=3,
        )
    if not report.failed:
        return
    lines = "\n".join(f"  {f.path.name}: {f.parity.describe()}" for f in report.failed)
    if parity == "raise":
        raise ParityError(
            f"Exported file(s) disagree with the Keras model; nothing was written to "
            f"{report.export_dir} (any previous export is untouched). Pass parity='warn' to keep "
            f"them anyway.\n{lines}",
            dataclasses.replace(report, written=False),
        )
    warnings.warn(f"Exported file(s) disagree with the Keras model:\n{lines}", stacklevel=3)


def _check_formats(formats):
    names = (formats,) if isinstance(formats, str) else tuple(formats or ())
    if not names or any(f not in FORMATS for f in names) or len(set(names)) != len(names):
        raise ValueError(
            f"`formats` must be a non-empty list of distinct names from {FORMATS}. "
            f"Received: formats={formats!r}"
        )
    return names


def _size(path):
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
