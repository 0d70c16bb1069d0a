"""Mixed precision on the digits: accuracy, training time and export parity, per dtype policy.

For each seed and each policy (`float32`, `mixed_bfloat16`, `mixed_float16`), `tltk_glyphnet`
with its shipped weights (`weights="tltk"`) is built with `dtype_policy=` and trained by
`tltk.fine_tune` (default recipe, `epochs=6`) on scikit-learn's digits at 32x32 (70% of them,
a fifth of which validates), then scored on the 30% held out. Each model is exported to float32
and float16 TFLite files (and a SavedModel) with `parity="warn"`; the record keeps every file's
parity figures against its own Keras model, which is how the mixed-model bounds of
`tltk.export.parity` were chosen. The goal of issue 20: `mixed_bfloat16` within 1 point of
`float32` accuracy (mean over seeds). On CPU, mixed precision is slower than float32 (no float16
or bfloat16 matrix units are used); the times are recorded, not judged.

Usage:

    python bench/bench_mixed_precision.py            # 3 seeds, about 5 minutes on 2 cores
    python bench/bench_mixed_precision.py --seeds 0  # one seed
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import tltk  # noqa: E402
from bench.bench_export import accuracy, digits_split  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk.backbones import glyphnet  # noqa: E402

RESULTS = REPO / "bench" / "results" / "mixed_precision.json"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
QUANTIZATIONS = ("float32", "float16")
EPOCHS = 6
GOAL_POINTS = 1.0  # mixed_bfloat16 within 1 point of float32 (issue 20)


def run(seed, policy, data, folder):
    """One model: trained, scored and exported; its row of the record."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = data
    keras.utils.set_random_seed(seed)
    model = tltk.build_classifier(glyphnet.NAME, 10, weights="tltk", dtype_policy=policy)
    batches = tf.data.Dataset.from_tensor_slices((train_x, train_y))
    batches = batches.shuffle(len(train_x), seed=seed)
    validation = tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(64)
    start = time.perf_counter()
    tltk.fine_tune(model, batches.batch(32), validation, epochs=EPOCHS, verbose=0)
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failing file is recorded, not raised
        report = tltk.export(
            model,
            folder / f"{policy}_{seed}",
            quantization=list(QUANTIZATIONS),
            parity_data=test_x,
            parity="warn",
        )
    parity = {
        f"{f.format}_{f.quantization}": {
            "max_abs_diff": f.parity.max_abs_diff,
            "mean_abs_diff": f.parity.mean_abs_diff,
            "top1_agreement": f.parity.top1_agreement,
            "passed": f.parity.passed,
        }
        for f in report.files
    }
    row = {
        "seed": seed,
        "policy": policy,
        "optimizer": type(model.optimizer).__name__,
        "test_accuracy": accuracy(model, test_x, test_y),
        "fine_tune_seconds": round(seconds, 1),
        "parity": parity,
    }
    print(row, flush=True)
    return row


def summary(rows):
    """Mean test accuracy and time per policy, and the 1-point goal of mixed_bfloat16."""
    means = {}
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        means[policy] = {
            "test_accuracy": float(np.mean([r["test_accuracy"] for r in mine])),
            "fine_tune_seconds": float(np.mean([r["fine_tune_seconds"] for r in mine])),
            "max_abs_diff_float32_tflite": max(
                r["parity"]["tflite_float32"]["max_abs_diff"] for r in mine
            ),
            "min_top1_agreement_float32_tflite": min(
                r["parity"]["tflite_float32"]["top1_agreement"] for r in mine
            ),
        }
    gap = 100 * (means["float32"]["test_accuracy"] - means["mixed_bfloat16"]["test_accuracy"])
    return {
        "per_policy": means,
        "bfloat16_gap_points": round(gap, 2),
        "bfloat16_within_goal": gap <= GOAL_POINTS,
    }


def main(seeds=(0, 1, 2)):
    glyphnet.verified_weights_path()
    train_x, test_x, train_y, test_y = digits_split()
    train_x, val_x, train_y, val_y = train_test_split(
        train_x, train_y, test_size=0.2, stratify=train_y, random_state=0
    )
    data = (train_x, train_y), (val_x, val_y), (test_x, test_y)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            for policy in POLICIES:
                rows.append(run(seed, policy, data, pathlib.Path(folder)))
    record = {
        "what": __doc__.split("\n\n")[0],
        "cpu": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "epochs": EPOCHS,
        "summary": summary(rows),
        "runs": rows,
    }
    write_record(RESULTS, record)
    print(record["summary"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    main(tuple(parser.parse_args().seeds))
