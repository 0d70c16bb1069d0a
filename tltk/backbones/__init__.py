"""The backbone registry and the backbones tltk registers at import."""

from tltk.backbones import glyphnet, hub, keras_apps, keras_hub  # noqa: F401  (register their backbones)
from tltk.backbones.registry import (
    BackboneSpec,
    get_backbone,
    list_backbones,
    register_backbone,
)

__all__ = ["BackboneSpec", "get_backbone", "list_backbones", "register_backbone"]
