"""Discriminative learning rates: a step at multiplier m is a step at lr * m, on any optimizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tests.test_training import SPEC, shapes
from tltk.lr_multipliers import decayed_multipliers, discriminative_optimizer, scaled_optimizer
from tltk.schedules import ScaledSchedule, warmup_cosine

OPTIMIZERS = {
    "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw": lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.05),
}


def _variables(rng):
    return {
        name: rng.normal(size=(4, 3)).astype("float32")
        for name in ("scaled_kernel", "plain_kernel")
    }


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("rate", [0.1, "schedule"])
def test_steps_with_multiplier_equal_steps_of_an_optimizer_at_the_scaled_rate(name, rate):
    rng = np.random.default_rng(0)
    init, m = _variables(rng), 0.3
    grads = [[rng.normal(size=(4, 3)).astype("float32") for _ in range(2)] for _ in range(3)]
    lr = (
        (lambda f: warmup_cosine(0.1 * f, 10, warmup=0.2))
        if rate == "schedule"
        else (lambda f: 0.1 * f)
    )

    multi = discriminative_optimizer(OPTIMIZERS[name](lr(1)), {"scaled_.*": m})
    together = [keras.Variable(init[k], name=k) for k in init]
    separate = [keras.Variable(init[k], name=k) for k in init]
    at_scaled, at_base = OPTIMIZERS[name](lr(m)), OPTIMIZERS[name](lr(1))
    for step in grads:  # three steps, so momentum and Adam moments matter
        multi.apply(step, together)
        at_scaled.apply([step[0]], [separate[0]])
        at_base.apply([step[1]], [separate[1]])

    for a, b in zip(together, separate):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(together[0].numpy(), init["scaled_kernel"])


def test_scaled_optimizer_keeps_class_and_settings_and_scales_schedules():
    base = keras.optimizers.AdamW(0.01, weight_decay=0.1, beta_1=0.8)
    scaled = scaled_optimizer(base, 0.5)
    assert type(scaled) is keras.optimizers.AdamW and scaled is not base
    assert (scaled.weight_decay, scaled.beta_1) == (0.1, 0.8)
    assert float(scaled.learning_rate) == pytest.approx(0.005)
    schedule = warmup_cosine(1e-2, 100)
    wrapped = scaled_optimizer(keras.optimizers.SGD(schedule), 0.1)
    for step in (0, 10, 50, 99):
        assert float(wrapped._learning_rate(step)) == pytest.approx(0.1 * float(schedule(step)))


def _model(**kwargs):
    model = tltk.build_classifier(SPEC.name, 3, weights=None, dropout=0.0, **kwargs)
    return tltk.unfreeze(model, groups=2)


def test_group_names_reach_the_right_variables_in_fit():
    """One SGD step in `fit`: top moves by lr*0.3*grad, block2 by lr*0.09*grad, head by lr*grad."""
    x, y = shapes(32, 0)
    model, lr = _model(), 0.05
    multipliers = decayed_multipliers(model, 0.3)
    assert multipliers == pytest.approx({"head": 1.0, "top": 0.3, "block2": 0.09})
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y, model(x, training=True))
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    before = {v.path: v.numpy() for v in variables}

    model.compile(
        optimizer=discriminative_optimizer(keras.optimizers.SGD(lr), multipliers, model=model),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)

    groups = {layer.name: g.name for g in tltk.layer_groups(model) for layer in g.layers}
    for v in variables:
        m = multipliers[groups[v.path.split("/")[0]]]
        expected = before[v.path] - lr * m * grads[v.path].numpy()
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_compiled_model_saves_and_reloads_with_its_multipliers(tmp_path):
    x, y = shapes(32, 0)
    model = _model()
    base = keras.optimizers.AdamW(warmup_cosine(1e-3, 20), weight_decay=0.01)
    model.compile(
        optimizer=discriminative_optimizer(base, decayed_multipliers(model, 0.3), model=model),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")  # safe mode

    assert isinstance(loaded.optimizer, keras.optimizers.MultiOptimizer)
    rates = lambda m: sorted(float(o.learning_rate) for o in m.optimizer.optimizers)  # noqa: E731
    assert rates(loaded) == pytest.approx(rates(model)) and len(rates(model)) == 3
    assert any(isinstance(o._learning_rate, ScaledSchedule) for o in loaded.optimizer.optimizers)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for m in (model, loaded):  # training goes on identically
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda m: discriminative_optimizer(keras.optimizers.SGD(0.1), {"nope": 0.5}, model=m),
            "Unknown layer group",
        ),
        (
            lambda m: discriminative_optimizer(keras.optimizers.SGD(0.1), {"top": 0}, model=m),
            "positive",
        ),
        (
            lambda m: discriminative_optimizer(keras.optimizers.SGD(0.1), [("top", 0.5)]),
            "must be a dict",
        ),
        (lambda m: discriminative_optimizer(m.optimizer, {"top": 0.5}), "plain Keras optimizer"),
        (lambda m: decayed_multipliers(m, 0), "lr_decay"),
        (lambda m: scaled_optimizer("adam", 0.5), "optimizer"),
    ],
)
def test_bad_arguments_raise(call, match):
    model = _model()
    model.compile(
        optimizer=discriminative_optimizer(keras.optimizers.SGD(0.1), {"top": 0.5}, model=model),
        loss="mse",
    )
    with pytest.raises(ValueError, match=match):
        call(model)


def test_decayed_multipliers_cover_every_group_on_request():
    model = _model()
    everything = decayed_multipliers(model, 0.5, trainable_only=False)
    assert list(everything) == ["head", "top", "block2", "block1", "stem"]
    assert everything["stem"] == pytest.approx(0.5**4)
