"""Mixed precision: the dtype policy a model is built under, and its float32 copy for export.

A model built under `mixed_float16` or `mixed_bfloat16` (Keras' global policy, or the builders'
`dtype_policy=`) keeps float32 weights and computes in the lower precision, except the layers
pinned to float32: the in-graph preprocessing (raw pixels keep every bit) and the output layer
(probabilities in float32). TFLite has no builtin kernels for bfloat16 Conv2D, MaxPool or Relu,
so `tltk.export` converts `float32_copy(model)`: the same graph and weights computing in float32.
"""

from __future__ import annotations

import contextlib

import keras

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
REDUCED = ("float16", "bfloat16")  # compute dtypes below float32


def check_dtype_policy(dtype_policy):
    """Returns the policy's name, or `None` (the global policy) for `None`.

    Args:
        dtype_policy: str, keras.DTypePolicy or None. One of `POLICIES`, or `None`.

    Example:

    >>> check_dtype_policy(keras.DTypePolicy("mixed_bfloat16"))
    'mixed_bfloat16'
    """
    if dtype_policy is None:
        return None
    name = dtype_policy.name if isinstance(dtype_policy, keras.DTypePolicy) else dtype_policy
    if name not in POLICIES:
        raise ValueError(
            f"`dtype_policy` must be None (Keras' global policy) or one of {POLICIES}. "
            f"Received: dtype_policy={dtype_policy!r}"
        )
    return name


@contextlib.contextmanager
def policy_scope(dtype_policy):
    """Builds what runs inside under `dtype_policy` (`None`: the global policy, unchanged).

    Keras' layers and backbones take the global policy when they are made, so the builders set it
    for the time they build and restore the previous one after (per thread, as Keras keeps it).

    Example:

    >>> with policy_scope("mixed_bfloat16"):
    ...     keras.layers.Dense(2).dtype_policy.name
    'mixed_bfloat16'
    >>> keras.mixed_precision.global_policy().name
    'float32'
    """
    name = check_dtype_policy(dtype_policy)
    previous = keras.mixed_precision.global_policy()
    if name is not None:
        keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def reduced_dtype(layer):
    """`"float16"` or `"bfloat16"` if `layer` or a layer inside it computes in it, else `None`.

    Example:

    >>> reduced_dtype(keras.layers.Dense(2, dtype="mixed_float16"))
    'float16'
    """
    layers = [layer, *getattr(layer, "_flatten_layers", lambda: [])()]
    return next((each.compute_dtype for each in layers if each.compute_dtype in REDUCED), None)


def float32_copy(model):
    """`model` itself if it computes in float32 throughout, else a copy computing in float32.

    The copy has the same layers (rebuilt from their configs, every reduced-precision policy
    replaced by `"float32"`) and the same weights (a mixed policy keeps them in float32, so they
    copy exactly); a `tltk.TransferModel` stays one, with its structure and `dtype_policy`
    `"float32"`. Layers with assets (a keras-hub tokenizer: its vocabulary is in neither its
    config nor its weights; it computes no floats) are shared with `model`.

    Example:

    >>> import tltk
    >>> model = tltk.build_classifier("tltk_glyphnet", 3, dtype_policy="mixed_bfloat16")
    >>> copy = float32_copy(model)
    >>> copy.dtype_policy.name, reduced_dtype(copy), reduced_dtype(model)
    ('float32', None, 'bfloat16')
    """
    from tltk.transfer_model import TransferModel

    if not reduced_dtype(model):
        return model
    pairs = []

    def clone(layer):
        if _has_assets(layer):  # a tokenizer: its vocabulary is not in its config; shared
            return layer
        copy = type(layer).from_config(_float32_config(layer.get_config()))
        pairs.append((layer, copy))
        return copy

    # A plain functional view: `clone_model` would call TransferModel(inputs, outputs, name).
    graph = keras.Model(model.input, model.output, name=model.name)
    copy = keras.models.clone_model(graph, clone_function=clone)
    for layer, layer_copy in pairs:
        layer_copy.set_weights(layer.get_weights())
    if isinstance(model, TransferModel):
        structure = {k: v for k, v in model.get_config().items() if k in TransferModel.STRUCTURE}
        copy = TransferModel(
            copy.input, copy.output, name=model.name, **structure, dtype_policy="float32"
        )
    return copy


def _has_assets(layer):
    layers = [layer, *getattr(layer, "_flatten_layers", lambda: [])()]
    return any(callable(getattr(each, "save_assets", None)) for each in layers)


def _float32_config(config):
    """`config` with every float16/bfloat16/mixed dtype policy in it replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            name = config.get("config", {}).get("name")
            if _reduced_name(name):
                return "float32"
        return {
            key: "float32" if key == "dtype" and _reduced_name(value) else _float32_config(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def _reduced_name(name):
    return isinstance(name, str) and name.removeprefix("mixed_") in REDUCED
