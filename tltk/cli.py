"""The `tltk` command line: a thin front over the library, its defaults read from the library."""

from __future__ import annotations

import functools
import inspect
import math
import os
import pathlib
import sys

import click

_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def _defaults(function):
    return {k: p.default for k, p in inspect.signature(function).parameters.items()}


def _one_line_errors(command):
    """Turns expected errors into one line on stderr and exit status 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, ConnectionError, OSError) as error:
            message = " ".join(str(error).split())
            raise click.ClickException(message) from error

    return wrapper


class _Rate(click.types.FloatParamType):
    """A learning rate: a positive, finite float (`nan` and `inf` are floats to Python)."""

    name = "rate"

    def convert(self, value, param, ctx):
        rate = super().convert(value, param, ctx)
        if not (math.isfinite(rate) and rate > 0):
            self.fail(f"{value!r} is not a positive, finite number.", param, ctx)
        return rate


def _trusting_hub_handles(command):
    """Adds `--trust-hub-handle` and runs `command` with those TF Hub handles trusted."""

    @functools.wraps(command)
    def wrapper(*args, trusted_hub_handles, **kwargs):
        from tltk.backbones.hub_module import trust_hub_handles

        with trust_hub_handles(trusted_hub_handles):
            return command(*args, **kwargs)

    return click.option(
        "--trust-hub-handle",
        "trusted_hub_handles",
        multiple=True,
        metavar="HANDLE",
        help=(
            "Let model files load this TF Hub handle or SavedModel folder (its graph runs); "
            "repeat for several. Without it, a model file naming one is refused."
        ),
    )(wrapper)


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _verbosity(quiet):
    """Keras verbosity: progress bars on a terminal, one line per epoch in logs, none when quiet."""
    return 0 if quiet else (1 if sys.stdout.isatty() else 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tltk")
def main():
    """tltk: transfer learning for Keras 3 (pretrained backbones, staged fine-tuning, TFLite).

    Example: tltk demo
    """
    _quiet_tensorflow()


def _print_run(run):
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Fine-tuning stages")
    table.add_column("stage")
    table.add_column("trained")
    table.add_column(run.fine_tune.monitor)
    for stage, groups, metric in run.stage_metrics():
        table.add_row(str(stage), ", ".join(groups), f"{metric:.4f}")
    console.print(table)
    kept = (
        "stage 1 (later stages did not help)"
        if run.fine_tune.restored_stage1
        else f"stage {run.fine_tune.best_stage}"
    )
    console.print(f"Kept the weights of {kept}.")
    files = Table(title="Outputs")
    files.add_column("what")
    files.add_column("where")
    files.add_column("size / parity")
    files.add_row(
        "held-out accuracy",
        f"{run.evaluation.accuracy:.4f} on {run.evaluation.num_examples} images",
        "",
    )
    files.add_row("Keras model", str(run.model_path), "")
    for name, path in sorted(run.evaluation.files.items()):
        files.add_row(name.replace("_", " "), str(path), "")
    if run.export is not None:
        for f in run.export.files:
            parity = "not checked" if f.parity is None else f.parity.describe()
            files.add_row(
                f"{f.format} {f.quantization}",
                str(f.path),
                f"{f.size_bytes / 1e6:.2f} MB, {parity}",
            )
    console.print(files)
    if run.data.skipped:
        console.print(f"Skipped {len(run.data.skipped)} unreadable file(s); see report.json.")
    console.print(f"Done in {run.seconds:.0f} s.")


_TRAIN = None


def _train_defaults():
    global _TRAIN
    if _TRAIN is None:
        from tltk.workflow import train_from_directory

        _TRAIN = _defaults(train_from_directory)
    return _TRAIN


@main.command()
@click.option(
    "--out",
    "out_dir",
    default="tltk_demo",
    show_default=True,
    help="Folder for the data, model, report and exports.",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Epochs after the head stage, backbone unfrozen (default: the demo's).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_one_line_errors
def demo(out_dir, epochs, quiet):
    """Offline demo: the shipped demo backbone fine-tuned on handwritten digits, exported to TFLite.

    Example: tltk demo --out /tmp/tltk_demo
    """
    from tltk.workflow import demo as run_demo

    kwargs = {} if epochs is None else {"epochs": epochs}
    click.echo(
        "tltk demo: scikit-learn's 1,797 handwritten digits, backbone tltk_glyphnet (shipped, "
        "pretrained on rendered letters)."
    )
    _print_run(run_demo(out_dir, verbose=_verbosity(quiet), **kwargs))


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--backbone",
    default="mobilenet_v2",
    show_default=True,
    help="Registry name; see `tltk backbones`.",
)
@click.option("--out", "out_dir", required=True, help="Run folder (model.keras, report/, export/).")
@click.option(
    "--weights",
    default="default",
    show_default=True,
    help=(
        "'default' (the backbone's first pretrained weights: imagenet for Keras Applications, "
        "tltk for tltk_glyphnet; none where it has none), a registered name, 'none' or a "
        "weights file."
    ),
)
@click.option(
    "--epochs", type=int, default=None, help="Epochs after the head stage, backbone unfrozen."
)
@click.option("--head-epochs", type=int, default=None, help="Epochs of the head-only stage.")
@click.option(
    "--learning-rate", type=_Rate(), default=None, help="Peak rate of the head-only stage."
)
@click.option(
    "--fine-tune-lr",
    type=_Rate(),
    default=None,
    help="Peak rate of the head once the backbone is unfrozen.",
)
@click.option(
    "--image-size", type=int, default=None, help="Square input size (default: the backbone's)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option(
    "--augment",
    type=click.Choice(["none", "light", "medium", "strong"]),
    default="none",
    show_default=True,
)
@click.option(
    "--quantize",
    multiple=True,
    type=click.Choice(_QUANTIZATIONS),
    help="TFLite quantization; repeat for several.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_trusting_hub_handles
@_one_line_errors
def train(
    data_dir,
    backbone,
    out_dir,
    weights,
    epochs,
    head_epochs,
    learning_rate,
    fine_tune_lr,
    image_size,
    batch_size,
    augment,
    quantize,
    quiet,
):
    """Train on a folder of class folders, evaluate, and export.

    Example: tltk train photos/ --backbone mobilenet_v2 --out runs/photos --quantize int8
    """
    from tltk.workflow import train_from_directory

    d = _train_defaults()
    run = train_from_directory(
        data_dir,
        out_dir,
        backbone=backbone,
        weights=None if weights.lower() == "none" else weights,
        image_size=image_size,
        batch_size=d["batch_size"] if batch_size is None else batch_size,
        head_epochs=d["head_epochs"] if head_epochs is None else head_epochs,
        epochs=d["epochs"] if epochs is None else epochs,
        learning_rate=d["learning_rate"] if learning_rate is None else learning_rate,
        fine_tune_lr=d["fine_tune_lr"] if fine_tune_lr is None else fine_tune_lr,
        augment=None if augment == "none" else augment,
        quantize=quantize or d["quantize"],
        verbose=_verbosity(quiet),
    )
    _print_run(run)


@main.command("evaluate")
@click.argument("model_path", type=click.Path(exists=True))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", default=None, help="Folder for report.json and plots.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_trusting_hub_handles
@_one_line_errors
def evaluate_command(model_path, data_dir, out_dir, batch_size):
    """Evaluate a .keras, SavedModel or .tflite model on a folder (its test/ split if it has one).

    Example: tltk evaluate runs/photos/export/model_int8.tflite photos/ --out runs/int8_report
    """
    from tltk import data as tltk_data
    from tltk.evaluate import evaluate
    from tltk.export import load_exported

    predictor = load_exported(model_path)
    data = tltk_data.from_directory(
        data_dir, image_size=predictor.input_shape[:2], batch_size=batch_size, validation_split=0.0
    )
    held_out = next(
        split for split in (data.test, data.validation, data.train) if split is not None
    )
    if list(data.class_names) != list(predictor.class_names):
        raise ValueError(
            f"{data_dir} has classes {data.class_names}, but {model_path} predicts "
            f"{predictor.class_names}."
        )
    report = evaluate(predictor, held_out, class_names=data.class_names, out_dir=out_dir)
    click.echo(report.summary())
    if out_dir:
        click.echo(f"Report: {report.files['report']}")


@main.command()
@click.argument("model_path", type=click.Path(exists=True))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Classes to show per input.",
)
@_trusting_hub_handles
@_one_line_errors
def predict(model_path, inputs, top):
    """Predict classes of images (files or folders) with a .keras, SavedModel or .tflite model;
    of sentences with a text classifier's .keras file or SavedModel.

    Example: tltk predict runs/photos/export/model_float32.tflite cat.jpg more_photos/

    Example: tltk predict exports/topics "Heavy rain is expected tonight."
    """
    from tltk.export import load_exported

    predictor = load_exported(model_path)
    if predictor.takes_text:
        shown, batch = list(inputs), list(inputs)
    else:
        shown = _image_files(inputs)
        batch = [str(f) for f in shown]
    _, probabilities = predictor.predict(batch)
    for item, probs in zip(shown, probabilities):
        best = probs.argsort()[::-1][:top]
        click.echo(
            f"{item}: " + ", ".join(f"{predictor.class_names[i]} {probs[i]:.3f}" for i in best)
        )


def _image_files(items):
    """The image files named by `items` (files, or folders searched recursively)."""
    from tltk.data import SUPPORTED_EXTENSIONS

    files = []
    for item in items:
        path = pathlib.Path(item)
        if path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in SUPPORTED_EXTENSIONS and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(
                f"No such image file or folder: {item}. Pass image files or folders of them."
            )
    if not files:
        raise ValueError(f"No image files found in {', '.join(items)}.")
    return files


@main.command("export")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
@click.argument("out_dir")
@click.option(
    "--quantize",
    multiple=True,
    type=click.Choice(_QUANTIZATIONS),
    help="TFLite quantization; repeat for several (default float32).",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Image folder for int8 calibration and the parity gate.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
@_trusting_hub_handles
@_one_line_errors
def export_command(model_path, out_dir, quantize, data_dir, overwrite):
    """Export a .keras model as a SavedModel and TFLite files, checked against Keras.

    Example: tltk export runs/photos/model.keras exports/photos --quantize int8 --data photos/
    """
    from tltk import data as tltk_data
    from tltk.export import export
    from tltk.model_file import load_model

    model = load_model(model_path)
    samples = class_names = None
    if data_dir:
        data = tltk_data.from_directory(
            data_dir, image_size=tuple(model.input_shape[1:3]), validation_split=0.0
        )
        samples, class_names = data.train, data.class_names
    report = export(
        model,
        out_dir,
        quantization=list(quantize) or "float32",
        representative_data=samples,
        parity_data=samples,
        labels=class_names,
        overwrite=overwrite,
    )
    for f in report.files:
        parity = "not checked" if f.parity is None else f.parity.describe()
        click.echo(f"{f.path}  {f.size_bytes / 1e6:.2f} MB  {f.latency_ms:.2f} ms  {parity}")


@main.command()
@click.option(
    "--source",
    type=click.Choice(["keras_applications", "tfhub", "keras_hub", "tltk"]),
    default=None,
)
def backbones(source):
    """List registered backbones.

    Example: tltk backbones --source keras_applications
    """
    import tltk
    from tltk.backbones.hub import is_text_backbone

    for name in tltk.list_backbones(source=source):
        spec = tltk.get_backbone(name)
        size = "text" if is_text_backbone(spec) else "x".join(map(str, spec.default_input_size))
        click.echo(
            f"{name:<28} {spec.source:<19} {size:>9}  {spec.feature_dim:>5}  "
            f"{','.join(spec.weights) or '-'}"
        )


@main.command()
def doctor():
    """Check the installation: versions, backend, tf_keras, accelerators, caches, extras.

    Example: tltk doctor
    """
    from tltk.doctor import run_checks

    problems = 0
    for check in run_checks():
        click.echo(f"[{'ok' if check.ok else '!!'}] {check.name}: {check.detail}")
        if not check.ok:
            problems += 1
            click.echo(f"     fix: {check.fix}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
