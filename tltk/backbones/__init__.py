"""The backbone registry and the backbones tltk registers at import."""

from tltk.backbones import keras_apps  # noqa: F401  (registers keras.applications)
from tltk.backbones.registry import (
    BackboneSpec,
    get_backbone,
    list_backbones,
    register_backbone,
)

__all__ = ["BackboneSpec", "get_backbone", "list_backbones", "register_backbone"]
