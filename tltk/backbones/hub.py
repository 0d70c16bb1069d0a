"""TF Hub SavedModels as Keras 3 layers, and the well-known TF Hub backbones in the registry.

`hub.KerasLayer` does not work inside Keras 3 models (tensorflow/hub#903). `HubLayer` loads the
SavedModel with `tf.saved_model.load` and tracks its variables as Keras variables (as
`keras.layers.TFSMLayer` does), so it trains, saves to `.keras`, reloads and exports like any
Keras layer. Handles go through `tensorflow_hub.resolve`, so its cache and `TFHUB_CACHE_DIR` apply.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import sys
import types

import keras
import tensorflow as tf

from tltk.backbones.registry import BackboneSpec, is_registered, register_backbone

PREFIX = "hub:"  # what users write: build_classifier("hub:<handle>", ...)
NAME_PREFIX = "hub_"  # registry and layer name of such a handle (TF scope names allow no ":")
TEXT_FAMILY = "text_embedding"
# Seconds a download may wait on the network before it is called unreachable.
NETWORK_TIMEOUT_S = 20
_URL = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
_EXPECTED = (
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
        raise ValueError(f"`handle` must be {_EXPECTED}. Received: handle={handle!r}")
    if _URL.match(handle):
        hub = _import_tensorflow_hub()
        try:
            with network_timeout(timeout):
                path = hub.resolve(handle)
        except Exception as error:  # urllib, socket and tensorflow_hub raise many kinds
            raise ValueError(
                f"Could not fetch TF Hub handle {handle!r}: {type(error).__name__}: {error}. "
                f"Expected {_EXPECTED}, reachable from here. Check the handle and the network, "
                "point TFHUB_CACHE_DIR at a cache that holds the model, or download it and pass "
                "the folder."
            ) from error
    else:
        path = os.path.expanduser(handle)
        if not os.path.isdir(path):
            raise ValueError(
                f"TF Hub handle {handle!r} is no URL and no existing folder. Expected {_EXPECTED}."
            )
    if not any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise ValueError(
            f"TF Hub handle {handle!r} resolved to {path!r}, which is not a SavedModel folder "
            f"(no saved_model.pb). Expected {_EXPECTED}."
        )
    return path


@keras.saving.register_keras_serializable(package="tltk")
class HubLayer(keras.layers.Layer):
    """A TF2 SavedModel from TF Hub, Kaggle or a local folder, as a Keras 3 layer.

    Two kinds of module work: reusable SavedModels (callable, with `trainable_variables` and
    usually a `training` argument), and signature-only ones, called through
    `signatures["default"]` or the named `signature`. The module must return a feature vector,
    `(batch, features)`; pick one output of a dict with `output_key`. The config holds the handle,
    so a `.keras` file reloads the module from it (from the TF Hub cache when offline) and then
    sets the saved, fine-tuned values.

    With `trainable=True` the module's trainable variables train; the others (BatchNorm
    statistics) never receive gradients. The module runs in inference mode unless
    `train_bn=True`, the same BatchNorm policy as the rest of tltk.

    Args:
        handle: str. TF Hub or Kaggle URL, or a local SavedModel folder. Case is kept.
        signature: str or None. Signature to call. Defaults to `None`: the module itself when it
            is callable, else `"default"`.
        output_key: str or None. Key of the output to use when the module returns a dict.
            Defaults to `None`: `"default"`, or the only key.
        train_bn: bool. Pass `training=True` to the module when the layer trains, so its
            BatchNorm statistics update (and its dropout runs). Defaults to `False`.
        trainable: bool. Whether the module's trainable variables train. Defaults to `False`.
        **kwargs: Base layer arguments such as `name`.

    Example:

    ```python
    import keras
    layer = HubLayer("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")
    inputs = keras.Input((224, 224, 3))        # pixels in [0, 1]
    model = keras.Model(inputs, keras.layers.Dense(5)(layer(inputs)))
    ```
    """

    def __init__(self, handle, *, signature=None, output_key=None, train_bn=False, trainable=False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self.signature = signature
        self.output_key = output_key
        self.train_bn = bool(train_bn)
        self._module = _load(handle)
        self._fn, self._input_name, self._takes_training = self._callable()
        for variable, trainable_var in _module_variables(
            self._module, self._fn, signature_only=self._input_name is not None
        ):
            self._track_variable(
                keras.Variable(
                    initializer=variable,
                    trainable=trainable_var,
                    dtype=variable.dtype,
                    shape=variable.shape,
                    name=variable.name.split(":")[0].replace("/", "_"),
                )
            )
        self.supports_jit = False  # restored functions may hold string and table ops
        self._build_at_init()
        if self.name == adhoc_name(handle) and not is_registered(self.name):
            register_backbone(adhoc_spec(handle))  # so tltk.freezing finds it after a reload

    def _callable(self):
        """Returns `(fn, input_name, takes_training)`; `input_name` is None for a callable module."""
        signatures = list(getattr(self._module, "signatures", {}))
        if self.signature is None and callable(self._module):
            fn = self._module.__call__
            spec = getattr(fn, "function_spec", None)
            args = spec.fullargspec if spec is not None else None
            takes_training = bool(args) and "training" in (args.args + args.kwonlyargs)
            return fn, None, takes_training
        name = self.signature or "default"
        if name not in signatures:
            callable_note = "" if self.signature else " is not callable and"
            raise ValueError(
                f"TF Hub module {self.handle!r}{callable_note} has no signature {name!r}; pass "
                f"`signature=` one of {signatures}. Received: signature={self.signature!r}"
            )
        fn = self._module.signatures[name]
        inputs = fn.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(
                f"Signature {name!r} of TF Hub module {self.handle!r} takes {len(inputs)} inputs "
                f"{sorted(inputs)}; HubLayer needs exactly one."
            )
        return fn, next(iter(inputs)), False

    def call(self, inputs, training=None):
        try:
            if self._input_name is not None:
                outputs = self._fn(**{self._input_name: inputs})
            elif self._takes_training:
                outputs = self._fn(
                    inputs, training=bool(training is True and self.trainable and self.train_bn)
                )
            else:
                outputs = self._fn(inputs)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"TF Hub module {self.handle!r} does not accept this input "
                f"(shape {tuple(inputs.shape)}, dtype {inputs.dtype.name}): {error}"
            ) from error
        return self._feature_vector(outputs)

    def _feature_vector(self, outputs):
        if isinstance(outputs, dict):
            key = self.output_key
            if key is None:
                key = "default" if "default" in outputs or len(outputs) != 1 else next(iter(outputs))
            if key not in outputs:
                raise ValueError(
                    f"TF Hub module {self.handle!r} returns a dict with keys {sorted(outputs)}; pass "
                    f"`output_key=` one of them. Received: output_key={self.output_key!r}"
                )
            outputs = outputs[key]
        elif self.output_key is not None:
            raise ValueError(
                f"TF Hub module {self.handle!r} returns a single tensor, not a dict. "
                f"Received: output_key={self.output_key!r}"
            )
        shape = tuple(outputs.shape)
        if len(shape) != 2 or shape[1] is None:
            raise ValueError(
                f"TF Hub module {self.handle!r} must return a feature vector, shape (batch, features) "
                f"with a known width. Received: output shape {shape}. Use a feature-vector module "
                "or pick another output with `output_key`."
            )
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "handle": self.handle,
            "signature": self.signature,
            "output_key": self.output_key,
            "train_bn": self.train_bn,
        }


def _load(handle):
    path = resolve_handle(handle)
    tags = [] if os.path.exists(os.path.join(path, "tfhub_module.pb")) else None  # TF1 Hub format
    try:
        return tf.saved_model.load(path, tags=tags)
    except Exception as error:
        raise ValueError(
            f"Could not load the SavedModel of TF Hub handle {handle!r} from {path!r}: {error}"
        ) from error


def _module_variables(module, fn, *, signature_only):
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
    """Imports tensorflow_hub, whose 0.16.1 `__init__` needs `pkg_resources` (gone in setuptools 82+,
    tensorflow/hub#934): a stand-in with `packaging`'s parser is put in place for that import only."""
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


# ---- registry entries --------------------------------------------------------------------------


def adhoc_name(handle):
    """The registry (and layer) name of `"hub:<handle>"`: `"hub_<handle as a slug>"`."""
    return NAME_PREFIX + slug(handle)


def adhoc_spec(handle):
    """A `BackboneSpec` named `adhoc_name(handle)` for any handle; the layer keeps the handle's case.

    The module's input size and range are unknown, so the spec assumes TF Hub's convention for
    image feature vectors: pixels in [0, 1], 224x224 by default.
    """
    return BackboneSpec(
        name=adhoc_name(handle),
        family="tfhub",
        source="tfhub",
        constructor=functools.partial(_construct, handle, adhoc_name(handle), None),
        preprocessing="unit",
        default_input_size=(224, 224),
        min_input_size=(1, 1),
        feature_dim=0,
        groups=(("backbone", ".*"),),
        weights=("imagenet",),
        description=f"TF Hub module {handle}",
    )


def resolve_dynamic(name):
    """Registers and returns the spec of `"hub:<handle>"`, a handle or folder not in the table."""
    handle = name[len(PREFIX) :]
    if not handle.strip():
        raise ValueError(f"`backbone` must be 'hub:' followed by {_EXPECTED}. Received: {name!r}")
    return register_backbone(adhoc_spec(handle), overwrite=True)


def is_text_backbone(spec):
    """Whether `spec` is a TF Hub text embedding (strings in), for `tltk.build_text_classifier`."""
    return spec.source == "tfhub" and spec.family == TEXT_FAMILY


def slug(handle):
    """`handle` as a lower-case name of letters, digits and `_.-`, at most 80 characters."""
    name = re.sub(r"[^a-z0-9_.\-]+", "_", _URL.sub("", handle.strip().lower())).strip("_.-")
    if len(name) > 80 or not name:
        name = f"{name[:71]}_{hashlib.sha1(handle.encode()).hexdigest()[:8]}".lstrip("_")
    return name


def _construct(handle, name, modality, input_shape, weights):
    """Builds the `HubLayer` of a spec; `input_shape=()` asks for a text model."""
    if weights is None:
        raise ValueError(
            f"Backbone {name!r} is a TF Hub module: its weights come with it and it cannot be built "
            "without them. Leave `weights` at its default (the module's own). Received: weights=None"
        )
    is_text = tuple(input_shape) == ()
    if modality == "text" and not is_text:
        raise ValueError(
            f"Backbone {name!r} is a text embedding that takes strings; build it with "
            f"tltk.build_text_classifier({name!r}, num_classes). Received: input_shape={tuple(input_shape)}"
        )
    if modality == "image" and is_text:
        raise ValueError(
            f"Backbone {name!r} is an image feature vector; build it with tltk.build_classifier. "
            "Received: a text input"
        )
    return HubLayer(handle, name=name)


_TFHUB = "https://tfhub.dev/google/"
# (name, family, handle, input size, minimum size, feature width)
# fmt: off
_IMAGE_TABLE = [
    ("hub_mobilenet_v2_100_224", "mobilenet_v2", "imagenet/mobilenet_v2_100_224/feature_vector/5", 224, 32, 1280),
    ("hub_mobilenet_v2_140_224", "mobilenet_v2", "imagenet/mobilenet_v2_140_224/feature_vector/5", 224, 32, 1792),
    ("hub_mobilenet_v3_small_100_224", "mobilenet_v3", "imagenet/mobilenet_v3_small_100_224/feature_vector/5", 224, 32, 1024),
    ("hub_mobilenet_v3_large_100_224", "mobilenet_v3", "imagenet/mobilenet_v3_large_100_224/feature_vector/5", 224, 32, 1280),
    ("hub_efficientnet_v2_b0", "efficientnet_v2", "imagenet/efficientnet_v2_imagenet1k_b0/feature_vector/2", 224, 32, 1280),
    ("hub_efficientnet_v2_b1", "efficientnet_v2", "imagenet/efficientnet_v2_imagenet1k_b1/feature_vector/2", 240, 32, 1280),
    ("hub_efficientnet_v2_b2", "efficientnet_v2", "imagenet/efficientnet_v2_imagenet1k_b2/feature_vector/2", 260, 32, 1408),
    ("hub_efficientnet_v2_b3", "efficientnet_v2", "imagenet/efficientnet_v2_imagenet1k_b3/feature_vector/2", 300, 32, 1536),
    ("hub_efficientnet_v2_s", "efficientnet_v2", "imagenet/efficientnet_v2_imagenet1k_s/feature_vector/2", 384, 32, 1280),
    ("hub_efficientnet_v2_s_21k_ft1k", "efficientnet_v2", "imagenet/efficientnet_v2_imagenet21k_ft1k_s/feature_vector/2", 384, 32, 1280),
    ("hub_bit_s_r50x1", "bit", "bit/s-r50x1/1", 224, 32, 2048),
    ("hub_inception_v3", "inception_v3", "imagenet/inception_v3/feature_vector/5", 299, 75, 2048),
    ("hub_resnet_v2_50", "resnet_v2", "imagenet/resnet_v2_50/feature_vector/5", 224, 32, 2048),
]
# (name, handle, embedding width)
_TEXT_TABLE = [
    ("hub_nnlm_en_dim50", "nnlm-en-dim50/2", 50),
    ("hub_nnlm_en_dim128", "nnlm-en-dim128/2", 128),
    ("hub_nnlm_en_dim128_normalized", "nnlm-en-dim128-with-normalization/2", 128),
    ("hub_universal_sentence_encoder", "universal-sentence-encoder/4", 512),
]
# fmt: on


def _register_all():
    for name, family, path, size, min_size, dim in _IMAGE_TABLE:
        handle = _TFHUB + path
        register_backbone(
            BackboneSpec(
                name=name,
                family=family,
                source="tfhub",
                constructor=functools.partial(_construct, handle, name, "image"),
                preprocessing="unit",
                default_input_size=(size, size),
                min_input_size=(min_size, min_size),
                feature_dim=dim,
                groups=(("backbone", ".*"),),
                weights=("imagenet",),
                aliases=(PREFIX + handle,),
                description=f"TF Hub {handle} (pixels in [0, 1])",
            ),
            overwrite=True,
        )
    for name, path, dim in _TEXT_TABLE:
        handle = _TFHUB + path
        register_backbone(
            BackboneSpec(
                name=name,
                family=TEXT_FAMILY,
                source="tfhub",
                constructor=functools.partial(_construct, handle, name, "text"),
                preprocessing="none",
                default_input_size=(1, 1),  # unused: text models take strings
                min_input_size=(1, 1),
                feature_dim=dim,
                groups=(("backbone", ".*"),),
                weights=("pretrained",),
                aliases=(PREFIX + handle,),
                description=f"TF Hub {handle} (text embedding, strings in)",
            ),
            overwrite=True,
        )


_register_all()
