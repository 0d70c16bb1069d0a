"""Stage 1's head: Adam to convergence, the L-BFGS linear probe, and the rule that picks one.

`fine_tune`'s head stage trains the head with Adam on cached features until the validation loss
stops improving, then fits `tltk.probe` (L2 logistic regression, `C` chosen on the validation
log loss) and keeps whichever a rule prefers on validation. This measures each candidate and the
rules on the few-shot tasks of `bench_recipes.py`, with development seeds (100 on) that
`bench_recipes.py` does not use, scored on the pool images neither split drew ("held-out"),
never on the tasks' test sets:

- `adam`: the converged Adam head alone (its best epoch by validation accuracy, ties: loss);
- `probe`: the probe alone;
- `monitor`: the one with the better validation accuracy, a tie going to the lower validation
  loss (what `fine_tune` does, as `RunState.improves` compares epochs);
- `val_loss`: the one with the lower validation loss;
- `dominant`: the probe, unless Adam's head has both the lower validation loss and at least the
  probe's validation accuracy: `fine_tune`'s rule (`tltk.Stage.probe`).

On 3 seeds (`--seeds 3`) the means over the 9 settings were adam 75.40, probe 76.67, monitor
75.86, val_loss 76.32, dominant 76.41: the probe alone was best on average but 1.9 points below
Adam on textures at 10 per class; `dominant` keeps the probe's gains at 1-5 digits and letters
while letting a clearly better Adam head stand. Figures go to `bench/results/head_probe.json`.

Usage:

    python bench/bench_head_probe.py              # 5 seeds, every task and shot count
    python bench/bench_head_probe.py --seeds 2
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import tltk  # noqa: E402
from bench import tasks  # noqa: E402
from bench.bench_recipes import RESULTS, SHOTS, Run  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk.feature_cache import FeatureCache  # noqa: E402
from tltk.probe import fit_probe, linear_layer  # noqa: E402

FIRST_SEED = 100
RULES = ("adam", "probe", "monitor", "val_loss", "dominant")


def held_out(run):
    """The pool images that neither the training nor the validation split drew."""
    rest = np.setdiff1d(
        np.arange(len(run.task.pool_y)), np.concatenate([run.train_index, run.val_index])
    )
    return run.task.pool_x[rest].astype("float32"), run.task.pool_y[rest]


def one_run(run):
    """`{rule: held-out accuracy}` for one run."""
    model = run.model()
    plan = [tltk.Stage((), 200, cached=True, converge=True, patience=10)]  # no probe: measured here
    result = tltk.fine_tune(model, run.train, run.validation, stages=plan, verbose=0)
    x, y = held_out(run)
    score = lambda: float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(1) == y))  # noqa: E731
    adam = {
        "val_accuracy": result.best_metric,
        "val_loss": result.histories[0]["val_loss"][result.best_epoch],
        "held_out": score(),
    }
    cache = FeatureCache(model, run.train, run.validation)
    dense = linear_layer(cache.head)
    probe = fit_probe(cache.train, cache.validation, dense.units)
    dense.set_weights([probe.kernel.astype("float32"), probe.bias.astype("float32")])
    val_x, val_y = cache.validation[:2]
    p = cache.head.predict(val_x, verbose=0)
    probed = {
        "val_accuracy": float(np.mean(p.argmax(1) == val_y)),
        "val_loss": float(np.mean(-np.log(np.clip(p[np.arange(len(val_y)), val_y], 1e-7, 1)))),
        "held_out": score(),
    }
    by_monitor = (probed["val_accuracy"], -probed["val_loss"]) > (
        adam["val_accuracy"],
        -adam["val_loss"],
    )
    return {
        "adam": adam["held_out"],
        "probe": probed["held_out"],
        "monitor": probed["held_out"] if by_monitor else adam["held_out"],
        "val_loss": probed["held_out"]
        if probed["val_loss"] < adam["val_loss"]
        else adam["held_out"],
        "dominant": adam["held_out"]
        if adam["val_loss"] < probed["val_loss"] and adam["val_accuracy"] >= probed["val_accuracy"]
        else probed["held_out"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        loaded = {
            "digits": tasks.digits(pathlib.Path(folder) / "digits"),
            "letters": tasks.letters(),
            "textures": tasks.textures(),
        }
        means = {rule: [] for rule in RULES}
        record = {"seeds": args.seeds, "first_seed": FIRST_SEED, "settings": []}
        for name, task in loaded.items():
            for shots in SHOTS[name]:
                rows = [one_run(Run(task, shots, FIRST_SEED + s)) for s in range(args.seeds)]
                line = {rule: 100 * statistics.mean(r[rule] for r in rows) for rule in RULES}
                record["settings"].append({"task": name, "shots": shots, **line, "runs": rows})
                for rule in RULES:
                    means[rule].append(line[rule])
                print(
                    f"{name:8} {shots:2} per class: "
                    + ", ".join(f"{rule} {line[rule]:.1f}" for rule in RULES),
                    flush=True,
                )
        record["mean"] = {r: round(statistics.mean(means[r]), 2) for r in RULES}
        write_record(RESULTS / "head_probe.json", record)
        print(
            "mean over settings: "
            + ", ".join(f"{r} {statistics.mean(means[r]):.2f}" for r in RULES)
        )


if __name__ == "__main__":
    main()
