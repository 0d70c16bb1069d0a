"""The record of a training run: `run.json` and a short `README.md` model card in its folder.

`tltk.train_from_directory` (`tltk train`) writes both into the run folder. `run.json` holds what a
user needs to reproduce and judge the run: the settings, the data (folder, class names, counts per
split and class, every file of every split, the files skipped), the training history of all stages
with one continuous epoch count, the held-out metrics and the export record. `tltk evaluate RUN_DIR`
reads the held-out file list back from it.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib

from tltk import atomic
from tltk._version import __version__

RUN_FILE = "run.json"
CARD_FILE = "README.md"
MODEL_FILE = "model.keras"


def build(*, settings, data, data_dir, result, evaluation, exported, run_dir, seconds):
    """Returns the run record (plain JSON types) of one `train_from_directory` run.

    Args:
        settings: dict. The arguments the run was started with.
        data: tltk.data.ImageData. The data it trained on.
        data_dir: str or Path. The folder the data came from.
        result: FineTuneResult. What `fine_tune` did.
        evaluation: EvaluationReport. The held-out metrics.
        exported: ExportReport or None. The export, inside `run_dir`.
        run_dir: str or Path. The folder being written; export paths are recorded relative to it.
        seconds: float. Wall time.

    Returns:
        A dict: `tltk_version`, `created`, `settings`, `data`, `training`, `metrics`, `export`,
        `seconds`.
    """
    root = pathlib.Path(os.path.abspath(data_dir))
    held_out = "test" if data.test is not None else "validation"
    files = {
        split: _by_class(root, paths, data.class_names) for split, paths in data.sources.items()
    }
    return {
        "tltk_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "data": {
            "folder": str(root),
            "class_names": list(data.class_names),
            "image_size": list(data.image_size),
            "held_out_split": held_out,
            "sizes": {split: len(paths) for split, paths in data.sources.items()},
            "counts": data.class_counts,
            "files": files,
            "skipped": [[os.fsdecode(path), reason] for path, reason in data.skipped],
        },
        "training": training_history(result),
        "metrics": {
            "split": held_out,
            "num_examples": evaluation.num_examples,
            "accuracy": evaluation.accuracy,
            "top_k_accuracy": evaluation.top_k_accuracy,
            "per_class": evaluation.per_class,
        },
        "export": None if exported is None else _relative(exported.to_dict(), run_dir),
        "seconds": round(seconds, 1),
    }


def training_history(result):
    """The stages of a `FineTuneResult` and their history, epochs counted on across stages.

    Returns:
        A dict: `monitor`, `best_metric`, `best_epoch` (1-based, continuous; `None` when the
        weights are the head stage's linear probe), `best_stage`, `restored_stage1`, `diverged`,
        `probe` (`FineTuneResult.probe`), `stages` (each with its `first_epoch` and
        `last_epoch`) and `history`: one `{"epoch", "stage", metric: value}` row per epoch.
    """
    stages, history, epoch, best_epoch = [], [], 0, None
    for index, (stage, logs) in enumerate(zip(result.stages, result.histories), start=1):
        count = max((len(values) for values in logs.values()), default=0)
        for i in range(count):
            row = {"epoch": epoch + i + 1, "stage": index}
            row.update({k: float(v[i]) for k, v in sorted(logs.items()) if i < len(v)})
            history.append(row)
        if index == result.best_stage and result.best_epoch is not None:
            best_epoch = epoch + result.best_epoch + 1
        stages.append(
            {
                "stage": index,
                "unfrozen": list(stage["unfrozen"] or []),
                "first_epoch": epoch + 1,
                "last_epoch": epoch + count,
                "learning_rates": stage.get("learning_rates"),
                "cached": stage.get("cached"),
            }
        )
        epoch += count
    return {
        "monitor": result.monitor,
        "best_metric": float(result.best_metric),
        "best_stage": result.best_stage,
        "best_epoch": best_epoch,
        "restored_stage1": result.restored_stage1,
        "diverged": [list(d) for d in result.diverged],
        "probe": result.probe,
        "stages": stages,
        "history": history,
    }


def write(folder, record, *, name):
    """Writes `run.json` and the `README.md` model card (titled `name`) into `folder` atomically."""
    folder = pathlib.Path(folder)
    atomic.write_text(folder / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n")
    atomic.write_text(folder / CARD_FILE, model_card(record, name))


def find(path):
    """The run folder and record that `path` belongs to, or `(None, None)`.

    Args:
        path: str or Path. A run folder, or a model file or export inside one (`RUN/model.keras`,
            `RUN/export/model_int8.tflite`, `RUN/export/saved_model`).

    Returns:
        `(run_dir, record)`.

    Raises:
        ValueError: the run folder's `run.json` cannot be read.
    """
    path = pathlib.Path(path)
    for folder in (path, *list(path.parents)[:3]):
        candidate = folder / RUN_FILE
        if candidate.is_file():
            try:
                return folder, json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"{candidate} is not a readable run record ({error}). Pass a model file and "
                    "a data folder instead."
                ) from error
    return None, None


def split_files(record, split):
    """`(paths, labels)` of one split of a run: absolute file paths and class indexes."""
    data = record["data"]
    root, names = pathlib.Path(data["folder"]), data["class_names"]
    paths, labels = [], []
    for name, files in data["files"].get(split, {}).items():
        paths += [root / f for f in files]
        labels += [names.index(name)] * len(files)
    return paths, labels


def used_in_training(record, paths):
    """The `paths` that the run trained or validated on (everything but its held-out split)."""
    data = record["data"]
    seen = set()
    for split in data["files"]:
        if split != data["held_out_split"]:
            seen.update(os.path.realpath(p) for p in split_files(record, split)[0])
    return [p for p in paths if os.path.realpath(p) in seen]


def model_card(record, name):
    """The run folder's `README.md`: what was trained on what, how well, and how to use it."""
    s, d, t, m = record["settings"], record["data"], record["training"], record["metrics"]
    splits = [split for split in ("train", "validation", "test") if split in d["counts"]]
    lines = [
        f"# {name}",
        "",
        f"A `{s['backbone']}` classifier (weights `{s['weights']}`) fine-tuned with tltk "
        f"{record['tltk_version']} on {record['created']}, {len(d['class_names'])} classes, "
        f"{d['image_size'][0]}x{d['image_size'][1]} pixels.",
        "",
        "## Data",
        "",
        f"From `{d['folder']}`: "
        + ", ".join(f"{d['sizes'][split]} {split}" for split in splits)
        + f" images; {len(d['skipped'])} files skipped (listed in `{RUN_FILE}`).",
        "",
        "| class | " + " | ".join(splits) + " |",
        "|---" * (len(splits) + 1) + "|",
    ]
    for cls in d["class_names"]:
        row = " | ".join(str(d["counts"][split].get(cls, 0)) for split in splits)
        lines.append(f"| {cls} | {row} |")
    lines += [
        "",
        "## Results",
        "",
        f"Held-out {m['split']} split ({m['num_examples']} images, never trained on): accuracy "
        f"{m['accuracy']:.4f}"
        + "".join(f", top-{k} {v:.4f}" for k, v in m["top_k_accuracy"].items())
        + f". One image moves accuracy by {1 / max(m['num_examples'], 1):.4f}.",
        "",
        f"Training ran {len(t['history'])} epochs in {len(t['stages'])} stages; the weights kept "
        + (
            f"are those of epoch {t['best_epoch']}"
            if t["best_epoch"] is not None
            else f"are the linear probe's (L2 logistic regression, C={t['probe']['C']:.3g})"
        )
        + f" (stage {t['best_stage']}, {t['monitor']} {t['best_metric']:.4f}). Per-epoch "
        f"history, per-class metrics and every file of each split are in `{RUN_FILE}`.",
        "",
        "## Use it",
        "",
        "```bash",
        f"tltk predict {name}/{MODEL_FILE} photo.jpg",
        f"tltk evaluate {name}            # again, on the held-out {m['split']} split",
        "```",
    ]
    if record["export"]:
        lines += ["", "Exported files (checked against the Keras model):", ""]
        for f in record["export"]["files"]:
            lines.append(f"- `{f['path']}` ({f['format']} {f['quantization']})")
    return "\n".join(lines) + "\n"


def _by_class(root, paths, class_names):
    """`{class_name: [path relative to root]}`; the class is the first folder named like one."""
    names = set(class_names)
    grouped = {name: [] for name in class_names}
    for path in paths:
        relative = pathlib.Path(os.path.relpath(os.path.abspath(os.fsdecode(path)), root))
        name = next((part for part in relative.parts[:2] if part in names), None)
        if name is not None:
            grouped[name].append(relative.as_posix())
    return grouped


def _relative(export, run_dir):
    """An export record with its paths relative to the run folder (which is moved after)."""
    export = dict(export, export_dir=os.path.relpath(export["export_dir"], run_dir))
    export["files"] = [dict(f, path=os.path.relpath(f["path"], run_dir)) for f in export["files"]]
    return export
