"""GlyphNet, the backbone shipped with tltk: its spec, its weights file, and that it transfers."""

import hashlib
import json
import re
import shutil

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import tltk
import tltk.data
from tltk.backbones import glyphnet
from tltk.datasets import digit_image, digits


@pytest.fixture(scope="module")
def digit_splits(tmp_path_factory):
    root = digits(tmp_path_factory.mktemp("digits"))
    data = tltk.data.from_directory(
        root, image_size=(32, 32), validation_split=0.0, test_split=0.3, batch_size=256
    )
    assert data.class_names == tuple(str(c) for c in range(10))
    return _arrays(data.train), _arrays(data.test)


def _arrays(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


def test_spec_matches_the_model_it_builds():
    spec = tltk.get_backbone("tltk_glyphnet")
    assert spec is glyphnet.SPEC and spec.source == "tltk" and spec.weights == ("tltk",)
    model = tltk.build_classifier("tltk_glyphnet", 10, weights=None)
    backbone = model.get_layer("tltk_glyphnet")
    assert backbone.output.shape[-1] == spec.feature_dim
    assert tuple(model.input.shape[1:]) == spec.default_input_shape()
    groups = tltk.layer_groups(model)
    assert [g.name for g in groups] == ["stem", "block1", "block2", "block3", "top", "head"]
    for group in groups[:-1]:
        assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in group.layers)
    assert 200_000 < backbone.count_params() < 500_000


def test_fully_convolutional_at_other_sizes():
    assert glyphnet.glyphnet((48, 64, 3)).output.shape == (None, 6, 8, 256)
    smallest = glyphnet.glyphnet((8, 8, 3), weights=None)
    assert smallest(np.zeros((1, 8, 8, 3))).shape == (1, 1, 1, 256)
    assert glyphnet.glyphnet((28, 28, 1), weights=None).output.shape == (None, 4, 4, 256)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (7, 32, 3)}, "at least 8x8"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"input_shape": (32, 32, 1)}, "3 channels"),
        ({"weights": "imagenet"}, "weights='imagenet'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        glyphnet.glyphnet(**kwargs)


def test_shipped_weights_load_and_match_their_checksum():
    path = glyphnet.verified_weights_path()
    manifest = json.loads((glyphnet.WEIGHTS_DIR / glyphnet.MANIFEST_FILE).read_text())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["sha256"]
    assert path.stat().st_size < 4_000_000
    pretrained = glyphnet.glyphnet()
    random = glyphnet.glyphnet(weights=None)
    for loaded, fresh in zip(pretrained.weights, random.weights):
        assert loaded.path == fresh.path
    moving_variance = pretrained.get_layer("top_bn").moving_variance.numpy()
    assert not np.allclose(moving_variance, 1.0), "BatchNorm statistics were not loaded"
    kernel = pretrained.get_layer("stem_conv").kernel.numpy()
    assert not np.allclose(kernel, random.get_layer("stem_conv").kernel.numpy())


def test_pretrained_classifier_saves_and_reloads(tmp_path):
    model = tltk.build_classifier("tltk_glyphnet", 3, weights="tltk", input_shape=(40, 40, 3))
    images = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3)).astype("uint8")
    model.save(tmp_path / "glyph.keras")
    reloaded = keras.models.load_model(tmp_path / "glyph.keras", safe_mode=True)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)


def test_corrupt_or_missing_weights_fail_with_a_clear_error(tmp_path, monkeypatch):
    for name in (glyphnet.WEIGHTS_FILE, glyphnet.MANIFEST_FILE):
        shutil.copy(glyphnet.WEIGHTS_DIR / name, tmp_path / name)
    corrupt = tmp_path / glyphnet.WEIGHTS_FILE
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    monkeypatch.setattr(glyphnet, "WEIGHTS_DIR", tmp_path)
    regenerate = r"python scripts/pretrain_demo_backbone\.py"
    with pytest.raises(ValueError, match=re.escape(f"{corrupt} is corrupt") + f".*{regenerate}"):
        tltk.build_classifier("tltk_glyphnet", 10, weights="tltk")
    corrupt.unlink()
    with pytest.raises(ValueError, match=re.escape(f"{corrupt} is missing") + f".*{regenerate}"):
        tltk.build_classifier("tltk_glyphnet", 10, weights="tltk")


def test_digits_writes_a_class_folder_tree_once(tmp_path):
    root = digits(tmp_path / "d", size=16)
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 1797
    assert sorted(p.name for p in root.iterdir()) == [str(c) for c in range(10)]
    data = load_digits()
    first = np.asarray(Image.open(root / str(data.target[0]) / "0000.png"))
    np.testing.assert_array_equal(first, digit_image(data.images[0], size=16))
    exact = np.round(data.images[0] * 255 / 16).astype("uint8")
    np.testing.assert_array_equal(digit_image(data.images[0], size=8), exact)
    assert first.min() == 0 and first.max() > 128
    stamps = [p.stat().st_mtime_ns for p in files]
    assert digits(root, size=16) == root
    assert [p.stat().st_mtime_ns for p in files] == stamps
    with pytest.raises(ValueError, match="another size"):
        digits(root, size=32)
    with pytest.raises(ValueError, match="size"):
        digits(tmp_path / "e", size=4)


def _few_shot_accuracy(weights, train, test, *, shots=10, epochs=25):
    (images, labels), (test_images, test_labels) = train, test
    rng = np.random.default_rng(0)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in range(10)]
    )
    keras.utils.set_random_seed(0)
    model = tltk.build_classifier("tltk_glyphnet", 10, weights=weights)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(images[picked], labels[picked], epochs=epochs, batch_size=16, verbose=0)
    predicted = np.argmax(model.predict(test_images, batch_size=256, verbose=0), axis=1)
    return float(np.mean(predicted == test_labels))


def test_pretrained_backbone_transfers_to_real_digits(digit_splits):
    pretrained = _few_shot_accuracy("tltk", *digit_splits)
    random = _few_shot_accuracy(None, *digit_splits)
    assert pretrained >= 0.85, (pretrained, random)
    assert pretrained - random >= 0.2, (pretrained, random)
