"""`build_classifier`: a pretrained backbone, its preprocessing and a new head, as one model."""

from __future__ import annotations

import keras

from tltk import freezing, lora
from tltk.argcheck import is_integer
from tltk.backbones.registry import BackboneSpec, get_backbone, is_registered
from tltk.backbones.weights import construct_with_weights, load_weights_file
from tltk.heads import (
    OUTPUT_NAME,
    POOL_NAME,
    check_head_args,
    check_head_specs,
    classification_head,
    head_layers,
    pool_features,
)
from tltk.layers import ImagePreprocessing
from tltk.precision import policy_scope
from tltk.transfer_model import TransferModel

DEFAULT_WEIGHTS = "default"  # the spec's first named weights, or None where it has none
INPUT_NAME = "image"
AUGMENTATION_NAME = "augmentation"
PREPROCESSING_NAME = "preprocessing"


def build_classifier(
    backbone,
    num_classes,
    *,
    input_shape=None,
    weights=DEFAULT_WEIGHTS,
    pooling="avg",
    dropout=0.2,
    hidden_units=(),
    multi_label=False,
    classifier_activation="softmax",
    train_bn=False,
    augmentation=None,
    class_names=None,
    dtype_policy=None,
    lora_rank=None,
    lora_alpha=None,
    name=None,
):
    """Builds an image classifier on a pretrained backbone, with the backbone frozen.

    The model takes raw pixels, 0..255 (uint8 or float), at a fixed size; the backbone's own
    preprocessing runs inside the graph, so exported files are self-contained. Its layers are:
    `image` (input) -> `augmentation` (optional, training only) -> `preprocessing` -> the backbone
    (a nested model named after the registry entry) -> `pool` -> `head_*` -> `predictions`; the
    returned `tltk.TransferModel` records them (`.backbone`, `.preprocessing`, `.heads`,
    `.groups`, `.train_bn`) in its config, so a reloaded model keeps them.

    Args:
        backbone: str, `tltk.BackboneSpec` or `keras.Model`. A registry name (`"mobilenet_v2"`, or
            the Keras class name `"MobileNetV2"`), a spec, or your own feature extractor (taken as
            is, one layer group, no preprocessing).
        num_classes: int or dict. Number of classes; at least 2 (1 with `multi_label=True`). A
            dict `{head_name: classes or tltk.HeadSpec}` builds one head per entry on the shared
            pooled features, each its own output named after it (the model returns a dict): say
            `{"species": 5, "healthy": 2}`, or a `tltk.HeadSpec(units, "multi_label")` or
            `"regression"` head. Each head gets `dropout` and `hidden_units`; its layers are
            `<name>_dropout`, `<name>_dense_<i>` and the output layer `<name>`.
        input_shape: tuple. `(height, width, channels)`. Defaults to the backbone's default size.
        weights: str or None. `"default"`, a name from the spec's `weights` (`"imagenet"`
            downloads as Keras does), `None` for random initialisation, or a path: a `.weights.h5`
            file of the backbone, or a whole `.keras`/`.h5` model whose layers are matched to the
            backbone's by name and shape. Defaults to `"default"`: the spec's first named weights
            (`"imagenet"` for Keras Applications, `"tltk"` for `tltk_glyphnet`), or `None` where
            the spec has none. For a `keras.Model` backbone only a path is applied.
        pooling: str. `"avg"` or `"max"` global pooling. Defaults to `"avg"`.
        dropout: float. Dropout rate in the head. Defaults to `0.2`.
        hidden_units: tuple or int. Hidden ReLU layer widths in the head (an int: one layer).
            Defaults to `()`.
        multi_label: bool. Independent sigmoid outputs, one per label. Defaults to `False`.
        classifier_activation: str or None. `"softmax"`, `"sigmoid"`, or `None`/`"linear"` for
            logits. Ignored (set to sigmoid) when `multi_label=True` and left at `"softmax"`.
            Defaults to `"softmax"`.
        train_bn: bool. Let BatchNorm layers train (and update their statistics) when their group
            is unfrozen. Defaults to `False`: they stay in inference mode (keras-team/keras#20285).
        augmentation: str, keras layer or None. A `tltk.augmentation` preset name or a layer, put
            after the input; active only in training. Defaults to `None`.
        class_names: list of str or None. One name per class, kept in the model
            (`model.class_names`) for predictions, evaluation and exports. Defaults to `None`.
        dtype_policy: str or None. `"mixed_float16"` (GPUs), `"mixed_bfloat16"` (TPUs, recent
            GPUs and CPUs) or `"float32"`: the model computes in that precision, with float32
            weights, in-graph preprocessing and output layer; `compile` (and so `tltk.fine_tune`)
            adds loss scaling for `"mixed_float16"`. Kept in the model: a reloaded model keeps
            it, whatever the global policy then. `tltk.export` writes float32 files of it.
            Defaults to `None`: Keras' global policy (`keras.mixed_precision.set_global_policy`).
        lora_rank: int or None. Put Keras' LoRA of this rank on every convolution and dense
            layer of the backbone (`Conv1D/2D/3D`, `Dense`, `EinsumDense`; not `DepthwiseConv2D`,
            which Keras cannot adapt): their kernels and biases stay frozen, the low-rank factors
            train. The model is then built with the adapters and the head trainable, BatchNorm as
            `train_bn` says, everything else frozen; `tltk.unfreeze` and `tltk.fine_tune` never
            unfreeze the base weights (`fine_tune`'s default plan: the head on cached features,
            then the adapters and the head together). `tltk.layer_groups` shows what trains.
            Keras saves each layer with its update merged into the kernel and reloads it with the
            factors at zero; `tltk.load_model` (and `unfreeze`) draw `A` afresh so they train
            again. `tltk.export` writes the merged kernels: the files are those of a plain model.
            Defaults to `None` (no LoRA).
        lora_alpha: float or None. The LoRA update is scaled by `lora_alpha / lora_rank`; only
            with `lora_rank`. Defaults to `None`: `lora_rank` (a scale of 1).
        name: str. Model name. Defaults to `"<backbone>_classifier"`.

    Returns:
        A `tltk.TransferModel` with the backbone frozen (but its LoRA adapters) and the head
        trainable (not compiled).

    Example:

    ```python
    import tltk
    model = tltk.build_classifier("mobilenet_v2", num_classes=5)   # downloads ImageNet weights
    model = tltk.build_classifier("efficientnet_b0", 3, input_shape=(160, 160, 3),
                                  weights=None, dropout=0.3)
    ```

    >>> import tltk
    >>> model = tltk.build_classifier("tltk_glyphnet", 3)  # its default weights ship with tltk
    >>> model.input_shape, model.output_shape, model.train_bn
    ((None, 32, 32, 3), (None, 3), False)
    >>> lora = tltk.build_classifier("tltk_glyphnet", 3, lora_rank=2)
    >>> lora.lora_rank, f"{tltk.freezing.trainable_fraction(lora):.1%}"
    (2, '2.6%')
    """
    spec, custom = _resolve_backbone(backbone)
    input_shape = _check_input_shape(spec, custom, input_shape)
    specs = None
    if isinstance(num_classes, dict):
        taken = {INPUT_NAME, AUGMENTATION_NAME, PREPROCESSING_NAME, POOL_NAME, OUTPUT_NAME}
        taken.add(spec.name if spec is not None else custom.name)
        specs = check_head_specs(
            num_classes,
            multi_label=multi_label,
            classifier_activation=classifier_activation,
            taken=taken,
        )
        multi_label, num_classes = False, 2  # checked per head above; the rest checked below
    num_classes, units, activation = check_head_args(
        num_classes=num_classes,
        pooling=pooling,
        dropout=dropout,
        hidden_units=hidden_units,
        multi_label=multi_label,
        classifier_activation=classifier_activation,
    )
    weights_path = _check_weights(spec, custom, weights)
    if not isinstance(train_bn, bool):
        raise ValueError(f"`train_bn` must be True or False. Received: train_bn={train_bn!r}")
    lora_rank, lora_alpha = lora.check_args(lora_rank, lora_alpha)

    with policy_scope(dtype_policy):  # Keras' layers take the global policy when made
        if custom is not None:
            features_model = custom
        else:
            if weights == DEFAULT_WEIGHTS:
                weights = spec.weights[0] if spec.weights else None
            named = weights if weights in spec.weights else None
            features_model = construct_with_weights(spec, input_shape, named)
            features_model.name = spec.name
        if weights_path:
            load_weights_file(features_model, weights_path)
        if lora_rank is not None:
            lora.enable(features_model, lora_rank, lora_alpha)

        inputs = keras.Input(input_shape, name=INPUT_NAME)
        x = inputs
        if augmentation is not None:
            x = _augmentation_layer(augmentation)(x)
        if spec is not None:
            x = ImagePreprocessing(spec.preprocessing, name=PREPROCESSING_NAME)(x)
        if specs is None:
            head = classification_head(
                features_model(x),
                num_classes,
                pooling=pooling,
                dropout=dropout,
                hidden_units=units,
                activation=activation,
            )
            outputs, heads, pooled = head.output, {OUTPUT_NAME: head.layers}, head.features
        else:
            vector, pooled = pool_features(features_model(x), pooling)
            built = {
                head: head_layers(vector, s.units, dropout, units, s.activation, name=head)
                for head, s in specs.items()
            }
            outputs = {head: output for head, (output, _) in built.items()}
            heads = {head: layers for head, (_, layers) in built.items()}
        model_name = name or f"{features_model.name}_classifier".replace(":", "_").replace("/", "_")
        model = TransferModel(
            inputs,
            outputs,
            name=model_name,
            backbone=features_model.name,
            heads=heads,
            groups=spec.groups if spec is not None else (("backbone", ".*"),),
            features=pooled,
            preprocessing=PREPROCESSING_NAME if spec is not None else None,
            augmentation=AUGMENTATION_NAME if augmentation is not None else None,
            train_bn=train_bn,
            backbone_name=spec.name if spec is not None else None,
            class_names=class_names,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            tasks={h: s.task for h, s in (specs or {}).items() if s.task == "regression"},
            dtype_policy=keras.mixed_precision.global_policy().name,
        )
    freezing.freeze(model)
    if lora_rank is not None:  # the adapters train; `unfreeze` keeps the base weights frozen
        freezing.unfreeze(model, "all")
    return model


def _resolve_backbone(backbone):
    if isinstance(backbone, BackboneSpec):
        return backbone, None
    if isinstance(backbone, keras.Model):
        if is_registered(backbone.name):
            raise ValueError(
                f"Your backbone model is named {backbone.name!r}, the name of a registered "
                "backbone; "
                "rename it (`model.name = ...`) so its layer groups are not taken from the "
                "registry."
            )
        return None, backbone
    if isinstance(backbone, str):
        return get_backbone(backbone), None
    raise ValueError(
        "`backbone` must be a registry name, a tltk.BackboneSpec or a keras.Model. "
        f"Received: backbone={backbone!r}"
    )


def _check_input_shape(spec, custom, input_shape):
    if custom is not None:
        model_shape = tuple(custom.input_shape[1:])
        if input_shape is None:
            input_shape = model_shape
        if None in input_shape:
            raise ValueError(
                "`input_shape` must be fully defined for a model backbone with a flexible input. "
                f"Received: input_shape={input_shape}"
            )
        return tuple(input_shape)
    if input_shape is None:
        return spec.default_input_shape()
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(is_integer(d) and d > 0 for d in input_shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) of positive integers. Received: "
            f"input_shape={input_shape}"
        )
    input_shape = tuple(int(d) for d in input_shape)
    if input_shape[2] != spec.channels:
        raise ValueError(
            f"Backbone {spec.name!r} takes {spec.channels} input channels. Received: "
            f"input_shape={input_shape}"
        )
    min_h, min_w = spec.min_input_size
    if input_shape[0] < min_h or input_shape[1] < min_w:
        raise ValueError(
            f"Backbone {spec.name!r} needs inputs of at least {min_h}x{min_w}. Received: "
            f"input_shape={input_shape}"
        )
    return input_shape


def _check_weights(spec, custom, weights):
    """Returns the weights path to load after construction, or None."""
    if weights is None or weights == DEFAULT_WEIGHTS:
        return None
    if not isinstance(weights, str):
        raise ValueError(
            f"`weights` must be a name, a file path or None. Received: weights={weights!r}"
        )
    if custom is not None:
        return None if weights == "imagenet" else weights
    if weights in spec.weights:
        return None
    if weights.endswith((".h5", ".keras")):
        return weights
    raise ValueError(
        f"Backbone {spec.name!r} has pretrained weights {list(spec.weights)}; pass one of them, "
        f"{DEFAULT_WEIGHTS!r}, None, or the path of a weights file. Received: weights={weights!r}"
    )


def _augmentation_layer(augmentation):
    """A preset or a user's layer, wrapped so it runs only in training (Keras' random layers alone
    also run in `model(x)` and in exported SavedModels)."""
    from tltk.augment import Augmentation
    from tltk.augment import augmentation as preset_layer

    if isinstance(augmentation, str):
        return preset_layer(augmentation, name=AUGMENTATION_NAME)
    if isinstance(augmentation, Augmentation):
        augmentation.name = AUGMENTATION_NAME
        return augmentation
    if isinstance(augmentation, keras.layers.Layer):
        return Augmentation([augmentation], name=AUGMENTATION_NAME)
    raise ValueError(
        "`augmentation` must be a preset name ('light', 'medium', 'strong'), a Keras layer or "
        "None. "
        f"Received: augmentation={augmentation!r}"
    )
