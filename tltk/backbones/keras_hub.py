"""keras-hub presets as tltk backbones: image presets for `build_classifier`, text presets for
`build_text_classifier`, from a preset name, a `kaggle://` / `hf://` handle or a local folder.

keras-hub keeps preprocessing outside its models' `call()` (keras-hub#784). tltk puts it inside:
image presets get tltk's in-graph `ImagePreprocessing` (the mode read from the preset's image
converter), text presets a `TextPreprocessing` layer around the preset's own tokenizer.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import re

import keras
import numpy as np
import tensorflow as tf

from tltk.argcheck import integer
from tltk.backbones.hub import NETWORK_TIMEOUT_S, network_timeout, slug
from tltk.backbones.registry import BackboneSpec, register_backbone
from tltk.lora import has_lora, keep_lora_only  # noqa: F401  (text.py: `kh.keep_lora_only`)

PREFIX = "keras_hub:"  # what users write: build_classifier("keras_hub:<preset>", ...)
NAME_PREFIX = "keras_hub_"  # registry and layer names (TF scope names allow no ":")
TEXT_FAMILY = "text_transformer"
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD = np.array([0.229, 0.224, 0.225])
# ImagePreprocessing mode -> the (scale, offset) a keras-hub ImageConverter applies to pixels.
_MODES = {
    "unit": (np.full(3, 1 / 255), np.zeros(3)),
    "tf": (np.full(3, 1 / 127.5), np.full(3, -1.0)),
    "torch": (1 / (255 * _IMAGENET_STD), -_IMAGENET_MEAN / _IMAGENET_STD),
}


def import_keras_hub():
    """Imports keras_hub (slow, so only when a keras-hub backbone is used)."""
    import keras_hub

    return keras_hub


def load_from_preset(loader, preset, **kwargs):
    """`loader.from_preset(preset, **kwargs)`, with bounded network waits and errors naming it.

    Args:
        loader: class. A keras-hub class with `from_preset` (`keras_hub.models.Backbone`, ...).
        preset: str. A keras-hub preset name, a `kaggle://` or `hf://` handle, or a local folder.
        **kwargs: Passed to `from_preset`.
    """
    return _guarded(preset, loader.__name__, lambda folder: loader.from_preset(folder, **kwargs))


def _guarded(preset, what, load):
    keras_hub = import_keras_hub()
    preset = check_preset(preset)
    try:
        with network_timeout(NETWORK_TIMEOUT_S):
            return load(preset)
    except Exception as error:  # keras-hub, kagglehub and urllib raise many kinds
        kind = "local folder" if os.path.isdir(preset) else "preset"
        raise ValueError(
            f"Could not load keras-hub {kind} {preset!r} ({what}): {type(error).__name__}: "
            f"{error}. "
            f"Expected a keras-hub preset (reachable from here or already in the Kaggle cache; "
            f"keras_hub {keras_hub.__version__}) or a local keras-hub / Hugging Face model folder."
        ) from error


def _shape_argument(preset):
    """The backbone class's name for its input shape argument: `image_shape` or `input_shape`."""
    from keras_hub.src.utils.preset_utils import get_preset_loader

    backbone_class = _guarded(
        preset, "backbone class", lambda p: get_preset_loader(p).check_backbone_class()
    )
    parameters = inspect.signature(backbone_class.__init__).parameters
    return "input_shape" if "input_shape" in parameters else "image_shape"


def check_preset(preset):
    """Returns `preset` (a folder expanded) if it names a keras-hub preset, a handle or a folder."""
    if not isinstance(preset, str) or not preset.strip():
        raise ValueError(
            f"`preset` must be a keras-hub preset name or a folder. Received: preset={preset!r}"
        )
    preset = preset[len(PREFIX) :] if preset.startswith(PREFIX) else preset
    folder = os.path.expanduser(preset)
    if os.path.isdir(folder):
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ValueError(
                f"Folder {preset!r} is not a keras-hub preset or Hugging Face model folder (no "
                "config.json)."
            )
        return folder
    if "://" in preset:
        return preset
    known = import_keras_hub().models.Backbone.presets
    if preset not in known:
        close = difflib.get_close_matches(preset, list(known), n=5, cutoff=0.5)
        hint = f" Closest presets: {', '.join(close)}." if close else ""
        raise ValueError(
            f"Unknown keras-hub preset {preset!r}: neither a keras-hub preset name, a kaggle:// or "
            f"hf:// handle, nor an existing folder.{hint}"
        )
    return preset


# ---- images ------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tltk")
class ClassToken(keras.layers.Layer):
    """Takes the first (class) token of a `(batch, tokens, features)` sequence: ViT features.

    Example:

    >>> ClassToken()(np.zeros((2, 5, 8), "float32")).shape
    TensorShape([2, 8])
    """

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def converter_mode(preset):
    """The `ImagePreprocessing` mode equal to the preset's image converter (scale and offset)."""
    keras_hub = import_keras_hub()
    converter = load_from_preset(keras_hub.layers.ImageConverter, preset)
    scale, offset = converter.scale, converter.offset
    if scale is None and offset is None:
        return "none"
    scale = np.broadcast_to(np.asarray(1.0 if scale is None else scale, "float64"), (3,))
    offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, "float64"), (3,))
    for mode, (mode_scale, mode_offset) in _MODES.items():
        if np.allclose(scale, mode_scale, rtol=1e-3) and np.allclose(
            offset, mode_offset, atol=1e-3
        ):
            return mode
    raise ValueError(
        f"keras-hub preset {preset!r} normalises pixels with scale={scale.tolist()}, "
        f"offset={offset.tolist()}: no tltk ImagePreprocessing mode ({sorted(_MODES)}, 'none') "
        "does that."
    )


def _construct_image(preset, name, mode, input_shape, weights):
    """Builds the keras-hub image backbone of `preset`, named `name`, taking `input_shape`."""
    if tuple(input_shape) == ():
        raise ValueError(
            f"Backbone {name!r} is an image backbone; build it with tltk.build_classifier."
        )
    keras_hub = import_keras_hub()
    if weights is not None and mode is not None and converter_mode(preset) != mode:
        raise ValueError(
            f"The registry entry {name!r} expects {mode!r} preprocessing but keras-hub preset "
            f"{preset!r} normalises with {converter_mode(preset)!r}; use 'keras_hub:{preset}' "
            "instead."
        )
    backbone = load_from_preset(
        keras_hub.models.Backbone,
        preset,
        load_weights=weights is not None,
        **{_shape_argument(preset): tuple(input_shape)},
    )
    if len(backbone.output.shape) == 3:  # token features (ViT): keep the class token
        inputs = keras.Input(tuple(input_shape), name="images")
        return keras.Model(inputs, ClassToken(name="class_token")(backbone(inputs)), name=name)
    if type(backbone).__name__ in _PLAIN_LAYERS:
        # Rebuilt as a plain functional model: each layer's trainable flag survives a .keras
        # round trip.
        return keras.Model(backbone.input, backbone.output, name=name)
    backbone.name = name
    return backbone


def image_spec(preset):
    """A `BackboneSpec` for any keras-hub image preset or local preset folder (one layer group).

    The preprocessing mode and default input size are read from the preset's image converter.
    """
    keras_hub = import_keras_hub()
    name = NAME_PREFIX + slug(check_preset(preset))
    mode = converter_mode(preset)
    converter = load_from_preset(keras_hub.layers.ImageConverter, preset)
    size = tuple(converter.image_size or (224, 224))
    return BackboneSpec(
        name=name,
        family="keras_hub",
        source="keras_hub",
        constructor=functools.partial(_construct_image, check_preset(preset), name, None),
        preprocessing=mode,
        default_input_size=size,
        min_input_size=(1, 1),
        feature_dim=0,
        groups=(("backbone", ".*"),),
        weights=("imagenet",),
        description=f"keras-hub preset {preset}",
    )


def resolve_dynamic(name):
    """Registers and returns the spec of `"keras_hub:<preset-or-folder>"`, a preset not listed."""
    return register_backbone(image_spec(name[len(PREFIX) :]), overwrite=True)


_RESNET = (
    ("stem", "^(conv1|pool1)_"),
    *((f"stack{i}", f"^stack{i}_") for i in range(3)),
    ("stack3", "^(stack3_|post_)"),
)
_DENSENET = (
    ("stem", "^(conv1_|pool1)"),
    *((f"stack{i}", f"^(stack{i}_|transition{i}_)") for i in range(1, 4)),
    ("stack4", "^(stack4_|bn$|relu$)"),
)
_ONE = (("backbone", ".*"),)
# Backbones built from plain Keras layers only. Their keras-hub class re-creates every layer from
# its own arguments on reload, which would reset frozen BatchNorm layers to trainable.
_PLAIN_LAYERS = ("ResNetBackbone", "DenseNetBackbone")
# (preset, family, preprocessing mode, input size, minimum size, feature width, groups)
# fmt: off
_IMAGE_TABLE = [
    ("resnet_18_imagenet", "resnet", "torch", 224, 32, 512, _RESNET),
    ("resnet_50_imagenet", "resnet", "torch", 224, 32, 2048, _RESNET),
    ("resnet_101_imagenet", "resnet", "torch", 224, 32, 2048, _RESNET),
    ("resnet_v2_50_imagenet", "resnet", "torch", 224, 32, 2048, _RESNET),
    ("densenet_121_imagenet", "densenet", "torch", 224, 32, 1024, _DENSENET),
    ("densenet_169_imagenet", "densenet", "torch", 224, 32, 1664, _DENSENET),
    ("efficientnet_b0_ra_imagenet", "efficientnet", "torch", 224, 32, 1280, _ONE),
    ("vit_base_patch16_224_imagenet", "vit", "tf", 224, 224, 768, _ONE),
    ("vit_base_patch16_384_imagenet", "vit", "tf", 384, 384, 768, _ONE),
    ("vit_large_patch16_224_imagenet", "vit", "tf", 224, 224, 1024, _ONE),
]
# fmt: on


def _register_all():
    for preset, family, mode, size, min_size, dim, groups in _IMAGE_TABLE:
        name = NAME_PREFIX + preset
        register_backbone(
            BackboneSpec(
                name=name,
                family=family,
                source="keras_hub",
                constructor=functools.partial(_construct_image, preset, name, mode),
                preprocessing=mode,
                default_input_size=(size, size),
                min_input_size=(min_size, min_size),
                feature_dim=dim,
                groups=groups,
                weights=("imagenet",),
                aliases=(PREFIX + preset,),
                description=f"keras-hub preset {preset}",
            ),
            overwrite=True,
        )


_register_all()


# ---- text --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tltk")
class TextPreprocessing(keras.layers.Layer):
    """Raw strings -> a keras-hub preprocessor's token ids and padding mask, inside the model.

    A keras-hub preprocessor placed directly in a functional model breaks `.keras` reloading:
    Keras rebuilds the graph before the tokenizer's vocabulary is restored. This layer declares
    its output spec itself, so the graph rebuilds, and the vocabulary is restored afterwards.

    Args:
        preprocessor: keras_hub.models.Preprocessor or dict. A text classifier preprocessor
            (or its serialized config, on reload).
        output_dtypes: dict or None. `{output_key: dtype}`. Defaults to `None`: found by running
            the preprocessor on one string.
        **kwargs: Base layer arguments such as `name`.

    Example:

    ```python
    pre = keras_hub.models.TextClassifierPreprocessor.from_preset("bert_tiny_en_uncased")
    layer = TextPreprocessing(pre)
    layer(tf.constant(["a sentence"]))["token_ids"].shape     # (1, 512)
    ```
    """

    def __init__(self, preprocessor, output_dtypes=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.preprocessor = preprocessor
        if output_dtypes is None:
            sample = preprocessor(tf.constant(["a"]))
            output_dtypes = {
                key: keras.backend.standardize_dtype(value.dtype) for key, value in sample.items()
            }
        self.output_dtypes = dict(output_dtypes)
        self.supports_jit = False

    def build(self, input_shape):
        self.built = True  # no weights of its own; the tokenizer's vocabulary is an asset

    @property
    def sequence_length(self):
        """Tokens per text, padded or truncated."""
        return self.preprocessor.sequence_length

    def call(self, inputs):
        return self.preprocessor(inputs)

    def compute_output_spec(self, inputs):
        shape = (inputs.shape[0], self.sequence_length)
        return {key: keras.KerasTensor(shape, dtype) for key, dtype in self.output_dtypes.items()}

    def get_config(self):
        return {
            **super().get_config(),
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "output_dtypes": self.output_dtypes,
        }


def load_text_encoder(preset, *, sequence_length=128, lora_rank=None):
    """Loads a keras-hub text preset (or Hugging Face folder) as `(preprocessing, encoder)`.

    `preprocessing` is a `TextPreprocessing` layer (strings -> token ids and padding mask);
    `encoder` is a functional `keras.Model` from those to the sequence output `(batch, tokens,
    features)`, named `"keras_hub_<preset>"`; `text_groups(encoder)` gives its layer groups.

    Args:
        preset: str. keras-hub preset name (`"bert_tiny_en_uncased"`), `kaggle://` / `hf://`
            handle, or a local keras-hub preset or Hugging Face model folder.
        sequence_length: int. Tokens per text. Defaults to `128`.
        lora_rank: int or None. Enable LoRA of this rank on the attention query/value layers;
            the LoRA weights are trainable and every other encoder weight frozen. Defaults to
            `None`.

    Returns:
        A tuple `(TextPreprocessing, keras.Model)`.
    """
    keras_hub = import_keras_hub()
    sequence_length = integer("sequence_length", sequence_length, minimum=2)
    if lora_rank is not None:
        lora_rank = integer("lora_rank", lora_rank, minimum=1)
    folder = check_preset(preset)
    preprocessor = load_from_preset(
        keras_hub.models.TextClassifierPreprocessor, folder, sequence_length=sequence_length
    )
    backbone = load_from_preset(keras_hub.models.Backbone, folder)
    name = NAME_PREFIX + slug(folder)
    if lora_rank is not None:
        backbone.enable_lora(lora_rank)
        if not has_lora(backbone):
            raise ValueError(
                f"keras-hub preset {preset!r} has no layers named "
                f"{backbone.default_lora_layer_names()} "
                f"to put LoRA on. Received: lora_rank={lora_rank}"
            )
    output = backbone.output
    if isinstance(output, dict):
        if "sequence_output" not in output:
            raise ValueError(
                f"keras-hub preset {preset!r} is not a text encoder: its backbone returns "
                f"{sorted(output)}, with no 'sequence_output'."
            )
        output = output["sequence_output"]
    if len(output.shape) != 3:
        raise ValueError(
            f"keras-hub preset {preset!r} must output token features (batch, tokens, features). "
            f"Received: output shape {tuple(output.shape)}"
        )
    encoder = keras.Model(backbone.input, output, name=name)
    return TextPreprocessing(preprocessor, name="preprocessing"), encoder


def text_groups(encoder):
    """The encoder's layer groups: embeddings, one per transformer layer, top (those with weights).

    Returns:
        A tuple of `(group_name, regex)` pairs, stem to top; one `"backbone"` group when the
        encoder has no layers named `transformer_layer_<n>`.
    """
    names = [
        layer.name for layer in encoder.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    blocks = [n for n in names if re.fullmatch(r"transformer_layer_\d+", n)]
    if not blocks:
        return (("backbone", ".*"),)
    first, last = names.index(blocks[0]), names.index(blocks[-1])
    parts = (
        [("embeddings", names[:first])] + [(n, [n]) for n in blocks] + [("top", names[last + 1 :])]
    )
    return tuple(
        (group, "^(" + "|".join(re.escape(n) for n in members) + ")$")
        for group, members in parts
        if any(encoder.get_layer(n).weights for n in members)
    )
