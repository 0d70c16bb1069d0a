"""Unsupervised domain adaptation with `tltk.adapt`: the digits to three shifted versions.

Source: the digits of `bench/tasks.py` (scikit-learn's handwritten digits at 32x32), 50 labelled
images per class drawn per seed from the pool (10 more per class for `fine_tune`'s validation).
Targets: the shifts of `bench/shifts.py` (MNIST-M-like textured colour backgrounds, rotation,
blur + fade + noise), generated offline; the rest of the pool (about 660 images), shifted, is the
unlabelled target set that `adapt` sees, and the digits' fixed test split (539 images), shifted,
scores it (target labels used only there). Per seed: one source-only model (`tltk.fine_tune` on
`tltk_glyphnet`, the model the methods start from), then each method adapts a copy of it to each
shift with `adapt`'s defaults except `epochs` (5, not 10, to keep the run near 30 minutes on 2
busy cores; on the development seeds the trained methods end within 2 points of AdaBN alone).

Goals (issue 22): at least +15 points over source-only on `textured` with some method; no run
(seed, shift, method) ends below its seed's source-only unless `adapt` warned. Also reported:
the warnings' confusion over all runs (fired or not, below source-only or not). The warning
rules were chosen on development seeds 100 and 101 (`--first-seed 100 --seeds 2`), apart from
the reported seeds 0, 1, 2. Writes `bench/results/adapt.json`.

Usage:

    python bench/bench_adapt.py            # 3 seeds, all shifts and methods (~30 min, 2 cores)
    python bench/bench_adapt.py --quick    # 1 seed, 3 epochs
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tltk  # noqa: E402
from bench import shifts, tasks  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk.adapt import METHODS  # noqa: E402

SOURCE_PER_CLASS = 50
VALIDATION_PER_CLASS = 10
GOAL_SHIFT, GOAL_POINTS = "textured", 0.15


def split(task, seed):
    """Indexes into the pool: labelled source, its validation, and the unlabelled target rest."""
    rng = np.random.default_rng(seed)
    source, validation = [], []
    for label in range(len(task.class_names)):
        picked = rng.permutation(np.flatnonzero(task.pool_y == label))
        source += picked[:SOURCE_PER_CLASS].tolist()
        validation += picked[SOURCE_PER_CLASS : SOURCE_PER_CLASS + VALIDATION_PER_CLASS].tolist()
    rest = np.setdiff1d(np.arange(len(task.pool_y)), source + validation)
    return np.array(source), np.array(validation), rest


def batches(x, y, seed=0):
    return (
        tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
        .shuffle(len(y), seed=seed)
        .batch(32)
    )


def accuracy(model, x, y):
    predicted = model.predict(x.astype("float32"), batch_size=256, verbose=0).argmax(1)
    return float(np.mean(predicted == y))


def run_seed(task, seed, shift_names, methods, epochs):
    source, validation, rest = split(task, seed)
    keras_seed = 1000 + seed
    tf.keras.utils.set_random_seed(keras_seed)
    model = tltk.build_classifier("tltk_glyphnet", len(task.class_names))
    start = time.perf_counter()
    tltk.fine_tune(
        model,
        batches(task.pool_x[source], task.pool_y[source], seed),
        batches(task.pool_x[validation], task.pool_y[validation]),
        verbose=0,
    )
    weights = model.get_weights()
    rows = {"fine_tune_seconds": round(time.perf_counter() - start, 1)}
    for k, name in enumerate(shift_names):
        target_x = shifts.shift(name, task.pool_x[rest], seed=10 * seed + k)
        test_x = shifts.shift(name, task.test_x, seed=10_000 + k)
        row = {"source_only": accuracy(model, test_x, task.test_y)}
        for method in methods:
            tf.keras.utils.set_random_seed(keras_seed)
            adapted = tltk.build_classifier("tltk_glyphnet", len(task.class_names))
            adapted.set_weights(weights)
            start = time.perf_counter()
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                result = tltk.adapt(
                    adapted,
                    (task.pool_x[source], task.pool_y[source]),
                    target_x,
                    method=method,
                    epochs=epochs,
                    target_labels=task.pool_y[rest],
                    seed=seed,
                    verbose=0,
                )
            row[method] = {
                "test_accuracy": accuracy(adapted, test_x, task.test_y),
                "warned": bool(result.warnings),
                "warnings": result.warnings,
                "source_accuracy": [
                    result.before["source_eval_accuracy"],
                    result.history["source_eval_accuracy"][-1],
                ],
                "target_accuracy_per_epoch": result.history["target_accuracy"],
                "signals": {
                    name: values[-1]
                    for name, values in result.history.items()
                    if name != "target_accuracy"
                },
                "before": result.before,
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(
                f"seed {seed} {name:<14} {method:<14} source-only {100 * row['source_only']:.1f}"
                f" -> {100 * row[method]['test_accuracy']:.1f}"
                f"{'  (warned)' if result.warnings else ''}  [{row[method]['seconds']} s]",
                flush=True,
            )
        rows[name] = row
    return rows


def summary(runs, shift_names, methods):
    """Per shift and method: mean, std and runs of test accuracy; the goals' verdicts."""
    table, misses = {}, []
    confusion = dict.fromkeys(("fired_below", "fired_not_below", "silent_below", "silent"), 0)
    for name in shift_names:
        base = [run[name]["source_only"] for run in runs]
        table[name] = {"source_only": _stats(base)}
        for method in methods:
            values = [run[name][method]["test_accuracy"] for run in runs]
            fired = [run[name][method]["warned"] for run in runs]
            table[name][method] = {**_stats(values), "warned_seeds": sum(fired)}
            for seed, (value, so, warned) in enumerate(zip(values, base, fired)):
                below = value < so
                key = ("fired_" if warned else "silent_") + ("below" if below else "not_below")
                confusion["silent" if key == "silent_not_below" else key] += 1
                if below and not warned:
                    misses.append(f"{method} on {name} (run {seed})")
    best = max(table[GOAL_SHIFT][m]["mean"] for m in methods) if GOAL_SHIFT in table else None
    gain = None if best is None else best - table[GOAL_SHIFT]["source_only"]["mean"]
    return table, gain, misses, confusion


def _stats(values):
    return {
        "mean": statistics.mean(values),
        "std": statistics.pstdev(values),
        "runs": values,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="development runs: seeds from here (100)"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs")
    parser.add_argument("--record", help="write the record here (development runs)")
    parser.add_argument("--shift", action="append", choices=shifts.SHIFTS)
    parser.add_argument("--method", action="append", choices=METHODS)
    args = parser.parse_args(argv)
    seeds, epochs = (1, 3) if args.quick else (args.seeds, args.epochs)
    shift_names, methods = args.shift or list(shifts.SHIFTS), args.method or list(METHODS)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        task = tasks.digits(pathlib.Path(folder) / "digits")
    runs = [
        run_seed(task, seed, shift_names, methods, epochs)
        for seed in range(args.first_seed, args.first_seed + seeds)
    ]
    table, gain, misses, confusion = summary(runs, shift_names, methods)
    for name in shift_names:
        cells = [f"source-only {100 * table[name]['source_only']['mean']:.1f}"] + [
            f"{m} {100 * table[name][m]['mean']:.1f} +- {100 * table[name][m]['std']:.1f}"
            + (
                f" (warned {table[name][m]['warned_seeds']}/{seeds})"
                if table[name][m]["warned_seeds"]
                else ""
            )
            for m in methods
        ]
        print(f"{name:<14} " + ", ".join(cells))
    if gain is not None:
        print(
            f"Best gain on {GOAL_SHIFT}: {100 * gain:+.1f} points "
            f"({'PASS' if gain >= GOAL_POINTS else 'MISS'}, goal +{100 * GOAL_POINTS:.0f})"
        )
    print(
        f"Warnings: fired on {confusion['fired_below']} of "
        f"{confusion['fired_below'] + confusion['silent_below']} runs below source-only, and on "
        f"{confusion['fired_not_below']} of {confusion['fired_not_below'] + confusion['silent']} "
        "others"
    )
    print(
        "Below source-only without a warning: "
        + (", ".join(misses) + " (MISS)" if misses else "none (PASS)")
    )
    record = {
        "command": " ".join(["python bench/bench_adapt.py", *sys.argv[1:]]),
        "seeds": list(range(args.first_seed, args.first_seed + seeds)),
        "epochs": epochs,
        "table": table,
        "textured_gain": gain,
        "below_source_only_unwarned": misses,
        "warning_confusion": confusion,
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    full = not (args.quick or args.shift or args.method or args.first_seed)
    if full or args.record:
        write_record(args.record or REPO / "bench" / "results" / "adapt.json", record)


if __name__ == "__main__":
    main()
