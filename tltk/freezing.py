"""Layer groups and staged freezing, with an explicit BatchNorm policy.

A tltk model's backbone is split into the named groups of its `BackboneSpec` (stem to top); the
head is one more group, `"head"`, always trainable. `unfreeze` works on group names, never on
layer indexes. BatchNorm layers stay frozen (and so in inference mode, with fixed statistics) when
their group is unfrozen, unless `train_bn=True` (keras-team/keras#20285). Layers with Keras LoRA
enabled (`tltk.build_text_classifier(..., lora_rank=4)`) keep their base weights frozen: only the
adapters train.

Changing what is trainable requires `model.compile(...)` again before training.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from tltk.backbones.keras_hub import keep_lora_only
from tltk.backbones.registry import _REGISTRY, assign_groups
from tltk.heads import head_layers

HEAD_GROUP = "head"


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

    def __repr__(self):
        return (
            f"LayerGroup({self.name!r}, layers={len(self.layers)}, "
            f"trainable={self.trainable_params:,}/{self.total_params:,})"
        )


def find_backbone(model: keras.Model):
    """Returns `(backbone_layer, spec_or_None)` for a model built by `tltk.build_classifier`."""
    for layer in model.layers:
        if layer.name in _REGISTRY:
            return layer, _REGISTRY[layer.name]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer, None
    raise ValueError(
        f"Model {model.name!r} has no backbone: expected a nested model or a registered backbone layer, "
        "as built by tltk.build_classifier."
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
    groups = [_group(name, layers) for name, layers in _backbone_groups(model)]
    groups.append(_group(HEAD_GROUP, head_layers(model)))
    return groups


def freeze(model: keras.Model) -> keras.Model:
    """Freezes the whole backbone and leaves the head trainable. Returns `model`."""
    backbone, _ = find_backbone(model)
    backbone.trainable = False
    for layer in head_layers(model):
        layer.trainable = True
    return model


def unfreeze(model: keras.Model, groups=1, *, train_bn=None) -> keras.Model:
    """Unfreezes backbone groups by name or from the top; other groups keep their state.

    Args:
        model: keras.Model. A model built by `tltk.build_classifier`.
        groups: int, list of str, or "all". How many groups to unfreeze from the top, their names
            (see `layer_groups`), or all of them. Defaults to `1`.
        train_bn: bool or None. Let BatchNorm layers in these groups train. Defaults to the
            `train_bn` the model was built with (False when unknown, e.g. after reloading).

    Returns:
        `model`, to be compiled again before training.

    Example:

    ```python
    model = tltk.build_classifier("mobilenet_v2", 5, weights=None)
    tltk.unfreeze(model, groups=2)                 # "block_16" and "top"
    tltk.unfreeze(model, groups=["block_13-15"])
    ```
    """
    named = _backbone_groups(model)
    names = [name for name, _ in named]
    if groups == "all":
        chosen = set(names)
    elif isinstance(groups, int) and not isinstance(groups, bool):
        if groups < 0:
            raise ValueError(f"`groups` must be >= 0, a list of group names or 'all'. Received: groups={groups}")
        chosen = set(names[len(names) - groups :]) if groups else set()
    elif isinstance(groups, (list, tuple)) and all(isinstance(g, str) for g in groups):
        unknown = [g for g in groups if g not in names]
        if unknown:
            raise ValueError(f"Unknown layer group(s) {unknown}; this model's groups are {names}. Received: groups={list(groups)}")
        chosen = set(groups)
    else:
        raise ValueError(f"`groups` must be an int, a list of group names or 'all'. Received: groups={groups!r}")
    if train_bn is None:
        train_bn = getattr(model, "tltk_train_bn", False)

    backbone, _ = find_backbone(model)
    leaves = [layer for _, layers in named for layer in layers]
    states = {id(layer): layer.trainable for layer in leaves}
    backbone.trainable = True  # a nested model exposes no trainable weights unless it is trainable
    for name, layers in named:
        for layer in layers:
            if name in chosen:
                layer.trainable = train_bn or not isinstance(layer, keras.layers.BatchNormalization)
            else:
                layer.trainable = states[id(layer)]
    keep_lora_only(backbone)  # LoRA-enabled layers keep their base weights frozen; a no-op without LoRA
    if hasattr(backbone, "train_bn"):  # a TF Hub module runs its own BatchNorm-like state
        backbone.train_bn = train_bn
    return model


def _backbone_groups(model):
    """`[(group_name, [layers])]` for the backbone, stem to top."""
    backbone, spec = find_backbone(model)
    if not isinstance(backbone, keras.Model):
        return [("backbone", [backbone])]
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    if spec is None:
        return [("backbone", layers)]
    assigned = assign_groups(spec.groups, [layer.name for layer in layers])
    return [(name, [l for l, g in zip(layers, assigned) if g == name]) for name in spec.group_names]


def _group(name, layers):
    trainable = sum(math.prod(w.shape) for layer in layers for w in layer.trainable_weights)
    total = sum(math.prod(w.shape) for layer in layers for w in layer.weights)
    return LayerGroup(name, tuple(layers), int(trainable), int(total))
