"""Shared test helpers: tiny registered backbones with BatchNorm and named groups."""

import keras

import tltk


def tiny_bn_cnn(name, blocks, *, preprocessing="unit", initializer="glorot_uniform"):
    """Registers (or re-registers) a tiny backbone of conv-BN-ReLU blocks, one layer group each.

    `blocks` holds `(group, filters, strides, kernel_size)` tuples, bottom first.
    """

    def construct(input_shape, weights):
        inputs = keras.Input(input_shape)
        x = inputs
        for group, filters, strides, size in blocks:
            x = keras.layers.Conv2D(
                filters,
                size,
                strides=strides,
                padding="same",
                use_bias=False,
                kernel_initializer=initializer,
                name=f"{group}_conv",
            )(x)
            x = keras.layers.BatchNormalization(name=f"{group}_bn")(x)
            x = keras.layers.ReLU(name=f"{group}_relu")(x)
        return keras.Model(inputs, x, name=name)

    return tltk.register_backbone(
        tltk.BackboneSpec(
            name=name,
            family="test",
            source="tltk",
            constructor=construct,
            preprocessing=preprocessing,
            default_input_size=(32, 32),
            min_input_size=(8, 8),
            feature_dim=blocks[-1][1],
            groups=tuple((group, f"{group}_") for group, *_ in blocks),
            description=f"{len(blocks)} conv-BN-ReLU blocks, for tests",
        ),
        overwrite=True,
    )


TINY_BN_CNN = tiny_bn_cnn(
    "test_tiny_bn_cnn", (("stem", 8, 2, 3), ("mid", 16, 2, 3), ("top", 16, 2, 3))
)
