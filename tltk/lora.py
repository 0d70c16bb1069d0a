"""LoRA on a backbone with Keras' own `enable_lora`, and the merge that export runs first.

`tltk.build_classifier(..., lora_rank=4)` calls `enable` on the backbone's convolution and dense
layers (`Conv1D`/`Conv2D`/`Conv3D`, `Dense`, `EinsumDense`; Keras has no LoRA for
`DepthwiseConv2D`): each keeps its kernel `W` frozen and learns `A` (the kernel's shape with
`rank` output channels) and `B` (`rank x filters`); it computes with `W + alpha / rank * A @ B`,
the product taken over the last axis, so a conv kernel `(h, w, in, out)` gets a full-rank
`(h, w, in, rank)` factor. `B` starts at zero: a new LoRA model computes exactly what the plain
model does.

Keras merges `A @ B` into the kernel when it saves a LoRA layer and sets both factors to zero when
it loads one (`keras.models.load_model` gives the same predictions, with the adapters at zero).
Two zero factors get zero gradients, so `revive` draws `A` afresh (still `B = 0`: the outputs do
not change); `tltk.unfreeze`, `tltk.fine_tune` and `tltk.load_model` call it. A text classifier
(`tltk.build_text_classifier(..., lora_rank=4)`, LoRA on the attention's query and value layers)
reloads without LoRA (keras-hub's layer configs do not carry it): `tltk.load_model` puts it back
from the model's `lora_rank`. `tltk.export` writes `merged_copy` for both.

The recipe (rank 2 on every convolution, `lora_alpha = rank`, `fine_tune`'s default plan: head on
cached features, then adapters and head for 10 epochs at half the head's rate, BatchNorm frozen)
was measured against the alternatives on development seeds (`python bench/bench_lora_settings.py`:
digits at 20 per class, demo backbone; accuracy on the pool images not used to train or validate,
mean of seeds 3-5, never the test split). Full `fine_tune` 97.24%, the recipe 96.46%; fine-tuning
rate 3e-3 / 2e-2 / 4e-2 96.62 / 96.81 / 96.31%; 20 epochs 96.81%, at 2e-2 96.70%; no per-group
rate decay 96.39%; `lora_alpha = 2 * rank` 96.35%; no weight decay 96.58%; BatchNorm training
(`train_bn=True`) 96.19%; no head stage (adapters and a new head together) 95.73%; rank 3 (4.3%
trainable; rank 4 is 5.4%, over a 5% budget) 96.58%, at 2e-2 96.62%, and 20 epochs 96.43%; LoRA
on the top groups only (block3, top) at rank 5 96.78%, at 2e-2 96.46%; on the one 1x1 conv (top)
at rank 8 (1.7%) 96.74%. One seed moves by up to 2 points between settings, more than these
differences, so the best ran on seeds 6-8 too: full 96.81%, the recipe 96.74%, rate 2e-2 96.35%,
20 epochs 96.54%, top groups 96.19%, 1x1 conv 96.23%. Over the six seeds the recipe (96.60%) is
0.43 points below full fine-tuning and within 0.1 of the best variant (20 epochs, 96.68%), so the
defaults stay. Where the LoRA stage does not beat the head on validation, `fine_tune` keeps the
head stage's weights (bench_lora's test seeds 0 and 2).
"""

from __future__ import annotations

import keras

from tltk.argcheck import integer, real

LORA_WEIGHTS = ("lora_kernel_a", "lora_kernel_b")
LORA_CONFIG = ("lora_rank", "lora_alpha")  # a LoRA layer's config entries
# The layers keras-hub's `Backbone.enable_lora` adapts in a text encoder (its
# `default_lora_layer_names()`): the attention's query and value projections.
TEXT_TARGETS = ("query_dense", "value_dense", "query", "value")
ADAPTABLE = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
    keras.layers.EinsumDense,
)


def check_args(lora_rank, lora_alpha):
    """`(rank, alpha)` checked: an int >= 1 and a positive number (`None`: `rank`), or
    `(None, None)` without LoRA; a `ValueError` naming the argument otherwise."""
    if lora_rank is None:
        if lora_alpha is not None:
            raise ValueError(
                "`lora_alpha` scales the LoRA update and needs `lora_rank`; pass lora_rank=4 "
                f"(say) too, or leave lora_alpha out. Received: lora_alpha={lora_alpha!r}"
            )
        return None, None
    rank = integer("lora_rank", lora_rank, minimum=1)
    alpha = rank if lora_alpha is None else real("lora_alpha", lora_alpha, "(0, inf)")
    return rank, alpha


def enable(backbone, rank, alpha, names=None):
    """Enables LoRA of `rank` on every convolution and dense layer of `backbone` (nested ones too).

    Args:
        backbone: keras.Layer. The backbone (a `keras.Model`, or one layer).
        rank: int. The LoRA rank.
        alpha: float. The update is scaled by `alpha / rank`.
        names: tuple of str or None. Only the layers with these names (`TEXT_TARGETS`: the
            attention query and value layers of a keras-hub text encoder). Defaults to `None`
            (all).

    Returns:
        The list of layers adapted.

    Example:

    >>> from tltk.backbones.glyphnet import glyphnet
    >>> len(enable(glyphnet(weights=None), 2, 2))    # its 8 Conv2D layers
    8
    """
    adapted = [
        layer
        for layer in _leaves(backbone)
        if isinstance(layer, ADAPTABLE) and (names is None or layer.name in names)
    ]
    if not adapted:
        raise ValueError(
            f"Backbone {backbone.name!r} has no convolution or dense layer to put LoRA on "
            "(Keras has LoRA on Conv1D/2D/3D, Dense and EinsumDense, not on DepthwiseConv2D or a "
            f"TF Hub module){'' if names is None else f' named {list(names)}'}; build it without "
            f"`lora_rank`. Received: lora_rank={rank}"
        )
    for layer in adapted:
        layer.enable_lora(rank, lora_alpha=alpha)
    return adapted


def lora_layers(model):
    """The layers of `model` (nested ones too) with LoRA enabled."""
    return [layer for layer in _leaves(model) if getattr(layer, "lora_enabled", False)]


def has_lora(layer):
    """Whether any sublayer of `layer` has LoRA enabled."""
    return bool(lora_layers(layer))


def keep_lora_only(layer):
    """In a LoRA-enabled layer or model, leaves only the LoRA factors trainable (and BatchNorm).

    Setting `trainable = True` on a Keras layer makes all its weights trainable again, LoRA's
    frozen base kernels included; call this after unfreezing a backbone that has LoRA. BatchNorm
    weights keep the state the BatchNorm policy gave them (`train_bn`).

    Returns:
        `layer`.
    """
    if not has_lora(layer):
        return layer
    batch_norm = {
        id(weight)
        for sub in _leaves(layer)
        if isinstance(sub, keras.layers.BatchNormalization)
        for weight in sub.weights
    }
    for weight in layer.trainable_weights:
        if weight.name not in LORA_WEIGHTS and id(weight) not in batch_norm:
            weight.trainable = False
    return layer


def revive(model, alpha=None):
    """Draws `A` afresh in LoRA layers whose two factors are zero (as Keras loads them).

    Zero `A` and `B` get zero gradients, so such adapters never train. A new `A` (Keras'
    `he_uniform`, as `enable_lora` draws it) with `B = 0` leaves the outputs unchanged. A
    `tltk.TransferModel` whose config has a `lora_rank` but no LoRA layer (a text classifier
    reloaded: keras-hub's layer configs do not carry LoRA) gets it again on `TEXT_TARGETS`, with
    only the adapters of its encoder trainable.

    Args:
        model: keras.Layer. A model or layer, maybe with LoRA layers.
        alpha: float or None. Reset each layer's `lora_alpha` to this (Keras' `Dense` forgets it on
            reload). Defaults to `None` (as they are).

    Returns:
        `model`.
    """
    from tltk.transfer_model import TransferModel

    rank = model.lora_rank if isinstance(model, TransferModel) else None
    if rank is not None and not has_lora(model):
        enable(model.backbone, rank, alpha or rank, names=TEXT_TARGETS)
        keep_lora_only(model.backbone)  # the encoder's own weights stay frozen
    for layer in lora_layers(model):
        a, b = layer.lora_kernel_a, layer.lora_kernel_b
        if alpha is not None:
            layer.lora_alpha = alpha
        if not (keras.ops.any(a.value) or keras.ops.any(b.value)):
            a.assign(keras.initializers.HeUniform()(a.shape, dtype=a.dtype))
    return model


def merged_copy(model):
    """`model` itself without LoRA layers, else a plain copy with `A @ B` merged into each kernel.

    Each layer holding LoRA (a `Conv2D` with it, or a keras-hub `TransformerEncoder` whose
    attention has it) is rebuilt from its config without LoRA and gets the weights Keras saves
    for it: its own save merges each kernel (`W + alpha / rank * A @ B`) and leaves the factors
    out. The other layers are shared with `model`, as they are. A `tltk.TransferModel` stays one,
    with its structure and `lora_rank=None`. The copy has the graph (ops, size) of a plain model
    of the same architecture; image and text exports write it.

    Example:

    >>> import numpy as np, tltk
    >>> model = tltk.build_classifier("tltk_glyphnet", 3, weights=None, lora_rank=2)
    >>> plain = merged_copy(model)
    >>> len(lora_layers(plain)), plain.count_params() < model.count_params()
    (0, True)
    >>> x = np.random.uniform(0, 255, (2, 32, 32, 3))
    >>> bool(np.allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6))
    True
    """
    from tltk.transfer_model import TransferModel

    if not has_lora(model):
        return model

    pairs = []

    def clone(layer):
        if not has_lora(layer):
            return layer
        config = {k: v for k, v in layer.get_config().items() if k not in LORA_CONFIG}
        copy = type(layer).from_config(config)
        pairs.append((layer, copy))
        return copy

    graph = keras.Model(model.input, model.output, name=model.name)  # clone_model: a plain graph
    copy = keras.models.clone_model(graph, clone_function=clone, recursive=True)
    for layer, layer_copy in pairs:
        for leaf, leaf_copy in zip(_leaves(layer), _leaves(layer_copy), strict=True):
            store = {}
            leaf.save_own_variables(store)  # a LoRA layer's: the merged kernel, no factor
            leaf_copy.load_own_variables(store)
    if isinstance(model, TransferModel):
        structure = {k: v for k, v in model.get_config().items() if k in TransferModel.STRUCTURE}
        copy = TransferModel(
            copy.input,
            copy.output,
            name=model.name,
            **{**structure, "lora_rank": None, "lora_alpha": None},
            dtype_policy=model.dtype_policy.name,
        )
    return copy


def _leaves(layer):
    """`layer` and every layer nested in it, depth first."""
    return layer._flatten_layers(include_self=True, recursive=True)
