"""Does `tltk.rank_backbones` pick the backbone that fine-tunes best, in a fraction of the time?

The candidates are the zoo of `bench/rank_zoo.py` (7 GlyphNet backbones pretrained on glyphs,
shapes, textures, colours, or not at all; built or reused from its cache). For each target task:

1. Ground truth: every member fine-tuned with `tltk.fine_tune(model, train, validation,
   verbose=0)` defaults, the model built by `tltk.build_classifier("tltk_glyphnet", n,
   weights="<member>.keras")`; 10 training and 10 validation images per class drawn per seed from
   the task's pool (`bench_recipes.Run`); the test accuracy, read once per run at its end,
   averaged over the seeds.
2. `tltk.rank_backbones((images, labels), members, verbose=0)` on the training and validation
   images of seed 0, each member passed as its saved source classifier (so LEEP has its source
   head): timed by LogME (the default method), then again with `method="all"` for every score.
3. Per method: weighted Kendall tau (`scipy.stats.weightedtau`) between its scores and the
   ground truth, and the top-ranked member's accuracy minus the best member's (points).

Targets: scikit-learn's digits (`tasks.digits`), the letters the demo backbone never saw
(`tasks.letters`), the six target textures (`tasks.textures`), and six shapes none of the zoo's
sources holds (`rank_zoo.shapes_task`).

Goals, printed PASS/MISS: LogME's weighted tau at least 0.6 averaged over the targets; LogME's
top-ranked member within 1 point of the best on at least 3 of 4 targets (with `--quick`, on
every target but one); ranking the zoo by LogME at least 100x faster than fine-tuning it (once
per member; summed over targets). Every method's figures are reported, and the speed-up of the
`method="all"` call. Results go to `bench/results/rank.json` (`--quick`: `rank_quick.json`).

Usage:

    python bench/bench_rank.py            # 3 seeds, 4 targets: about 30 minutes on 2 cores
    python bench/bench_rank.py --quick    # 1 seed, digits and shapes
    python bench/bench_rank.py --zoo /tmp/zoo   # the zoo's cache folder (see rank_zoo.py)
"""

from __future__ import annotations

import argparse
import math
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
from scipy import stats  # noqa: E402

import tltk  # noqa: E402
from bench import rank_zoo, tasks  # noqa: E402
from bench.bench_recipes import Run  # noqa: E402
from bench.record import write_record  # noqa: E402

RESULTS = REPO / "bench" / "results"
SEEDS = 3
SHOTS = 10
TARGETS = ("digits", "letters", "textures", "shapes")
QUICK_TARGETS = ("digits", "shapes")
METHODS = ("logme", "leep", "hscore", "knn", "linear")
TAU_GOAL, POINTS_GOAL, SPEED_GOAL = 0.6, 1.0, 100.0
tf.get_logger().setLevel("ERROR")


def load_target(name, folder):
    """The target task `name` (digits are written under `folder` first)."""
    if name == "digits":
        return tasks.digits(pathlib.Path(folder) / "digits")
    if name == "shapes":
        return rank_zoo.shapes_task()
    return getattr(tasks, name)()


def ground_truth(task, zoo, seeds):
    """`{member: {"accuracy": [per seed], "seconds": [per seed], "mean": points}}`."""
    truth = {}
    for member in rank_zoo.MEMBERS:
        accuracy, seconds = [], []
        for seed in range(seeds):
            run = Run(task, SHOTS, seed)
            start = time.perf_counter()
            model = run.model(weights=str(zoo / f"{member}.keras"))
            tltk.fine_tune(model, run.train, run.validation, verbose=0)
            seconds.append(round(time.perf_counter() - start, 1))
            accuracy.append(round(100 * run.test(model), 2))
            keras.backend.clear_session()
        truth[member] = {
            "accuracy": accuracy,
            "seconds": seconds,
            "mean": round(statistics.fmean(accuracy), 2),
        }
        print(f"  {member:13s} {truth[member]['mean']:6.2f}  {accuracy}", flush=True)
    return truth


def rank(task, zoo):
    """Ranks the zoo on seed 0's training and validation images, by LogME alone (timed: the
    speed goal) then by every method: `(scores, logme_seconds, all_seconds)`, with
    `scores[method][member]` (members a method cannot score are left out)."""
    run = Run(task, SHOTS, 0)
    index = np.concatenate([run.train_index, run.val_index])
    data = (task.pool_x[index], task.pool_y[index])
    members = [tltk.load_model(str(zoo / f"{m}.keras"), compile=False) for m in rank_zoo.MEMBERS]
    seconds = []
    for method in ("logme", "all"):
        start = time.perf_counter()
        ranking = tltk.rank_backbones(data, members, method=method, verbose=0)
        seconds.append(round(time.perf_counter() - start, 2))
    scores = {method: {} for method in METHODS}
    for row in ranking.rows:
        for method in METHODS:
            value = row.scores.get(method)
            if value is not None and math.isfinite(value):
                scores[method][row.name] = float(value)
    return scores, *seconds


def judge(scores, truth):
    """Per method: weighted Kendall tau with the ground truth's means, the top-ranked member, and
    its accuracy minus the best member's (points, <= 0)."""
    best = max(entry["mean"] for entry in truth.values())
    judged = {}
    for method, by_member in scores.items():
        names = sorted(by_member)
        if len(names) < 2:
            judged[method] = {"tau": None, "top": None, "points_below_best": None}
            continue
        tau = stats.weightedtau(
            [by_member[n] for n in names], [truth[n]["mean"] for n in names]
        ).statistic
        top = max(names, key=by_member.get)
        judged[method] = {
            "tau": round(float(tau), 3),
            "top": top,
            "points_below_best": round(truth[top]["mean"] - best, 2),
        }
    return judged


def goals(per_target, rank_seconds, fine_tune_seconds):
    """The three goals from `{target: judge(...)}` and the summed seconds of ranking by LogME and
    of fine-tuning the zoo once."""
    taus = [j["logme"]["tau"] for j in per_target.values() if j["logme"]["tau"] is not None]
    tau = statistics.fmean(taus) if taus else None
    close = sum(
        judged["logme"]["points_below_best"] is not None
        and judged["logme"]["points_below_best"] >= -POINTS_GOAL
        for judged in per_target.values()
    )
    needed = max(1, len(per_target) - 1)
    speedup = fine_tune_seconds / rank_seconds
    return {
        "logme_weighted_tau": {
            "mean": None if tau is None else round(tau, 3),
            "goal": TAU_GOAL,
            "result": "PASS" if tau is not None and tau >= TAU_GOAL else "MISS",
        },
        "logme_top_within_1_point": {
            "targets": close,
            "of": len(per_target),
            "needed": needed,
            "result": "PASS" if close >= needed else "MISS",
        },
        "ranking_speedup": {
            "ranking_seconds": round(rank_seconds, 1),
            "fine_tuning_seconds": round(fine_tune_seconds, 1),
            "speedup": round(speedup, 1),
            "goal": SPEED_GOAL,
            "result": "PASS" if speedup >= SPEED_GOAL else "MISS",
        },
    }


def method_summary(per_target):
    """Per method: mean weighted tau over targets and the targets where its top is within 1."""
    summary = {}
    for method in METHODS:
        judged = [per_target[t][method] for t in per_target]
        taus = [j["tau"] for j in judged if j["tau"] is not None]
        summary[method] = {
            "mean_tau": round(statistics.fmean(taus), 3) if taus else None,
            "top_within_1_point": sum(
                j["points_below_best"] is not None and j["points_below_best"] >= -POINTS_GOAL
                for j in judged
            ),
        }
    return summary


def print_target(name, truth, scores, judged):
    header = f"{'member':13s} {'acc %':>6s}" + "".join(f" {m:>9s}" for m in METHODS)
    print(f"\n{name}\n{header}")
    for member in sorted(truth, key=lambda m: -truth[m]["mean"]):
        cells = "".join(
            f" {scores[m][member]:9.3g}" if member in scores[m] else f" {'-':>9s}" for m in METHODS
        )
        print(f"{member:13s} {truth[member]['mean']:6.2f}{cells}")
    print(f"{'tau':20s}" + "".join(f" {_cell(judged[m]['tau'])}" for m in METHODS))
    print(
        f"{'top - best':20s}"
        + "".join(f" {_cell(judged[m]['points_below_best'])}" for m in METHODS)
    )


def _cell(value):
    return f"{'-':>9s}" if value is None else f"{value:9.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, digits and shapes")
    parser.add_argument("--zoo", type=pathlib.Path, default=rank_zoo.DEFAULT_OUT, help="cache")
    args = parser.parse_args(argv)
    seeds, targets = (1, QUICK_TARGETS) if args.quick else (SEEDS, TARGETS)
    start = time.perf_counter()
    zoo, members = rank_zoo.build_zoo(args.zoo)
    zoo_seconds = time.perf_counter() - start
    record = {
        "command": " ".join(["python bench/bench_rank.py", *(argv or sys.argv[1:])]),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "seeds": seeds,
        "shots": SHOTS,
        "zoo": {"folder": str(zoo), "version": rank_zoo.VERSION, "members": members},
        "zoo_seconds_this_run": round(zoo_seconds, 1),
        "targets": {},
    }
    rank_seconds = all_seconds_total = fine_tune_seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in targets:
            task = load_target(name, tmp)
            print(f"{name}: fine-tuning {len(members)} members x {seeds} seed(s)", flush=True)
            truth = ground_truth(task, zoo, seeds)
            scores, seconds, all_seconds = rank(task, zoo)
            judged = judge(scores, truth)
            zoo_fine_tune = sum(statistics.fmean(t["seconds"]) for t in truth.values())
            rank_seconds += seconds
            all_seconds_total += all_seconds
            fine_tune_seconds += zoo_fine_tune
            record["targets"][name] = {
                "ground_truth": truth,
                "scores": scores,
                "judged": judged,
                "rank_seconds_logme": seconds,
                "rank_seconds_all": all_seconds,
                "fine_tune_seconds_zoo": round(zoo_fine_tune, 1),
            }
            print_target(name, truth, scores, judged)
            print(
                f"ranking: {seconds:.1f} s by LogME, {all_seconds:.1f} s by every method; "
                f"fine-tuning the zoo once: {zoo_fine_tune:.0f} s",
                flush=True,
            )
    per_target = {name: entry["judged"] for name, entry in record["targets"].items()}
    record["methods"] = method_summary(per_target)
    record["goals"] = goals(per_target, rank_seconds, fine_tune_seconds)
    record["speedup_all_methods"] = round(fine_tune_seconds / all_seconds_total, 1)
    record["seconds_total"] = round(time.perf_counter() - start, 1)
    print("\nmethod     mean tau  top within 1 point")
    for method, entry in record["methods"].items():
        print(
            f"{method:10s} {_cell(entry['mean_tau'])}  {entry['top_within_1_point']}/{len(targets)}"
        )
    print(f"speedup with every method: {record['speedup_all_methods']}x")
    for goal, entry in record["goals"].items():
        print(f"{entry['result']}  {goal}: {entry}")
    write_record(RESULTS / ("rank_quick.json" if args.quick else "rank.json"), record)
    return record


if __name__ == "__main__":
    main()
