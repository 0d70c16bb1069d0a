"""Two heads on one backbone against each head trained alone: digit and odd/even on the digits.

The demo backbone (`tltk_glyphnet`, its shipped weights); per seed, `--per-class` images of each
digit drawn from the digits pool of `bench/tasks.py` (70% train, 30% validation, stratified by
digit), and its fixed test split (539 images) read at the end. Three models per seed, each by
`tltk.fine_tune` with the same settings (the head stage on the whole model, 5 epochs, then 10
epochs with the backbone unfrozen), so each trains the same number of steps over the backbone:

- `two_heads`: `build_classifier("tltk_glyphnet", {"digit": 10, "parity": 2})`, both heads
  weighted 1, the weights chosen by the heads' mean validation accuracy;
- `digit_alone`, `parity_alone`: one head each, `cache_features=False` (the same plan; with the
  cache the head stage would train on features to convergence, a different recipe);
- reported besides, not part of the goal: each head alone with `fine_tune`'s defaults (the
  cached head stage and its linear probe).

Goal (issue 23): each head of the two-head model at least as accurate as the same head trained
alone for the same compute (mean over the seeds). Writes `bench/results/heads.json`.

Usage:

    python bench/bench_heads.py              # 3 seeds, 10 digits per class
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import tree  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import tltk  # noqa: E402
from bench import tasks  # noqa: E402
from bench.record import write_record  # noqa: E402

EPOCHS = 10
HEADS = {"digit": 10, "parity": 2}


def labels_of(digits):
    """The two heads' labels of digit labels."""
    return {"digit": digits, "parity": digits % 2}


def draw(task, per_class, seed):
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(task.pool_y == label), per_class, replace=False)
            for label in range(len(task.class_names))
        ]
    )
    return task.pool_x[picked], task.pool_y[picked]


def train(x, y, heads, seed, **settings):
    """Fine-tunes a model with `heads` (a dict: several heads; a name: that head alone) on the
    drawn images; returns it and the seconds `fine_tune` took."""
    keras.utils.set_random_seed(seed)
    labels, classes = labels_of(y), heads
    if isinstance(heads, str):
        labels, classes = labels[heads], HEADS[heads]
    # The same split, stratified by digit, for every model of a seed.
    fit, held = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
    train_data, validation = (
        tltk.data.from_arrays(
            x[rows], tree.map_structure(lambda a: a[rows], labels), validation_split=0.0, seed=seed
        ).train
        for rows in (fit, held)
    )
    model = tltk.build_classifier("tltk_glyphnet", classes)
    start = time.perf_counter()
    tltk.fine_tune(model, train_data, validation, epochs=EPOCHS, verbose=0, **settings)
    return model, time.perf_counter() - start


def accuracy(model, task, head):
    predicted = model.predict(task.test_x.astype("float32"), batch_size=256, verbose=0)
    if isinstance(predicted, dict):
        predicted = predicted[head]
    return float(np.mean(predicted.argmax(1) == labels_of(task.test_y)[head]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        task = tasks.digits(pathlib.Path(folder) / "digits")
    runs = []
    for seed in range(args.seeds):
        x, y = draw(task, args.per_class, seed)
        run = {"seed": seed}
        model, seconds = train(x, y, HEADS, seed, head_epochs=5)
        run["two_heads"] = {h: accuracy(model, task, h) for h in HEADS} | {"seconds": seconds}
        for head in HEADS:
            model, seconds = train(x, y, head, seed, head_epochs=5, cache_features=False)
            run[f"{head}_alone"] = {head: accuracy(model, task, head), "seconds": seconds}
            model, seconds = train(x, y, head, seed)
            run[f"{head}_alone_defaults"] = {head: accuracy(model, task, head), "seconds": seconds}
        print({k: v for k, v in run.items()}, flush=True)
        runs.append(run)

    def mean(key, head):
        return statistics.mean(r[key][head] for r in runs)

    summary, goals = {}, {}
    for head in HEADS:
        two, alone = mean("two_heads", head), mean(f"{head}_alone", head)
        summary[head] = {
            "two_heads": two,
            "alone": alone,
            "alone_defaults": mean(f"{head}_alone_defaults", head),
            "per_seed_difference": [r["two_heads"][head] - r[f"{head}_alone"][head] for r in runs],
        }
        goals[f"{head}: two heads {100 * two:.2f}% >= alone {100 * alone:.2f}% (same plan)"] = (
            two >= alone
        )
        print(
            f"{head}: two heads {100 * two:.2f}%, alone {100 * alone:.2f}% "
            f"({'PASS' if two >= alone else 'MISS'}); alone with defaults "
            f"{100 * summary[head]['alone_defaults']:.2f}%"
        )
    seconds = {
        key: statistics.mean(r[key]["seconds"] for r in runs)
        for key in ("two_heads", "digit_alone", "parity_alone")
    }
    print(f"mean fine_tune seconds: {seconds}")
    record = {
        "command": " ".join(["python bench/bench_heads.py", *sys.argv[1:]]),
        "task": f"digits, {args.per_class} per class (70% train / 30% validation), tltk_glyphnet",
        "seeds": args.seeds,
        "summary": summary,
        "seconds": seconds,
        "goals": goals,
        "runs": runs,
    }
    write_record(REPO / "bench" / "results" / "heads.json", record)


if __name__ == "__main__":
    main()
