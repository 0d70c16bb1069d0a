"""TF Hub SavedModels as Keras 3 layers, and the well-known TF Hub backbones in the registry.

`hub.KerasLayer` does not work inside Keras 3 models (tensorflow/hub#903). `HubLayer` loads the
SavedModel with `tf.saved_model.load` and tracks its variables as Keras variables (as
`keras.layers.TFSMLayer` does), so it trains, saves to `.keras`, reloads and exports like any
Keras layer. Handles go through `tensorflow_hub.resolve`, with `TFHUB_CACHE_DIR` or tltk's
per-user cache (`hub_cache_dir()`). A saved model file loads a HubLayer only when trusted
(`trust_hub_handles`), as Keras' safe mode refuses its own `TFSMLayer`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import types

import keras

from tltk.backbones.hub_module import (
    EXPECTED,
    NETWORK_TIMEOUT_S,  # noqa: F401  (re-exported: keras_hub.py imports it from here)
    URL_SCHEME,
    check_may_load,
    load_module,
    module_variables,
    network_timeout,  # noqa: F401  (re-exported, as NETWORK_TIMEOUT_S)
    regularization_losses,
    resolve_handle,  # noqa: F401  (re-exported: part of this module's API)
)
from tltk.backbones.registry import BackboneSpec, is_registered, register_backbone

PREFIX = "hub:"  # what users write: build_classifier("hub:<handle>", ...)
NAME_PREFIX = "hub_"  # registry and layer name of such a handle (TF scope names allow no ":")
TEXT_FAMILY = "text_embedding"


@keras.saving.register_keras_serializable(package="tltk")
class HubLayer(keras.layers.Layer):
    """A TF2 SavedModel from TF Hub, Kaggle or a local folder, as a Keras 3 layer.

    A drop-in for `hub.KerasLayer` (which does not work in Keras 3 models), with its arguments.
    Two kinds of module work: reusable SavedModels (callable, with `trainable_variables` and
    usually a `training` argument), and signature-only ones, called through
    `signatures["default"]` or the named `signature`. The module must return a feature vector,
    `(batch, features)`; pick one output of a dict with `output_key`. The config holds the handle,
    so a `.keras` file reloads the module from it (from the TF Hub cache when offline) and then
    sets the saved, fine-tuned values. As the module's graph runs on load, a model file loads a
    HubLayer in Keras' safe mode only for a handle trusted with `tltk.trust_hub_handles` (or
    `tltk.load_model(..., trusted_hub_handles=...)`, `--trust-hub-handle`), else with Keras'
    `safe_mode=False`.

    With `trainable=True` the module's trainable variables train; the others (BatchNorm
    statistics) never receive gradients, and the reusable module's `regularization_losses` (zero-
    argument functions) join the layer's `losses`, so `model.losses` and the loss that `fit`
    minimises include them; a frozen layer has none. The module runs in inference mode unless
    `train_bn=True`, the same BatchNorm policy as the rest of tltk.

    Args:
        handle: str. TF Hub or Kaggle URL, or a local SavedModel folder. Case is kept.
        trainable: bool. Whether the module's trainable variables train. Defaults to `False`.
        arguments: dict or None. Extra keyword arguments passed to every call of the module (or
            inputs of its signature), such as `{"batch_norm_momentum": 0.997}`. Kept in the
            config, so they must be JSON-serializable to save. Defaults to `None`.
        signature: str or None. Signature to call. Defaults to `None`: the module itself when it
            is callable, else `"default"`.
        signature_outputs_as_dict: bool or None. Return the whole dict of the signature's
            outputs (only when a signature is called; not with `output_key`). Defaults to `None`.
        output_key: str or None. Key of the output to use when the module returns a dict.
            Defaults to `None`: `"default"`, or the only key.
        train_bn: bool. Pass `training=True` to the module when the layer trains, so its
            BatchNorm statistics update (and its dropout runs). Defaults to `False`.
        **kwargs: Base layer arguments such as `name`.

    Limitations (differences from `hub.KerasLayer`): the arguments after `handle` are keyword
    only. A callable module that returns a dict with several keys and none named `"default"`
    needs `output_key` (KerasLayer returns the dict). The output must be a feature vector,
    `(batch, features)`, unless `signature_outputs_as_dict=True`. `training=True` reaches the
    module only with `train_bn=True`. `tags`, `output_shape` and `load_options` are not taken.
    Beyond KerasLayer: a signature may be trained, and without `output_key` a signature's
    `"default"` (or only) output is used.

    Example:

    ```python
    import keras
    layer = HubLayer("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")
    inputs = keras.Input((224, 224, 3))        # pixels in [0, 1]
    model = keras.Model(inputs, keras.layers.Dense(5)(layer(inputs)))
    ```
    """

    def __init__(
        self,
        handle,
        *,
        trainable=False,
        arguments=None,
        signature=None,
        signature_outputs_as_dict=None,
        output_key=None,
        train_bn=False,
        **kwargs,
    ):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self.signature = signature
        self.signature_outputs_as_dict = signature_outputs_as_dict
        self.output_key = output_key
        self.train_bn = bool(train_bn)
        if arguments is not None and (
            not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments)
        ):
            raise ValueError(
                "`arguments` must be a dict of keyword arguments for the module, keyed by name. "
                f"Received: arguments={arguments!r}"
            )
        if "training" in (arguments or {}):
            raise ValueError(
                "`arguments` may not set 'training': HubLayer passes it (see `train_bn`). "
                f"Received: arguments={arguments!r}"
            )
        self._arguments = types.MappingProxyType(dict(arguments or {}))  # untracked, immutable
        self._module = load_module(handle)
        self._fn, self._input_name, self._takes_training = self._callable()
        self._check_outputs()
        regularization_losses(self._module, handle)  # checks them; read again when asked for
        for variable, trainable_var in module_variables(
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

    @property
    def arguments(self):
        """The extra keyword arguments passed to every call of the module, a new dict."""
        return dict(self._arguments)

    def _callable(self):
        """`(fn, input_name, takes_training)`; `input_name` is None for a callable module."""
        signatures = list(getattr(self._module, "signatures", {}))
        if self.signature is None and callable(self._module):
            fn = self._module.__call__
            spec = getattr(fn, "function_spec", None)
            args = spec.fullargspec if spec is not None else None
            names = args.args[1:] + args.kwonlyargs if args else []
            if args and not args.varkw:
                self._check_argument_names(names, "its `__call__`")
            return fn, None, "training" in names
        name = self.signature or "default"
        if name not in signatures:
            callable_note = "" if self.signature else " is not callable and"
            raise ValueError(
                f"TF Hub module {self.handle!r}{callable_note} has no signature {name!r}; pass "
                f"`signature=` one of {signatures}. Received: signature={self.signature!r}"
            )
        fn = self._module.signatures[name]
        inputs = sorted(fn.structured_input_signature[1])
        self._check_argument_names(inputs, f"signature {name!r}")
        rest = [i for i in inputs if i not in self._arguments]
        if len(rest) != 1:
            raise ValueError(
                f"Signature {name!r} of TF Hub module {self.handle!r} takes the inputs {inputs}; "
                "HubLayer feeds one of them and `arguments` must give the others. "
                f"Received: arguments={self.arguments!r}"
            )
        return fn, rest[0], False

    def _check_argument_names(self, accepted, where):
        unknown = sorted(set(self._arguments) - set(accepted) - {"training"})
        if unknown:
            raise ValueError(
                f"TF Hub module {self.handle!r} takes no argument {unknown} in {where}; "
                f"`arguments` may name {sorted(set(accepted) - {'training'})}. "
                f"Received: arguments={self.arguments!r}"
            )

    def _check_outputs(self):
        """Checks `output_key` and `signature_outputs_as_dict` against the module's outputs."""
        if self.signature_outputs_as_dict and self._input_name is None:
            raise ValueError(
                "`signature_outputs_as_dict` applies only when a signature is called; pass "
                "`signature=` too. Received: signature_outputs_as_dict=True, signature=None"
            )
        if self.signature_outputs_as_dict and self.output_key is not None:
            raise ValueError(
                "Pass either `output_key` or `signature_outputs_as_dict=True`, not both. "
                f"Received: output_key={self.output_key!r}, signature_outputs_as_dict=True"
            )
        concrete = getattr(self._fn, "concrete_functions", None) or [self._fn]
        outputs = getattr(concrete[0], "structured_outputs", None)
        if outputs is not None and not self.signature_outputs_as_dict:
            self._output_key_of(outputs)

    def call(self, inputs, training=None):
        kwargs = self.arguments
        if self._takes_training:
            kwargs["training"] = bool(training is True and self.trainable and self.train_bn)
        try:
            if self._input_name is not None:
                outputs = self._fn(**{self._input_name: inputs}, **kwargs)
            else:
                outputs = self._fn(inputs, **kwargs)
        except (TypeError, ValueError) as error:
            with_arguments = f" with arguments={self.arguments!r}" if self._arguments else ""
            raise ValueError(
                f"TF Hub module {self.handle!r} does not accept this input "
                f"(shape {tuple(inputs.shape)}, dtype {inputs.dtype.name}){with_arguments}: "
                f"{error}"
            ) from error
        if self.signature_outputs_as_dict:
            return dict(outputs)
        key = self._output_key_of(outputs)
        return self._feature_vector(outputs if key is None else outputs[key])

    def _output_key_of(self, outputs):
        """The key of a dict output to use (None for a single tensor); raises if none fits."""
        if not isinstance(outputs, dict):
            if self.output_key is not None:
                raise ValueError(
                    f"TF Hub module {self.handle!r} returns a single tensor, not a dict. "
                    f"Received: output_key={self.output_key!r}"
                )
            return None
        key = self.output_key
        if key is None:
            key = "default" if "default" in outputs or len(outputs) != 1 else next(iter(outputs))
        if key not in outputs:
            raise ValueError(
                f"TF Hub module {self.handle!r} returns a dict with keys {sorted(outputs)}; pass "
                f"`output_key=` one of them. Received: output_key={self.output_key!r}"
            )
        return key

    def _feature_vector(self, outputs):
        shape = tuple(outputs.shape)
        if len(shape) != 2 or shape[1] is None:
            raise ValueError(
                f"TF Hub module {self.handle!r} must return a feature vector, shape (batch, "
                f"features) with a known width. Received: output shape {shape}. Use a "
                "feature-vector module or pick another output with `output_key`."
            )
        return outputs

    @classmethod
    def from_config(cls, config):
        check_may_load(config.get("handle"))  # before anything of the module is read
        return super().from_config(config)

    def _get_own_losses(self):
        # Keras 3 collects a layer's losses through this method (for `layer.losses` and the
        # model's); like hub.KerasLayer, the module's regularization losses count when trainable.
        losses = super()._get_own_losses()
        if self.trainable and self._input_name is None:
            losses.extend(loss() for loss in regularization_losses(self._module, self.handle))
        return losses

    def get_config(self):
        try:
            json.dumps(self.arguments)
        except TypeError as error:
            raise ValueError(
                f"`arguments` must be JSON-serializable to save HubLayer's config ({error}). "
                f"Received: arguments={self.arguments!r}"
            ) from error
        return {
            **super().get_config(),
            "handle": self.handle,
            "arguments": self.arguments,
            "signature": self.signature,
            "signature_outputs_as_dict": self.signature_outputs_as_dict,
            "output_key": self.output_key,
            "train_bn": self.train_bn,
        }


# ---- registry entries --------------------------------------------------------------------------


def adhoc_name(handle):
    """The registry (and layer) name of `"hub:<handle>"`: `"hub_<handle as a slug>"`."""
    return NAME_PREFIX + slug(handle)


def adhoc_spec(handle):
    """A `BackboneSpec` named `adhoc_name(handle)` for any handle; the layer keeps its case.

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
        raise ValueError(f"`backbone` must be 'hub:' followed by {EXPECTED}. Received: {name!r}")
    return register_backbone(adhoc_spec(handle), overwrite=True)


def is_text_backbone(spec):
    """Whether `spec` is a TF Hub text embedding (strings in), for `tltk.build_text_classifier`."""
    return spec.source == "tfhub" and spec.family == TEXT_FAMILY


def slug(handle):
    """`handle` as a lower-case name of letters, digits and `_.-`, at most 80 characters."""
    name = re.sub(r"[^a-z0-9_.\-]+", "_", URL_SCHEME.sub("", handle.strip().lower())).strip("_.-")
    if len(name) > 80 or not name:
        name = f"{name[:71]}_{hashlib.sha1(handle.encode()).hexdigest()[:8]}".lstrip("_")
    return name


def _construct(handle, name, modality, input_shape, weights):
    """Builds the `HubLayer` of a spec; `input_shape=()` asks for a text model."""
    if weights is None:
        raise ValueError(
            f"Backbone {name!r} is a TF Hub module: its weights come with it and it cannot be "
            "built without them. Leave `weights` at its default (the module's own). "
            "Received: weights=None"
        )
    is_text = tuple(input_shape) == ()
    if modality == "text" and not is_text:
        raise ValueError(
            f"Backbone {name!r} is a text embedding that takes strings; build it with "
            f"tltk.build_text_classifier({name!r}, num_classes). "
            f"Received: input_shape={tuple(input_shape)}"
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
    ("hub_mobilenet_v2_100_224", "mobilenet_v2",
     "imagenet/mobilenet_v2_100_224/feature_vector/5", 224, 32, 1280),
    ("hub_mobilenet_v2_140_224", "mobilenet_v2",
     "imagenet/mobilenet_v2_140_224/feature_vector/5", 224, 32, 1792),
    ("hub_mobilenet_v3_small_100_224", "mobilenet_v3",
     "imagenet/mobilenet_v3_small_100_224/feature_vector/5", 224, 32, 1024),
    ("hub_mobilenet_v3_large_100_224", "mobilenet_v3",
     "imagenet/mobilenet_v3_large_100_224/feature_vector/5", 224, 32, 1280),
    ("hub_efficientnet_v2_b0", "efficientnet_v2",
     "imagenet/efficientnet_v2_imagenet1k_b0/feature_vector/2", 224, 32, 1280),
    ("hub_efficientnet_v2_b1", "efficientnet_v2",
     "imagenet/efficientnet_v2_imagenet1k_b1/feature_vector/2", 240, 32, 1280),
    ("hub_efficientnet_v2_b2", "efficientnet_v2",
     "imagenet/efficientnet_v2_imagenet1k_b2/feature_vector/2", 260, 32, 1408),
    ("hub_efficientnet_v2_b3", "efficientnet_v2",
     "imagenet/efficientnet_v2_imagenet1k_b3/feature_vector/2", 300, 32, 1536),
    ("hub_efficientnet_v2_s", "efficientnet_v2",
     "imagenet/efficientnet_v2_imagenet1k_s/feature_vector/2", 384, 32, 1280),
    ("hub_efficientnet_v2_s_21k_ft1k", "efficientnet_v2",
     "imagenet/efficientnet_v2_imagenet21k_ft1k_s/feature_vector/2", 384, 32, 1280),
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
