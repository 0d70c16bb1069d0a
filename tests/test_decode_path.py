"""One decode path: a file gives training, prediction and export the same pixels."""

import keras
import numpy as np
import pytest
from PIL import Image

import tltk
import tltk.data
from tltk.data import decode
from tltk.export import export, load_exported
from tltk.export.images import image_batch, sample_images

SIZE = (32, 32)  # tltk_glyphnet's default input size
CLASSES = ["portrait", "square"]


def portrait():
    """A 24x40 (width x height) upright picture: red top, blue bottom, a green stripe at left."""
    pixels = np.zeros((40, 24, 3), np.uint8)
    pixels[:20] = (255, 0, 0)
    pixels[20:] = (0, 0, 255)
    pixels[:, :4] = (0, 255, 0)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A class tree whose first class holds a phone-style JPEG: stored sideways, EXIF 6."""
    root = tmp_path_factory.mktemp("photos")
    for name in CLASSES:
        (root / name).mkdir()
    rotated = root / "portrait" / "phone.jpg"
    tags = Image.Exif()
    tags[0x0112] = 6  # turn 90 degrees clockwise to show
    portrait().transpose(Image.ROTATE_90).save(rotated, quality=95, exif=tags)
    portrait().save(root / "portrait" / "upright.png")
    for i in range(2):
        Image.new("RGB", (30, 30), (40 * i, 200, 90)).save(root / "square" / f"{i}.png")
    return root, str(rotated)


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(3)
    return tltk.build_classifier("tltk_glyphnet", len(CLASSES), weights="tltk")


def training_pixels(root):
    """Every image the training dataset of `root` yields, as float32 arrays."""
    data = tltk.data.from_directory(root, image_size=SIZE, validation_split=0.0, batch_size=2)
    assert data.class_names == tuple(CLASSES) and not data.skipped
    return [image for batch, _ in data.train.as_numpy_iterator() for image in batch]


def test_prediction_sees_the_training_pixels_of_an_exif_jpeg(photos):
    root, rotated = photos
    predicted = image_batch([rotated], (*SIZE, 3))[0]
    matches = [image for image in training_pixels(root) if np.array_equal(image, predicted)]
    assert len(matches) == 1
    # Upright: red above blue, the green stripe at the left (Pillow alone would show it sideways).
    assert predicted[2, 16].tolist() == pytest.approx([255, 0, 0], abs=12)
    assert predicted[29, 16].tolist() == pytest.approx([0, 0, 255], abs=12)
    assert predicted[16, 1].tolist() == pytest.approx([0, 255, 0], abs=12)
    np.testing.assert_array_equal(predicted, tltk.data.load_image(rotated, SIZE))


def test_exported_and_loaded_predictors_match_the_model_on_training_pixels(
    photos, classifier, tmp_path
):
    root, rotated = photos
    pixels = image_batch([rotated], (*SIZE, 3))
    expected = keras.ops.convert_to_numpy(classifier(pixels, training=False))
    with Image.open(rotated) as stored:  # what a decoder that ignores EXIF would see
        sideways = np.asarray(stored.convert("RGB").resize(SIZE[::-1]), "float32")
    unturned = keras.ops.convert_to_numpy(classifier(sideways[None], training=False))
    assert np.abs(unturned - expected).max() > 1e-4  # so this test tells the two decoders apart

    classifier.save(tmp_path / "model.keras")
    names, probabilities = load_exported(tmp_path / "model.keras", class_names=CLASSES).predict(
        rotated
    )
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert names == [CLASSES[int(expected.argmax())]]

    files = sorted(str(path) for path in root.rglob("*.*"))
    export(classifier, tmp_path / "export", formats=("tflite",), labels=CLASSES, parity_data=files)
    tflite = load_exported(tmp_path / "export" / "model_float32.tflite")
    assert tflite.class_names == CLASSES
    np.testing.assert_allclose(tflite.predict([rotated])[1], expected, atol=1e-5)


def test_gray_models_get_pillows_gray_of_the_rgb_decode(photos):
    _, rotated = photos
    rgb = tltk.data.load_image(rotated, SIZE)
    gray = image_batch([rotated], (*SIZE, 1))[0]
    pillow_gray = np.asarray(Image.fromarray(rgb).convert("L"), "float32")[..., None]
    np.testing.assert_array_equal(gray, pillow_gray)
    np.testing.assert_array_equal(gray, decode.to_grayscale(rgb).numpy())
    # RGB arrays (e.g. a `from_directory` dataset used for calibration) become gray the same way.
    np.testing.assert_array_equal(image_batch(rgb, (*SIZE, 1))[0], gray)
    sampled = sample_images([rotated, rotated], (*SIZE, 1), limit=1, name="representative_data")
    np.testing.assert_array_equal(sampled[0], gray)


def test_unreadable_files_name_themselves(photos, tmp_path):
    _, rotated = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    missing = tmp_path / "missing.png"
    for bad in (broken, missing):
        message = rf"`images`: cannot use 1 of 2 image files.*{bad.name}"
        with pytest.raises(ValueError, match=message):
            image_batch([rotated, bad], (*SIZE, 3))
    with pytest.raises(ValueError, match="all image file paths or all arrays"):
        image_batch([rotated, np.zeros((4, 4, 3))], (*SIZE, 3))
