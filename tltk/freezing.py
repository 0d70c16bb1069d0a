"""Layer groups and staged freezing, with an explicit BatchNorm policy.

A `tltk.TransferModel`'s backbone is split into the named groups its config records (stem to
top, from the backbone's `BackboneSpec` at build time); the head is one more group, `"head"`,
always trainable. `unfreeze` works on group names, never on
layer indexes. BatchNorm layers stay frozen (and so in inference mode, with fixed statistics) when
their group is unfrozen, unless `train_bn=True` (keras-team/keras#20285). Layers with Keras LoRA
enabled (`tltk.build_classifier(..., lora_rank=4)`, `tltk.build_text_classifier(...,
lora_rank=4)`) keep their base weights frozen: only the adapters (and BatchNorm, with `train_bn`)
of an unfrozen group train.

Changing what is trainable requires `model.compile(...)` again before training.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from tltk.argcheck import is_integer
from tltk.backbones.registry import assign_groups
from tltk.lora import keep_lora_only, revive
from tltk.transfer_model import HEAD_GROUP, as_transfer_model


@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """One named group of layers.

    Attributes:
        name: str. Group name (`"block_16"`, `"head"`).
        layers: tuple. The Keras layers in the group.
        trainable_params: int. Parameters that training would update now.
        total_params: int. All parameters, BatchNorm statistics included.
    """

    name: str
    layers: tuple
    trainable_params: int
    total_params: int

    @property
    def trainable(self) -> bool:
        """Whether any parameter of the group trains."""
        return self.trainable_params > 0

    @property
    def trainable_fraction(self) -> float:
        """`trainable_params / total_params` (0.0 for a group without parameters)."""
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def __repr__(self):
        return (
            f"LayerGroup({self.name!r}, layers={len(self.layers)}, "
            f"trainable={self.trainable_params:,}/{self.total_params:,})"
        )


def layer_groups(model: keras.Model) -> list:
    """Lists the model's layer groups, stem to top, the head last, with parameter counts.

    Example:

    ```python
    model = tltk.build_classifier("mobilenet_v2", 5, weights=None)
    for group in tltk.layer_groups(model):
        print(group)     # LayerGroup('stem', layers=12, trainable=0/1,264) ...
    ```
    """
    model = as_transfer_model(model)
    groups = [_group(name, layers) for name, layers in backbone_groups(model)]
    groups.append(_group(HEAD_GROUP, model.head_layers))
    return groups


def trainable_fraction(model: keras.Model) -> float:
    """The fraction of all of `model`'s parameters (BatchNorm statistics and LoRA factors
    included) that training would update now.

    >>> import tltk
    >>> trainable_fraction(tltk.build_classifier("tltk_glyphnet", 3, weights=None)) < 0.01
    True
    """
    total = sum(math.prod(w.shape) for w in model.weights)
    return sum(math.prod(w.shape) for w in model.trainable_weights) / total if total else 0.0


def freeze(model: keras.Model) -> keras.Model:
    """Freezes the whole backbone and leaves the head trainable. Returns `model`."""
    model = as_transfer_model(model)
    model.backbone.trainable = False
    for layer in model.head_layers:
        layer.trainable = True
    return model


def unfreeze(model: keras.Model, groups=1, *, train_bn=None) -> keras.Model:
    """Unfreezes backbone groups by name or from the top; other groups keep their state.

    Args:
        model: tltk.TransferModel. A model built by `tltk.build_classifier` (or reloaded).
        groups: int, list of str, or "all". How many groups to unfreeze from the top (1 to the
            number of backbone groups), their names (see `layer_groups`), or all of them.
            Defaults to `1`.
        train_bn: bool or None. Let BatchNorm layers in these groups train. Defaults to
            `model.train_bn` (the `train_bn` it was built with, kept in its config).

    Returns:
        `model`, to be compiled again before training.

    Example:

    ```python
    model = tltk.build_classifier("mobilenet_v2", 5, weights=None)
    tltk.unfreeze(model, groups=2)                 # "block_16" and "top"
    tltk.unfreeze(model, groups=["block_13-15"])
    ```
    """
    model = as_transfer_model(model)
    named = backbone_groups(model)
    names = [name for name, _ in named]
    chosen = _chosen(groups, names)
    if train_bn is None:
        train_bn = model.train_bn
    elif not isinstance(train_bn, bool):
        raise ValueError(f"`train_bn` must be True, False or None. Received: train_bn={train_bn!r}")

    backbone = model.backbone
    leaves = [layer for _, layers in named for layer in layers]
    states = {id(layer): layer.trainable for layer in leaves}
    backbone.trainable = True  # a nested model exposes no trainable weights unless it is trainable
    for name, layers in named:
        for layer in layers:
            if name in chosen:
                layer.trainable = train_bn or not isinstance(layer, keras.layers.BatchNormalization)
            else:
                layer.trainable = states[id(layer)]
    # LoRA-enabled layers keep their base weights frozen, and adapters that a reload left at
    # zero (they would get no gradient) are drawn afresh; a no-op without LoRA.
    keep_lora_only(revive(backbone, alpha=model.lora_alpha))
    if hasattr(backbone, "train_bn"):  # a TF Hub module runs its own BatchNorm-like state
        backbone.train_bn = train_bn
    return model


def backbone_groups(model) -> list:
    """`[(group_name, [layers])]` for the backbone of a `tltk.TransferModel`, stem to top."""
    model = as_transfer_model(model)
    backbone, groups = model.backbone, model.groups
    if not isinstance(backbone, keras.Model):
        return [(name, [backbone]) for name in list(groups)[-1:]]  # one layer: one group
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    assigned = assign_groups(tuple(groups.items()), [layer.name for layer in layers])
    return [(name, [layer for layer, g in zip(layers, assigned) if g == name]) for name in groups]


def _chosen(groups, names):
    """The set of group names that `unfreeze(model, groups)` picks, or a ValueError."""
    if groups == "all":
        return set(names)
    if is_integer(groups):
        groups = int(groups)
        if not 0 <= groups <= len(names):
            raise ValueError(
                f"`groups` must be 0 to {len(names)} (this backbone's groups: {names}), a list of "
                f"group names or 'all'. Received: groups={groups}"
            )
        return set(names[len(names) - groups :]) if groups else set()
    if isinstance(groups, (list, tuple)) and all(isinstance(g, str) for g in groups):
        unknown = [g for g in groups if g not in names]
        if unknown:
            raise ValueError(
                f"Unknown layer group(s) {unknown} in `groups`; this model's backbone groups are "
                f"{names}. Received: groups={list(groups)}"
            )
        return set(groups)
    raise ValueError(
        f"`groups` must be an int, a list of group names or 'all'. Received: groups={groups!r}"
    )


def _group(name, layers):
    trainable = sum(math.prod(w.shape) for layer in layers for w in layer.trainable_weights)
    total = sum(math.prod(w.shape) for layer in layers for w in layer.weights)
    return LayerGroup(name, tuple(layers), int(trainable), int(total))
