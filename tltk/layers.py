"""Keras layers that tltk puts inside models; each registers itself as serializable."""

from __future__ import annotations

import keras
from keras import ops

from tltk.backbones.registry import PREPROCESSING_MODES

_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="tltk")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw 0..255 pixels to what a backbone expects, inside the graph.

    The modes are those of `keras.applications.imagenet_utils.preprocess_input`, so the result
    equals `keras.applications.<family>.preprocess_input` on the same pixels; exported models
    therefore take raw pixels and need no outside preprocessing. The layer computes in float32
    under any dtype policy: cast to float16 or bfloat16 first, raw pixels would lose bits (bfloat16
    rounds 200.3 to 200); the backbone's first layer casts the result to its own precision.

    Args:
        mode: str. `"caffe"` (RGB->BGR, minus the ImageNet BGR mean), `"tf"` (to [-1, 1]), `"torch"`
            (to [0, 1], minus ImageNet mean, over ImageNet std), `"unit"` (to [0, 1]) or `"none"`
            (cast to float32 only).
        **kwargs: Base layer arguments such as `name`.

    Example:

    >>> import numpy as np
    >>> layer = ImagePreprocessing("tf")
    >>> np.asarray(layer(np.array([[[[0, 127.5, 255]]]], "float32"))).round(3).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**{**kwargs, "dtype": "float32"})
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_IMAGENET_BGR_MEAN, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, "float32")
            std = ops.convert_to_tensor(_IMAGENET_STD, "float32")
            return (x / 255.0 - mean) / std
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
