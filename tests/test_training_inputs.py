"""`fine_tune` and `find_lr` on inputs that used to give silently wrong results, crashes or unclear
errors (issue 17): resuming another run, diverging, class weights, numpy integers, bad datasets."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk.training import fine_tune

from tests.test_training import FAST, build, datasets, shapes

ONE_EPOCH = dict(head_epochs=1, epochs=0, **FAST)


@pytest.fixture(scope="module")
def data():
    return datasets(n_train=32)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """A checkpoint folder holding a finished one-stage run, and its result."""
    folder = tmp_path_factory.mktemp("finished")
    keras.utils.set_random_seed(0)
    return folder, fine_tune(build(), *data, checkpoint_dir=folder, **ONE_EPOCH)


def test_a_finished_run_says_it_returns_its_result(finished, data):
    folder, first = finished
    with pytest.warns(UserWarning, match="finished run.*returning its result"):
        again = fine_tune(build(), *data, checkpoint_dir=folder, **ONE_EPOCH)
    assert again.best_metric == first.best_metric and again.histories == first.histories


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(optimizer="adam"), "optimizer"),
        (dict(optimizer=keras.optimizers.AdamW(beta_1=0.5)), "optimizer"),
        (dict(weight_decay=0.5), "weight_decay"),
        (dict(warmup=0.3), "warmup"),
        (dict(class_weight={0: 2.0}), "class_weight"),
        (dict(loss=keras.losses.SparseCategoricalCrossentropy()), "loss"),
        (dict(loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1)), "loss"),
        (dict(num_classes=4), "model.outputs"),
        (dict(batch=8), "data.train"),
        (dict(labels="shuffled"), "data.validation"),
        (dict(pixels="brighter"), "data.validation"),
    ],
)
def test_resuming_with_other_settings_labels_or_data_is_refused_by_name(
    finished, data, change, named
):
    folder, _ = finished
    train, val = data
    model = build(num_classes=change.pop("num_classes", 3))
    if "batch" in change:
        train, val = datasets(n_train=32, batch=change.pop("batch"))
    if change.pop("labels", None):
        val = val.map(lambda x, y: (x, tf.reverse(y, [0])))
    if change.pop("pixels", None):
        val = val.map(lambda x, y: (x + 1, y))
    with pytest.raises(ValueError, match=rf"(?s)other settings.*{named}.*new `checkpoint_dir`"):
        fine_tune(model, train, val, checkpoint_dir=folder, **{**ONE_EPOCH, **change})


def test_a_shuffled_train_set_still_resumes(tmp_path):
    x, y = shapes(32, 0)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32).batch(16)  # unseeded
    _, val = datasets(n_train=32)
    fine_tune(build(), train, val, checkpoint_dir=tmp_path, **ONE_EPOCH)
    with pytest.warns(UserWarning, match="finished run"):
        fine_tune(build(), train, val, checkpoint_dir=tmp_path, **ONE_EPOCH)


@pytest.mark.parametrize("cache_features", [True, False])
def test_a_diverging_stage_stops_keeps_finite_weights_and_says_so(data, cache_features):
    train, val = data
    model = build()
    with pytest.warns(UserWarning, match=r"Stage 2 diverged at epoch \d+"):
        result = fine_tune(
            model,
            train,
            val,
            head_epochs=2,
            epochs=3,
            optimizer="sgd",
            fine_tune_lr=1e6,
            lr_decay=1.0,
            cache_features=cache_features,
            **FAST,
        )
    assert [stage for stage, _ in result.diverged] == [2]
    assert len(result.histories[1]["loss"]) < 3  # the stage stopped early
    assert result.best_stage == 1 and math.isfinite(result.best_metric)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # The model is stage 1's best, not the diverged one (which predicts one class).
    accuracy = model.evaluate(val, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(result.stage1_metric)


def test_divergence_in_the_first_epoch_raises_clearly(data):
    settings = {**ONE_EPOCH, "head_epochs": 2, "learning_rate": 1e38, "optimizer": "sgd"}
    with pytest.raises(ValueError, match="diverged.*learning_rate"), pytest.warns(UserWarning):
        fine_tune(build(), *data, **settings, cache_features=False)
    # On cached features the linear probe does not depend on the rate: it is the result.
    with pytest.warns(UserWarning, match="diverged"):
        result = fine_tune(build(), *data, **settings)
    assert result.probe["kept"] and result.best_epoch is None and result.diverged[0][0] == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e-3, 0])
@pytest.mark.parametrize("name", ["learning_rate", "fine_tune_lr", "lr_decay", "weight_decay"])
def test_non_finite_or_non_positive_rates_are_rejected_by_name(data, name, value):
    if name == "weight_decay" and value in (0, -1e-3):
        value = -1.0 if value else float("-inf")
    with pytest.raises(ValueError, match=rf"`{name}` must be .* Received: {name}="):
        fine_tune(build(), *data, **{**ONE_EPOCH, name: value})


@pytest.mark.parametrize(
    "kwargs", [dict(min_lr=float("nan")), dict(max_lr=float("inf")), dict(min_lr=-1.0)]
)
def test_find_lr_rejects_non_finite_rates(data, kwargs):
    with pytest.raises(ValueError, match=rf"`{next(iter(kwargs))}` must be"):
        tltk.find_lr(build(), data[0], **kwargs)


def test_other_rate_takers_reject_non_finite_values():
    with pytest.raises(ValueError, match="peak_lr"):
        tltk.schedules.warmup_cosine(float("nan"), 10)
    with pytest.raises(ValueError, match="multiplier"):
        tltk.lr_multipliers.scaled_optimizer(keras.optimizers.SGD(0.1), float("inf"))
    with pytest.raises(ValueError, match="lr_decay"):
        tltk.lr_multipliers.decayed_multipliers(build(), float("nan"))


@pytest.mark.parametrize(
    "class_weight, match",
    [
        ({0: 1.0, 5: 2.0}, r"class index 5.*0\.\.2"),
        ({"cat": 2.0}, "'cat'.*class_names"),
        ({0: float("nan")}, r"`class_weight\[0\]` must be a finite number"),
        ({0: -1.0}, r"`class_weight\[0\]` must be a finite number >= 0"),
        ([1.0, 2.0], "dict"),
    ],
)
def test_bad_class_weight_is_refused_before_training(data, class_weight, match):
    model = build()
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        fine_tune(model, *data, head_epochs=1, epochs=1, class_weight=class_weight, **FAST)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_partial_and_named_class_weights_train_every_stage(data):
    result = fine_tune(build(), *data, head_epochs=1, epochs=1, class_weight={1: 2.0}, **FAST)
    assert len(result.histories) == 2
    model = build()
    model.class_names = ["red", "green", "blue"]
    result = fine_tune(model, *data, class_weight={"blue": 2.0}, **ONE_EPOCH)
    assert len(result.histories) == 1


def test_numpy_integers_single_callbacks_and_int_hidden_units_are_accepted(data):
    history = keras.callbacks.History()
    model = build(num_classes=np.int64(3), hidden_units=np.int32(8))
    assert model.get_layer("head_dense_0").units == 8
    result = fine_tune(
        model,
        *data,
        head_epochs=np.int64(1),
        epochs=np.int32(0),
        augmented_views=np.int8(2),
        callbacks=history,
        **{**FAST, "early_stopping": np.int64(2)},
    )
    assert len(result.histories[0]["loss"]) == 1 and history.epoch == [0]
    assert tltk.build_classifier(
        "tltk_glyphnet", 3, input_shape=(np.int64(32), 32, 3), weights=None
    ).input_shape == (None, 32, 32, 3)


def test_empty_unbatched_and_mismatched_data_get_clear_errors(data):
    train, val = data
    x, y = shapes(16, 0)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match=r"`train` yields single examples.*\.batch\("):
        fine_tune(build(), unbatched, val, **ONE_EPOCH)
    with pytest.raises(ValueError, match=r"`validation` yields single examples.*\.batch\("):
        fine_tune(build(), train, unbatched, **ONE_EPOCH)
    for cache_features in (True, False):
        with pytest.raises(ValueError, match="`validation` is empty"):
            fine_tune(build(), train, val.take(0), cache_features=cache_features, **ONE_EPOCH)
    with pytest.raises(ValueError, match="`train` is empty"):
        fine_tune(build(), train.take(0), val, **ONE_EPOCH)
    with pytest.raises(ValueError, match="empty"):
        tltk.find_lr(build(), train.take(0))
    with pytest.raises(ValueError, match="single examples"):
        tltk.find_lr(build(), unbatched)


@pytest.mark.parametrize("cache_features", [True, False])
def test_a_model_with_fewer_outputs_than_the_data_has_classes_is_explained(data, cache_features):
    train, val = data
    only_two = val.unbatch().filter(lambda x, y: y < 2).batch(16)  # passes the first-batch check
    with pytest.raises(ValueError, match=r"label 2, .*2 output.*num_classes"):
        fine_tune(build(num_classes=2), train, val, cache_features=cache_features, **ONE_EPOCH)
    with pytest.raises(ValueError, match=r"label 2, .*2 output.*num_classes"):
        fine_tune(build(num_classes=2), train, only_two, cache_features=cache_features, **ONE_EPOCH)
    one_hot = train.map(lambda x, y: (x, tf.one_hot(y, 3)))
    with pytest.raises(ValueError, match="3 classes.*2 outputs.*num_classes=3"):
        fine_tune(build(num_classes=2), one_hot, one_hot, **ONE_EPOCH)
