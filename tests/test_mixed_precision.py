"""Mixed precision (issue 20): build, fine_tune and export under mixed_float16 / mixed_bfloat16."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tests.test_export import digit_images
from tests.test_text import TRAIN, tiny_bert  # noqa: F401  (tiny_bert: a fixture)
from tltk import precision
from tltk.export.parity import compare, gate
from tltk.feature_cache import FeatureCache

BACKBONE = "tltk_glyphnet"


@pytest.fixture(autouse=True)
def _float32_after():
    """Every test leaves Keras' global policy as it found it: float32."""
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def digits():
    """Train, validation and held-out digits as batched datasets and arrays."""
    x, y = digit_images()
    train = tf.data.Dataset.from_tensor_slices((x[:900], y[:900])).shuffle(900, seed=0).batch(32)
    validation = tf.data.Dataset.from_tensor_slices((x[900:1200], y[900:1200])).batch(64)
    return train, validation, (x[1200:], y[1200:])


def test_mixed_bfloat16_trains_and_exports_float32_files_that_pass_parity(digits, tmp_path):
    train, validation, (test_x, test_y) = digits
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tltk.build_classifier(BACKBONE, 10, weights="tltk")
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.backbone.layers[1].compute_dtype == "bfloat16"
    tltk.fine_tune(model, train, validation, head_epochs=20, epochs=1, verbose=0)
    probabilities = model.predict(test_x, verbose=0)
    assert model.output.dtype == "float32" and probabilities.dtype == np.float32
    assert np.mean(probabilities.argmax(-1) == test_y) > 0.9

    report = tltk.export(model, tmp_path / "export", parity_data=test_x)
    assert report.written and report.passed
    for exported in report.files:  # float32 files, judged against the bfloat16 Keras model
        assert exported.parity.precision == "bfloat16"
        assert exported.parity.max_abs_diff > 1e-5  # they really differ from it
    predictor = tltk.load_exported(tmp_path / "export" / "model_float32.tflite")
    assert np.mean(predictor.predict(test_x[:64])[1].argmax(-1) == test_y[:64]) > 0.9


def test_dtype_policy_argument_is_kept_by_the_model_and_its_reload(tmp_path):
    model = tltk.build_classifier(BACKBONE, 3, weights=None, dtype_policy="mixed_float16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    assert model.dtype_policy.name == "mixed_float16"
    assert model.backbone.layers[1].compute_dtype == "float16"
    assert model.heads["predictions"][-1].compute_dtype == "float32"
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert reloaded.dtype_policy.name == "mixed_float16"
    reloaded.compile("adam", "sparse_categorical_crossentropy")
    assert isinstance(reloaded.optimizer, keras.optimizers.LossScaleOptimizer)
    with pytest.raises(ValueError, match=r"`dtype_policy` must be .*Received: dtype_policy='fp16'"):
        tltk.build_classifier(BACKBONE, 3, weights=None, dtype_policy="fp16")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_raw_pixels_keep_their_precision_in_the_graph(policy):
    model = tltk.build_classifier(BACKBONE, 3, weights=None, augmentation="strong")
    reference = model.preprocessing(np.full((1, 2, 2, 3), 200.3, "float32"))
    keras.mixed_precision.set_global_policy(policy)
    mixed = tltk.build_classifier(BACKBONE, 3, weights=None, augmentation="strong")
    pixels = np.full((1, 2, 2, 3), 200.3, "float32")
    np.testing.assert_array_equal(mixed.preprocessing(pixels), reference)  # bfloat16: 200/255
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert mixed.augmentation(images, training=True).dtype == "float32"
    assert mixed(images, training=True).dtype == "float32"


def test_mixed_float16_scales_the_loss_in_the_cached_and_the_discriminative_stage(
    digits, monkeypatch
):
    train, validation, _ = digits
    cached = []
    fit = FeatureCache.fit

    def spy(self, epochs, *, optimizer, **kwargs):
        cached.append(optimizer)
        return fit(self, epochs, optimizer=optimizer, **kwargs)

    monkeypatch.setattr(FeatureCache, "fit", spy)
    model = tltk.build_classifier(
        BACKBONE, 10, weights="tltk", hidden_units=16, dtype_policy="mixed_float16"
    )
    tltk.fine_tune(model, train.take(8), validation, head_epochs=2, epochs=1, verbose=0)
    assert len(cached) == 1 and isinstance(cached[0], keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, keras.optimizers.MultiOptimizer)


def test_float32_copy_computes_in_float32_with_the_same_weights():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tltk.build_classifier(BACKBONE, 3, weights="tltk", class_names=["a", "b", "c"])
    keras.mixed_precision.set_global_policy("float32")
    copy = precision.float32_copy(model)
    assert precision.reduced_dtype(model) == "bfloat16" and precision.reduced_dtype(copy) is None
    assert isinstance(copy, tltk.TransferModel) and copy.class_names == ["a", "b", "c"]
    assert list(copy.groups) == list(model.groups)
    for mine, theirs in zip(copy.weights, model.weights, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    reference = precision.float32_copy(copy)
    assert reference is copy  # a float32 model is its own copy
    np.testing.assert_allclose(copy(images), model(images), atol=3e-2)


def test_mixed_gate_is_looser_on_probabilities_only():
    assert gate("float32", "parity_data", precision="bfloat16").top1_agreement == 0.995
    loose = gate("float32", "parity_data", precision="bfloat16").max_abs_diff
    assert gate("float32", "parity_data").max_abs_diff < loose
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert compare(
        probabilities, probabilities + 5e-3, "float32", data="x", precision="bfloat16"
    ).passed
    assert not compare(probabilities, probabilities + 5e-3, "float32", data="x").passed


def test_mixed_text_classifier_exports_float32_files(tiny_bert, tmp_path):  # noqa: F811
    model = tltk.build_text_classifier(
        tiny_bert, 2, sequence_length=16, dtype_policy="mixed_bfloat16"
    )
    assert model.dtype_policy.name == "mixed_bfloat16" and model.output.dtype == "float32"
    report = tltk.export(model, tmp_path / "export", parity_data=[text for text, _ in TRAIN])
    assert report.passed and {f.parity.precision for f in report.files} == {"bfloat16"}
