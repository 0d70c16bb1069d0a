"""Measures tltk's training recipe on the shipped GlyphNet backbone and scikit-learn's real digits.

The digits go through `tltk.datasets.digits` (class folders of PNGs) and `tltk.data.from_directory`,
as a user's data would. Two figures, printed and written to `bench/results/training.json`:

1. Cached stage 1. Ten epochs of head training on the frozen pretrained backbone, all 1,797
   digits (80% train, 20% validation, batches of 32): `fine_tune(head_epochs=10, epochs=0)` on
   cached features against plain `model.compile` + `model.fit` with the same optimizer and
   schedule, and against `fine_tune(cache_features=False)`. Wall time of the training call alone
   (feature extraction, compilation and tracing included; building the model, the same for all
   three, is timed apart), the median of interleaved repeats, and the last epoch's validation
   accuracy. GlyphNet at its native 32x32 and at 64x64, where the backbone
   costs four times as much per image (the weights were trained at 32x32, so 64x64 accuracy is
   lower; both paths see the same features), and `mobilenet_v2` at 96x96 (random weights, as no
   ImageNet weights can be downloaded here: its time is the figure, its accuracy only shows that
   both paths agree).
2. The demo transfer task: 10 labelled digits per class to train on, 10 per class to validate,
   and a fixed stratified 30% of the digits (539) held out to test. Three ways to spend the same
   40 epochs, mean of seeds 0, 1, 2 (test accuracy; validation accuracy beside it):
   head-only training (`fine_tune(head_epochs=40, epochs=0)`), naive full fine-tuning at the head's
   learning rate (everything trainable from the start, Adam, constant rate, the weights of the last
   epoch; once with BatchNorm frozen as tltk does, once with BatchNorm training as plain
   `model.trainable = True` gives), and `fine_tune` (`FINE_TUNE`, otherwise its defaults).
   Under two rate protocols: the head's rate from `find_lr` on the frozen model (per seed), and
   one fixed rate, 3e-3, for every method (a rate that also suits training the whole network).
3. Recipes, on development seeds 8-12 (the same task; each seed scored on the ~1,060 pool digits
   outside its training and validation sets, never on the test set): the gain over head-only
   training of fine_tune's default (the whole backbone at once, `lr_decay=0.7`) and of ULMFiT's
   gradual unfreezing (`lr_decay=1/2.6`), under both rate protocols.

Usage:

    python bench/bench_training.py                 # all parts, about 20 minutes on 2 cores
    python bench/bench_training.py --part timing   # only part 1
"""

from __future__ import annotations

import argparse
import functools
import json
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
import tensorflow as tf  # noqa: E402

import tltk  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk.backbones import glyphnet  # noqa: E402
from tltk.datasets import digits  # noqa: E402
from tltk.lr_finder import find_lr  # noqa: E402
from tltk.schedules import warmup_cosine  # noqa: E402
from tltk.training import fine_tune  # noqa: E402

RESULTS = REPO / "bench" / "results" / "training.json"
LEARNING_RATE = 3e-3  # stage 1 in the timing runs
FIXED_LR = 3e-3
TIMING_EPOCHS = 10
TIMING_REPEATS = 3
# (backbone, image size): GlyphNet at its native size and at 4x the pixels; a Keras Applications
# backbone at a size users train it at on a CPU (random weights: only time is compared there).
TIMING_CASES = ((glyphnet.NAME, 32), (glyphnet.NAME, 64), ("mobilenet_v2", 96))
SEEDS = (0, 1, 2)
PROTOCOLS = ("head_lr_from_find_lr", "fixed_lr")
# Part 3: seeds apart from SEEDS, scored on the pool digits that a seed leaves out of its training
# and validation sets, never on the test set. fine_tune's default recipe was chosen on seeds 3-7
# this way (among 10 settings); these seeds confirm it.
DEV_SEEDS = (8, 9, 10, 11, 12)
RECIPES = {
    "all_lr_decay_0.7": {"unfreeze": "all", "lr_decay": 0.7},
    "gradual_lr_decay_1/2.6": {"unfreeze": "gradual", "lr_decay": 1 / 2.6},
}
SHOTS = 10
VALIDATION_SHOTS = 10
BATCH_SIZE = 16
TOTAL_EPOCHS = 40
# And fine_tune's defaults: unfreeze="all", lr_decay=0.7, fine_tune_lr=learning_rate/2.
FINE_TUNE = {"head_epochs": 5, "epochs": 35}
HEAD_ONLY = {"head_epochs": TOTAL_EPOCHS, "epochs": 0}


def pretrained(seed, input_size=32, backbone=glyphnet.NAME):
    """The classifier on `backbone`: GlyphNet with its shipped weights, anything else random."""
    keras.utils.set_random_seed(seed)
    return tltk.build_classifier(
        backbone,
        10,
        input_shape=(input_size, input_size, 3),
        weights="tltk" if backbone == glyphnet.NAME else None,
    )


def plain_fit(model, data):
    """`model.fit` on the frozen model, as fine_tune's stage 1 trains it but without the cache."""
    steps = int(data.train.cardinality())
    schedule = warmup_cosine(LEARNING_RATE, steps * TIMING_EPOCHS, warmup=0.1)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        data.train, validation_data=data.validation, epochs=TIMING_EPOCHS, verbose=0
    )
    return history.history["val_accuracy"][-1]


def stage_one(model, data, cache):
    result = fine_tune(
        model,
        data.train,
        data.validation,
        head_epochs=TIMING_EPOCHS,
        epochs=0,
        learning_rate=LEARNING_RATE,
        cache_features=cache,
        early_stopping=False,
        verbose=0,
    )
    assert result.stages[0]["cached"] is cache
    return result.histories[0]["val_accuracy"][-1]


def timing(root, size, backbone):
    data = tltk.data.from_directory(
        root, image_size=(size, size), validation_split=0.2, seed=0, batch_size=32
    )
    runs = {
        "model.fit": plain_fit,
        "fine_tune cached": lambda model, data: stage_one(model, data, True),
        "fine_tune uncached": lambda model, data: stage_one(model, data, False),
    }
    seconds, accuracy, build = {k: [] for k in runs}, {}, []
    for _ in range(TIMING_REPEATS):
        for name, run in runs.items():
            start = time.perf_counter()
            model = pretrained(0, size, backbone)
            build.append(time.perf_counter() - start)
            start = time.perf_counter()
            accuracy[name] = run(model, data)
            seconds[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    record = {
        "backbone": backbone,
        "weights": "tltk" if backbone == glyphnet.NAME else None,
        "image_size": size,
        "train_images": int(sum(data.class_counts["train"].values())),
        "validation_images": int(sum(data.class_counts["validation"].values())),
        "epochs": TIMING_EPOCHS,
        "seconds": {k: [round(s, 2) for s in v] for k, v in seconds.items()},
        "model_build_median_seconds": round(statistics.median(build), 2),
        "median_seconds": {k: round(v, 2) for k, v in median.items()},
        "speedup_vs_model_fit": round(median["model.fit"] / median["fine_tune cached"], 2),
        "speedup_with_model_build": round(
            (median["model.fit"] + statistics.median(build))
            / (median["fine_tune cached"] + statistics.median(build)),
            2,
        ),
        "last_epoch_val_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "accuracy_gap_points": round(
            100 * abs(accuracy["model.fit"] - accuracy["fine_tune cached"]), 2
        ),
    }
    print(
        f"  {backbone} {size}x{size}: model.fit {median['model.fit']:.1f} s "
        f"(val {accuracy['model.fit']:.4f}), "
        f"cached {median['fine_tune cached']:.1f} s (val {accuracy['fine_tune cached']:.4f}), "
        f"uncached fine_tune {median['fine_tune uncached']:.1f} s: "
        f"{record['speedup_vs_model_fit']:.1f}x faster, "
        f"{record['accuracy_gap_points']:.2f} points apart "
        f"(building the model, not timed in these: {record['model_build_median_seconds']:.1f} s; "
        f"{record['speedup_with_model_build']:.1f}x with it)"
    )
    return record


def arrays(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


def few_shot_split(pool_x, pool_y, seed):
    # The global seed first: the shuffle's order depends on it too, so without this a seed's
    # figures would depend on what the process ran before (`--part transfer` alone or after timing).
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(pool_y == c), SHOTS + VALIDATION_SHOTS, replace=False)
        for c in range(10)
    ]
    train = np.concatenate([p[:SHOTS] for p in picked])
    val = np.concatenate([p[SHOTS:] for p in picked])
    train_ds = tf.data.Dataset.from_tensor_slices((pool_x[train], pool_y[train]))
    train_ds = train_ds.shuffle(len(train), seed=seed).batch(BATCH_SIZE)
    val_ds = tf.data.Dataset.from_tensor_slices((pool_x[val], pool_y[val])).batch(256)
    unused = np.setdiff1d(np.arange(len(pool_y)), np.concatenate([train, val]))
    return train_ds, val_ds, unused


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), 1) == y))


def draws(pool_x, pool_y, seeds, protocol):
    """Per seed: `(seed, train, validation, unused pool indexes, the head's rate)`.

    The head's rate is find_lr's suggestion on the frozen model, or one fixed rate.
    """
    for seed in seeds:
        train, val, unused = few_shot_split(pool_x, pool_y, seed)
        if protocol == "head_lr_from_find_lr":
            rate = find_lr(pretrained(seed), train).suggestion
        else:
            rate = FIXED_LR
        yield seed, train, val, unused, rate


def digit_pools(root):
    """The 32x32 digits under `root`: (pool images, pool labels, test images, test labels)."""
    data = tltk.data.from_directory(
        root, image_size=(32, 32), validation_split=0.0, test_split=0.3, seed=0, batch_size=256
    )
    return (*arrays(data.train), *arrays(data.test))


def naive(seed, train, val, *, learning_rate, train_bn):
    model = pretrained(seed)
    tltk.unfreeze(model, "all", train_bn=train_bn)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(train, validation_data=val, epochs=TOTAL_EPOCHS, verbose=0)
    return model, history.history["val_accuracy"][-1]


def transfer_seed(seed, train, val, test, learning_rate):
    row = {"seed": seed, "learning_rate": learning_rate}
    model = pretrained(seed)
    result = fine_tune(model, train, val, learning_rate=learning_rate, verbose=0, **HEAD_ONLY)
    row["head_only"] = {"test": test(model), "validation": result.best_metric}
    for name, train_bn in (("naive_bn_frozen", False), ("naive_bn_training", True)):
        model, val_acc = naive(seed, train, val, learning_rate=learning_rate, train_bn=train_bn)
        row[name] = {"test": test(model), "validation": val_acc}
    model = pretrained(seed)
    result = fine_tune(model, train, val, learning_rate=learning_rate, verbose=0, **FINE_TUNE)
    row["fine_tune"] = {
        "test": test(model),
        "validation": result.best_metric,
        "best_stage": result.best_stage,
        "restored_stage1": result.restored_stage1,
    }
    print(
        f"    seed {seed}, learning rate {learning_rate:.3g}: "
        + ", ".join(f"{k} {v['test']:.4f}" for k, v in row.items() if isinstance(v, dict))
    )
    return row


def transfer(root):
    """Part 2 on the 32x32 digits under `root`."""
    pool_x, pool_y, test_x, test_y = digit_pools(root)
    test = functools.partial(accuracy, x=test_x, y=test_y)
    protocols = {}
    for protocol in PROTOCOLS:
        print(f"  {protocol}:")
        rows = [
            transfer_seed(seed, train, val, test, rate)
            for seed, train, val, _, rate in draws(pool_x, pool_y, SEEDS, protocol)
        ]
        methods = [k for k, v in rows[0].items() if isinstance(v, dict)]
        mean = {
            m: {
                s: round(float(np.mean([r[m][s] for r in rows])), 4) for s in ("test", "validation")
            }
            for m in methods
        }
        print("    mean test accuracy: " + ", ".join(f"{m} {mean[m]['test']:.4f}" for m in methods))
        protocols[protocol] = {"seeds": rows, "mean": mean}
    return {
        "train_per_class": SHOTS,
        "validation_per_class": VALIDATION_SHOTS,
        "test_images": len(test_y),
        "epochs": TOTAL_EPOCHS,
        "batch_size": BATCH_SIZE,
        "fine_tune_settings": FINE_TUNE,
        **protocols,
    }


def recipes(root):
    """Part 3: head only against fine_tune's unfreezing recipes, on development seeds."""
    pool_x, pool_y, _, _ = digit_pools(root)
    runs = {"head_only": HEAD_ONLY, **{k: {**FINE_TUNE, **v} for k, v in RECIPES.items()}}
    protocols = {}
    for protocol in PROTOCOLS:
        print(f"  {protocol}:")
        rows = []
        for seed, train, val, unused, rate in draws(pool_x, pool_y, DEV_SEEDS, protocol):
            row = {"seed": seed, "learning_rate": rate, "scored_images": len(unused)}
            for name, settings in runs.items():
                model = pretrained(seed)
                fine_tune(model, train, val, learning_rate=rate, verbose=0, **settings)
                row[name] = accuracy(model, pool_x[unused], pool_y[unused])
            print(
                f"    seed {seed}, learning rate {rate:.3g}: "
                + ", ".join(f"{name} {row[name]:.4f}" for name in runs)
            )
            rows.append(row)
        gains = {
            name: round(100 * float(np.mean([r[name] - r["head_only"] for r in rows])), 2)
            for name in RECIPES
        }
        print(
            "    mean gain over head only (points): "
            + ", ".join(f"{name} {gain:+.2f}" for name, gain in gains.items())
        )
        protocols[protocol] = {"seeds": rows, "mean_gain_over_head_only_points": gains}
    return {"seeds": DEV_SEEDS, "fine_tune_settings": FINE_TUNE, **protocols}


def main(parts=("timing", "transfer", "recipes")):
    start = time.perf_counter()
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    record.update(
        {
            "command": "python bench/bench_training.py",
            "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        if "timing" in parts:
            print(
                f"cached stage 1 vs model.fit on the frozen model, {TIMING_EPOCHS} epochs "
                f"(median of {TIMING_REPEATS}):"
            )
            record["cached_stage_1"] = [
                timing(digits(pathlib.Path(tmp) / str(size), size=size), size, backbone)
                for backbone, size in TIMING_CASES
            ]
        if "transfer" in parts:
            print(
                f"demo transfer task ({SHOTS} digits per class, {TOTAL_EPOCHS} epochs, "
                f"seeds {SEEDS}):"
            )
            record["transfer"] = transfer(digits(pathlib.Path(tmp) / "32", size=32))
        if "recipes" in parts:
            print(f"fine_tune's unfreezing recipes on development seeds {DEV_SEEDS}:")
            record["recipes"] = recipes(digits(pathlib.Path(tmp) / "32r", size=32))
    record[f"seconds_{'_'.join(parts)}"] = round(time.perf_counter() - start, 1)
    write_record(RESULTS, record)
    print(f"wrote {RESULTS.relative_to(REPO)} in {time.perf_counter() - start:.0f} s")
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=("timing", "transfer", "recipes"),
        action="append",
        help="run only this part (repeatable); the other part's figures in the record are kept",
    )
    main(tuple(parser.parse_args().part or ("timing", "transfer", "recipes")))
