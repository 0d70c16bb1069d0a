"""The `tltk` command line: a thin front over the library, its defaults read from the library.

`tltk --help`, `tltk COMMAND --help` and `tltk --version` answer without importing TensorFlow; a
command imports it when it runs, with TensorFlow's C++ start-up lines hidden unless `--verbose`.
Errors are one line naming this command line's flags, warnings one line each.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import pathlib
import re
import sys
import warnings

import click

from tltk._version import __version__

_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
_VERBOSE = False
# The library's errors name Python arguments; the command line names its own flags instead.
_FLAGS = (
    (r"pass a new `checkpoint_dir` \(or delete this one\)", "pass --overwrite to train anew"),
    (r"`?overwrite=True`?", "--overwrite"),
    (r"`?resume=True`?", "--resume"),
    (r"`representative_data`|representative_data(?!=)", "--data"),
    (r"`out_dir`", "--out"),
    (r"`?test_split`?(?!=)", "--test-split"),
    (r"`class_weight`", "--class-weight"),
)


def _defaults(function):
    return {k: p.default for k, p in inspect.signature(function).parameters.items()}


def _as_flags(message):
    for pattern, flag in _FLAGS:
        message = re.sub(pattern, flag, message)
    return message


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """One line per warning, in the command line's terms: no class name, source file or line."""
    click.echo(f"Warning: {_as_flags(' '.join(str(message).split()))}", err=True)


@contextlib.contextmanager
def _native_stderr_hidden():
    """Sends file descriptor 2 to the null device, where TensorFlow and LiteRT write their C++
    log lines; Python's `sys.stderr` (warnings, errors) keeps writing to the real one."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    original = sys.stderr
    try:
        python_on_fd2 = original.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test runner's captured stream
        python_on_fd2 = False
    if python_on_fd2:
        # A text stream on the saved descriptor (the terminal), not a file write.
        sys.stderr = os.fdopen(saved, "w", buffering=1, closefd=False, errors="backslashreplace")
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.flush()
            sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)


def _runs_library(command):
    """Runs `command` with tltk's API loaded (TensorFlow with it), one-line warnings and errors.

    TensorFlow's and LiteRT's C++ log lines are hidden unless `--verbose`. Expected errors become
    one line on stderr naming the flags, and exit status 1, not a traceback.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        import tltk

        hidden = contextlib.nullcontext() if _VERBOSE else _native_stderr_hidden()
        with hidden, warnings.catch_warnings():
            tltk._load()
            warnings.showwarning = _show_warning
            warnings.filterwarnings("default", category=UserWarning)
            # `tltk train` and `tltk predict` list every skipped file themselves.
            warnings.filterwarnings("ignore", message=r"Skipped \d+ of \d+ entries")
            try:
                return command(*args, **kwargs)
            except (ValueError, ConnectionError, OSError) as error:
                raise click.ClickException(_as_flags(" ".join(str(error).split()))) from error

    return wrapper


class _Rate(click.types.FloatParamType):
    """A learning rate: a positive, finite float (`nan` and `inf` are floats to Python)."""

    name = "rate"

    def convert(self, value, param, ctx):
        rate = super().convert(value, param, ctx)
        if not (math.isfinite(rate) and rate > 0):
            self.fail(f"{value!r} is not a positive, finite number.", param, ctx)
        return rate


class _ClassNames(click.ParamType):
    """Class names: `a,b,c`, or a text file with one name per line."""

    name = "names"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        path = pathlib.Path(value)
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        else:
            names = [name.strip() for name in value.split(",")]
        names = [name for name in names if name]
        if len(names) < 1 or len(set(names)) != len(names):
            self.fail(f"{value!r} must name each class once (a,b,c or a file).", param, ctx)
        return names


class _ClassWeight(click.ParamType):
    """`balanced`, or `name=weight,...` (class names or indexes)."""

    name = "weights"

    def convert(self, value, param, ctx):
        if isinstance(value, dict) or value == "balanced":
            return value
        weights = {}
        for item in value.split(","):
            name, _, weight = item.partition("=")
            try:
                weights[name.strip()] = float(weight)
            except ValueError:
                self.fail(f"{value!r} must be 'balanced' or name=weight,... ", param, ctx)
            if not (math.isfinite(weights[name.strip()]) and weights[name.strip()] >= 0):
                self.fail(f"{item!r}: a weight must be a finite number >= 0.", param, ctx)
        return {int(k) if k.isdigit() else k: w for k, w in weights.items()}


_CLASS_NAMES_OPTION = click.option(
    "--class-names",
    type=_ClassNames(),
    default=None,
    help="The model's class names, in output order (a,b,c or a file, one per line), for a "
    "model file that does not carry them.",
)


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


def _verbosity(quiet):
    """Keras verbosity: progress bars on a terminal, one line per epoch in logs, none when quiet."""
    return 0 if quiet else (1 if sys.stdout.isatty() else 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tltk", message="%(prog)s %(version)s")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log lines (hidden otherwise).")
def main(verbose):
    """tltk: transfer learning for Keras 3 (pretrained backbones, staged fine-tuning, TFLite).

    Example: tltk demo
    """
    global _VERBOSE
    _VERBOSE = verbose
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"


def _print_run(run):
    from rich.console import Console
    from rich.table import Table

    from tltk import run_record

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
    files.add_row("run record, model card", str(run.out_dir / run_record.RUN_FILE), "README.md")
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
        console.print(
            f"Skipped {len(run.data.skipped)} unreadable file(s), listed above and in "
            f"{run.out_dir / run_record.RUN_FILE} and report/report.json."
        )
    console.print(f"Done in {run.seconds:.0f} s.")


def _print_data(data):
    """The split sizes, per split and class, and every file left out (before training)."""
    sizes = ", ".join(f"{split} {len(paths)}" for split, paths in data.sources.items())
    click.echo(f"Data: {data.num_classes} classes; images per split: {sizes}.")
    click.echo("\n".join(data.summary().splitlines()[: data.num_classes + 1]))
    _print_skipped(data.skipped)


def _print_skipped(skipped):
    hidden = [path for path, reason in skipped if reason.startswith("hidden")]
    shown = [(path, reason) for path, reason in skipped if not reason.startswith("hidden")]
    if shown:
        click.echo(f"Skipped {len(shown)} unreadable file(s):")
    for path, reason in shown:
        click.echo(f"  {os.fsdecode(path)}: {reason}")
    if hidden:
        click.echo(f"Ignored {len(hidden)} hidden file(s) or folder(s) (.DS_Store and the like).")


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
    help="Folder for the data, model, report and exports (an earlier demo there is replaced).",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Epochs after the head stage, backbone unfrozen (default: the demo's).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_runs_library
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


_SPLIT = click.FloatRange(0.0, 1.0, max_open=True)


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--backbone",
    default="mobilenet_v2",
    show_default=True,
    help="Registry name; see `tltk backbones`.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    help="Run folder (model.keras, run.json, README.md, report/, export/); must not exist yet "
    "unless --overwrite.",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in --out.")
@click.option(
    "--resume",
    is_flag=True,
    help="Go on from the checkpoints of a run into --out that stopped halfway (same settings).",
)
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
@click.option(
    "--head-epochs",
    type=int,
    default=None,
    help="Most epochs of the head-only stage (default: until the validation loss stops improving).",
)
@click.option(
    "--learning-rate",
    type=_Rate(),
    default=None,
    help="Peak rate of the head-only stage (default: from the learning-rate range test).",
)
@click.option(
    "--fine-tune-lr",
    type=_Rate(),
    default=None,
    help="Peak rate of the head once the backbone is unfrozen.",
)
@click.option(
    "--lr-decay",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="Rate factor per layer group below the head (default: fine_tune's, 0.7).",
)
@click.option(
    "--regularizer",
    type=click.Choice(["l2sp"]),
    default=None,
    help="Keep the backbone near its pretrained weights while it trains: L2-SP (EWC needs a "
    "source model and data: tltk.fine_tune in Python).",
)
@click.option(
    "--regularizer-strength",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Strength of --regularizer (default: fine_tune's, 100 for l2sp).",
)
@click.option(
    "--class-weight",
    type=_ClassWeight(),
    default=None,
    help="'balanced' (weights from the training counts), or name=weight,... per class.",
)
@click.option(
    "--validation-split",
    type=_SPLIT,
    default=None,
    help="Fraction held out for validation when there is no validation/ folder (default 0.2).",
)
@click.option(
    "--test-split",
    type=_SPLIT,
    default=None,
    help="Fraction held out for the test report when there is no test/ folder (default 0.1).",
)
@click.option("--seed", type=int, default=None, help="Split and initialisation seed (default 0).")
@click.option(
    "--image-size", type=int, default=None, help="Square input size (default: the backbone's)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option(
    "--augment",
    type=click.Choice(["none", "light", "medium", "strong"]),
    default="none",
    show_default=True,
    help="Random flips, rotations, zooms... in training only; 'none' turns it off.",
)
@click.option(
    "--quantize",
    multiple=True,
    type=click.Choice(_QUANTIZATIONS),
    help="TFLite quantization; repeat for several (default float32).",
)
@click.option(
    "--distribute",
    type=click.Choice(["mirrored", "multi_worker"]),
    default=None,
    help="Train on every GPU of this machine ('mirrored'), or on the machines of the cluster in "
    "TF_CONFIG ('multi_worker': run the same command on each; only the chief writes --out).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_runs_library
@_trusting_hub_handles
def train(data_dir, out_dir, weights, augment, quantize, quiet, distribute, **options):
    """Train on a folder of class folders, evaluate on held-out images, and export.

    Prints the split sizes first. The run folder gets model.keras (with its class names),
    run.json (settings, data, every file of each split, history, metrics, exports) and README.md.

    Example: tltk train photos/ --backbone mobilenet_v2 --out runs/photos --quantize int8
    """
    from tltk.distribute import strategy_named
    from tltk.workflow import train_from_directory

    strategy = None if distribute is None else strategy_named(distribute)  # before TF runs
    d = _train_defaults()
    chosen = {k: d[k] if v is None else v for k, v in options.items()}
    run = train_from_directory(
        data_dir,
        out_dir,
        weights=None if weights.lower() == "none" else weights,
        augment=None if augment == "none" else augment,
        quantize=quantize or d["quantize"],
        on_data=_print_data,
        distribute=strategy,
        verbose=_verbosity(quiet),
        **chosen,
    )
    if run.export is not None:  # not on a worker other than the chief
        _print_run(run)


def _model_file(path):
    """A run folder's `model.keras`, or `path` itself."""
    from tltk import run_record

    path = pathlib.Path(path)
    if path.is_dir() and (path / run_record.RUN_FILE).is_file():
        return path / run_record.MODEL_FILE
    return path


def _predictor(model_path, class_names):
    """`tltk.load_exported(model_path)`, named by `--class-names` when the file names none."""
    from tltk.export import load_exported

    predictor = load_exported(_model_file(model_path))
    if class_names is not None and predictor.heads is not None:
        raise ValueError(
            f"{model_path} has several heads {list(predictor.heads)}; --class-names names the "
            "classes of one output. Drop it (export the model with labels per head)."
        )
    if class_names is not None:
        numbered = [str(i) for i in range(len(predictor.class_names))]
        if len(class_names) != len(numbered):
            raise ValueError(
                f"--class-names gives {len(class_names)} names, but {model_path} has "
                f"{len(numbered)} outputs."
            )
        if predictor.class_names not in (numbered, class_names):
            raise ValueError(
                f"{model_path} already names its classes {predictor.class_names}; drop "
                "--class-names."
            )
        predictor.class_names = list(class_names)
    return predictor


@main.command("evaluate")
@click.argument("model_path", type=click.Path(exists=True))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), required=False)
@click.option("--out", "out_dir", default=None, help="Folder for report.json and plots.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_CLASS_NAMES_OPTION
@_runs_library
@_trusting_hub_handles
def evaluate_command(model_path, data_dir, out_dir, batch_size, class_names):
    """Evaluate a run folder on its held-out split, or a .keras, SavedModel or .tflite model on
    a folder (its test/ split if it has one). A folder the model trained on is named in a warning.

    Example: tltk evaluate runs/photos

    Example: tltk evaluate runs/photos/export/model_int8.tflite photos_test/ --out int8_report
    """
    import dataclasses

    from tltk import data as tltk_data
    from tltk import run_record
    from tltk.evaluate import evaluate

    predictor = _predictor(model_path, class_names)
    run_dir, record = run_record.find(model_path)
    size = predictor.input_shape[:2]
    if data_dir is None:
        if record is None:
            raise ValueError(
                f"{model_path} is not in a run folder (no {run_record.RUN_FILE}): pass a data "
                "folder too, or a run folder written by `tltk train`."
            )
        data, names, where = _held_out(record, size, batch_size)
        click.echo(f"Evaluating on the held-out {where} of {run_dir}.")
    else:
        loaded = tltk_data.from_directory(
            data_dir, image_size=size, batch_size=batch_size, validation_split=0.0
        )
        split = next(s for s in ("test", "validation", "train") if s in loaded.sources)
        data = dataclasses.replace(loaded, test=getattr(loaded, split))
        names = list(loaded.class_names)
        if record is not None:
            _warn_trained_on(record, run_dir, loaded.sources[split], data_dir)
    if names != list(predictor.class_names):
        numbered = predictor.class_names == [str(i) for i in range(len(predictor.class_names))]
        fix = (
            "pass --class-names with the model's class names, in output order"
            if numbered
            else "evaluate on a folder with the model's class folders"
        )
        raise ValueError(
            f"The data has classes {names}, but {model_path} predicts {predictor.class_names}: "
            f"{fix}."
        )
    report = evaluate(predictor, data, class_names=names, out_dir=out_dir)
    click.echo(report.summary())
    _print_skipped(report.skipped)
    if out_dir:
        click.echo(f"Report: {report.files['report']}")


def _held_out(record, size, batch_size):
    """A run's held-out split as ImageData-like `(images, labels)`, its names and description."""
    import numpy as np

    from tltk import run_record
    from tltk.data.images import load_images

    split = record["data"]["held_out_split"]
    paths, labels = run_record.split_files(record, split)
    images, kept, skipped = load_images(paths, size)
    _print_skipped(skipped)
    if not kept:
        raise ValueError(
            f"None of the {len(paths)} held-out files of this run can be read (moved or deleted "
            f"from {record['data']['folder']}?). Pass a data folder to evaluate on."
        )
    data = (images.numpy()[kept].astype("float32"), np.asarray(labels)[kept])
    return data, record["data"]["class_names"], f"{split} split ({len(kept)} images)"


def _warn_trained_on(record, run_dir, sources, data_dir):
    from tltk import run_record

    used = run_record.used_in_training(record, [os.fsdecode(p) for p in sources])
    if used:
        warnings.warn(
            f"{len(used)} of the {len(sources)} images evaluated in {data_dir} were used to "
            f"train or validate this model ({run_dir / run_record.RUN_FILE}): accuracy on them "
            f"says little about new images. Run `tltk evaluate {run_dir}` to evaluate on its "
            "held-out split.",
            stacklevel=2,
        )


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
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write every prediction (and every skipped file) to a .csv or .json file.",
)
@_CLASS_NAMES_OPTION
@_runs_library
@_trusting_hub_handles
def predict(model_path, inputs, top, output, class_names):
    """Predict classes of images (files or folders) with a run folder, .keras, SavedModel or
    .tflite model; of sentences with a text classifier's .keras file or SavedModel. Unreadable
    images are skipped and listed.

    Example: tltk predict runs/photos cat.jpg more_photos/ --output preds.csv

    Example: tltk predict exports/topics "Heavy rain is expected tonight."
    """
    if output is not None and pathlib.Path(output).suffix.lower() not in (".csv", ".json"):
        raise click.BadParameter("must end in .csv or .json.", param_hint="'--output'")
    predictor = _predictor(model_path, class_names)
    if predictor.takes_text:
        shown, batch, skipped = list(inputs), list(inputs), []
    else:
        from tltk.data.images import load_images

        files = _image_files(inputs)
        images, kept, skipped = load_images(files, predictor.input_shape[:2])
        shown, batch = [files[i] for i in kept], images.numpy()[kept].astype("float32")
    rows_of = _one_head_rows if predictor.heads is None else _head_rows
    lines, rows, columns = rows_of(predictor, shown, batch, top)
    for line in lines:
        click.echo(line)
    _print_skipped(skipped)
    if output is not None:
        failed = [{"input": os.fsdecode(item), "error": reason} for item, reason in skipped]
        _write_rows(output, rows, failed, columns)
        click.echo(
            f"Wrote {len(shown)} prediction(s) and {len(skipped)} skipped file(s) to {output}."
        )
    if not shown:
        raise ValueError("No input could be read; nothing was predicted.")


def _one_head_rows(predictor, shown, batch, top):
    """The printed lines, the rows (one column per class) and the columns of `tltk predict`."""
    probabilities = predictor.predict(batch)[1] if len(shown) else []
    names = predictor.class_names
    lines, rows = [], []
    for item, probs in zip(shown, probabilities):
        best = probs.argsort()[::-1][:top]
        lines.append(f"{item}: " + ", ".join(f"{names[i]} {probs[i]:.3f}" for i in best))
        rows.append(
            {
                "input": str(item),
                "prediction": names[int(probs.argmax())],
                "probability": float(probs.max()),
                "error": "",
                **{name: float(p) for name, p in zip(names, probs)},
            }
        )
    return lines, rows, ["input", "prediction", "probability", "error", *names]


def _head_rows(predictor, shown, batch, top):
    """`_one_head_rows` for a model with several heads: each head on each input's line; per
    labelled head a `<head>` column (the top class) and `<head>.<class>` columns, per
    regression head `<head>` (or `<head>.<i>`) values."""
    predictions = predictor.predict(batch) if len(shown) else {}
    lines, rows = [], []
    for i, item in enumerate(shown):
        row, parts = {"input": str(item), "error": ""}, []
        for head, prediction in predictions.items():
            if isinstance(prediction, tuple):
                names, probs = predictor.class_names[head], prediction[1][i]
                best = probs.argsort()[::-1][:top]
                parts.append(f"{head}: " + ", ".join(f"{names[j]} {probs[j]:.3f}" for j in best))
                row[head] = prediction[0][i]
                row.update({f"{head}.{name}": float(p) for name, p in zip(names, probs)})
            else:
                values = prediction[i]
                parts.append(f"{head}: " + ", ".join(f"{v:.4g}" for v in values))
                keys = [head] if len(values) == 1 else [f"{head}.{j}" for j in range(len(values))]
                row.update({key: float(v) for key, v in zip(keys, values)})
        lines.append(f"{item}: " + "; ".join(parts))
        rows.append(row)
    columns = dict.fromkeys(["input", "error"] + [key for row in rows for key in row])
    return lines, rows, list(columns)


def _write_rows(path, rows, failed, columns):
    """Writes prediction rows and skipped files as CSV (`columns`) or JSON."""
    import csv
    import io
    import json

    from tltk import atomic

    if pathlib.Path(path).suffix.lower() == ".json":
        text = json.dumps({"predictions": rows, "skipped": failed}, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, restval="")
        writer.writeheader()
        writer.writerows(rows + failed)
        text = buffer.getvalue()
    atomic.write_text(path, text)


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
@click.argument("model_path", type=click.Path(exists=True))
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
@_runs_library
@_trusting_hub_handles
def export_command(model_path, out_dir, quantize, data_dir, overwrite):
    """Export a .keras model (or a run folder's) as a SavedModel and TFLite files, checked
    against Keras. A model with several heads keeps its own class names per head; --data then
    only gives images (for int8 calibration and the parity gate).

    Example: tltk export runs/photos/model.keras exports/photos --quantize int8 --data photos/
    """
    from tltk import data as tltk_data
    from tltk.export import export
    from tltk.model_file import load_model

    from tltk.transfer_model import class_names_of

    model = load_model(_model_file(model_path))
    samples, class_names = None, class_names_of(model)
    if data_dir:
        data = tltk_data.from_directory(
            data_dir, image_size=tuple(model.input_shape[1:3]), validation_split=0.0
        )
        several = isinstance(model.output, dict)  # labels per head: the model's own
        if not several and class_names is not None and class_names != list(data.class_names):
            raise ValueError(
                f"{data_dir} has classes {data.class_names}, but {model_path} predicts "
                f"{class_names}: pass --data a folder with the model's classes."
            )
        samples = data.train
        class_names = None if several else data.class_names
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
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--backbone",
    "backbones",
    multiple=True,
    help="A registry name to rank (repeat for each; `tltk backbones` lists them).",
)
@click.option(
    "--model",
    "model_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A .keras model built by tltk to rank as its own candidate (repeatable).",
)
@click.option(
    "--method",
    type=click.Choice(["logme", "leep", "hscore", "knn", "linear", "all"]),
    default="logme",
    show_default=True,
)
@click.option("--max-examples", type=click.IntRange(min=2), default=None, help="Score a subset.")
@click.option(
    "--image-size",
    type=click.IntRange(min=8),
    default=None,
    help="Side the images are read at (default: the largest candidate input size).",
)
@click.option(
    "--plot",
    "plot_path",
    default="ranking.png",
    show_default=True,
    help="Where the bar chart goes (PNG).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_runs_library
@_trusting_hub_handles
def rank(data_dir, backbones, model_files, method, max_examples, image_size, plot_path, quiet):
    """Rank backbones by how well their features fit a folder of labelled images, before any
    training (LogME by default); prints the table and writes a bar chart.

    Example: tltk rank photos/ --backbone mobilenet_v2 --backbone efficientnet_b0
    """
    from tltk import data as tltk_data
    from tltk.backbones import get_backbone
    from tltk.model_file import load_model
    from tltk.ranking import rank_backbones

    if not backbones and not model_files:
        raise click.UsageError("Name at least one candidate: --backbone NAME or --model FILE.")
    candidates = [*backbones, *(load_model(path) for path in model_files)]
    if image_size is None:
        sizes = [get_backbone(name).default_input_size for name in backbones]
        sizes += [model.input_shape[1:3] for model in candidates if not isinstance(model, str)]
        sides = [max(size) for size in sizes if size and None not in size]
        if not sides:
            raise click.UsageError("No candidate has a fixed input size: pass --image-size.")
        image_size = max(sides)
    data = tltk_data.from_directory(
        data_dir, image_size=(image_size, image_size), validation_split=0.0
    )
    _print_skipped(data.skipped)
    ranking = rank_backbones(
        data, candidates, method=method, max_examples=max_examples, verbose=0 if quiet else 1
    )
    if quiet:
        click.echo(ranking.table())
    click.echo(f"Best: {ranking.best.name}. Bar chart: {ranking.plot(plot_path)}")


@main.command("adapt")
@click.argument("model_path", type=click.Path(exists=True))
@click.argument("source_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("target_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--method",
    type=click.Choice(["self_training", "coral", "dann", "adabn"]),
    default="self_training",
    show_default=True,
)
@click.option("--out", "out_path", required=True, help="Where the adapted model goes (.keras).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--quiet", is_flag=True, help="No line per epoch.")
@_runs_library
@_trusting_hub_handles
def adapt_command(model_path, source_dir, target_dir, method, out_path, epochs, quiet):
    """Adapt a trained .keras model (or a run folder's) to unlabelled target images: its
    labelled source folder (class subfolders) and a folder of target images (searched
    recursively; subfolder names are not read as labels). Warns when adapting likely hurt.

    Example: tltk adapt runs/photos/model.keras photos/ phone_photos/ --method dann --out a.keras
    """
    from tltk import atomic
    from tltk import data as tltk_data
    from tltk.adapt import adapt
    from tltk.data.folders import list_image_files
    from tltk.data.images import load_images
    from tltk.model_file import load_model
    from tltk.transfer_model import class_names_of

    if pathlib.Path(out_path).suffix != ".keras":
        raise click.BadParameter(f"must end in .keras. Received: {out_path}", param_hint="'--out'")
    model = load_model(_model_file(model_path))
    size = tuple(model.input_shape[1:3])
    source = tltk_data.from_directory(source_dir, image_size=size, validation_split=0.0)
    _print_skipped(source.skipped)
    names = class_names_of(model)
    if names is not None and list(names) != list(source.class_names):
        raise ValueError(
            f"{source_dir} has classes {source.class_names}, but {model_path} predicts {names}: "
            "pass a source folder with the model's classes."
        )
    files, skipped = list_image_files(target_dir)
    images, kept, unreadable = load_images(files, size)
    _print_skipped(skipped + unreadable)
    if len(kept) < 2:
        raise ValueError(
            f"{target_dir} has {len(kept)} readable image(s): pass a folder of target images."
        )
    result = adapt(
        model,
        source,
        images.numpy()[kept],
        method=method,
        epochs=epochs,
        verbose=0 if quiet else 1,
    )
    with atomic.writing(out_path) as partial:
        model.save(partial)
    accuracy = result.history["source_eval_accuracy"]
    click.echo(
        f"Adapted {len(kept)} target images ({method}, {result.settings['epochs']} epochs); "
        "source accuracy "
        f"{100 * result.before['source_eval_accuracy']:.1f}% -> {100 * accuracy[-1]:.1f}%. "
        f"Saved {out_path}"
    )


@main.command()
@click.option(
    "--source",
    type=click.Choice(["keras_applications", "tfhub", "keras_hub", "tltk"]),
    default=None,
)
@_runs_library
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
@_runs_library
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
