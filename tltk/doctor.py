"""`tltk doctor`: checks of the installation, each problem with its fix."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import pathlib
import stat
import sys


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, what was found, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major_minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def _existing(folder):
    """`(folder, the folder or its nearest existing parent)`, `~` expanded."""
    folder = pathlib.Path(folder).expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return folder, probe


def _writable(folder):
    folder, probe = _existing(folder)
    return os.access(probe, os.W_OK), folder


def _shared(folder):
    """Why others could plant files in `folder` (or create it first), or `""` when they cannot."""
    folder, probe = _existing(folder)
    mode = probe.stat()
    where = "it" if probe == folder else f"{probe}, where it would be created,"
    if mode.st_mode & stat.S_IWOTH:
        return f"{where} is writable by every user"
    if probe == folder and mode.st_uid != os.getuid():
        return "it belongs to another user"
    return ""


def run_checks() -> list:
    """Runs every check and returns a list of `Check`.

    Example:

    >>> from tltk.doctor import run_checks
    >>> any(c.name == "keras" for c in run_checks())
    True
    """
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 10),
            sys.version.split()[0],
            "Use Python 3.10 or newer.",
        )
    ]

    import tensorflow as tf

    tf_ok = _major_minor(tf.__version__) >= (2, 16)
    checks.append(
        Check("tensorflow", tf_ok, tf.__version__, 'pip install "tensorflow>=2.16,<2.22"')
    )
    import keras

    checks.append(
        Check(
            "keras",
            keras.__version__.startswith("3."),
            keras.__version__,
            'pip install "keras>=3.5"',
        )
    )
    backend = keras.backend.backend()
    checks.append(
        Check(
            "keras backend",
            backend == "tensorflow",
            backend,
            "Set KERAS_BACKEND=tensorflow (tltk exports through TensorFlow).",
        )
    )
    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "")
    checks.append(
        Check(
            "TF_USE_LEGACY_KERAS",
            legacy not in ("1", "true", "True"),
            legacy or "unset",
            "Unset TF_USE_LEGACY_KERAS: it makes tf.keras mean Keras 2 (tf_keras), which tltk "
            "models are not.",
        )
    )
    tf_keras = _version("tf-keras")
    checks.append(
        Check(
            "tf_keras",
            tf_keras is not None,
            tf_keras or "missing",
            "pip install tf_keras (tensorflow-hub imports it; tltk's own hub layer does not use "
            "it for models).",
        )
    )
    gpus = tf.config.list_physical_devices("GPU")
    checks.append(
        Check(
            "accelerators",
            True,
            f"{len(gpus)} GPU(s)" if gpus else "none (CPU only; fine for small data)",
        )
    )

    from tltk.backbones.hub_module import hub_cache_dir

    caches = {
        "Keras cache (KERAS_HOME)": os.environ.get("KERAS_HOME", "~/.keras"),
        "TF Hub cache (TFHUB_CACHE_DIR)": hub_cache_dir(),
        "TFDS data (TFDS_DATA_DIR)": os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"),
    }
    for name, folder in caches.items():
        ok, path = _writable(folder)
        variable = name.split("(")[1].rstrip(")")
        fix = f"Make {path} writable or set {variable} to a writable folder."
        shared = _shared(folder) if variable == "TFHUB_CACHE_DIR" else ""
        if shared:  # anyone could plant a module there under a handle's hashed name
            ok, fix = (
                False,
                f"Set {variable} to a folder only you can write, such as ~/.keras/tfhub_modules.",
            )
            path = f"{path} ({shared}: others could plant TF Hub modules in it)"
        checks.append(Check(name, ok, str(path), fix))

    try:
        from tltk.backbones import glyphnet

        glyphnet.verified_weights_path()
        checks.append(Check("demo weights", True, "tltk_glyphnet weights present, checksum ok"))
    except Exception as error:  # the error text says which file and how to regenerate it
        checks.append(
            Check(
                "demo weights",
                False,
                str(error).split(". ")[0],
                "Reinstall tltk, or run scripts/pretrain_demo_backbone.py.",
            )
        )

    extras = {
        "keras_hub": "pip install 'tltk[hub]' (keras-hub presets, text classifiers)",
        "safetensors": "pip install safetensors (Hugging Face folders in keras-hub)",
        "mediapipe": "pip install 'tltk[mediapipe]' (run exports as MediaPipe Tasks would)",
        "ai_edge_litert": "pip install ai-edge-litert (runs .tflite files)",
        "tensorflow_hub": "pip install tensorflow-hub (TF Hub handles)",
        "tensorflow_datasets": "pip install tensorflow-datasets (tltk.data.from_tfds)",
        "tensorboard": "pip install 'tltk-keras[tensorboard]' (keras.callbacks.TensorBoard: "
        "TensorFlow 2.21 no longer installs it)",
    }
    for module, fix in extras.items():
        try:
            importlib.import_module(module)
            checks.append(Check(f"optional: {module}", True, "importable"))
        except Exception as error:
            checks.append(
                Check(f"optional: {module}", False, f"not importable ({type(error).__name__})", fix)
            )
    return checks
