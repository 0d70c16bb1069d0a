"""`augmentation(preset)`: random image transforms that sit inside the model, in training only.

Keras' random preprocessing layers transform their input whenever `training` is not `False`:
called as `model(x)`, and traced by `model.export(...)`, a model holding them bare stays random
(checked with Keras 3.15: two calls of an exported SavedModel disagree). `Augmentation` wraps them
and runs them only when `training=True`, so predictions, saved `.keras` models and exports are
deterministic. MixUp and CutMix mix labels too, so they are not here: see
`tltk.data.mix_batches`.
"""

from __future__ import annotations

import keras

PRESETS = ("light", "medium", "strong")
VALUE_RANGE = (0, 255)  # tltk models take raw pixels
_FLIP = (keras.layers.RandomFlip, {"mode": "horizontal"})
_PRESET_LAYERS = {
    "light": [
        _FLIP,
        (keras.layers.RandomRotation, {"factor": 0.05}),
        (keras.layers.RandomZoom, {"height_factor": 0.1}),
    ],
    "medium": [
        _FLIP,
        (keras.layers.RandomRotation, {"factor": 0.1}),
        (keras.layers.RandomZoom, {"height_factor": 0.15}),
        (keras.layers.RandomTranslation, {"height_factor": 0.1, "width_factor": 0.1}),
        (keras.layers.RandomContrast, {"factor": 0.2, "value_range": VALUE_RANGE}),
    ],
    "strong": [
        _FLIP,
        (keras.layers.RandomRotation, {"factor": 0.15}),
        (keras.layers.RandomZoom, {"height_factor": 0.2}),
        (keras.layers.RandomTranslation, {"height_factor": 0.15, "width_factor": 0.15}),
        (keras.layers.RandAugment, {"value_range": VALUE_RANGE, "num_ops": 2, "factor": 0.5}),
    ],
}


@keras.saving.register_keras_serializable(package="tltk")
class Augmentation(keras.layers.Layer):
    """Applies a list of Keras random layers in training, and passes images through otherwise.

    It and its transforms compute in float32 under any dtype policy: they work on raw pixels,
    which float16 or bfloat16 would round (bfloat16 keeps 8 significant bits).

    Args:
        transforms: list of keras layers. Applied in order with `training=True` when the layer is
            called with `training=True` (as `fit` does); skipped otherwise.
        **kwargs: Standard layer arguments (`name`, ...).

    Example:

    >>> import keras, numpy as np
    >>> layer = Augmentation([keras.layers.RandomFlip("horizontal", seed=1)])
    >>> x = np.arange(12, dtype="float32").reshape(1, 2, 2, 3)
    >>> bool(np.array_equal(layer(x), x))  # inference: untouched
    True
    """

    def __init__(self, transforms, **kwargs):
        super().__init__(**{**kwargs, "dtype": "float32"})
        if not isinstance(transforms, (list, tuple)) or not all(
            isinstance(t, keras.layers.Layer) for t in transforms
        ):
            raise ValueError(
                f"`transforms` must be a list of Keras layers. Received: transforms={transforms!r}"
            )
        self.transforms = list(transforms)
        for transform in self.transforms:  # RandAugment makes its own layers: set them too
            for layer in transform._flatten_layers():
                layer.dtype_policy = "float32"

    def build(self, input_shape):
        for transform in self.transforms:
            if not transform.built:
                transform.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        if not training:
            return inputs
        outputs = inputs
        for transform in self.transforms:
            outputs = transform(outputs, training=True)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["transforms"] = [keras.saving.serialize_keras_object(t) for t in self.transforms]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["transforms"] = [
            keras.saving.deserialize_keras_object(t) for t in config["transforms"]
        ]
        return cls(**config)


def augmentation(preset, *, seed=None, name="augmentation"):
    """Returns an `Augmentation` layer for a preset, to put right after a model's input.

    All presets flip horizontally only (never vertically, which would turn photos upside down) and
    work on raw pixels, 0..255 (`value_range=(0, 255)`); geometric transforms fill by reflection.
    - `"light"`: flip, rotation up to 18 degrees (0.05 turn), zoom 10%.
    - `"medium"`: flip, rotation up to 36 degrees, zoom 15%, translation 10%, contrast 20%.
    - `"strong"`: flip, rotation up to 54 degrees, zoom 20%, translation 15%, then RandAugment
      (2 random operations of magnitude 0.5).

    Args:
        preset: str or None. `None`, `"light"`, `"medium"` or `"strong"`.
        seed: int or None. Seed of the layers (each gets `seed + i`), for repeatable training.
            Defaults to `None`.
        name: str. The layer's name. Defaults to `"augmentation"` (the name `build_classifier`
            gives it).

    Returns:
        An `Augmentation` layer, or `None` for `preset=None`.

    Example:

    ```python
    layer = tltk.augmentation("medium")
    model = tltk.build_classifier("mobilenet_v2", 5, augmentation="medium")  # the same, inside
    ```
    """
    if preset is None:
        return None
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be None or one of {PRESETS}. Received: preset={preset!r}")
    transforms = [
        layer_class(**kwargs, seed=None if seed is None else seed + i)
        for i, (layer_class, kwargs) in enumerate(_PRESET_LAYERS[preset])
    ]
    return Augmentation(transforms, name=name)
