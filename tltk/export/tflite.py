"""Converts a tltk SavedModel to TFLite, with builtin ops only, at one of four quantizations."""

from __future__ import annotations

import re

import tensorflow as tf

from tltk.export.saved_model import SIGNATURE_KEY

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# The converter lists the ops it could not lower to TFLite builtins on lines like these.
_UNSUPPORTED_OPS = re.compile(r"(?:TF Select ops|Custom ops): ([^\n]+)")


def check_quantization(quantization):
    """Returns `quantization` as a tuple of distinct names from `QUANTIZATIONS`.

    Args:
        quantization: str or list. One of `"float32"`, `"float16"`, `"dynamic"`, `"int8"`, or a
            list of them.

    Returns:
        A tuple of names, in the order given.

    Example:

    >>> check_quantization("int8")
    ('int8',)
    """
    names = (quantization,) if isinstance(quantization, str) else tuple(quantization or ())
    unknown = [q for q in names if q not in QUANTIZATIONS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS} or a list of distinct ones. "
            f"Received: quantization={quantization!r}"
        )
    return names


def convert(saved_model_dir, quantization, *, representative_images=None):
    """Converts a tltk SavedModel to a TFLite flatbuffer that runs with builtin ops only.

    - `"float32"`: no quantization.
    - `"float16"`: float16 weights, float32 compute and input/output.
    - `"dynamic"`: int8 weights, activations quantized on the fly; float32 input/output.
    - `"int8"`: full integer; uint8 input taking raw pixels (0..255) and a uint8 output of
      probabilities (scale 1/256), calibrated on `representative_images`.

    Args:
        saved_model_dir: str or Path. A SavedModel written by `write_saved_model`.
        quantization: str. One of `QUANTIZATIONS`.
        representative_images: numpy array. Float32 `(N, H, W, C)` raw pixels, required for
            `"int8"`. Defaults to `None`.

    Returns:
        The TFLite model as `bytes`.

    Raises:
        ValueError: if the model needs ops outside the TFLite builtins (Flex / TF Select ops),
            naming them, or if `"int8"` has no representative images.

    Example:

    ```python
    flatbuffer = convert("/tmp/export/saved_model", "int8", representative_images=images)
    ```
    """
    (quantization,) = check_quantization(quantization)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[SIGNATURE_KEY]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError(
                "int8 quantization needs `representative_data`: a few hundred of your training "
                "images, to calibrate activation ranges. Received: representative_data=None"
            )
        converter.representative_dataset = lambda: (
            [image[None]] for image in representative_images
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    try:
        return converter.convert()
    except Exception as error:  # ConverterError, or a plain exception from the MLIR passes.
        found = _UNSUPPORTED_OPS.findall(str(error))
        ops = sorted({op.strip() for line in found for op in line.split(",")})
        if not ops:
            raise
        raise ValueError(
            "The model uses TensorFlow ops that TFLite has no builtin kernel for: "
            f"{', '.join(ops)}. "
            "tltk exports builtin ops only, because the LiteRT interpreter, MediaPipe and phone "
            "runtimes ship no Flex (TF Select) delegate. Replace the layer(s) using these ops, or "
            f"export formats=('saved_model',) only. (quantization={quantization!r})"
        ) from error
