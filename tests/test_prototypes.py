"""`tltk.build_prototype_classifier` (issue 23): a classifier from a few examples, no training."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import tltk
from tltk.features import pooled_features
from tltk.prototypes import SCALE
from tltk.stages import Stage


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits at 24x24 (the demo backbone takes 32x32): 5 per class as support,
    the rest to score."""
    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8, 1) / 16 * 255).astype("uint8")
    images = np.repeat(np.repeat(images, 3, 1), 3, 2).repeat(3, -1)
    rng = np.random.default_rng(0)
    support = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(10)]
    )
    rest = np.setdiff1d(np.arange(len(y)), support)
    return (images[support], y[support]), (images[rest], y[rest])


@pytest.fixture(scope="module")
def model(digits):
    return tltk.build_prototype_classifier(
        "tltk_glyphnet", digits[0], class_names=list("0123456789")
    )


def _accuracy(model, images, labels):
    resized = tf.image.resize(images, model.input_shape[1:3]).numpy()
    return float(np.mean(model.predict(resized, verbose=0).argmax(1) == labels))


def test_the_head_is_the_normalized_class_means_and_classifies_without_training(model, digits):
    (x, y), (test_x, test_y) = digits
    base = tltk.build_classifier("tltk_glyphnet", 10)
    features = pooled_features(base, x)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    means = np.stack([features[y == k].mean(0) for k in range(10)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(
        model.get_layer("predictions").kernel.numpy(), SCALE * means.T, atol=1e-5
    )
    assert model.class_names == list("0123456789") and not model.backbone.trainable
    assert _accuracy(model, test_x, test_y) > 0.8  # chance is 0.1


def test_datasets_and_imagedata_give_the_same_prototypes(model, digits):
    (x, y), _ = digits
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    again = tltk.build_prototype_classifier("tltk_glyphnet", dataset)
    np.testing.assert_allclose(
        again.get_layer("predictions").kernel.numpy(),
        model.get_layer("predictions").kernel.numpy(),
        atol=1e-5,
    )
    data = tltk.data.from_arrays(
        x, y, image_size=(24, 24), validation_split=0.0, class_names=[f"d{i}" for i in range(10)]
    )
    named = tltk.build_prototype_classifier("tltk_glyphnet", data)
    assert named.class_names == [f"d{i}" for i in range(10)]


def test_it_exports_reloads_and_fine_tunes_from_the_prototypes(model, digits, tmp_path):
    (x, y), (test_x, test_y) = digits
    report = tltk.export(
        model,
        tmp_path / "export",
        formats=("tflite",),
        quantization="float32",
        parity_data=tf.image.resize(test_x[:64], (32, 32)).numpy(),
    )
    assert all(f.parity.passed for f in report.files)
    model.save(tmp_path / "proto.keras")
    reloaded = tltk.load_model(tmp_path / "proto.keras")
    assert reloaded.class_names == model.class_names
    assert _accuracy(reloaded, test_x, test_y) == _accuracy(model, test_x, test_y)

    before = model.get_layer("predictions").kernel.numpy().copy()
    tuned = tltk.build_prototype_classifier("tltk_glyphnet", digits[0])
    train = tf.data.Dataset.from_tensor_slices((tf.image.resize(x, (32, 32)), y)).batch(16)
    plan = [Stage((), 2, 1e-3, cached=True)]
    result = tltk.fine_tune(tuned, train, train, stages=plan, verbose=0)
    after = tuned.get_layer("predictions").kernel.numpy()
    assert result.probe is None  # not a plain linear head: Adam trains it, from the prototypes
    assert 0 < np.abs(after - before).max() < 0.1 * np.abs(before).max()


@pytest.mark.parametrize(
    "support, kwargs, match",
    [
        ((np.zeros((4, 20, 20, 3)), [0, 0, 2, 2]), {}, r"no example of class\(es\) \[1\]"),
        ((np.zeros((4, 20, 20, 3)), [0, 0, 1, 1]), {"scale": 0}, "`scale` must be"),
        ("photos/", {}, "`support` must be a tltk ImageData"),
        ((np.zeros((4, 20, 20, 3)), [0, 0, 0, 0]), {}, "at least 2 classes"),
    ],
)
def test_bad_support_is_explained(support, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tltk.build_prototype_classifier("tltk_glyphnet", support, **kwargs)
