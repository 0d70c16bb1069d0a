"""Heads: pooling, dropout, optional hidden layers, and the output layer; several heads can share
one pooled feature vector (`HeadSpec`, `check_head_specs`)."""

from __future__ import annotations

import dataclasses
import re
import typing

import keras

from tltk.argcheck import integer, is_integer, real

POOLINGS = ("avg", "max")
HEAD_PREFIX = "head_"
OUTPUT_NAME = "predictions"
POOL_NAME = "pool"
TASKS = ("classification", "multi_label", "regression")
HEAD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One head of a model with several heads: `tltk.build_classifier(backbone,
    num_classes={"species": 5, "tags": tltk.HeadSpec(4, "multi_label")})`.

    Args:
        units: int. Classes (`"classification"`, at least 2), labels (`"multi_label"`) or values
            (`"regression"`).
        task: str. `"classification"`: softmax over the classes, labels are class indexes or
            one-hot; `"multi_label"`: one sigmoid per label, multi-hot labels; `"regression"`:
            linear outputs trained on float targets with the mean squared error (metric: mean
            absolute error, `"mae"`). Defaults to `"classification"`.

    Example:

    >>> import tltk
    >>> tltk.HeadSpec(3, "regression")
    HeadSpec(units=3, task='regression')
    """

    units: int
    task: str = "classification"

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}. Received: task={self.task!r}")
        minimum = 2 if self.task == "classification" else 1
        if not is_integer(self.units) or self.units < minimum:
            raise ValueError(
                f"`units` of a {self.task} head must be an integer >= {minimum}. "
                f"Received: units={self.units!r}"
            )
        object.__setattr__(self, "units", int(self.units))

    @property
    def activation(self):
        """The output activation: softmax, sigmoid, or `None` (linear) for regression."""
        return {"classification": "softmax", "multi_label": "sigmoid"}.get(self.task)


def layer_activation(layer):
    """`"softmax"`, `"sigmoid"` or `"linear"` (anything else): the activation of `layer`."""
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return activation if activation in ("softmax", "sigmoid") else "linear"


def check_head_specs(num_classes, *, multi_label, classifier_activation, taken=()):
    """`{name: HeadSpec}` from `build_classifier`'s dict `num_classes`; a `ValueError` naming the
    entry otherwise. Head names become layer, output and file names: letters, digits and
    underscores, starting with a letter, none of the names in `taken`."""
    if not num_classes:
        raise ValueError(
            "`num_classes` as a dict needs at least one head, e.g. {'species': 5}. "
            f"Received: num_classes={num_classes!r}"
        )
    if multi_label or classifier_activation != "softmax":
        raise ValueError(
            "With several heads, give each its task with tltk.HeadSpec(units, task) instead of "
            "`multi_label` / `classifier_activation`. "
            f"Received: multi_label={multi_label!r}, "
            f"classifier_activation={classifier_activation!r}"
        )
    specs = {}
    for name, value in num_classes.items():
        if not isinstance(name, str) or not HEAD_NAME.fullmatch(name) or name in taken:
            raise ValueError(
                "Head names must be letters, digits and underscores, start with a letter, and "
                f"not be a name the model already uses {sorted(taken)}. Received: {name!r}"
            )
        if isinstance(value, HeadSpec):
            specs[name] = value
        elif is_integer(value):
            specs[name] = HeadSpec(value)
        else:
            raise ValueError(
                f"Each head of `num_classes` must be a class count or a tltk.HeadSpec. "
                f"Received: {name!r}: {value!r}"
            )
    return specs


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
    x, pooled = pool_features(features, pooling)
    output, layers = head_layers(x, num_classes, dropout, hidden_units, activation)
    return Head(output, pooled, layers)


def pool_features(features, pooling="avg"):
    """`(vector, pooling layer name or None)`: a feature map pooled globally, a vector as is."""
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
    return x, pooled


def head_layers(x, units, dropout, hidden_units, activation, name=None):
    """Adds one head's layers on the vector `x`; returns `(output, layer names, output last)`.

    The layers of the head `name` are `{name}_dropout`, `{name}_dense_{i}` and the output layer
    `name`; without a name (a one-head model) `head_dropout`, `head_dense_{i}`, `predictions`.
    """
    prefix = HEAD_PREFIX if name is None else f"{name}_"
    layers = []
    for i, width in enumerate(hidden_units):
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{prefix}dropout_{i}"))
        layers.append(keras.layers.Dense(width, activation="relu", name=f"{prefix}dense_{i}"))
    if dropout:
        layers.append(keras.layers.Dropout(dropout, name=f"{prefix}dropout"))
    layers.append(
        keras.layers.Dense(units, activation=activation, name=name or OUTPUT_NAME, dtype="float32")
    )
    for layer in layers:
        x = layer(x)
    return x, tuple(layer.name for layer in layers)
