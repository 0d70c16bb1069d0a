"""Discriminative learning rates: a rate multiplier per layer group, on any Keras optimizer.

Built on Keras' own `MultiOptimizer`: each multiplier gets a copy of the optimizer whose learning
rate (a number or a schedule) is scaled, and an `OptimizerMap` sends each variable, by its path, to
its copy. Everything is a registered Keras object, so a compiled model saves and reloads with its
optimizer state, and one step at multiplier `m` is exactly one step of the optimizer at `lr * m`.
"""

from __future__ import annotations

import re

import keras

from tltk.argcheck import real
from tltk.freezing import layer_groups
from tltk.schedules import ScaledSchedule


def scaled_optimizer(optimizer, multiplier):
    """Returns a fresh copy of `optimizer` (same class and settings), its rate times `multiplier`.

    Args:
        optimizer: keras.optimizers.Optimizer. The template; left unchanged. Its learning rate may
            be a number or a `LearningRateSchedule` (scaled by `tltk.schedules.ScaledSchedule`).
        multiplier: float. Positive factor.

    Returns:
        A new, unbuilt optimizer of the same class.

    Example:

    >>> round(float(scaled_optimizer(keras.optimizers.SGD(0.1), 0.5).learning_rate), 6)
    0.05
    """
    _check_optimizer(optimizer)
    _check_multiplier("multiplier", multiplier)
    config = optimizer.get_config()
    rate = config["learning_rate"]
    if isinstance(rate, dict):
        schedule = keras.optimizers.schedules.deserialize(rate)
        config["learning_rate"] = (
            schedule if multiplier == 1 else ScaledSchedule(schedule, multiplier)
        )
    else:
        config["learning_rate"] = float(rate) * multiplier
    return type(optimizer).from_config(config)


def discriminative_optimizer(optimizer, multipliers, *, model=None):
    """Wraps `optimizer` so that each layer group (or variable pattern) trains at its own rate.

    Variables that no key covers train at the optimizer's own rate.

    Args:
        optimizer: keras.optimizers.Optimizer. Any Keras optimizer (SGD, Adam, AdamW...), with a
            constant rate or a schedule. It becomes the optimizer of uncovered variables.
        multipliers: dict. `{key: multiplier}`. With `model`, keys are layer-group names of
            `tltk.layer_groups(model)` (`"top"`, `"head"`...); without it, regular expressions
            matched in full against variable paths (`"block3_.*"`).
        model: tltk.TransferModel. A model built by `tltk.build_classifier`, to resolve group
            names.
            Defaults to `None`.

    Returns:
        A `keras.optimizers.MultiOptimizer`, to pass to `model.compile`.

    Example:

    ```python
    model = tltk.build_classifier("mobilenet_v2", 5, weights=None)
    tltk.unfreeze(model, groups=2)
    opt = tltk.discriminative_optimizer(
        keras.optimizers.AdamW(1e-4), {"block_16": 0.3, "top": 0.3 ** 2}, model=model)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    ```
    """
    _check_optimizer(optimizer)
    if not isinstance(multipliers, dict):
        raise ValueError(
            "`multipliers` must be a dict of key -> multiplier. "
            f"Received: multipliers={multipliers!r}"
        )
    for key, value in multipliers.items():
        _check_multiplier(f"multipliers[{key!r}]", value)
    patterns = _group_patterns(model, multipliers) if model is not None else dict(multipliers)
    optimizer_map = keras.optimizers.OptimizerMap(default_optimizer=optimizer)
    for key, value in multipliers.items():
        pattern = patterns[key] if model is not None else key
        if pattern is not None and value != 1:
            optimizer_map[pattern] = scaled_optimizer(optimizer, value)
    return keras.optimizers.MultiOptimizer(optimizer_map)


def decayed_multipliers(model, lr_decay, *, trainable_only=True):
    """Multipliers `lr_decay ** k` for the group `k` steps below the top (the head is `k = 0`).

    Args:
        model: tltk.TransferModel. A model built by `tltk.build_classifier` (or reloaded).
        lr_decay: float. Factor per group, in (0, 1] (`1` gives every group the same rate).
        trainable_only: bool. Leave out groups with nothing to train. Defaults to `True`.

    Returns:
        A dict `{group_name: multiplier}`, top first.

    Example:

    >>> import tltk
    >>> model = tltk.unfreeze(tltk.build_classifier("tltk_glyphnet", 3, weights=None), groups=2)
    >>> {name: round(m, 2) for name, m in decayed_multipliers(model, 0.3).items()}
    {'head': 1.0, 'top': 0.3, 'block3': 0.09}
    """
    lr_decay = real("lr_decay", lr_decay, "(0, 1]")
    groups = list(reversed(layer_groups(model)))
    return {
        g.name: float(lr_decay) ** k
        for k, g in enumerate(groups)
        if g.trainable or not trainable_only
    }


def _group_patterns(model, multipliers):
    """`{group_name: regex of its variable paths, or None if it has no variables}`."""
    groups = {g.name: g for g in layer_groups(model)}
    unknown = [key for key in multipliers if key not in groups]
    if unknown:
        raise ValueError(
            f"Unknown layer group(s) {unknown}; this model's groups are {list(groups)}. "
            f"Received: multipliers keys {list(multipliers)}"
        )
    owner = {}
    for name, group in groups.items():
        for variable in (v for layer in group.layers for v in layer.weights):
            if owner.setdefault(variable.path, name) != name:
                raise ValueError(
                    f"Variable path {variable.path!r} occurs in groups "
                    f"{owner[variable.path]!r} and {name!r}; rename a layer so that each group "
                    "can have its own learning rate."
                )
    patterns = {}
    for key in multipliers:
        paths = sorted(path for path, name in owner.items() if name == key)
        patterns[key] = "(?:" + "|".join(re.escape(p) for p in paths) + ")" if paths else None
    return patterns


def _check_optimizer(optimizer):
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
        optimizer, (keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer)
    ):
        raise ValueError(
            "`optimizer` must be a plain Keras optimizer instance (not a MultiOptimizer or "
            f"LossScaleOptimizer). Received: optimizer={optimizer!r}"
        )


def _check_multiplier(name, value):
    real(name, value, "(0, inf)")
