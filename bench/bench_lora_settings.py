"""LoRA settings on development seeds: what chose the recipe of `build_classifier(lora_rank=2)`.

The task of `bench/bench_lora.py` (digits, 20 training and 20 validation images per class, the
demo backbone, `fine_tune` defaults unless a setting changes them), on development seeds only
(3-5, and 6-8 for the finalists; `bench_lora.py` reports seeds 0-2): each setting's best
validation accuracy and its accuracy on the rest of the pool (the pool images that are neither
training nor validation, about 860; never the test split), means over the seeds, with the
trainable fraction and the stage whose weights were kept. Settings: the LoRA rank, `lora_alpha`,
the fine-tuning rate and epochs, the per-group rate decay, weight decay, BatchNorm training
(`train_bn`), no head stage (adapters and head from the start), LoRA on the top groups only
(block3 and top) or on the one 1x1 convolution (top). Writes
`bench/results/lora_settings_seeds<seeds>.json` (in percent, added to the settings already
there); `tltk.lora`'s docstring sums it up.

Usage:

    python bench/bench_lora_settings.py                     # every setting, seeds 3-5
    python bench/bench_lora_settings.py --seeds 6 7 8 --settings full rank2 rank2_rate2e-2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import tltk  # noqa: E402
from bench import tasks  # noqa: E402
from bench.bench_lora import SHOTS  # noqa: E402
from bench.bench_recipes import Run  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk import freezing, lora  # noqa: E402

TOP = ("block3_conv1", "block3_conv2", "top_conv")
# name: (build_classifier arguments, fine_tune arguments, LoRA on these layers only)
SETTINGS = {
    "full": ({}, {}, None),
    "rank2": ({"lora_rank": 2}, {}, None),
    "rank2_rate3e-3": ({"lora_rank": 2}, {"fine_tune_lr": 3e-3}, None),
    "rank2_rate2e-2": ({"lora_rank": 2}, {"fine_tune_lr": 2e-2}, None),
    "rank2_rate4e-2": ({"lora_rank": 2}, {"fine_tune_lr": 4e-2}, None),
    "rank2_epochs20": ({"lora_rank": 2}, {"epochs": 20}, None),
    "rank2_rate2e-2_epochs20": ({"lora_rank": 2}, {"fine_tune_lr": 2e-2, "epochs": 20}, None),
    "rank2_no_group_decay": ({"lora_rank": 2}, {"lr_decay": 1.0}, None),
    "rank2_alpha4": ({"lora_rank": 2, "lora_alpha": 4}, {}, None),
    "rank2_no_weight_decay": ({"lora_rank": 2}, {"weight_decay": 0.0}, None),
    "rank2_train_bn": ({"lora_rank": 2, "train_bn": True}, {}, None),
    "rank3": ({"lora_rank": 3}, {}, None),
    "rank3_rate2e-2": ({"lora_rank": 3}, {"fine_tune_lr": 2e-2}, None),
    "rank3_rate2e-2_epochs20": ({"lora_rank": 3}, {"fine_tune_lr": 2e-2, "epochs": 20}, None),
    "top_rank5": ({}, {}, (5, TOP)),
    "top_rank5_rate2e-2": ({}, {"fine_tune_lr": 2e-2}, (5, TOP)),
    "1x1_rank8": ({}, {}, (8, ("top_conv",))),
    "rank2_no_head_stage": ({"lora_rank": 2}, {"head_epochs": 0}, None),
}


def model_for(run, build, top):
    """The setting's model; `top = (rank, names)`: LoRA on those layers only, as
    `build_classifier(lora_rank=...)` sets it up on all of them."""
    model = run.model(**build)
    if top is not None:
        rank, names = top
        lora.enable(model.backbone, rank, rank, names=names)
        model._lora_rank, model._lora_alpha = rank, rank
        freezing.freeze(model)
        freezing.unfreeze(model, "all")
    return model


def one_setting(task, seeds, build, fine_tune, top):
    """The setting's means over `seeds`, and its figures per seed."""
    rows = []
    for seed in seeds:
        run = Run(task, SHOTS, seed)
        model = model_for(run, build, top)
        result = tltk.fine_tune(model, run.train, run.validation, verbose=0, **fine_tune)
        used = np.concatenate([run.train_index, run.val_index])
        rest = np.setdiff1d(np.arange(len(task.pool_y)), used)
        scores = model.predict(task.pool_x[rest].astype("float32"), batch_size=256, verbose=0)
        rows.append(
            {
                "seed": seed,
                "validation": _percent(result.best_metric),
                "rest_of_pool": _percent(np.mean(scores.argmax(1) == task.pool_y[rest])),
                "best_stage": result.best_stage,
            }
        )
    return {
        "validation": _percent(np.mean([r["validation"] for r in rows]) / 100),
        "rest_of_pool": _percent(np.mean([r["rest_of_pool"] for r in rows]) / 100),
        "trainable_fraction": _percent(result.trainable_fraction),
        "runs": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args(argv)
    if set(args.seeds) & {0, 1, 2}:
        parser.error("seeds 0-2 are bench_lora.py's reported seeds; develop on others")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        task = tasks.digits(pathlib.Path(tmp) / "digits")
        for name in args.settings:
            started = time.perf_counter()
            results[name] = one_setting(task, args.seeds, *SETTINGS[name])
            print(
                f"{name}: validation {results[name]['validation']}%, rest of the pool "
                f"{results[name]['rest_of_pool']}% ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    seeds = "_".join(map(str, args.seeds))
    path = REPO / "bench" / "results" / f"lora_settings_seeds{seeds}.json"
    record = json.loads(path.read_text()) if path.exists() else {}  # other settings' figures
    record.update({"task": f"digits, {SHOTS} per class, tltk_glyphnet", "seeds": args.seeds})
    write_record(path, {**record, **results})
    return results


def _percent(fraction):
    return round(100 * float(fraction), 2)


if __name__ == "__main__":
    main()
