"""Finding and loading a TF Hub module: a handle or folder to a local SavedModel, then its
variables. `tltk.backbones.hub` builds the Keras layer on top of these.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import types

import tensorflow as tf

# Seconds a download may wait on the network before it is called unreachable.
NETWORK_TIMEOUT_S = 20
URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
EXPECTED = (
    "a TF Hub or Kaggle model handle (https://tfhub.dev/..., https://www.kaggle.com/models/...) "
    "or a local folder holding a TF2 SavedModel (saved_model.pb)"
)


def resolve_handle(handle, *, timeout=NETWORK_TIMEOUT_S):
    """Turns a TF Hub / Kaggle handle or a local folder into the local folder of a SavedModel.

    URLs go through `tensorflow_hub.resolve`, which downloads once into its cache
    (`TFHUB_CACHE_DIR`) and reads from it afterwards, offline included.

    Args:
        handle: str. A TF Hub or Kaggle model URL, a `gs://` path, or a local folder.
        timeout: float. Seconds any network operation may wait. Defaults to `20`.

    Returns:
        The local folder, a str.

    Example:

    ```python
    path = resolve_handle("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")
    ```
    """
    if not isinstance(handle, str) or not handle.strip():
        raise ValueError(f"`handle` must be {EXPECTED}. Received: handle={handle!r}")
    if URL_SCHEME.match(handle):
        hub = _import_tensorflow_hub()
        try:
            with network_timeout(timeout):
                path = hub.resolve(handle)
        except Exception as error:  # urllib, socket and tensorflow_hub raise many kinds
            raise ValueError(
                f"Could not fetch TF Hub handle {handle!r}: {type(error).__name__}: {error}. "
                f"Expected {EXPECTED}, reachable from here. Check the handle and the network, "
                "point TFHUB_CACHE_DIR at a cache that holds the model, or download it and pass "
                "the folder."
            ) from error
    else:
        path = os.path.expanduser(handle)
        if not os.path.isdir(path):
            raise ValueError(
                f"TF Hub handle {handle!r} is no URL and no existing folder. Expected {EXPECTED}."
            )
    names = ("saved_model.pb", "saved_model.pbtxt")
    if not any(os.path.exists(os.path.join(path, name)) for name in names):
        raise ValueError(
            f"TF Hub handle {handle!r} resolved to {path!r}, which is not a SavedModel folder "
            f"(no saved_model.pb). Expected {EXPECTED}."
        )
    return path


def load_module(handle):
    """`tf.saved_model.load`s the module of `handle` (TF1 Hub format included); a clear error."""
    path = resolve_handle(handle)
    tags = [] if os.path.exists(os.path.join(path, "tfhub_module.pb")) else None  # TF1 Hub format
    try:
        return tf.saved_model.load(path, tags=tags)
    except Exception as error:
        raise ValueError(
            f"Could not load the SavedModel of TF Hub handle {handle!r} from {path!r}: {error}"
        ) from error


def regularization_losses(module, handle):
    """A reusable module's `regularization_losses`: zero-argument functions returning scalars."""
    losses = list(getattr(module, "regularization_losses", ()))
    if not all(callable(loss) for loss in losses):
        raise ValueError(
            f"TF Hub module {handle!r} has `regularization_losses` that are not all callables, "
            f"each returning a scalar loss term. Received: {losses!r}"
        )
    return losses


def module_variables(module, fn, *, signature_only):
    """`[(tf.Variable, trainable)]` for the module, trainable ones first (stable order)."""
    if not signature_only and hasattr(module, "variables"):
        variables = list(module.variables)
        marked = {id(v) for v in getattr(module, "trainable_variables", variables)}
    else:
        functions = getattr(fn, "concrete_functions", None) or [fn]
        variables, seen = [], set()
        for concrete in functions:
            for v in concrete.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    variables.append(v)
        marked = {id(v) for v in variables}
    pairs = [(v, v.trainable and id(v) in marked) for v in variables]
    return [p for p in pairs if p[1]] + [p for p in pairs if not p[1]]


@contextlib.contextmanager
def network_timeout(seconds):
    """Bounds every socket operation while downloading (urllib in tensorflow_hub sets none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _import_tensorflow_hub():
    """Imports tensorflow_hub, whose 0.16.1 `__init__` needs `pkg_resources` (gone in setuptools
    82+, tensorflow/hub#934): a stand-in with `packaging`'s parser stands in for that import only.
    """
    if "tensorflow_hub" in sys.modules:
        return sys.modules["tensorflow_hub"]
    try:
        import pkg_resources  # noqa: F401

        return __import__("tensorflow_hub")
    except ImportError:
        pass
    from packaging.version import parse

    sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    try:
        return __import__("tensorflow_hub")
    finally:
        sys.modules.pop("pkg_resources", None)
