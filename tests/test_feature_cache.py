"""`FeatureCache`: the features it caches, and its training loop against Keras' own `fit`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk import feature_cache
from tltk.feature_cache import FeatureCache

from tests.helpers import TINY_BN_CNN


def images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32"), rng.integers(0, 3, n)


def frozen_model():
    keras.utils.set_random_seed(0)
    model = tltk.build_classifier(TINY_BN_CNN.name, 3, weights=None, dropout=0.0)
    tltk.freeze(model)
    return model


def dataset(x, y, batch, *weights):
    return tf.data.Dataset.from_tensor_slices((x, y, *weights)).batch(batch)


def test_features_match_the_backbone_whatever_the_extraction_batches(monkeypatch):
    (x, y), (vx, vy) = images(70, 0), images(20, 1)
    model = frozen_model()
    extractor = keras.Model(model.inputs[0], model.get_layer("pool").output)
    expected = extractor.predict(x, verbose=0)
    for pixels in (0, 64 * 32 * 32):  # the dataset's batches of 16, or merged into 64
        monkeypatch.setattr(feature_cache, "PIXELS_PER_BATCH", pixels)
        cache = FeatureCache(model, dataset(x, y, 16), dataset(vx, vy, 16))
        features, labels = cache.train[0]
        np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(labels, y)
        np.testing.assert_array_equal(cache.validation[1], vy)
        assert (cache.batch_size, cache.steps_per_epoch) == (16, 5)


@pytest.mark.parametrize(
    "loss, class_weight",
    [
        ("sparse_categorical_crossentropy", None),
        (keras.losses.SparseCategoricalCrossentropy(), {0: 1.0, 1: 3.0, 2: 0.5}),
    ],
)
def test_fit_trains_the_head_as_keras_fit_does(loss, class_weight):
    """One batch per epoch (shuffling cannot matter): the same weights and logs as `head.fit`."""
    (x, y), (vx, vy) = images(48, 0), images(24, 1)
    model = frozen_model()
    cache = FeatureCache(model, dataset(x, y, 48), dataset(vx, vy, 48))
    reference = keras.models.clone_model(cache.head)
    reference.set_weights(cache.head.get_weights())
    reference.compile(keras.optimizers.Adam(0.05), loss, metrics=["accuracy"])

    history = cache.fit(
        3,
        optimizer=keras.optimizers.Adam(0.05),
        loss=loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        class_weight=class_weight,
        verbose=0,
    )
    features, labels = cache.train[0]
    expected = reference.fit(
        features,
        labels,
        batch_size=48,
        epochs=3,
        validation_data=cache.validation,
        class_weight=class_weight,
        shuffle=False,
        verbose=0,
    )
    for got, want in zip(cache.head.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert sorted(history.history) == sorted(expected.history)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-4, atol=1e-6, err_msg=key)
    # The head's layers are the model's: the full model predicts with the trained head.
    np.testing.assert_allclose(
        model.predict(vx, verbose=0), reference.predict(cache.validation[0], verbose=0), atol=1e-5
    )


def test_fit_runs_keras_callbacks_per_epoch_and_stops_early():
    (x, y), (vx, vy) = images(48, 0), images(24, 1)
    cache = FeatureCache(frozen_model(), dataset(x, y, 16), dataset(vx, vy, 16))
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    stop = keras.callbacks.EarlyStopping("val_loss", patience=1, min_delta=1.0)
    history = cache.fit(
        10,
        optimizer=keras.optimizers.SGD(0.0),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        callbacks=[record, stop],
        verbose=0,
    )
    assert seen == [0, 1]  # no epoch improves val_loss by 1.0: stopped after the patience
    assert len(history.history["val_accuracy"]) == 2


def test_fit_refuses_bad_metrics_and_two_kinds_of_weights():
    (x, y) = images(16, 0)
    cache = FeatureCache(frozen_model(), dataset(x, y, 8, np.ones(16, "float32")))
    fit = dict(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="metrics"):
        cache.fit(1, metrics=["accuracy"], **fit)
    with pytest.raises(ValueError, match="epochs"):
        cache.fit("3", **fit)
    with pytest.raises(ValueError, match="class_weight"):
        cache.fit(1, class_weight=[1.0, 2.0], **fit)
    with pytest.raises(ValueError, match="class_weight"):
        cache.fit(1, class_weight={0: 2.0}, verbose=0, **fit)
    assert len(cache.fit(1, verbose=0, **fit).history["loss"]) == 1  # the dataset's weights
