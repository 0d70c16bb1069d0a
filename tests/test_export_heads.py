"""tltk.export of a model with several heads: named outputs, labels per head, parity per head."""

import importlib
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

import tltk
from tltk.cli import main
from tltk.datasets import digit_image
from tltk.export import ParityError, export, load_exported
from tltk.export.heads import OutputHead

metadata = importlib.import_module("tltk.export.metadata")
parity_module = importlib.import_module("tltk.export.parity")
image_adapter = importlib.import_module("tltk.export.image_adapter")

HEADS = ("digit", "parity", "ink", "tags")
LABELLED = ("digit", "parity", "tags")
PARITY_NAMES = ["even", "odd"]
TAG_NAMES = ["big", "loop", "prime"]
DIGIT_NAMES = [str(i) for i in range(10)]


def _spec():
    return {
        "digit": 10,
        "parity": 2,
        "ink": tltk.HeadSpec(1, "regression"),
        "tags": tltk.HeadSpec(3, "multi_label"),
    }


def _digits():
    """sklearn's digits as (32, 32, 3) raw pixels, and one target per head."""
    digits = load_digits()
    x = np.stack([digit_image(counts.reshape(8, 8)) for counts in digits.data])
    x = np.repeat(x[..., None], 3, axis=-1).astype("float32")
    y = digits.target
    tags = np.stack([y >= 5, np.isin(y, [0, 6, 8, 9]), np.isin(y, [2, 3, 5, 7])], -1)
    # Mean brightness on a 0..10 scale (about 1.8 to 4.2): on 0..1, the mean squared error is
    # too small beside the other losses for the head to learn it in a few epochs.
    ink = x.mean(axis=(1, 2, 3))[:, None] / 25.5
    return x, {"digit": y, "parity": y % 2, "ink": ink, "tags": tags.astype("float32")}


@pytest.fixture(scope="module")
def trained():
    """The shipped glyphnet backbone (frozen) with four heads trained on the digits (~10 s)."""
    keras.utils.set_random_seed(0)
    x, targets = _digits()
    model = tltk.build_classifier(
        "tltk_glyphnet", _spec(), dropout=0.0, class_names={"parity": PARITY_NAMES}
    )
    losses = {
        "digit": "sparse_categorical_crossentropy",
        "parity": "sparse_categorical_crossentropy",
    }
    model.compile(
        keras.optimizers.Adam(3e-3), {**losses, "ink": "mse", "tags": "binary_crossentropy"}
    )
    model.fit(
        x[:1400], {k: v[:1400] for k, v in targets.items()}, epochs=6, batch_size=64, verbose=0
    )
    return model, x[:1400], x[1400:]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, train_x, test_x = trained
    path = tmp_path_factory.mktemp("heads") / "digits"
    report = export(
        model,
        path,
        quantization=["float32", "int8"],
        representative_data=train_x,
        parity_data=test_x,
        labels={"tags": TAG_NAMES},
    )
    return path, report


def _keras(model, images):
    return {head: np.asarray(value) for head, value in model(images, training=False).items()}


def test_files_record_and_labels_per_head(exported):
    path, report = exported
    labels = [f"labels_{head}.txt" for head in LABELLED]
    tflite = ["model_float32.tflite", "model_int8.tflite"]
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["export.json", "saved_model"] + labels + tflite
    )
    assert (path / "labels_parity.txt").read_text() == "even\nodd"  # the model's own names
    assert (path / "labels_tags.txt").read_text() == "big\nloop\nprime"  # given
    assert (path / "labels_digit.txt").read_text() == "\n".join(DIGIT_NAMES)  # numbered
    assert report.labels_path == {head: path / f"labels_{head}.txt" for head in LABELLED}
    record = json.loads((path / "export.json").read_text())
    assert "class_names" not in record and list(record["heads"]) == list(HEADS)
    assert record["heads"]["ink"] == {
        "task": "regression",
        "units": 1,
        "output": "values",
        "output_activation": "linear",
        "class_names": None,
        "labels_file": None,
    }
    assert record["heads"]["tags"]["task"] == "multi_label"
    assert record["heads"]["tags"]["class_names"] == TAG_NAMES
    assert record["heads"]["parity"]["labels_file"] == "labels_parity.txt"
    int8 = [f for f in record["files"] if f["quantization"] == "int8"][0]
    assert set(int8["parity"]["heads"]) == set(HEADS) and int8["parity"]["passed"] is True


def test_saved_model_returns_one_named_output_per_head(trained, exported):
    model, _, test_x = trained
    path, _ = exported
    serve = tf.saved_model.load(str(path / "saved_model")).signatures["serving_default"]
    outputs = serve(image=tf.constant(test_x[:16]))
    assert sorted(outputs) == sorted(HEADS)
    expected = _keras(model, test_x[:16])
    for head in HEADS:
        np.testing.assert_allclose(outputs[head].numpy(), expected[head], atol=1e-5)
    extra = path / "saved_model" / "assets.extra"
    assert sorted(p.name for p in extra.iterdir()) == sorted(
        ["heads.json"] + [f"labels_{head}.txt" for head in LABELLED]
    )


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_tflite_outputs_and_metadata_are_named_by_head(exported, quantization):
    from ai_edge_litert.interpreter import Interpreter

    path, _ = exported
    content = (path / f"model_{quantization}.tflite").read_bytes()
    interpreter = Interpreter(model_content=content)
    assert sorted(interpreter.get_signature_runner().get_output_details()) == sorted(HEADS)
    # What MediaPipe and any index-based runtime see: outputs in head order, named by head.
    outputs = interpreter.get_output_details()
    assert [d["name"] for d in outputs] == list(HEADS)
    dtype = np.uint8 if quantization == "int8" else np.float32
    assert all(d["dtype"] == dtype for d in outputs)
    signature = interpreter.get_signature_runner().get_output_details()
    assert [signature[d["name"]]["index"] for d in outputs] == [d["index"] for d in outputs]
    found = metadata.read_metadata(content).subgraphMetadata[0].outputTensorMetadata
    assert [entry.name.decode() for entry in found] == list(HEADS)
    files = {
        entry.name.decode(): [f.name.decode() for f in entry.associatedFiles or []]
        for entry in found
    }
    assert files == {
        "digit": ["labels_digit.txt"],
        "parity": ["labels_parity.txt"],
        "ink": [],
        "tags": ["labels_tags.txt"],
    }
    assert metadata.read_associated_file(content, "labels_parity.txt") == b"even\nodd"
    assert metadata.read_associated_file(content, "labels.txt") is None


def test_parity_gate_per_head(exported):
    _, report = exported
    assert report.passed
    for exported_file in report.files:
        parity = exported_file.parity
        assert list(parity.heads) == list(HEADS) and parity.passed
        assert parity.tasks["ink"] == "regression"
        print(f"{exported_file.path.name}: {parity.describe()}")  # the figures, with pytest -s
        for head, result in parity.heads.items():
            bounds = parity_module.GATES[exported_file.quantization]
            assert (result.max_abs_diff_bound, result.top1_agreement_bound) == bounds
            assert result.num_images == 397 and result.passed
    assert "ink: passed: max|diff|/spread" in str(report)


def test_compare_heads_judges_each_head_by_its_task():
    rng = np.random.default_rng(0)
    heads = (OutputHead("c", "classification", 3), OutputHead("r", "regression", 2))
    reference = {"c": rng.dirichlet(np.ones(3), 50), "r": rng.normal(100, 5, (50, 2))}
    same = {"c": reference["c"] + 1e-6, "r": reference["r"] + 1e-4}
    assert parity_module.compare_heads(
        reference, same, "float32", data="parity_data", heads=heads
    ).passed
    # A regression head judged relative to its spread (about 30 here): 0.1 off is 3e-3, which
    # fails float32 (2e-4) and passes float16 (2e-2); the classification head is untouched.
    off = {"c": reference["c"], "r": reference["r"] + 0.1}
    result = parity_module.compare_heads(reference, off, "float32", data="parity_data", heads=heads)
    assert not result.passed and result.heads["c"].passed and not result.heads["r"].passed
    assert 2e-3 < result.heads["r"].max_abs_diff < 5e-3
    assert parity_module.compare_heads(
        reference, off, "float16", data="parity_data", heads=heads
    ).passed
    # int8 judges agreement: a quarter of inputs 10% of the spread off fails it.
    moved = reference["r"].copy()
    moved[:13] += 0.1 * np.ptp(reference["r"], axis=0)
    result = parity_module.compare_heads(
        reference, {**reference, "r": moved}, "int8", data="parity_data", heads=heads
    )
    assert result.heads["r"].top1_agreement == pytest.approx(37 / 50) and not result.passed
    labels = parity_module.compare(
        np.array([[0.9, 0.2], [0.6, 0.4]]),
        np.array([[0.9, 0.6], [0.4, 0.4]]),
        "int8",
        data="parity_data",
        task="multi_label",
    )
    assert labels.top1_agreement == 0.5 and not labels.passed


def test_a_wrong_file_fails_the_regression_head(trained, tmp_path, monkeypatch):
    """Weights moved by 0.5%: the regression head fails the float gate on its own spread."""
    model, _, test_x = trained
    rng = np.random.default_rng(1)
    moved = tltk.build_classifier("tltk_glyphnet", _spec(), weights=None, dropout=0.0)
    moved.set_weights([w * (1 + 0.005 * rng.standard_normal(w.shape)) for w in model.get_weights()])
    monkeypatch.setattr(
        image_adapter.ImageAdapter,
        "write_saved_model",
        lambda self, path, names: image_adapter.write_saved_model(moved, path, class_names=names),
    )
    with pytest.raises(ParityError, match="ink: FAILED") as raised:
        export(model, tmp_path / "wrong", formats=["saved_model"], parity_data=test_x)
    print(raised.value.report.files[0].parity.describe())
    assert not (tmp_path / "wrong").exists()


def test_predict_returns_a_dict_per_head(trained, exported, tmp_path):
    model, _, test_x = trained
    path, _ = exported
    model_file = tmp_path / "heads.keras"
    model.save(model_file)
    expected = _keras(model, test_x[:8])
    for source, atol in (
        (model_file, 1e-5),
        (path, 1e-5),
        (path / "model_float32.tflite", 1e-5),
        (path / "model_int8.tflite", 0.1),
    ):
        predictor = load_exported(source)
        assert predictor.heads == HEADS, source
        assert (
            predictor.class_names["parity"] == PARITY_NAMES and "ink" not in predictor.class_names
        )
        predictions = predictor.predict(test_x[:8])
        assert list(predictions) == list(HEADS)
        for head in LABELLED:
            names, scores = predictions[head]
            np.testing.assert_allclose(scores, expected[head], atol=atol)
            assert names == [predictor.class_names[head][i] for i in scores.argmax(-1)]
        np.testing.assert_allclose(predictions["ink"], expected["ink"], atol=atol)
        assert "heads=['digit', 'parity', 'ink', 'tags']" in repr(predictor)
    # The Keras model has its own names, tags numbered; overridden per head.
    assert load_exported(model_file).class_names["tags"] == ["0", "1", "2"]
    override = load_exported(path, class_names={"digit": [f"d{i}" for i in range(10)]})
    assert override.class_names["digit"][3] == "d3" and override.class_names["tags"] == TAG_NAMES
    with pytest.raises(ValueError, match="several heads"):
        load_exported(path, class_names=DIGIT_NAMES)


def test_reload_in_a_fresh_process(trained, exported):
    model, _, test_x = trained
    path, _ = exported
    np.save(path.parent / "images.npy", test_x[:4])
    script = textwrap.dedent(
        f"""
        import json, numpy as np, tltk
        images = np.load({str(path.parent / "images.npy")!r})
        predictions = tltk.load_exported({str(path)!r}).predict(images)
        print(json.dumps({{
            h: p[0] if isinstance(p, tuple) else p[:, 0].tolist() for h, p in predictions.items()
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    expected = _keras(model, test_x[:4])
    assert list(found) == list(HEADS)
    assert found["parity"] == [PARITY_NAMES[i] for i in expected["parity"].argmax(-1)]
    np.testing.assert_allclose(found["ink"], expected["ink"][:, 0], atol=1e-5)


@pytest.mark.parametrize(
    "labels, message",
    [
        (DIGIT_NAMES, "pass `labels` as a dict"),
        ({"ink": ["a"]}, "regression heads have no labels"),
        ({"digits": DIGIT_NAMES}, "may name only the model's classification or multi-label heads"),
        ({"parity": ["even"]}, "Head 'parity': `labels` must name each of the model's 2 classes"),
        ({"tags": "big loop prime"}, "Head 'tags': `labels` must be a list or tuple"),
    ],
)
def test_bad_labels_are_explained(trained, tmp_path, labels, message):
    model, _, _ = trained
    with pytest.raises(ValueError, match=message):
        export(model, tmp_path / "bad", formats=["saved_model"], labels=labels)
    assert not (tmp_path / "bad").exists()


def test_a_plain_keras_model_with_several_outputs_is_refused(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, {"a": keras.layers.Dense(2)(x), "b": keras.layers.Dense(1)(x)})
    with pytest.raises(ValueError, match="needs a tltk.TransferModel"):
        export(model, tmp_path / "plain")


def test_mediapipe_reports_every_head(trained, exported):
    mp = pytest.importorskip("mediapipe")
    vision = pytest.importorskip("mediapipe.tasks.python.vision")
    base = pytest.importorskip("mediapipe.tasks.python.core.base_options")
    model, _, test_x = trained
    path, _ = exported
    expected = _keras(model, test_x[:20])
    for quantization, atol in (("float32", 1e-5), ("int8", 0.1)):
        options = vision.ImageClassifierOptions(
            base_options=base.BaseOptions(
                model_asset_path=str(path / f"model_{quantization}.tflite")
            ),
            max_results=10,
        )
        with vision.ImageClassifier.create_from_options(options) as classifier:
            for i, image in enumerate(test_x[:20]):
                frame = mp.Image(
                    image_format=mp.ImageFormat.SRGB,
                    data=np.ascontiguousarray(image, dtype=np.uint8),
                )
                result = classifier.classify(frame).classifications
                assert [c.head_name for c in result] == list(HEADS)
                by_head = {c.head_name: c.categories for c in result}
                assert (
                    by_head["parity"][0].category_name
                    == PARITY_NAMES[expected["parity"][i].argmax()]
                )
                (ink,) = by_head["ink"]  # a regression head: one unnamed category, the value
                assert not ink.category_name
                np.testing.assert_allclose(ink.score, expected["ink"][i, 0], atol=atol)


def test_cli_export_and_predict(trained, tmp_path):
    model, train_x, test_x = trained
    model.save(tmp_path / "heads.keras")
    for i, image in enumerate(test_x[:200]):  # class folders (any two): images for the gate
        folder = tmp_path / "images" / f"part{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype("uint8")).save(folder / f"{i}.png")
    data = tmp_path / "images" / "part0"
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(tmp_path / "heads.keras"),
            str(tmp_path / "out"),
            "--quantize",
            "int8",
            "--data",
            str(tmp_path / "images"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "model_int8.tflite" in result.output and "ink: passed" in result.output
    assert (tmp_path / "out" / "labels_parity.txt").read_text() == "even\nodd"
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(tmp_path / "out" / "model_int8.tflite"),
            str(data / "0.png"),
            "--top",
            "1",
            "--output",
            str(tmp_path / "p.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[0]
    assert (
        line.startswith(f"{data / '0.png'}: digit: ") and "; parity: " in line and "; ink: " in line
    )
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert (
        header[:4] == ["input", "error", "digit", "digit.0"]
        and "ink" in header
        and "tags.2" in header
    )
    result = CliRunner().invoke(
        main, ["predict", str(tmp_path / "out"), str(data / "0.png"), "--class-names", "a,b"]
    )
    assert result.exit_code == 1 and "several heads" in result.output
