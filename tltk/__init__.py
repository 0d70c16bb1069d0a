"""tltk: transfer learning for Keras 3 on TensorFlow.

Pretrained backbones (Keras Applications, TF Hub, keras-hub, and a small one that ships inside
tltk), staged fine-tuning, and SavedModel / TFLite export checked against the Keras model.
"""

__version__ = "0.1.0"

from tltk.backbones import BackboneSpec, get_backbone, list_backbones, register_backbone
from tltk.builders import build_classifier
from tltk.freezing import LayerGroup, freeze, layer_groups, unfreeze
from tltk.layers import ImagePreprocessing

__all__ = [
    "BackboneSpec",
    "ImagePreprocessing",
    "LayerGroup",
    "__version__",
    "build_classifier",
    "freeze",
    "get_backbone",
    "layer_groups",
    "list_backbones",
    "register_backbone",
    "unfreeze",
]
