"""tltk: transfer learning for Keras 3 on TensorFlow.

Pretrained backbones (Keras Applications, TF Hub, keras-hub, and a small one that ships inside
tltk), staged fine-tuning, and SavedModel / TFLite export checked against the Keras model.
The steps run one way, each taking and returning plain Keras and tf.data objects:
`tltk.data` -> `build_classifier` -> `fine_tune` -> `evaluate` -> `export`.
"""

from tltk._version import __version__

import os as _os

# TensorFlow's C++ INFO/WARNING lines; set TF_CPP_MIN_LOG_LEVEL=0 to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tltk import data, datasets
from tltk.augment import augmentation
from tltk.backbones import BackboneSpec, get_backbone, list_backbones, register_backbone
from tltk.backbones.hub import HubLayer
from tltk.backbones.hub_module import trust_hub_handles
from tltk.builders import build_classifier
from tltk.data import class_weights
from tltk.evaluate import EvaluationReport, evaluate
from tltk.export import ExportReport, ParityError, Predictor, export, load_exported
from tltk.freezing import LayerGroup, freeze, layer_groups, unfreeze
from tltk.layers import ImagePreprocessing
from tltk.legacy import upgrade_model
from tltk.lr_finder import find_lr
from tltk.lr_multipliers import discriminative_optimizer
from tltk.model_file import load_model
from tltk.export.text import export_text
from tltk.text import build_text_classifier, load_text_topics
from tltk.training import FineTuneResult, fine_tune
from tltk.transfer_model import TransferModel
from tltk.workflow import TrainingRun, demo, train_from_directory

__all__ = [
    "BackboneSpec",
    "EvaluationReport",
    "ExportReport",
    "FineTuneResult",
    "HubLayer",
    "ImagePreprocessing",
    "LayerGroup",
    "ParityError",
    "Predictor",
    "TrainingRun",
    "TransferModel",
    "__version__",
    "augmentation",
    "build_classifier",
    "build_text_classifier",
    "class_weights",
    "data",
    "datasets",
    "demo",
    "discriminative_optimizer",
    "evaluate",
    "export",
    "export_text",
    "fine_tune",
    "find_lr",
    "freeze",
    "get_backbone",
    "layer_groups",
    "list_backbones",
    "load_exported",
    "load_model",
    "load_text_topics",
    "register_backbone",
    "train_from_directory",
    "trust_hub_handles",
    "unfreeze",
    "upgrade_model",
]
