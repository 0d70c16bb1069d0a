"""MediaPipe Tasks' ImageClassifier runs tltk's TFLite files as a phone app would."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import tltk
from tltk.datasets import digit_image
from tltk.export import export

mp = pytest.importorskip("mediapipe")
vision = pytest.importorskip("mediapipe.tasks.python.vision")
BaseOptions = pytest.importorskip("mediapipe.tasks.python.core.base_options").BaseOptions

LABELS = [f"digit {i}" for i in range(10)]


def _trained_digits_model():
    """A small CNN (its own backbone model, with [0, 1] scaling inside) trained on the digits."""
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = np.stack([digit_image(counts.reshape(8, 8)) for counts in digits.data])
    x, y = np.repeat(x[..., None], 3, axis=-1).astype("float32"), digits.target
    convs = [
        keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")
        for filters in (32, 64, 128)
    ]
    backbone = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255), *convs],
        name="mediapipe_test_cnn",
    )
    model = tltk.build_classifier(backbone, 10, dropout=0.0)
    tltk.unfreeze(model, "all")
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x[:1400], np.eye(10)[y[:1400]], epochs=20, batch_size=64, verbose=0)
    return model, x[:1400], x[1400:]


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory):
    model, train_x, test_x = _trained_digits_model()
    path = tmp_path_factory.mktemp("mediapipe") / "digits"
    export(
        model,
        path,
        formats=["tflite"],
        quantization=["float32", "int8"],
        representative_data=train_x,
        parity_data=test_x,
        labels=LABELS,
    )
    return model, test_x[:100], path


def _classify(model_path, images):
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)), max_results=len(LABELS)
    )
    names, scores = [], []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            frame = mp.Image(
                image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image, dtype=np.uint8)
            )
            categories = classifier.classify(frame).classifications[0].categories
            names.append(categories[0].category_name)
            by_name = {c.category_name: c.score for c in categories}
            scores.append([by_name[label] for label in LABELS])
    return names, np.array(scores)


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_image_classifier_agrees_with_keras(digits_export, quantization):
    model, images, path = digits_export
    names, scores = _classify(path / f"model_{quantization}.tflite", images)
    expected = model.predict(images, verbose=0)
    keras_names = [LABELS[i] for i in expected.argmax(-1)]
    assert set(names) <= set(LABELS)
    agreement = np.mean(np.array(names) == np.array(keras_names))
    if quantization == "float32":
        assert agreement == 1.0
        np.testing.assert_allclose(scores, expected, atol=1e-5)
    else:
        assert agreement >= 0.98
        np.testing.assert_allclose(scores, expected, atol=0.1)
