"""tltk.export: round trips, the parity gate, atomic writes, and load_exported, on real files."""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

import tltk
from tltk.datasets import digit_image
from tltk.export import ParityError, export, load_exported

exporter = importlib.import_module("tltk.export.exporter")
image_adapter = importlib.import_module("tltk.export.image_adapter")
metadata = importlib.import_module("tltk.export.metadata")
parity_module = importlib.import_module("tltk.export.parity")
images_module = importlib.import_module("tltk.export.images")

BACKBONE = "export_test_cnn"
LABELS = [f"digit {i}" for i in range(10)]
QUANTIZATIONS = ["float32", "float16", "dynamic", "int8"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_backbone(input_shape, weights):
    layers = [keras.Input(input_shape)]
    for i, filters in enumerate((32, 64, 128)):
        layers.append(
            keras.layers.Conv2D(
                filters, 3, strides=2, padding="same", activation="relu", name=f"b{i}_conv"
            )
        )
    return keras.Sequential(layers, name=BACKBONE)


tltk.register_backbone(
    tltk.BackboneSpec(
        name=BACKBONE,
        family="custom",
        source="tltk",
        constructor=_tiny_backbone,
        preprocessing="unit",
        default_input_size=(32, 32),
        min_input_size=(8, 8),
        feature_dim=128,
        groups=(("b0", "b0_"), ("b1", "b1_"), ("b2", "b2_")),
    ),
    overwrite=True,
)


def digit_images():
    """sklearn's 1,797 handwritten digits as (32, 32, 3) raw pixels, and their labels."""
    digits = load_digits()
    images = np.stack([digit_image(counts.reshape(8, 8)) for counts in digits.data])
    return np.repeat(images[..., None], 3, axis=-1).astype("float32"), digits.target


def train_digits_model():
    """A small CNN classifier trained on the digits: model, (train x, y), (held-out x, y).

    Label smoothing keeps its logits moderate, as a well-trained classifier's are; without it,
    this tiny model's float16 file differs by 1.4e-3 and its int8 file lands near the 98% gate.
    """
    keras.utils.set_random_seed(0)
    x, y = digit_images()
    model = tltk.build_classifier(BACKBONE, 10, weights=None, dropout=0.0)
    tltk.unfreeze(model, "all")
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    model.fit(x[:1400], np.eye(10)[y[:1400]], epochs=20, batch_size=64, verbose=0)
    return model, (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.fixture(scope="module")
def trained():
    return train_digits_model()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, (train_x, _), (test_x, _) = trained
    path = tmp_path_factory.mktemp("exports") / "digits"
    report = export(
        model,
        path,
        quantization=QUANTIZATIONS,
        representative_data=train_x,
        parity_data=test_x,
        labels=LABELS,
    )
    return path, report


def _snapshot(folder):
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                files[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return files


def _staging(folder):
    return [n for n in os.listdir(folder) if ".tltk-tmp-" in n]


def test_model_is_trained(trained):
    model, _, (test_x, test_y) = trained
    accuracy = np.mean(model.predict(test_x, verbose=0).argmax(-1) == test_y)
    assert accuracy > 0.85


def test_export_writes_every_file(exported):
    path, report = exported
    names = sorted(os.listdir(path))
    tflite_names = [f"model_{q}.tflite" for q in QUANTIZATIONS]
    assert names == sorted(["export.json", "labels.txt", "saved_model", *tflite_names])
    assert [(f.format, f.quantization) for f in report.files] == [("saved_model", "float32")] + [
        ("tflite", q) for q in QUANTIZATIONS
    ]
    for exported_file in report.files:
        assert exported_file.path.exists() and exported_file.latency_ms > 0
    tflite = report.file("tflite", "int8")
    assert tflite.size_bytes == os.path.getsize(tflite.path)
    assert (path / "labels.txt").read_text() == "\n".join(LABELS)  # no trailing newline
    assert path.is_dir() and not path.is_symlink()  # a real folder, and its lock file beside it
    assert sorted(os.listdir(path.parent)) == [".digits.tltk-lock", "digits"]
    assert "model_int8.tflite" in str(report)


def test_a_copied_export_is_whole(exported, trained, tmp_path):
    """`shutil.copytree` and `cp -r` of the export folder copy the files, not a link."""
    path, _ = exported
    _, _, (test_x, _) = trained
    shutil.copytree(path, tmp_path / "copytree")
    subprocess.run(["cp", "-r", str(path), str(tmp_path / "cp")], check=True)
    for copy in (tmp_path / "copytree", tmp_path / "cp"):
        assert _snapshot(copy) == _snapshot(path)
        for name in ("", "model_int8.tflite"):
            expected = load_exported(path / name).predict(test_x[:8])
            predictor = load_exported(copy / name)
            assert predictor.path == (copy / name if name else copy / "saved_model")
            names, probabilities = predictor.predict(test_x[:8])
            assert names == expected[0]
            np.testing.assert_array_equal(probabilities, expected[1])


def test_parity_gate_passes_on_trained_model(exported):
    _, report = exported
    assert report.passed and report.written
    for exported_file in report.files:
        parity = exported_file.parity
        assert parity.passed and parity.data == "parity_data" and parity.num_images == 397
        bounds = parity_module.GATES[exported_file.quantization]
        assert (parity.max_abs_diff_bound, parity.top1_agreement_bound) == bounds
        if exported_file.quantization in ("float32", "float16"):
            assert parity.max_abs_diff <= bounds.max_abs_diff
        assert parity.top1_agreement >= bounds.top1_agreement
        print(f"{exported_file.path.name}: {parity.describe()}")  # the figures, with pytest -s


def test_parity_gate_fails_a_wrong_file(trained, tmp_path, monkeypatch):
    """The files of a model whose weights moved by 2% (or of another model) fail the float gates.

    Top-1 agreement alone would let the 2% one through (99.5% here); its probabilities are off by
    about 0.04, twice the float16 bound.
    """
    model, _, (test_x, _) = trained
    rng = np.random.default_rng(1)
    moved = tltk.build_classifier(BACKBONE, 10, weights=None, dropout=0.0)
    moved.set_weights([w * (1 + 0.02 * rng.standard_normal(w.shape)) for w in model.get_weights()])
    other = tltk.build_classifier(BACKBONE, 10, weights=None, dropout=0.0)  # untrained
    reports = []
    for impostor in (moved, other):
        monkeypatch.setattr(
            image_adapter.ImageAdapter,
            "write_saved_model",
            lambda self, path, names, impostor=impostor: image_adapter.write_saved_model(
                impostor, path, class_names=names
            ),
        )
        with pytest.raises(ParityError, match="model_float16.tflite: FAILED") as raised:
            export(
                model,
                tmp_path / "wrong",
                quantization=["float32", "float16"],
                parity_data=test_x,
                labels=LABELS,
            )
        reports.append(raised.value.report)
        assert len(reports[-1].failed) == len(reports[-1].files) == 3  # SavedModel, both files
        assert not (tmp_path / "wrong").exists()
    float16 = reports[0].file("tflite", "float16").parity
    print(f"weights moved by 2%, float16: {float16.describe()}")
    assert float16.max_abs_diff > 1.5 * float16.max_abs_diff_bound
    assert reports[1].file("tflite", "float16").parity.top1_agreement < 0.5


def test_record(exported):
    path, report = exported
    record = json.loads((path / "export.json").read_text())
    assert record["backbone"] == BACKBONE and record["preprocessing"] == "unit"
    assert record["input_size"] == [32, 32] and record["channels"] == 3
    assert record["class_names"] == LABELS and record["quantization"] == QUANTIZATIONS
    assert record["versions"]["tensorflow"] == tf.__version__
    assert record["versions"]["tltk"] == tltk.__version__
    assert record["parity_passed"] is True
    int8 = [f for f in record["files"] if f["quantization"] == "int8"][0]
    assert int8["path"] == "model_int8.tflite"
    assert int8["parity"]["top1_agreement"] == report.file("tflite", "int8").parity.top1_agreement


def test_saved_model_round_trip(trained, exported):
    model, _, (test_x, _) = trained
    path, _ = exported
    expected = model.predict(test_x[:16], verbose=0)
    serve = tf.saved_model.load(str(path / "saved_model")).signatures["serving_default"]
    probabilities = serve(image=tf.constant(test_x[:16]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    layer = keras.layers.TFSMLayer(path / "saved_model", call_endpoint="serving_default")
    inputs = keras.Input((32, 32, 3))
    wrapped = keras.Model(inputs, layer(inputs)["probabilities"])
    np.testing.assert_allclose(wrapped.predict(test_x[:16], verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_tflite_round_trip(trained, exported, quantization):
    from ai_edge_litert.interpreter import Interpreter

    model, _, (test_x, _) = trained
    path, _ = exported
    file = path / f"model_{quantization}.tflite"
    interpreter = Interpreter(model_path=str(file))
    interpreter.allocate_tensors()
    (input_details,) = interpreter.get_input_details()
    assert tuple(input_details["shape"]) == (1, 32, 32, 3)
    if quantization == "int8":
        scale, zero_point = input_details["quantization"]
        assert input_details["dtype"] == np.uint8 and zero_point == 0 and abs(scale - 1) < 1e-2
    else:
        assert input_details["dtype"] == np.float32
    # The file carries its metadata: raw-pixel normalization and the labels.
    content = file.read_bytes()
    assert metadata.read_associated_file(content, "labels.txt").decode() == "\n".join(LABELS)
    record = metadata.read_metadata(content)
    options = record.subgraphMetadata[0].inputTensorMetadata[0].processUnits[0].options
    assert list(options.mean) == [0.0] and list(options.std) == [1.0]
    assert record.minParserVersion == b"1.0.0"

    predictor = load_exported(file)
    names, probabilities = predictor.predict(test_x[:50])
    expected = model.predict(test_x[:50], verbose=0)
    assert predictor.class_names == LABELS and predictor.kind == "tflite"
    assert names == [LABELS[i] for i in probabilities.argmax(-1)]
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=0.05)
    assert np.mean(probabilities.argmax(-1) == expected.argmax(-1)) >= 0.96
    if quantization == "float32":
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_load_exported_from_files_folders_and_keras(trained, exported, tmp_path):
    model, _, (test_x, _) = trained
    path, _ = exported
    files = []
    for i in range(3):
        files.append(tmp_path / f"digit_{i}.png")
        Image.fromarray(test_x[i].astype("uint8")).save(files[-1])
    expected = [LABELS[i] for i in model.predict(test_x[:3], verbose=0).argmax(-1)]
    folder = load_exported(path)
    assert folder.kind == "saved_model" and folder.predict(files)[0] == expected
    assert load_exported(path / "model_float32.tflite").predict(str(files[0]))[0] == expected[:1]
    model.save(tmp_path / "model.keras")
    keras_predictor = load_exported(tmp_path / "model.keras")
    assert keras_predictor.class_names == [str(i) for i in range(10)]
    names, _ = keras_predictor.predict(test_x[0])  # one (H, W, C) image
    assert names == [str(LABELS.index(expected[0]))]
    # A bigger image is resized to the model's input.
    big = tf.image.resize(test_x[:1], (64, 64)).numpy()
    assert folder.predict(big)[1].shape == (1, 10)
    renamed = load_exported(path / "model_int8.tflite", class_names=list("abcdefghij"))
    assert set(renamed.predict(test_x[:5])[0]) <= set("abcdefghij")
    with pytest.raises(ValueError, match="Received: path="):
        load_exported(tmp_path / "missing.tflite")


def test_the_model_s_class_names_are_the_default_labels(tmp_path):
    model = tltk.build_classifier(BACKBONE, 3, weights=None)
    model.class_names = ["ant", "bee", "cat"]
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    export(model, tmp_path / "out", formats=("tflite",), parity_data=pixels)
    assert (tmp_path / "out" / "labels.txt").read_text().split() == ["ant", "bee", "cat"]
    assert load_exported(tmp_path / "out" / "model_float32.tflite").class_names == model.class_names
    model.save(tmp_path / "model.keras")
    assert load_exported(tmp_path / "model.keras").class_names == ["ant", "bee", "cat"]


def _record_naming(folder, path):
    folder.mkdir()
    record = {"files": [{"format": "tflite", "quantization": "float32", "path": str(path)}]}
    (folder / "export.json").write_text(json.dumps(record))
    return folder


def test_load_exported_stays_inside_the_export_folder(exported, tmp_path):
    path, _ = exported
    model_file = path / "model_float32.tflite"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.tflite").write_bytes(model_file.read_bytes())
    for name, target in [
        ("absolute", model_file),
        ("parent", "../elsewhere/model.tflite"),
    ]:
        folder = _record_naming(tmp_path / name, target)
        with pytest.raises(ValueError, match="outside the export folder") as raised:
            load_exported(folder)
        assert str(folder / "export.json") in str(raised.value)
    inside = _record_naming(tmp_path / "inside", "model.tflite")
    (inside / "model.tflite").write_bytes(model_file.read_bytes())
    assert load_exported(inside).kind == "tflite"


@pytest.mark.parametrize("content", ["{not json", '{"files": 3}', b"\xff\xfe", "[]"])
def test_a_damaged_record_is_named(tmp_path, content):
    folder = tmp_path / "damaged"
    folder.mkdir()
    record = folder / "export.json"
    record.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match="damaged.*export the model again") as raised:
        load_exported(folder)
    assert str(record) in str(raised.value)


def test_failed_gate_raises_and_keeps_previous_export(trained, exported, tmp_path):
    model, (train_x, _), (test_x, _) = trained
    target = tmp_path / "digits"
    export(model, target, formats=["tflite"], representative_data=train_x, labels=LABELS)
    before = _snapshot(target)
    # Calibrated on dark images only, the int8 file clips every real activation: a bad export.
    dark = train_x * 0.05
    with pytest.raises(ParityError, match="model_int8.tflite: FAILED") as raised:
        export(
            model,
            target,
            quantization=["float32", "int8"],
            representative_data=dark,
            parity_data=test_x,
            labels=LABELS,
            overwrite=True,
        )
    report = raised.value.report
    assert not report.written and [f.quantization for f in report.failed] == ["int8"]
    assert report.file("tflite", "int8").parity.top1_agreement < 0.98
    assert report.file("tflite", "float32").passed
    assert _snapshot(target) == before
    assert not _staging(tmp_path)  # no staging folder left behind

    with pytest.warns(UserWarning, match="model_int8.tflite"):
        report = export(
            model,
            target,
            formats=["tflite"],
            quantization="int8",
            representative_data=dark,
            parity_data=test_x,
            labels=LABELS,
            parity="warn",
            overwrite=True,
        )
    assert report.written and not report.passed
    assert sorted(os.listdir(target)) == ["export.json", "labels.txt", "model_int8.tflite"]
    assert json.loads((target / "export.json").read_text())["parity_passed"] is False


def test_kill_while_converting_keeps_previous_export(trained, tmp_path):
    model, (train_x, _), (test_x, _) = trained
    target = tmp_path / "digits"
    export(model, target, quantization="float32", representative_data=train_x, labels=LABELS)
    before = _snapshot(target)
    expected = load_exported(target / "model_float32.tflite").predict(test_x[:20])[1]
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "train.npy", train_x[:200])
    marker = tmp_path / "converting"
    script = textwrap.dedent(
        f"""
        import importlib, pathlib, sys
        import keras, numpy as np
        sys.path.insert(0, {REPO!r})
        import tltk  # registers tltk's layers for load_model
        exporter = importlib.import_module("tltk.export.exporter")
        image_adapter = importlib.import_module("tltk.export.image_adapter")
        real_convert = image_adapter.convert

        def converting_forever(*args, **kwargs):
            pathlib.Path({str(marker)!r}).touch()
            while True:  # keep converting until killed, so the kill lands mid-conversion
                real_convert(*args, **kwargs)

        image_adapter.convert = converting_forever
        model = keras.models.load_model({str(tmp_path / "model.keras")!r})
        exporter.export(model, {str(target)!r}, quantization="int8", overwrite=True,
                        representative_data=np.load({str(tmp_path / "train.npy")!r}))
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, "the exporting process ended before converting"
            assert time.monotonic() < deadline, "the exporting process never started converting"
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _snapshot(target) == before
    reloaded = load_exported(target / "model_float32.tflite").predict(test_x[:20])[1]
    np.testing.assert_array_equal(reloaded, expected)
    stale = _staging(tmp_path)
    assert len(stale) == 1  # the killed process's staging folder, with its SavedModel
    assert (tmp_path / stale[0] / "saved_model" / "saved_model.pb").is_file()
    export(model, target, formats=["saved_model"], labels=LABELS, overwrite=True)
    assert not _staging(tmp_path)
    assert sorted(os.listdir(target)) == ["export.json", "labels.txt", "saved_model"]


def test_existing_folder_needs_overwrite(trained, tmp_path):
    model = trained[0]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="overwrite=True"):
        export(model, tmp_path / "taken", formats=["saved_model"])
    with pytest.raises(ValueError, match="not a tltk export"):
        export(model, tmp_path / "taken", formats=["saved_model"], overwrite=True)
    assert os.listdir(tmp_path / "taken") == ["notes.txt"]


def test_without_data_float_files_are_checked_on_random_pixels(trained, tmp_path):
    model = trained[0]
    report = export(model, tmp_path / "plain")
    assert [f.parity.data for f in report.files] == ["random", "random"] and report.passed
    with pytest.raises(ValueError, match="parity_data"):
        export(model, tmp_path / "dynamic", quantization="dynamic")
    with pytest.warns(UserWarning, match="Parity gate not run for model_dynamic.tflite"):
        report = export(
            model, tmp_path / "dynamic", formats=["tflite"], quantization="dynamic", parity="warn"
        )
    assert report.files[0].parity is None and report.passed


def test_logits_get_a_softmax(tmp_path):
    model = tltk.build_classifier(
        BACKBONE, 3, weights=None, classifier_activation="linear", dropout=0.0
    )
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    report = export(model, tmp_path / "logits", quantization="float32", labels=["a", "b", "c"])
    assert report.passed
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(x)))
    for path in (tmp_path / "logits", tmp_path / "logits" / "model_float32.tflite"):
        np.testing.assert_allclose(load_exported(path).predict(x)[1], expected, atol=1e-5)
    record = json.loads((tmp_path / "logits" / "export.json").read_text())
    assert record["output_activation"] == "linear" and "softmax added" in record["output"]


@keras.saving.register_keras_serializable(package="tltk_tests")
class Determinant(keras.layers.Layer):
    """Appends the determinant of the first four features, as a 2x2 matrix (no TFLite builtin)."""

    def call(self, x):
        det = tf.linalg.det(tf.reshape(x[:, :4], (-1, 2, 2)))
        return tf.concat([x, det[:, None]], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + 1)


def test_flex_ops_are_refused_by_name(tmp_path):
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = Determinant()(keras.layers.Dense(4)(x))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match="MatrixDeterminant.*Flex"):
        export(model, tmp_path / "flex", formats=["tflite"])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantization": "int4"}, "quantization"),
        ({"quantization": ["int8", "int8"]}, "quantization"),
        ({"formats": ["onnx"]}, "formats"),
        ({"formats": []}, "formats"),
        ({"parity": "ignore"}, "parity"),
        ({"labels": ["a", "b"]}, "labels"),
        ({"labels": ["a"] * 10}, "labels"),
        ({"labels": "abcdefghij"}, "labels"),  # a bare string is not ten names
        ({"labels": [*LABELS[:9], "nine\r"]}, "labels"),
        *[({"labels": [*LABELS[:9], f"ni{c}ne"]}, "line breaks") for c in "\u2028\x0c\x85\x0b\x1c"],
        ({"labels": [*LABELS[:9], " "]}, "labels"),
        ({"quantization": "int8"}, "representative_data"),
        ({"representative_data": np.zeros((4, 32, 32, 5))}, "channel"),  # gray is converted
        ({"representative_data": "no_such_image.png"}, "representative_data"),
    ],
)
def test_bad_arguments(trained, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export(trained[0], tmp_path / "bad", **kwargs)
    assert os.listdir(tmp_path) == []


def test_bad_model(tmp_path):
    with pytest.raises(ValueError, match="keras.Model"):
        export("model.keras", tmp_path / "bad")
    inputs = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    flexible = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    with pytest.raises(ValueError, match="fixed size"):
        export(flexible, tmp_path / "bad")


def test_image_sources(trained):
    (train_x, train_y) = trained[1]
    batches = tf.data.Dataset.from_tensor_slices((train_x, train_y)).batch(32)
    sampled = images_module.sample_images(batches, (32, 32, 3), limit=50, name="data")
    assert sampled.shape == (50, 32, 32, 3)
    # Drawn from the first 4 * limit images, not just the first `limit`.
    first = {x.tobytes() for x in train_x[:200]}
    assert all(x.tobytes() in first for x in sampled) and not np.array_equal(sampled, train_x[:50])
    single = tf.data.Dataset.from_tensor_slices(train_x[:10])
    assert images_module.sample_images(single, (32, 32, 3), limit=50, name="data").shape[0] == 10
    resized = images_module.sample_images(train_x[:3, :16, :16], (32, 32, 3), limit=9, name="d")
    assert resized.shape == (3, 32, 32, 3)
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        images_module.sample_images(train_x[:10] / 255.0, (32, 32, 3), limit=10, name="data")


def test_gray_images_are_read_as_rgb_for_parity(trained, tmp_path):
    """A batch of grayscale images, as `from_arrays` takes them, is compared in RGB."""
    gray = np.random.default_rng(0).uniform(0, 255, (8, 32, 32)).astype("float32")
    report = export(trained[0], tmp_path / "gray", formats=("tflite",), parity_data=gray)
    assert report.files[0].parity.passed and report.files[0].parity.num_images == 8
