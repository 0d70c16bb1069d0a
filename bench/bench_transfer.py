"""Measures what the shipped GlyphNet backbone transfers to scikit-learn's real handwritten digits.

The digits go through `tltk.datasets.digits` (a class-folder tree of 32x32 PNGs) and
`tltk.data.from_directory`, as a user's data would; its seeded, stratified test split (30%, 539
images) is held out. Three figures, printed and written to `bench/results/bench_transfer.json`:

1. Few-shot, 10 labelled digits per class, mean of seeds 0, 1, 2. Pretrained: a new head on the
   frozen backbone (60 epochs), then every group fine-tuned with BatchNorm frozen (30 epochs).
   From scratch: the same architecture, every layer and BatchNorm training, for the same 90
   epochs, at the better of two learning rates (picked on the held-out digits, per seed, which
   favours the baseline): the headline gain is pretrained minus this. Reported beside them: the
   head-only figure, the same two-stage recipe with `weights=None` (a weak baseline: its frozen
   BatchNorm never learns statistics), and logistic regression on the raw pixels.
2. All 1,258 training digits: a head on the frozen backbone, then the top two groups fine-tuned.
3. Feature extraction: the time to embed all 1,797 digits (backbone + average pooling), on this
   machine's CPU cores: first call (building the model, loading the weights, tracing) and again.

Usage:

    python bench/bench_transfer.py
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import tltk  # noqa: E402
from bench.record import write_record  # noqa: E402
import tltk.data  # noqa: E402
from tltk.backbones import glyphnet  # noqa: E402
from tltk.datasets import digits  # noqa: E402

SEEDS = (0, 1, 2)
SHOTS = 10
HEAD_EPOCHS = 60
FINE_TUNE_EPOCHS = 30
FEW_SHOT_BATCH = 16
HEAD_LR = 3e-3
FINE_TUNE_LR = 1e-4
SCRATCH_LRS = (1e-3, 3e-3)
TOTAL_EPOCHS = HEAD_EPOCHS + FINE_TUNE_EPOCHS
# Per-seed figures, each a held-out accuracy.
FIGURES = (
    "pretrained",
    "pretrained_head_only",
    "scratch",
    "same_recipe_random_weights",
    "pixels_logistic_regression",
)
RESULTS = REPO / "bench" / "results" / "bench_transfer.json"


def as_arrays(dataset):
    """`(images, labels)` numpy arrays from a batched `(images, labels)` dataset."""
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


def scratch_model(seed):
    keras.utils.set_random_seed(seed)
    model = tltk.build_classifier(glyphnet.NAME, 10, weights=None, train_bn=True)
    return tltk.unfreeze(model, "all", train_bn=True)


def train(model, x, y, *, learning_rate, epochs, batch_size, seed):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    keras.utils.set_random_seed(seed)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1) == y))


def transfer_recipe(weights, x, y, test_x, test_y, *, seed):
    """A new head on the frozen backbone, then every group fine-tuned (BatchNorm frozen).

    Returns the held-out accuracy after each stage.
    """
    fit = dict(batch_size=FEW_SHOT_BATCH, seed=seed)
    keras.utils.set_random_seed(seed)
    model = tltk.build_classifier(glyphnet.NAME, 10, weights=weights)
    train(model, x, y, learning_rate=HEAD_LR, epochs=HEAD_EPOCHS, **fit)
    head_only = accuracy(model, test_x, test_y)
    tltk.unfreeze(model, "all")
    train(model, x, y, learning_rate=FINE_TUNE_LR, epochs=FINE_TUNE_EPOCHS, **fit)
    return head_only, accuracy(model, test_x, test_y)


def few_shot(train_x, train_y, test_x, test_y):
    """Pretrained vs from scratch (and two reference points), 10 digits per class, per seed."""
    rows = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        picked = np.concatenate(
            [rng.choice(np.flatnonzero(train_y == c), SHOTS, replace=False) for c in range(10)]
        )
        x, y = train_x[picked], train_y[picked]
        head_only, pretrained = transfer_recipe("tltk", x, y, test_x, test_y, seed=seed)
        scratch = {}
        for lr in SCRATCH_LRS:
            baseline = scratch_model(seed)
            fit = dict(epochs=TOTAL_EPOCHS, batch_size=FEW_SHOT_BATCH, seed=seed)
            train(baseline, x, y, learning_rate=lr, **fit)
            scratch[lr] = accuracy(baseline, test_x, test_y)
        pixels = LogisticRegression(max_iter=5000).fit(_pixels(x), y).score(_pixels(test_x), test_y)
        row = {
            "seed": seed,
            "pretrained": pretrained,
            "pretrained_head_only": head_only,
            "scratch": max(scratch.values()),
            "scratch_by_learning_rate": {str(lr): acc for lr, acc in scratch.items()},
            "same_recipe_random_weights": transfer_recipe(None, x, y, test_x, test_y, seed=seed)[1],
            "pixels_logistic_regression": float(pixels),
        }
        print(f"  seed {seed}: " + "  ".join(f"{k} {row[k]:.4f}" for k in FIGURES))
        rows.append(row)
    return rows


def _pixels(images):
    return images[..., 0].reshape(len(images), -1) / 255.0


def full_data(train_x, train_y, test_x, test_y):
    """All training digits: head on the frozen backbone, then the top two groups fine-tuned."""
    fit = dict(batch_size=32, seed=0)
    keras.utils.set_random_seed(0)
    model = tltk.build_classifier(glyphnet.NAME, 10, weights="tltk")
    model = train(model, train_x, train_y, learning_rate=HEAD_LR, epochs=20, **fit)
    head_only = accuracy(model, test_x, test_y)
    tltk.unfreeze(model, 2)
    model = train(model, train_x, train_y, learning_rate=3e-4, epochs=10, **fit)
    return {
        "head_only": head_only,
        "fine_tuned": accuracy(model, test_x, test_y),
        "fine_tuned_groups": ["block3", "top"],
    }


def embedding_seconds(images):
    """Seconds to embed `images` with the pretrained backbone + pooling.

    Returns the first time (building the model and loading its weights included) and a second.
    """
    times = []
    start = time.perf_counter()
    extractor = keras.Sequential(
        [
            tltk.ImagePreprocessing("unit"),
            glyphnet.glyphnet((32, 32, 3)),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    for _ in range(2):
        extractor.predict(images, batch_size=256, verbose=0)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    return times


def main():
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = tltk.data.from_directory(
            digits(pathlib.Path(tmp) / "digits"),
            image_size=(32, 32),
            validation_split=0.0,
            test_split=0.3,
            seed=0,
            batch_size=256,
        )
        train_x, train_y = as_arrays(data.train)
        test_x, test_y = as_arrays(data.test)
    load_seconds = time.perf_counter() - start
    images = np.concatenate([train_x, test_x])
    print(
        f"digits: {len(images)} images ({len(train_x)} train, {len(test_x)} held out), "
        f"written and read in {load_seconds:.1f} s"
    )

    print(f"few-shot, {SHOTS} per class:")
    rows = few_shot(train_x, train_y, test_x, test_y)
    means = {k: float(np.mean([r[k] for r in rows])) for k in FIGURES}
    gain = 100 * (means["pretrained"] - means["scratch"])
    print("  mean: " + "  ".join(f"{k} {v:.4f}" for k, v in means.items()))
    print(f"  gain of the pretrained backbone over training from scratch: {gain:.1f} points")

    full = full_data(train_x, train_y, test_x, test_y)
    print(f"all digits: head only {full['head_only']:.4f}  fine-tuned {full['fine_tuned']:.4f}")

    cold, warm = embedding_seconds(images)
    print(
        f"embedding {len(images)} digits on {os.cpu_count()} CPU cores: "
        f"{cold:.2f} s (first call, model build included), {warm:.2f} s (again)"
    )

    manifest = glyphnet.WEIGHTS_DIR / glyphnet.MANIFEST_FILE
    record = {
        "command": "python bench/bench_transfer.py",
        "few_shot": {
            "shots_per_class": SHOTS,
            "head_epochs": HEAD_EPOCHS,
            "fine_tune_epochs": FINE_TUNE_EPOCHS,
            "batch_size": FEW_SHOT_BATCH,
            "seeds": rows,
            "means": {k: round(v, 4) for k, v in means.items()},
            "gain_points": round(gain, 1),
        },
        "full_data": {k: round(v, 4) if isinstance(v, float) else v for k, v in full.items()},
        "held_out_images": len(test_x),
        "embedding_seconds_first_call": round(cold, 2),
        "embedding_seconds_again": round(warm, 2),
        "cpu_count": os.cpu_count(),
        "weights_sha256": json.loads(manifest.read_text())["sha256"],
        "seconds_total": round(time.perf_counter() - start, 1),
        "tensorflow": tf.__version__,
    }
    write_record(RESULTS, record)
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return record


if __name__ == "__main__":
    main()
