"""Tests for tltk.augmentation: active in training only, saved and exported deterministic."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tests.helpers import TINY_BN_CNN
from tltk.augment import PRESETS, Augmentation, augmentation

IMAGES = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")


def classifier(preset="medium"):
    return tltk.build_classifier(
        TINY_BN_CNN.name,
        3,
        input_shape=(32, 32, 3),
        weights=None,
        dropout=0.0,
        augmentation=preset,
    )


def test_presets():
    assert augmentation(None) is None
    kinds = {
        preset: [type(t).__name__ for t in augmentation(preset).transforms] for preset in PRESETS
    }
    assert kinds["light"] == ["RandomFlip", "RandomRotation", "RandomZoom"]
    assert "RandomContrast" in kinds["medium"] and "RandAugment" in kinds["strong"]
    flips = [
        t
        for preset in PRESETS
        for t in augmentation(preset).transforms
        if isinstance(t, keras.layers.RandomFlip)
    ]
    assert {flip.mode for flip in flips} == {"horizontal"}
    with pytest.raises(ValueError, match="Received: preset='heavy'"):
        augmentation("heavy")
    with pytest.raises(ValueError, match="transforms"):
        Augmentation("flip")


@pytest.mark.parametrize("preset", PRESETS)
def test_active_in_training_on_raw_pixels_only(preset):
    layer = augmentation(preset, seed=1)
    np.testing.assert_array_equal(layer(IMAGES), IMAGES)
    np.testing.assert_array_equal(layer(IMAGES, training=False), IMAGES)
    first, second = layer(IMAGES, training=True), layer(IMAGES, training=True)
    assert not np.allclose(first, IMAGES) and not np.allclose(first, second)
    assert float(tf.reduce_min(first)) >= -1e-3 and float(tf.reduce_max(first)) <= 255 + 1e-3
    again = augmentation(preset, seed=1)
    np.testing.assert_allclose(again(IMAGES, training=True), first, atol=1e-4)


def test_model_trains_with_augmentation_and_predicts_deterministically():
    model = classifier("strong")
    assert model.get_layer("augmentation").__class__ is Augmentation
    features = keras.Model(model.input, model.get_layer("augmentation").output)
    np.testing.assert_array_equal(features(IMAGES), IMAGES)
    assert not np.allclose(features(IMAGES, training=True), IMAGES)
    np.testing.assert_array_equal(model(IMAGES), model(IMAGES))
    np.testing.assert_allclose(
        model.predict(IMAGES, verbose=0), model(IMAGES, training=False), atol=1e-6
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(IMAGES, np.array([0, 1, 2, 0]), epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()  # RandAugment runs in graph mode too


def test_saved_model_reloads_in_safe_mode_and_stays_deterministic(tmp_path):
    model = classifier("medium")
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    layer = reloaded.get_layer("augmentation")
    assert isinstance(layer, Augmentation)
    assert [type(t).__name__ for t in layer.transforms] == [
        type(t).__name__ for t in model.get_layer("augmentation").transforms
    ]
    np.testing.assert_allclose(reloaded(IMAGES), model(IMAGES), atol=1e-6)
    np.testing.assert_array_equal(reloaded(IMAGES), reloaded(IMAGES))
    augmented = keras.Model(reloaded.input, layer.output)
    assert not np.allclose(augmented(IMAGES, training=True), IMAGES)


def test_exported_saved_model_is_deterministic_and_has_no_random_ops(tmp_path):
    model = classifier("strong")
    model.export(str(tmp_path / "export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    outputs = [served.serve(IMAGES).numpy() for _ in range(3)]
    for output in outputs:
        np.testing.assert_allclose(output, model.predict(IMAGES, verbose=0), atol=1e-5)
    graph = served.signatures["serving_default"].graph
    ops = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        ops |= {node.op for node in function.node_def}
    assert not [op for op in ops if "Random" in op], sorted(ops)
