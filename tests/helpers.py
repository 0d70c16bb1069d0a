"""Shared test helpers: a tiny registered backbone with BatchNorm and named groups."""

import keras

import tltk


def _tiny_bn_cnn(input_shape, weights):
    inputs = keras.Input(input_shape)
    x = inputs
    for block, filters in (("stem", 8), ("mid", 16), ("top", 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"{block}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{block}_bn")(x)
        x = keras.layers.ReLU(name=f"{block}_relu")(x)
    return keras.Model(inputs, x, name="tiny_bn_cnn")


TINY_BN_CNN = tltk.register_backbone(
    tltk.BackboneSpec(
        name="test_tiny_bn_cnn",
        family="test",
        source="tltk",
        constructor=_tiny_bn_cnn,
        preprocessing="unit",
        default_input_size=(32, 32),
        min_input_size=(8, 8),
        feature_dim=16,
        groups=(("stem", "stem_"), ("mid", "mid_"), ("top", "top_")),
        description="three conv-BN-ReLU blocks, for tests",
    ),
    overwrite=True,
)
