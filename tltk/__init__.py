"""tltk: transfer learning for Keras 3 on TensorFlow.

Pretrained backbones (Keras Applications, TF Hub, keras-hub, and a small one that ships inside
tltk), staged fine-tuning, and SavedModel / TFLite export checked against the Keras model.
The steps run one way, each taking and returning plain Keras and tf.data objects:
`tltk.data` -> `build_classifier` -> `fine_tune` -> `evaluate` -> `export`.
"""

from tltk._version import __version__

import importlib as _importlib
import os as _os
import sys as _sys

# TensorFlow's C++ INFO/WARNING lines; set TF_CPP_MIN_LOG_LEVEL=0 to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# (module, the names it gives the package); an empty string: the module itself (`tltk.data`).
_API = (
    ("tltk.data", ""),
    ("tltk.datasets", ""),
    ("tltk.adapt", "AdaptResult adapt"),
    ("tltk.augment", "augmentation"),
    ("tltk.backbones", "BackboneSpec get_backbone list_backbones register_backbone"),
    ("tltk.backbones.hub", "HubLayer"),
    ("tltk.backbones.hub_module", "trust_hub_handles"),
    ("tltk.builders", "build_classifier"),
    ("tltk.heads", "HeadSpec"),
    ("tltk.data", "class_weights"),
    ("tltk.evaluate", "EvaluationReport evaluate"),
    ("tltk.export", "ExportReport ParityError Predictor export load_exported"),
    ("tltk.freezing", "LayerGroup freeze layer_groups unfreeze"),
    ("tltk.layers", "ImagePreprocessing"),
    ("tltk.legacy", "upgrade_model"),
    ("tltk.lr_finder", "find_lr"),
    ("tltk.lr_multipliers", "discriminative_optimizer"),
    ("tltk.model_file", "load_model"),
    ("tltk.prototypes", "build_prototype_classifier"),
    ("tltk.ranking", "Ranking rank_backbones"),
    ("tltk.regularizers", "fisher"),
    ("tltk.replay", "Replay"),
    ("tltk.export.text", "export_text"),
    ("tltk.text", "build_text_classifier load_text_topics"),
    ("tltk.stages", "Stage plan_stages"),
    ("tltk.training", "FineTuneResult fine_tune"),
    ("tltk.transfer_model", "TransferModel"),
    ("tltk.workflow", "TrainingRun demo train_from_directory"),
    ("tltk.zero_shot", "build_zero_shot_classifier"),
)


def _load():
    """Imports the public API (and TensorFlow with it) into the package's namespace."""
    for module, names in _API:
        loaded = _importlib.import_module(module)
        if not names:
            globals()[module.rsplit(".", 1)[1]] = loaded
        globals().update({name: getattr(loaded, name) for name in names.split()})


def __getattr__(name):
    """The `tltk` command starts without the API (`--help` without TensorFlow); it loads on use."""
    if name in __all__:
        _load()
        return globals()[name]
    raise AttributeError(f"module 'tltk' has no attribute {name!r}")


__all__ = [
    "AdaptResult",
    "BackboneSpec",
    "EvaluationReport",
    "ExportReport",
    "FineTuneResult",
    "HubLayer",
    "ImagePreprocessing",
    "LayerGroup",
    "ParityError",
    "Predictor",
    "Ranking",
    "Replay",
    "Stage",
    "TrainingRun",
    "TransferModel",
    "__version__",
    "adapt",
    "augmentation",
    "build_classifier",
    "HeadSpec",
    "build_prototype_classifier",
    "build_text_classifier",
    "build_zero_shot_classifier",
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
    "fisher",
    "freeze",
    "get_backbone",
    "layer_groups",
    "list_backbones",
    "load_exported",
    "load_model",
    "load_text_topics",
    "plan_stages",
    "rank_backbones",
    "register_backbone",
    "train_from_directory",
    "trust_hub_handles",
    "unfreeze",
    "upgrade_model",
]


def _started_as_command():
    """Whether this process is the `tltk` command (`tltk ...` or `python -m tltk ...`)."""
    script = _os.path.splitext(_os.path.basename(_sys.argv[0] if _sys.argv else ""))[0]
    flags = getattr(_sys, "orig_argv", [])
    return script in ("tltk", "tltk-script") or any(
        flag == "-m" and module == "tltk" for flag, module in zip(flags, flags[1:])
    )


# `import tltk` loads everything at once (its Keras classes register for `keras.models.load_model`);
# the `tltk` command loads only what a command uses.
if not _started_as_command():
    _load()
