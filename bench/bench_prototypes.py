"""Few-shot with no gradient step: `tltk.build_prototype_classifier` on the digits.

The demo backbone (`tltk_glyphnet`, its shipped weights), support sets of 1 and 5 images per
class drawn per seed from the digits pool of `bench/tasks.py`, accuracy on its fixed test split
(539 images, read once per run). Goal (issue 23): at least 85% from 5 per class; 1 per class is
reported. Writes `bench/results/prototypes.json`.

Usage:

    python bench/bench_prototypes.py              # 3 seeds
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

import numpy as np  # noqa: E402

import tltk  # noqa: E402
from bench import tasks  # noqa: E402
from bench.record import write_record  # noqa: E402

SHOTS = (1, 5)
GOAL = 0.85  # at 5 per class


def run(task, shots, seed):
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(task.pool_y == label), shots, replace=False)
            for label in range(len(task.class_names))
        ]
    )
    start = time.perf_counter()
    model = tltk.build_prototype_classifier(
        "tltk_glyphnet", (task.pool_x[picked], task.pool_y[picked])
    )
    seconds = time.perf_counter() - start
    predicted = model.predict(task.test_x.astype("float32"), batch_size=256, verbose=0).argmax(1)
    return float(np.mean(predicted == task.test_y)), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        task = tasks.digits(pathlib.Path(folder) / "digits")
    record = {"command": " ".join(["python bench/bench_prototypes.py", *sys.argv[1:]])}
    for shots in SHOTS:
        runs = [run(task, shots, seed) for seed in range(args.seeds)]
        accuracies = [a for a, _ in runs]
        mean, spread = statistics.mean(accuracies), statistics.pstdev(accuracies)
        record[f"{shots}_per_class"] = {
            "accuracy": accuracies,
            "mean": mean,
            "std": spread,
            "seconds": [round(s, 2) for _, s in runs],
        }
        verdict = ("PASS" if mean >= GOAL else "MISS") if shots == 5 else "reported"
        print(
            f"{shots} per class: {100 * mean:.1f} +- {100 * spread:.1f}% test accuracy ({verdict})"
        )
    write_record(REPO / "bench" / "results" / "prototypes.json", record)


if __name__ == "__main__":
    main()
