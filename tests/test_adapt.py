"""`tltk.adapt` (issue 22): unsupervised domain adaptation, its losses, and `tltk adapt`."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

import tltk
from tltk.adapt import METHODS, _hurt_signs, _Measure
from tltk.adapt_step import coral_loss, gradient_reversal
from tltk.cli import main

CLASSES = 4


@pytest.fixture(scope="module")
def domains():
    """Digits 0-3 at 32x32: 48 labelled source images; 32 target images, inverted (a shift),
    and their true labels."""
    x, y = load_digits(return_X_y=True)
    keep = np.flatnonzero(y < CLASSES)
    images = (x[keep].reshape(-1, 8, 8, 1) / 16 * 255).astype("float32")
    images = np.repeat(np.repeat(images, 4, 1), 4, 2).repeat(3, -1)
    labels = y[keep]
    return (images[:48], labels[:48]), (255 - images[48:80], labels[48:80])


@pytest.fixture(scope="module")
def trained(domains):
    """A glyphnet classifier whose head was fitted on the source (a few epochs), its weights."""
    keras.utils.set_random_seed(0)
    model = tltk.build_classifier("tltk_glyphnet", CLASSES)
    model.compile("adam", "sparse_categorical_crossentropy")
    (x, y), _ = domains
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    return model.get_weights()


def _model(weights):
    keras.utils.set_random_seed(0)
    model = tltk.build_classifier("tltk_glyphnet", CLASSES)
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("method", METHODS)
def test_each_method_returns_the_same_model_class_and_layers(method, domains, trained, tmp_path):
    (x, y), (target, target_y) = domains
    model = _model(trained)
    layers = [(layer.name, type(layer)) for layer in model.layers]
    shapes = [w.shape for w in model.weights]
    before = model.get_weights()
    result = tltk.adapt(
        model,
        (x, y),
        target,
        method=method,
        epochs=1,
        batch_size=16,
        target_labels=target_y,
        verbose=0,
    )
    assert result.model is model and type(model) is tltk.TransferModel
    assert [(layer.name, type(layer)) for layer in model.layers] == layers
    assert [w.shape for w in model.weights] == shapes
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert result.method == method and result.settings["epochs"] == (method != "adabn")
    measured = {"source_eval_accuracy", "target_entropy", "target_changed", "target_accuracy"}
    trained = {"source_loss", "source_accuracy", "alignment_loss"}
    assert set(result.history) >= (measured if method == "adabn" else measured | trained)
    assert all(len(values) == 1 for values in result.history.values())
    assert all(np.isfinite(values).all() for values in result.history.values())
    if method == "dann":  # one method exports: the adapted model is an ordinary tltk model
        report = tltk.export(
            model,
            tmp_path / "export",
            formats=("tflite",),
            quantization="float32",
            parity_data=target[:16],
        )
        assert all(f.parity.passed for f in report.files)


def test_adapt_never_reads_the_target_labels(domains, trained):
    """The same images as datasets with the right and with all-wrong labels: the same weights
    afterwards."""
    (x, y), (target, target_y) = domains
    weights = []
    for labels in (target_y, (target_y + 1) % CLASSES):
        model = _model(trained)
        given = tf.data.Dataset.from_tensor_slices((target, labels)).batch(8)
        tltk.adapt(model, (x, y), given, epochs=1, batch_size=16, verbose=0)
        weights.append(model.get_weights())
    for other in weights[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(weights[0], other))


def test_adabn_sets_batchnorm_statistics_to_the_targets(domains, trained):
    """Each BatchNorm layer's moving mean and variance become those of its inputs on the target
    images, the layers below already normalised by the target's statistics; nothing else moves."""
    (x, y), (target, _) = domains
    model = _model(trained)
    backbone = model.get_layer("tltk_glyphnet")
    first, second = backbone.get_layer("stem_bn"), backbone.get_layer("block1_bn1")
    kernels = [w.numpy() for w in model.trainable_weights]
    tltk.adapt(model, (x, y), target, method="adabn", batch_size=16, verbose=0)
    inputs = keras.Model(backbone.inputs, [first.input, second.input])
    preprocessed = model.get_layer("preprocessing")(target)
    below_first, below_second = (np.asarray(v, "float64") for v in inputs(preprocessed))
    # The statistics are the average of 2 batches of 16 (of 32 images): the means are exact,
    # the variances miss the spread between the two batches' means (small).
    np.testing.assert_allclose(first.moving_mean, below_first.mean((0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(second.moving_mean, below_second.mean((0, 1, 2)), atol=1e-3)
    np.testing.assert_allclose(first.moving_variance, below_first.var((0, 1, 2)), rtol=0.1)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(kernels, model.trainable_weights))


def test_self_training_pseudo_labels_each_classs_most_confident_share():
    measure = _Measure.__new__(_Measure)
    measure.settings = {"pseudo_label_share": (0.25, 0.75), "epochs": 3}
    measure.target_predicted = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    measure.target_confidence = np.array([0.9, 0.3, 0.8, 0.5, 0.4, 0.6, 0.2, 0.7])
    # class 0 (5 images): its 2, 3 then 4 most confident; class 1 (2): 1, 1, 2; class 2 (1): 1
    assert measure.pseudo_labelled(0).tolist() == [0, 2, 5, 6]  # a quarter, rounded up
    assert measure.pseudo_labelled(1).tolist() == [0, 2, 5, 6, 7]  # half
    assert measure.pseudo_labelled(2).tolist() == [0, 2, 3, 4, 5, 6, 7]  # three quarters


def test_coral_loss_is_its_formula():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(20, 6)), 2 * rng.normal(size=(15, 6)) + 1
    expected = np.sum((np.cov(source, rowvar=False) - np.cov(target, rowvar=False)) ** 2) / (
        4 * 6**2
    )
    assert float(coral_loss(source, target)) == pytest.approx(expected, rel=1e-5)


def test_gradient_reversal_gives_minus_lambda_times_the_identitys_gradient():
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 3)), "float32")
    weights = tf.constant(np.random.default_rng(1).normal(size=(3, 2)), "float32")
    gradients = []
    for layer in (tf.identity, lambda v: gradient_reversal(v, tf.constant(0.3))):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.tanh(layer(x) @ weights))
        gradients.append(tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(gradients[1], -0.3 * gradients[0], rtol=1e-6)
    np.testing.assert_array_equal(gradient_reversal(x, tf.constant(0.3)).numpy(), x.numpy())


def test_warnings_say_when_adapting_likely_hurt():
    before = {"source_eval_accuracy": 0.9, "target_classes": 8.0}
    fine = {"source_eval_accuracy": [0.7, 0.88], "target_classes": [6.0, 8.1]}
    assert _hurt_signs("dann", before, fine) == []  # the last epoch counts
    hurt = {"source_eval_accuracy": [0.9, 0.8], "target_classes": [9.0, 7.9]}
    found = _hurt_signs("coral", before, hurt)
    assert len(found) == 2
    assert "source accuracy by 10.0 points" in found[0]
    assert "fewer classes than before adapting (effective number 8.0 -> 7.9)" in found[1]


def test_adapt_warns_when_it_ruins_the_model(domains, trained):
    (x, y), (target, _) = domains
    with pytest.warns(UserWarning, match=r"adapt \(coral\)"):
        result = tltk.adapt(
            _model(trained),
            (x, y),
            target,
            method="coral",
            learning_rate=0.5,
            epochs=1,
            batch_size=16,
            verbose=0,
        )
    assert result.warnings


@pytest.mark.parametrize(
    "model, target, kwargs, match",
    [
        ("tltk", "array", {"method": "mmd"}, r"`method` must be one of \['self_training'"),
        ("tltk", "empty", {}, "`target` is empty"),
        ("tltk", "empty_dataset", {}, "`target` is empty"),
        ("plain", "array", {}, "`model` must be a tltk.TransferModel"),
        ("tltk", "labels_only", {}, "`target` must be a dataset of image batches"),
        ("tltk", "array", {"target_labels": [0, 1]}, "one label per target image"),
        ("tltk", "array", {"epochs": 0}, "`epochs` must be an integer >= 1"),
        ("tltk", "array", {"pseudo_label_share": (0.5, 0.2)}, "`pseudo_label_share` must be"),
    ],
)
def test_bad_arguments_are_explained(model, target, kwargs, match, domains):
    (x, y), (images, _) = domains
    if model == "tltk":
        model = tltk.build_classifier("tltk_glyphnet", CLASSES)
    else:
        inputs = keras.Input((32, 32, 3))
        model = keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.Flatten()(inputs)))
    target = {
        "array": images,
        "empty": images[:0],
        "empty_dataset": tf.data.Dataset.from_tensor_slices(images[:0]).batch(4),
        "labels_only": tf.data.Dataset.from_tensor_slices(np.arange(4)).batch(2),
    }[target]
    with pytest.raises(ValueError, match=match):
        tltk.adapt(model, (x, y), target, verbose=0, **kwargs)


def test_the_adapt_command_saves_an_adapted_model(domains, trained, tmp_path):
    help_text = CliRunner().invoke(main, ["adapt", "--help"]).output
    assert "Example: tltk adapt" in help_text
    assert "--method [self_training|coral|dann|adabn]" in help_text
    (x, y), (target, _) = domains
    model = _model(trained)
    model.class_names = [f"d{k}" for k in range(CLASSES)]
    model.save(tmp_path / "model.keras")
    for i, (image, label) in enumerate(zip(x, y)):
        (tmp_path / "source" / f"d{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype("uint8")).save(tmp_path / "source" / f"d{label}" / f"{i}.png")
    for i, image in enumerate(target):  # class-like subfolders whose names are not labels
        folder = tmp_path / "target" / ("d0" if i % 2 else "other")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype("uint8")).save(folder / f"{i}.png")
    out = tmp_path / "adapted.keras"
    args = [
        "adapt",
        str(tmp_path / "model.keras"),
        str(tmp_path / "source"),
        str(tmp_path / "target"),
        "--method",
        "dann",
        "--epochs",
        "1",
        "--quiet",
    ]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Adapted {len(target)} target images (dann, 1 epochs)" in result.output
    adapted = tltk.load_model(out)
    assert type(adapted) is tltk.TransferModel and adapted.class_names == model.class_names
    assert [layer.name for layer in adapted.layers] == [layer.name for layer in model.layers]

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        main, [*args[:3], str(tmp_path / "empty"), "--out", str(tmp_path / "b.keras")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.fullmatch(r"Error: .*empty has 0 readable image\(s\).*\n", result.output)
