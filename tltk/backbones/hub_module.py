"""Finding and loading a TF Hub module: a handle or folder to a local SavedModel, then its
variables; the per-user download cache; which handles a saved model file may load.
`tltk.backbones.hub` builds the Keras layer on top of these.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shlex
import socket
import sys
import types

import tensorflow as tf
from keras.src.saving import serialization_lib  # in_safe_mode(), as Keras' own TFSMLayer reads it

# Seconds a download may wait on the network before it is called unreachable.
NETWORK_TIMEOUT_S = 20
URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
EXPECTED = (
    "a TF Hub or Kaggle model handle (https://tfhub.dev/..., https://www.kaggle.com/models/...) "
    "or a local folder holding a TF2 SavedModel (saved_model.pb)"
)
CACHE_VARIABLE = "TFHUB_CACHE_DIR"
_TRUSTED = contextvars.ContextVar("tltk_trusted_hub_handles", default=frozenset())


def hub_cache_dir():
    """The TF Hub download cache tltk uses: `TFHUB_CACHE_DIR` if set, else a per-user folder.

    tensorflow_hub's own default is `<tmp>/tfhub_modules`, one predictably named folder shared by
    every user of the machine, where anyone could plant a module under a handle's hashed name;
    tltk's default is `tfhub_modules` in Keras' per-user folder (`KERAS_HOME`, else `~/.keras`).

    Example:

    >>> import os
    >>> hub_cache_dir() == os.environ.get("TFHUB_CACHE_DIR", hub_cache_dir())
    True
    """
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    default = os.path.join(os.path.expanduser(keras_home), "tfhub_modules")
    return os.environ.get(CACHE_VARIABLE) or default


@contextlib.contextmanager
def trust_hub_handles(handles):
    """Lets saved model files load `HubLayer`s of these TF Hub handles or folders, in safe mode.

    A `HubLayer` loads and runs a SavedModel's graph, which can read and write files, so a
    `.keras` file naming one could run anything. Keras' safe mode (the default of
    `keras.models.load_model` and of every tltk entry point) therefore refuses HubLayers, except
    those whose handle is trusted here; local folders match by their real path. Building a
    HubLayer in Python needs no trust. `tltk.load_model(path, trusted_hub_handles=...)` and the
    `--trust-hub-handle` option of the `tltk` command do the same for one call.

    Args:
        handles: str or list of str. TF Hub / Kaggle URLs or local SavedModel folders.

    Example:

    ```python
    handle = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
    with tltk.trust_hub_handles([handle]):
        predictor = tltk.load_exported("runs/pets/model.keras")
    ```
    """
    handles = [handles] if isinstance(handles, str) else list(handles)
    if not all(isinstance(h, str) and h.strip() for h in handles):
        raise ValueError(
            f"Trusted hub handles must be non-empty strings. Received: handles={handles!r}"
        )
    token = _TRUSTED.set(_TRUSTED.get() | {_key(h) for h in handles})
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def check_may_load(handle):
    """Raises while Keras deserializes in safe mode, unless `handle` is trusted (see above)."""
    if not serialization_lib.in_safe_mode():
        return  # building in Python, or Keras' safe_mode=False / enable_unsafe_deserialization()
    if isinstance(handle, str) and handle.strip() and _key(handle) in _TRUSTED.get():
        return
    raise ValueError(
        f"Refused to load the TF Hub module {handle!r} named in a saved model file: a SavedModel "
        "runs its own graph code when loaded and called, so Keras' safe mode (the default, also "
        "in every tltk command) loads none that is not trusted. If you trust this file and "
        f"module, opt in with `tltk.load_model(path, trusted_hub_handles=[{handle!r}])` or "
        f"`with tltk.trust_hub_handles([{handle!r}]):` around the call, `--trust-hub-handle "
        f"{shlex.quote(str(handle))}` on the tltk command line, or Keras' `safe_mode=False` / "
        "`keras.config.enable_unsafe_deserialization()`."
    )


def _key(handle):
    """What a trusted handle matches by: a URL as written, a local folder by its real path."""
    return handle if URL_SCHEME.match(handle) else os.path.realpath(os.path.expanduser(handle))


def resolve_handle(handle, *, timeout=NETWORK_TIMEOUT_S):
    """Turns a TF Hub / Kaggle handle or a local folder into the local folder of a SavedModel.

    URLs go through `tensorflow_hub.resolve`, which downloads once into its cache
    (`hub_cache_dir()`, set as `TFHUB_CACHE_DIR` for tensorflow_hub when unset) and reads from
    it afterwards, offline included.

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
        if not os.environ.get(CACHE_VARIABLE):
            os.environ[CACHE_VARIABLE] = hub_cache_dir()  # not tensorflow_hub's shared /tmp one
            os.makedirs(os.environ[CACHE_VARIABLE], mode=0o700, exist_ok=True)
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
