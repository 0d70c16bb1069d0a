"""The JSON record written beside the exported files: what the model is and how it was checked."""

from __future__ import annotations

import datetime
import json
import pathlib

import keras
import tensorflow as tf

RECORD_FILE = "export.json"
PREPROCESSING_LAYER = "preprocessing"


def describe_model(model):
    """Returns `{"backbone": name or None, "preprocessing": mode or None}` for a classifier.

    The backbone is the nested model of a `tltk.build_classifier` model (its registry name); the
    preprocessing mode is read from the layer named `"preprocessing"`. Either is `None` when the
    model has no such layer.

    Example:

    ```python
    describe_model(tltk.build_classifier("mobilenet_v2", 3, weights=None))
    # {'backbone': 'mobilenet_v2', 'preprocessing': 'tf'}
    ```
    """
    from tltk.freezing import find_backbone

    try:
        backbone = find_backbone(model)[0].name
    except ValueError:
        backbone = None
    preprocessing = None
    for layer in model.layers:
        if layer.name == PREPROCESSING_LAYER:
            preprocessing = layer.get_config().get("mode", type(layer).__name__)
    return {"backbone": backbone, "preprocessing": preprocessing}


def write_record(path, model, *, input_shape, class_names, output_activation, report):
    """Writes the JSON record of an export and returns its path.

    Args:
        path: str or Path. The file to write.
        model: keras.Model. The exported model.
        input_shape: tuple. `(height, width, channels)`.
        class_names: list. The labels, in output order.
        output_activation: str. The model's last activation (`"linear"` outputs get a softmax in
            the exported files).
        report: ExportReport. Files, sizes, latency and parity figures; paths are written relative
            to the export folder.

    Returns:
        The `pathlib.Path` written.

    Example:

    ```python
    json.loads(pathlib.Path("exports/pets/export.json").read_text())["class_names"]
    ```
    """
    from tltk import __version__

    files = []
    for exported in report.files:
        entry = exported.to_dict()
        entry["path"] = exported.path.name
        files.append(entry)
    record = {
        "model_name": model.name,
        **describe_model(model),
        "input_size": list(input_shape[:2]),
        "channels": input_shape[2],
        "input": f"raw pixels 0..255, {_channels(input_shape[2])}, float32 (uint8 for int8 TFLite)",
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "output": "probabilities"
        + (" (softmax added to the model's logits)" if output_activation == "linear" else ""),
        "output_activation": output_activation,
        "quantization": [f["quantization"] for f in files if f["format"] == "tflite"],
        "files": files,
        "parity_passed": report.passed,
        "versions": {"tltk": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = pathlib.Path(path)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def _channels(count):
    return {1: "grayscale", 3: "RGB"}.get(count, f"{count} channels")
