"""`upgrade_model`: a model saved by tltk 0.1 (a plain functional model) as a `tltk.TransferModel`.

tltk 0.1 kept a model's structure in layer names and in the backbone registry, not in the model's
config. This module is the one place that still reads those names, once, to write the structure
into a `TransferModel`; everything else reads the model's attributes.
"""

from __future__ import annotations

import keras

from tltk.backbones.keras_hub import text_groups
from tltk.backbones.registry import get_backbone, is_registered
from tltk.builders import AUGMENTATION_NAME, PREPROCESSING_NAME
from tltk.heads import OUTPUT_NAME, POOL_NAME
from tltk.text import is_text_model
from tltk.transfer_model import TransferModel


def upgrade_model(model, *, train_bn=False):
    """Returns a `tltk.TransferModel` with the layers (and weights) of a tltk 0.1 model.

    Save the result again (`model.save("x.keras")`) to keep it: the new file records the
    structure, and loads as a `TransferModel`. A `TransferModel` is returned as is.

    Args:
        model: keras.Model. A classifier built by tltk 0.1 and loaded with
            `keras.models.load_model`.
        train_bn: bool. The BatchNorm policy, which tltk 0.1 did not save. Defaults to `False`.

    Returns:
        A `tltk.TransferModel` sharing `model`'s layers and weights.

    Example:

    ```python
    old = keras.models.load_model("flowers_tltk01.keras")
    model = tltk.upgrade_model(old)
    model.save("flowers.keras")
    ```
    """
    if isinstance(model, TransferModel):
        return model
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "`model` must be a functional keras.Model built by tltk 0.1. "
            f"Received: {type(model).__name__}"
        )
    names = [layer.name for layer in model.layers]
    backbone = _backbone(model)
    if OUTPUT_NAME not in names:
        raise ValueError(
            f"Model {model.name!r} has no {OUTPUT_NAME!r} layer, so it was not built by tltk 0.1's "
            "build_classifier; rebuild it with tltk.build_classifier."
        )
    features = POOL_NAME if POOL_NAME in names else None
    start = names.index(features or backbone.name) + 1
    head = names[start : names.index(OUTPUT_NAME) + 1]
    if is_registered(backbone.name):
        spec = get_backbone(backbone.name)
        groups, backbone_name = spec.groups, spec.name
    elif isinstance(backbone, keras.Model):
        groups, backbone_name = text_groups(backbone), None
    else:
        groups, backbone_name = (("backbone", ".*"),), None
    return TransferModel(
        model.inputs,
        model.outputs,
        name=model.name,
        backbone=backbone.name,
        heads={OUTPUT_NAME: head},
        groups=groups,
        features=features,
        preprocessing=PREPROCESSING_NAME if PREPROCESSING_NAME in names else None,
        augmentation=AUGMENTATION_NAME if AUGMENTATION_NAME in names else None,
        train_bn=train_bn,
        backbone_name=backbone_name,
        modality="text" if is_text_model(model) else "image",
    )


def _backbone(model):
    for layer in model.layers:
        if is_registered(layer.name):
            return layer
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(
        f"Model {model.name!r} has no backbone (no nested model or registered backbone layer), so "
        "it was not built by tltk 0.1; rebuild it with tltk.build_classifier."
    )
