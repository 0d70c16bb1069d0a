"""Classification heads: pooling, dropout, optional hidden layers, and the output layer."""

from __future__ import annotations

import typing

import keras

POOLINGS = ("avg", "max")
HEAD_PREFIX = "head_"
OUTPUT_NAME = "predictions"
POOL_NAME = "pool"


def check_head_args(
    *, num_classes, pooling, dropout, hidden_units, multi_label, classifier_activation
):
    """Validates head arguments before anything is built; raises `ValueError` naming the argument.

    Returns:
        `(hidden_units, activation)`: the hidden widths as a tuple, and the output activation
        (`"sigmoid"` for a multi-label model left at `"softmax"`; `None` for logits).
    """
    minimum = 1 if multi_label else 2
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < minimum:
        kind = "multi-label" if multi_label else "single-label"
        raise ValueError(
            f"`num_classes` must be an integer >= {minimum} for a {kind} classifier. "
            f"Received: num_classes={num_classes!r}"
        )
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}")
    units = tuple(hidden_units or ())
    if not all(isinstance(u, int) and u > 0 for u in units):
        raise ValueError(
            f"`hidden_units` must be positive integers. Received: hidden_units={hidden_units!r}"
        )
    if classifier_activation not in (None, "softmax", "sigmoid", "linear"):
        raise ValueError(
            "`classifier_activation` must be 'softmax', 'sigmoid', 'linear' or None. "
            f"Received: classifier_activation={classifier_activation!r}"
        )
    activation = classifier_activation
    if multi_label and activation == "softmax":
        activation = "sigmoid"
    return units, (None if activation == "linear" else activation)


class Head(typing.NamedTuple):
    """What `classification_head` added: the output tensor and the names of its layers."""

    output: typing.Any
    features: str | None  # the pooling layer, or None when the backbone gives a vector
    layers: tuple  # the head's own layers after the pooling, the output layer last


def classification_head(
    features, num_classes, *, pooling="avg", dropout=0.2, hidden_units=(), activation="softmax"
):
    """Adds a head on a backbone's output and returns it as a `Head`.

    Args:
        features: KerasTensor. A feature map `(B, H, W, C)` or a feature vector `(B, C)`.
        num_classes: int. Number of outputs.
        pooling: str. `"avg"` or `"max"`, used when `features` is a map. Defaults to `"avg"`.
        dropout: float. Dropout rate before each dense layer. Defaults to `0.2`.
        hidden_units: tuple. Widths of hidden ReLU layers. Defaults to `()`.
        activation: str or None. Output activation; `None` gives logits. Defaults to `"softmax"`.

    Returns:
        A `Head`: the output KerasTensor (of the layer named `"predictions"`), the pooling
        layer's name (or `None`) and the names of the head's other layers, output last.
    """
    x, pooled = features, None
    if len(x.shape) == 4:
        pool = (
            keras.layers.GlobalAveragePooling2D
            if pooling == "avg"
            else keras.layers.GlobalMaxPooling2D
        )
        x, pooled = pool(name=POOL_NAME)(x), POOL_NAME
    elif len(x.shape) != 2:
        raise ValueError(
            "The backbone must output a feature map (B, H, W, C) or a feature vector (B, C). "
            f"Received: output shape {tuple(x.shape)}"
        )
    layers = []
    for i, units in enumerate(hidden_units):
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout_{i}"))
        layers.append(keras.layers.Dense(units, activation="relu", name=f"{HEAD_PREFIX}dense_{i}"))
    if dropout:
        layers.append(keras.layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout"))
    layers.append(
        keras.layers.Dense(num_classes, activation=activation, name=OUTPUT_NAME, dtype="float32")
    )
    for layer in layers:
        x = layer(x)
    return Head(x, pooled, tuple(layer.name for layer in layers))
