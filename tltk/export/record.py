"""The JSON record written beside the exported files: what the model is and how it was checked."""

from __future__ import annotations

import datetime
import json

import keras
import tensorflow as tf

from tltk import atomic
from tltk._version import __version__
from tltk.export.heads import labels_file

RECORD_FILE = "export.json"


def write_record(path, model, *, class_names, output_activation, report, fields, heads=None):
    """Writes the JSON record of an export and returns its path.

    The record holds what every export shares (class names, output, files with their sizes,
    latency and parity figures, versions, time) and the `fields` the modality adds (backbone,
    input, preprocessing or tokenizer). A model with several heads has, instead of the class
    names and output, `heads`: per head its task, units, output, class names and labels file
    (`None` for a regression head).

    Args:
        path: str or Path. The file to write.
        model: keras.Model. The exported model.
        class_names: list or dict. The labels, in output order (`{head: labels}` with `heads`).
        output_activation: str. The model's last activation (`"linear"` outputs get a softmax in
            the exported files).
        report: ExportReport. Files, sizes, latency and parity figures; paths are written relative
            to the export folder.
        fields: dict. The modality's entries (JSON types).
        heads: tuple or None. The `tltk.export.heads.OutputHead`s of a model with several heads.
            Defaults to `None`.

    Returns:
        The `pathlib.Path` written.

    Example:

    ```python
    json.loads(pathlib.Path("exports/pets/export.json").read_text())["class_names"]
    ```
    """

    files = [{**f.to_dict(), "path": f.path.name} for f in report.files]
    if heads is None:
        outputs = {
            "class_names": list(class_names),
            "num_classes": len(class_names),
            "output": "probabilities"
            + (" (softmax added to the model's logits)" if output_activation == "linear" else ""),
            "output_activation": output_activation,
        }
    else:
        outputs = {"heads": {head.name: _head_entry(head, class_names) for head in heads}}
    record = {
        "model_name": model.name,
        **fields,
        **outputs,
        "quantization": [f["quantization"] for f in files if f["format"] == "tflite"],
        "files": files,
        "parity_passed": report.passed,
        "versions": {"tltk": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return atomic.write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def _head_entry(head, class_names):
    output = {"classification": "probabilities", "multi_label": "sigmoid scores"}
    return {
        "task": head.task,
        "units": head.units,
        "output": output.get(head.task, "values"),
        "output_activation": head.activation,
        "class_names": class_names.get(head.name),
        "labels_file": labels_file(head.name) if head.labelled else None,
    }
