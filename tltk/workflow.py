"""The whole job in one call: a folder of images -> fine-tuned model -> report -> checked exports.

`train_from_directory` is what `tltk train` runs, and `demo` is what `tltk demo` runs: the shipped
demo backbone fine-tuned on scikit-learn's handwritten digits, fully offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import pathlib
import shutil
import time
import warnings

import keras

from tltk import atomic, run_record
from tltk import data as tltk_data
from tltk.backbones.registry import get_backbone
from tltk.builders import build_classifier
from tltk.distribute import is_chief
from tltk.evaluate import evaluate
from tltk.export import export
from tltk.training import fine_tune

DEMO_BACKBONE = "tltk_glyphnet"
_FINE_TUNE_DEFAULTS = {k: p.default for k, p in inspect.signature(fine_tune).parameters.items()}
# A held-out split under this many images per class gets a warning (its accuracy is coarse).
SMALL_HELD_OUT_PER_CLASS = 20
_NOT_SETTINGS = ("start", "on_data", "verbose", "overwrite", "resume", "distribute")


@dataclasses.dataclass
class TrainingRun:
    """What `train_from_directory` made.

    Attributes:
        model: keras.Model. The fine-tuned model.
        data: tltk.data.ImageData. The loaded data (class names, counts, skipped files).
        fine_tune: FineTuneResult. Per-stage histories and the best stage.
        evaluation: EvaluationReport. Held-out metrics (test split, else validation).
        export: ExportReport or None. The exported files with their parity figures.
        model_path: Path. The saved `.keras` model.
        out_dir: Path. The run folder.
        seconds: float. Wall time of the run.
    """

    model: keras.Model
    data: object
    fine_tune: object
    evaluation: object
    export: object
    model_path: pathlib.Path
    out_dir: pathlib.Path
    seconds: float

    def stage_metrics(self) -> list:
        """`[(stage, unfrozen groups, best validation metric)]`, one per stage."""
        rows = []
        monitor = self.fine_tune.monitor
        for i, (stage, history) in enumerate(zip(self.fine_tune.stages, self.fine_tune.histories)):
            values = history.get(monitor) or []
            best = (min if monitor.endswith("loss") else max)(values) if values else float("nan")
            rows.append((i + 1, stage["unfrozen"] or ["head only"], best))
        return rows


def train_from_directory(
    data_dir,
    out_dir,
    *,
    backbone="mobilenet_v2",
    weights="default",
    image_size=None,
    batch_size=32,
    head_epochs=_FINE_TUNE_DEFAULTS["head_epochs"],
    epochs=_FINE_TUNE_DEFAULTS["epochs"],
    learning_rate=_FINE_TUNE_DEFAULTS["learning_rate"],
    fine_tune_lr=_FINE_TUNE_DEFAULTS["fine_tune_lr"],
    lr_decay=_FINE_TUNE_DEFAULTS["lr_decay"],
    regularizer=None,
    regularizer_strength=None,
    class_weight=None,
    augment=None,
    quantize=("float32",),
    validation_split=0.2,
    test_split=0.1,
    seed=0,
    overwrite=False,
    resume=False,
    on_data=None,
    distribute=None,
    verbose=1,
):
    """Loads a class-folder tree, fine-tunes a classifier, evaluates it and exports it.

    Everything is written into a staging folder beside `out_dir` and published there at the end
    (`out_dir` becomes a link to it, as `tltk.export` does), so a run that fails halfway leaves an
    earlier run in `out_dir` whole. Training checkpoints every epoch into a hidden folder beside
    it, `.NAME.tltk-checkpoints`, removed once the run is published: after a crash or a kill, call
    again with `resume=True` (`tltk train --resume`) and the same settings to go on from there.

    Args:
        data_dir: str or Path. A class-folder tree, or one with `train/`, `validation/`, `test/`.
        out_dir: str or Path. Run folder: `model.keras` (which knows its class names), `run.json`
            (the run record, see `tltk.run_record`), `README.md` (a model card), `report/`
            (report.json and plots) and `export/` (SavedModel, TFLite files, labels, record).
            It may not lie inside `data_dir` (a later run would train on its files).
        backbone: str. Registry name. Defaults to `"mobilenet_v2"`.
        weights: str or None. Backbone weights, as in `build_classifier`. Defaults to
            `"default"`: the backbone's own first pretrained weights.
        image_size: int or tuple. Input size. Defaults to the backbone's default size.
        batch_size: int. Defaults to `32`.
        head_epochs: int. Epochs of the head-only stage. Defaults to `fine_tune`'s.
        epochs: int. Epochs of the unfreezing stages together. Defaults to `fine_tune`'s.
        learning_rate: float. Peak rate of the head stage. Defaults to `fine_tune`'s.
        fine_tune_lr: float. Peak rate of the head in later stages. Defaults to `fine_tune`'s.
        lr_decay: float. Rate factor per group below the head. Defaults to `fine_tune`'s.
        regularizer: str or None. `"l2sp"` keeps the backbone near its pretrained weights (see
            `fine_tune`). Defaults to `None`.
        regularizer_strength: float or None. Its strength. Defaults to `fine_tune`'s.
        class_weight: None, `"balanced"` or dict. Loss weight per class (index or name);
            `"balanced"` is `tltk.class_weights(data)`. Defaults to `None`.
        augment: str or None. A `tltk.augmentation` preset. Defaults to `None`.
        quantize: sequence. TFLite quantizations to export; empty for SavedModel only.
            Defaults to `("float32",)`.
        validation_split: float. Defaults to `0.2`.
        test_split: float. Held out for the report when the tree has no `test/`. Defaults to `0.1`.
        seed: int. Split and initialisation seed. Defaults to `0`.
        overwrite: bool. Replace an earlier run in `out_dir` (only a tltk run folder is
            replaced). Defaults to `False`: an existing, non-empty `out_dir` is refused.
        resume: bool. Go on from the checkpoints of a run into `out_dir` that stopped halfway.
            Defaults to `False`: such checkpoints are refused unless `overwrite=True` (which
            deletes them and trains anew).
        on_data: callable or None. Called with the loaded `ImageData` before training (the
            command line prints the split sizes with it). Defaults to `None`.
        distribute: tf.distribute.Strategy or None. Build and train the model under it (see
            `tltk.distribute`): on every worker of a `MultiWorkerMirroredStrategy`, the same
            call; only the chief writes `out_dir` and the checkpoints, the other workers train
            with it and return their `TrainingRun` with `export` and `model_path` `None`.
            Defaults to `None` (one device).
        verbose: int. Keras verbosity. Defaults to `1`.

    Returns:
        A `TrainingRun`.

    Example:

    ```python
    run = tltk.train_from_directory("flowers/", "runs/flowers", backbone="mobilenet_v2")
    print(run.evaluation.accuracy, [f.path for f in run.export.files])
    ```
    """
    start = time.perf_counter()
    settings = {k: v for k, v in locals().items() if k not in _NOT_SETTINGS}
    settings["quantize"] = list(quantize)
    spec = get_backbone(backbone)
    size = _image_size(image_size, spec)
    out_dir = _outside(pathlib.Path(out_dir), pathlib.Path(data_dir))
    chief = distribute is None or is_chief(distribute)
    if chief:
        checkpoints = _checkpoints(out_dir, overwrite=overwrite, resume=resume)
    else:  # the chief checks and clears it; this worker only reads it to resume
        checkpoints = _checkpoint_folder(out_dir)
    keras.utils.set_random_seed(seed)

    data = tltk_data.from_directory(
        data_dir,
        image_size=size,
        batch_size=batch_size,
        validation_split=validation_split,
        test_split=test_split,
        seed=seed,
    )
    _warn_small_held_out(data)
    if on_data is not None:
        on_data(data)
    with distribute.scope() if distribute is not None else contextlib.nullcontext():
        model = build_classifier(
            spec,
            data.num_classes,
            input_shape=(*size, spec.channels),
            weights=weights,
            augmentation=augment,
            class_names=list(data.class_names),
        )
    result = fine_tune(
        model,
        data.train,
        data.validation,
        head_epochs=head_epochs,
        epochs=epochs,
        learning_rate=learning_rate,
        fine_tune_lr=fine_tune_lr,
        lr_decay=lr_decay,
        regularizer=regularizer,
        regularizer_strength=regularizer_strength,
        class_weight=tltk_data.class_weights(data) if class_weight == "balanced" else class_weight,
        checkpoint_dir=checkpoints,
        verbose=verbose,
    )
    if not chief:  # another worker of a cluster: the chief writes the run
        evaluation = evaluate(model, data)
        seconds = time.perf_counter() - start
        return TrainingRun(model, data, result, evaluation, None, None, out_dir, seconds)

    quantize = list(quantize)
    held_out = data.test if data.test is not None else data.validation
    with atomic.staged(out_dir) as stage:
        with atomic.writing(stage / run_record.MODEL_FILE) as partial:
            model.save(partial)
        evaluation = evaluate(model, data, out_dir=stage / "report", history=result)
        exported = export(
            model,
            stage / "export",
            formats=("saved_model", "tflite") if quantize else ("saved_model",),
            quantization=quantize or "float32",
            representative_data=data.train,
            labels=data.class_names,
            parity_data=held_out,
        )
        record = run_record.build(
            settings=settings,
            data=data,
            data_dir=data_dir,
            result=result,
            evaluation=evaluation,
            exported=exported,
            run_dir=stage,
            seconds=time.perf_counter() - start,
        )
        run_record.write(stage, record, name=out_dir.name)
        _publish(stage, out_dir, overwrite=overwrite)
    shutil.rmtree(checkpoints, ignore_errors=True)
    evaluation.files = {k: _moved(v, stage, out_dir) for k, v in evaluation.files.items()}
    exported = dataclasses.replace(
        exported,
        export_dir=_moved(exported.export_dir, stage, out_dir),
        labels_path=_moved(exported.labels_path, stage, out_dir),
        record_path=_moved(exported.record_path, stage, out_dir),
        files=tuple(
            dataclasses.replace(f, path=_moved(f.path, stage, out_dir)) for f in exported.files
        ),
    )
    return TrainingRun(
        model,
        data,
        result,
        evaluation,
        exported,
        out_dir / run_record.MODEL_FILE,
        out_dir,
        time.perf_counter() - start,
    )


def demo(out_dir="tltk_demo", *, head_epochs=30, epochs=10, verbose=1):
    """The offline demo: the shipped `tltk_glyphnet` fine-tuned on scikit-learn's digits.

    Writes the 1,797 digits as a class-folder tree of PNGs under `out_dir/digits`, then runs
    `train_from_directory` on it (replacing an earlier demo run) with the demo backbone's shipped
    weights, exporting float32 and
    int8 TFLite files checked by the parity gate. The head trains 30 epochs on cached features
    (fractions of a second each) at 3e-3; then the whole network trains at 1e-3 for the head,
    halved per group below it.

    Args:
        out_dir: str or Path. Folder for the data and the run. Defaults to `"tltk_demo"`.
        head_epochs: int. Defaults to `30`.
        epochs: int. Defaults to `10`.
        verbose: int. Defaults to `1`.

    Returns:
        A `TrainingRun`.
    """
    from tltk.datasets import digits

    out_dir = pathlib.Path(out_dir)
    folder = digits(out_dir / "digits")
    return train_from_directory(
        folder,
        out_dir / "run",
        backbone=DEMO_BACKBONE,
        weights="tltk",
        batch_size=32,
        head_epochs=head_epochs,
        epochs=epochs,
        learning_rate=3e-3,
        fine_tune_lr=1e-3,
        lr_decay=0.5,
        quantize=("float32", "int8"),
        validation_split=0.15,
        test_split=0.15,
        overwrite=True,
        verbose=verbose,
    )


def _checkpoints(out_dir, *, overwrite, resume):
    """The checkpoint folder of a run into `out_dir`, once `out_dir` may be written."""
    if os.path.lexists(out_dir) and not overwrite and _holds_something(out_dir):
        raise FileExistsError(
            f"{out_dir} already holds a run (or other files), and a run is never replaced "
            "silently: pass overwrite=True to replace it, or another `out_dir`. Nothing was "
            "changed."
        )
    folder = _checkpoint_folder(out_dir)
    if folder.is_dir() and not resume:
        if not overwrite:
            raise FileExistsError(
                f"A run into {out_dir} stopped halfway; its checkpoints are in {folder}. Pass "
                "resume=True to go on from them (with the same settings), or overwrite=True to "
                "delete them and train anew."
            )
        shutil.rmtree(folder)
    if resume and not folder.is_dir():
        warnings.warn(
            f"No unfinished run into {out_dir} to resume ({folder} does not exist): training "
            "from the start.",
            stacklevel=3,
        )
    return folder


def _checkpoint_folder(out_dir):
    return out_dir.parent / f".{out_dir.name}{atomic.MARKER}checkpoints"


def _holds_something(folder):
    return not folder.is_dir() or folder.is_symlink() or any(folder.iterdir())


def _is_run(folder):
    """Whether `folder` is a run folder tltk wrote (the only kind `overwrite` replaces)."""
    return (folder / run_record.RUN_FILE).is_file() or (folder / run_record.MODEL_FILE).is_file()


def _publish(stage, out_dir, *, overwrite):
    try:
        atomic.publish(stage, out_dir, replaceable=_is_run if overwrite else None)
    except FileExistsError as error:
        why = "it is not a tltk run folder (no run.json)" if overwrite else "overwrite=False"
        raise FileExistsError(
            f"{out_dir} was not replaced: {why}. This run was discarded; pass another `out_dir`."
        ) from error


def _moved(path, old, new):
    """`path` inside the folder `old`, as the same path inside `new`."""
    inside = pathlib.Path(os.path.abspath(path)).relative_to(os.path.abspath(old))
    return type(path)(new / inside)


def _warn_small_held_out(data):
    """Warns when the held-out split is too small for its accuracy to mean much."""
    split = "test" if data.test is not None else "validation"
    count = len(data.sources.get(split, ()))
    if count < SMALL_HELD_OUT_PER_CLASS * data.num_classes:
        warnings.warn(
            f"The {split} split holds only {count} images for {data.num_classes} classes: one "
            f"image moves its accuracy by {1 / max(count, 1):.1%}. Hold out more "
            "(test_split, or a test/ folder) to judge the model.",
            stacklevel=3,
        )


def _outside(out_dir, data_dir):
    """`out_dir`, checked not to be `data_dir` or inside it (its images would become data)."""
    if out_dir.resolve().is_relative_to(data_dir.resolve()):
        raise ValueError(
            f"The run folder {out_dir} is inside the data folder {data_dir}: the next run would "
            "train on its files (report plots, exports). Pass an `out_dir` outside "
            f"{data_dir}. Received: out_dir={str(out_dir)!r}"
        )
    return out_dir


def _image_size(image_size, spec):
    if image_size is None:
        return tuple(spec.default_input_size)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = tuple(image_size)
    if len(image_size) != 2 or not all(isinstance(v, int) and v > 0 for v in image_size):
        raise ValueError(
            f"`image_size` must be an int or (height, width). Received: image_size={image_size}"
        )
    return image_size
