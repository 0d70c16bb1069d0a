"""The whole job in one call: a folder of images -> fine-tuned model -> report -> checked exports.

`train_from_directory` is what `tltk train` runs, and `demo` is what `tltk demo` runs: the shipped
demo backbone fine-tuned on scikit-learn's handwritten digits, fully offline.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import time

import keras

from tltk import atomic
from tltk import data as tltk_data
from tltk.backbones.registry import get_backbone
from tltk.builders import build_classifier
from tltk.evaluate import evaluate
from tltk.export import export
from tltk.training import fine_tune

DEMO_BACKBONE = "tltk_glyphnet"
_FINE_TUNE_DEFAULTS = {k: p.default for k, p in inspect.signature(fine_tune).parameters.items()}


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
    augment=None,
    quantize=("float32",),
    validation_split=0.2,
    test_split=0.1,
    seed=0,
    verbose=1,
):
    """Loads a class-folder tree, fine-tunes a classifier, evaluates it and exports it.

    Args:
        data_dir: str or Path. A class-folder tree, or one with `train/`, `validation/`, `test/`.
        out_dir: str or Path. Run folder: `model.keras`, `report/` (report.json and plots) and
            `export/` (SavedModel, TFLite files, labels, record). An earlier run there is replaced.
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
        augment: str or None. A `tltk.augmentation` preset. Defaults to `None`.
        quantize: sequence. TFLite quantizations to export; empty for SavedModel only.
            Defaults to `("float32",)`.
        validation_split: float. Defaults to `0.2`.
        test_split: float. Held out for the report when the tree has no `test/`. Defaults to `0.1`.
        seed: int. Split and initialisation seed. Defaults to `0`.
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
    spec = get_backbone(backbone)
    size = _image_size(image_size, spec)
    out_dir = _outside(pathlib.Path(out_dir), pathlib.Path(data_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)

    data = tltk_data.from_directory(
        data_dir,
        image_size=size,
        batch_size=batch_size,
        validation_split=validation_split,
        test_split=test_split,
        seed=seed,
    )
    model = build_classifier(
        spec,
        data.num_classes,
        input_shape=(*size, spec.channels),
        weights=weights,
        augmentation=augment,
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
        verbose=verbose,
    )

    model_path = out_dir / "model.keras"
    with atomic.writing(model_path) as partial:
        model.save(partial)
    evaluation = evaluate(model, data, out_dir=out_dir / "report", history=result)
    quantize = list(quantize)
    held_out = data.test if data.test is not None else data.validation
    exported = export(
        model,
        out_dir / "export",
        formats=("saved_model", "tflite") if quantize else ("saved_model",),
        quantization=quantize or "float32",
        representative_data=data.train,
        labels=data.class_names,
        parity_data=held_out,
        overwrite=True,
    )
    return TrainingRun(
        model, data, result, evaluation, exported, model_path, out_dir, time.perf_counter() - start
    )


def demo(out_dir="tltk_demo", *, head_epochs=30, epochs=10, verbose=1):
    """The offline demo: the shipped `tltk_glyphnet` fine-tuned on scikit-learn's digits.

    Writes the 1,797 digits as a class-folder tree of PNGs under `out_dir/digits`, then runs
    `train_from_directory` on it with the demo backbone's shipped weights, exporting float32 and
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
        verbose=verbose,
    )


def _outside(out_dir, data_dir):
    """`out_dir`, checked not to be `data_dir` or inside it (its images would become data)."""
    if out_dir.resolve().is_relative_to(data_dir.resolve()):
        raise ValueError(
            f"The run folder {out_dir} is inside the data folder {data_dir}: the next run would "
            "train on its files (report plots, exports). Pass an `out_dir` (--out) outside "
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
