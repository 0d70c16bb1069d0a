"""Classification heads: pooling, dropout, optional hidden layers, and the output layer."""

from __future__ import annotations

import typing

import keras

from tltk.argcheck import integer, is_integer, real

POOLINGS = ("avg", "max")
HEAD_PREFIX = "head_"
OUTPUT_NAME = "predictions"
POOL_NAME = "pool"


def check_head_args(
    *, num_classes, pooling, dropout, hidden_units, multi_label, classifier_activation
):
    """Validates head arguments before anything is built; raises `ValueError` naming the argument.

    Integers may be numpy integers, and one hidden width may be given as an int (`128` is
    `(128,)`).

    Returns:
        `(num_classes, hidden_units, activation)`: the class count as an int, the hidden widths
        as a tuple of ints, and the output activation (`"sigmoid"` for a multi-label model left
        at `"softmax"`; `None` for logits).
    """
    minimum = 1 if multi_label else 2
    if not is_integer(num_classes) or num_classes < minimum:
        kind = "multi-label" if multi_label else "single-label"
        raise ValueError(
            f"`num_classes` must be an integer >= {minimum} for a {kind} classifier. "
            f"Received: num_classes={num_classes!r}"
        )
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    real("dropout", dropout, "[0, 1)")
    if is_integer(hidden_units):
        hidden_units = (hidden_units,)
    if not isinstance(hidden_units, (list, tuple)) and hidden_units is not None:
        raise ValueError(
            "`hidden_units` must be a list or tuple of layer widths (or one width). "
            f"Received: hidden_units={hidden_units!r}"
        )
    units = tuple(integer("hidden_units", u, minimum=1) for u in hidden_units or ())
    if classifier_activation not in (None, "softmax", "sigmoid", "linear"):
        raise ValueError(
            "`classifier_activation` must be 'softmax', 'sigmoid', 'linear' or None. "
            f"Received: classifier_activation={classifier_activation!r}"
        )
    activation = classifier_activation
    if multi_label and activation == "softmax":
        activation = "sigmoid"
    return int(num_classes), units, (None if activation == "linear" else activation)


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
