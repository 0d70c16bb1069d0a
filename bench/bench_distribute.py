"""`fine_tune` under tf.distribute on the digits: one device, MirroredStrategy, MultiWorkerMirrored.

For each seed, `tltk_glyphnet` with its shipped weights is built inside the strategy's scope and
trained by `tltk.fine_tune` (default recipe, `epochs=6`, a checkpoint folder) on scikit-learn's
digits at 32x32 (70% of them, a fifth of which validates; batches of 32, shuffled with the seed),
then scored on the 30% held out and exported (float32 TFLite and SavedModel, parity gate on).
The strategies: `single` (one device), `mirrored` (2 logical CPU devices in one process) and
`multi_worker` (2 worker processes on 127.0.0.1, each with its own `TF_CONFIG`). Goal of issue 20:
each strategy within 1 point of single-device accuracy (mean over seeds); only the chief exports;
the other worker writes nothing in the output folder.

Usage:

    python bench/bench_distribute.py              # 3 seeds, every strategy (about 10 minutes)
    python bench/bench_distribute.py --seeds 0    # one seed
    python bench/bench_distribute.py --worker STRATEGY --out DIR --result FILE [--seed N ...]
        # one process of one run (what the benchmark and tests/test_distribute.py start)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "distribute.json"
STRATEGIES = ("single", "mirrored", "multi_worker")
EPOCHS = 6
GOAL_POINTS = 1.0


def worker(args):
    """One process: builds, trains, scores and (on the chief) exports; writes `args.result`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    if args.worker == "mirrored":  # two logical CPU devices, before TensorFlow initialises them
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif args.worker == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    sys.path.insert(0, str(REPO))
    import keras
    from sklearn.model_selection import train_test_split

    import tltk
    from bench.bench_export import accuracy, digits_split
    from tltk.backbones import glyphnet
    from tltk.distribute import is_chief

    train_x, test_x, train_y, test_y = digits_split()
    train_x, val_x, train_y, val_y = train_test_split(
        train_x, train_y, test_size=0.2, stratify=train_y, random_state=0
    )
    if args.samples:
        train_x, train_y, test_x, test_y = (
            a[: args.samples] for a in (train_x, train_y, test_x, test_y)
        )
    keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = tltk.build_classifier(glyphnet.NAME, 10, weights="tltk")
    train = tf.data.Dataset.from_tensor_slices((train_x, train_y))
    train = train.shuffle(len(train_x), seed=args.seed).batch(32)  # alike on every worker
    validation = tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(64)
    out = pathlib.Path(args.out)
    checkpoints = out / "checkpoints"
    state_file = checkpoints / "run_state.json"
    resumed = json.loads(state_file.read_text())["histories"] if state_file.is_file() else None
    start = time.perf_counter()
    result = tltk.fine_tune(
        model,
        train,
        validation,
        epochs=args.epochs,
        **({} if args.head_epochs is None else {"head_epochs": args.head_epochs}),
        checkpoint_dir=checkpoints,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    chief = is_chief(strategy)
    row = {
        "strategy": args.worker,
        "seed": args.seed,
        "chief": chief,
        "test_accuracy": accuracy(model, test_x, test_y),
        "evaluate_accuracy": float(tltk.evaluate(model, validation).accuracy),
        "best_metric": result.best_metric,
        "epochs_per_stage": [len(h["loss"]) if h else 0 for h in result.histories],
        "resumed_epochs": None if resumed is None else [len(h) for h in resumed],
        "fine_tune_seconds": round(seconds, 1),
    }
    if chief:  # only the chief exports
        report = tltk.export(model, out / "export", parity_data=test_x)
        row["parity"] = {
            f"{f.format}_{f.quantization}": [f.parity.max_abs_diff, f.parity.passed]
            for f in report.files
        }
    pathlib.Path(args.result).write_text(json.dumps(row))
    print(row, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(strategy, outs, results, extra=(), ports=None):
    """Starts the processes of one run; returns them (two for `multi_worker`, else one).

    Process `i` gets the output folder `outs[i]` (the same folder for all on a shared disk, or
    one each to see what each writes) and writes its row to `results[i]`.
    """
    count = 2 if strategy == "multi_worker" else 1
    ports = ports or [free_port() for _ in range(count)]
    processes = []
    for index in range(count):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if strategy == "multi_worker":
            env["TF_CONFIG"] = json.dumps(
                {
                    "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                    "task": {"type": "worker", "index": index},
                }
            )
        command = [sys.executable, __file__, "--worker", strategy, "--out", str(outs[index])]
        command += ["--result", str(results[index]), *extra]
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    return processes


def run(strategy, seed, folder):
    """One run of `strategy`: its processes' rows (the chief's first)."""
    outs = [folder / f"{strategy}_{seed}_{i}" for i in range(2)]  # one each: what each writes
    results = [folder / f"{strategy}_{seed}_{i}.json" for i in range(2)]
    processes = start(strategy, outs, results, ["--seed", str(seed), "--epochs", str(EPOCHS)])
    for process in processes:
        output, _ = process.communicate(timeout=1800)
        if process.returncode:
            raise RuntimeError(f"{strategy} seed {seed} failed:\n{output[-3000:]}")
    rows = [json.loads(r.read_text()) for r in results[: len(processes)]]
    for row, out in zip(rows, outs):
        row["files_written"] = sum(1 for p in out.rglob("*") if p.is_file())
    return rows


def main(seeds):
    import tempfile

    sys.path.insert(0, str(REPO))
    import keras
    import numpy as np
    import tensorflow as tf

    from bench.record import write_record

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            for strategy in STRATEGIES:
                rows += run(strategy, seed, pathlib.Path(folder))
    chiefs = [r for r in rows if r["chief"]]
    means = {
        s: float(np.mean([r["test_accuracy"] for r in chiefs if r["strategy"] == s]))
        for s in STRATEGIES
    }
    gaps = {s: round(100 * (means["single"] - means[s]), 2) for s in STRATEGIES[1:]}
    summary = {
        "mean_test_accuracy": means,
        "gap_points": gaps,
        "within_goal": all(abs(g) <= GOAL_POINTS for g in gaps.values()),
        "workers_agree": all(
            r["test_accuracy"] == c["test_accuracy"]
            for r in rows
            for c in chiefs
            if r["strategy"] == c["strategy"] == "multi_worker" and r["seed"] == c["seed"]
        ),
        "non_chief_files_written": sum(r["files_written"] for r in rows if not r["chief"]),
        "exports_pass_parity": all(ok for r in chiefs for _, ok in r["parity"].values()),
    }
    record = {
        "what": __doc__.split("\n\n")[0],
        "cpu": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "epochs": EPOCHS,
        "summary": summary,
        "runs": rows,
    }
    write_record(RESULTS, record)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worker", choices=STRATEGIES)
    parser.add_argument("--out")
    parser.add_argument("--result")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--head-epochs", type=int, default=None)
    parser.add_argument("--samples", type=int, default=0, help="use only this many images")
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        main(arguments.seeds)
