"""LoRA on image backbones: build_classifier(lora_rank=...), fine_tune, reload, merged export."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import tltk
from bench.bench_lora import tflite_ops
from tltk import freezing, lora
from tltk.datasets import digit_image

RANK = 2
CLASSES = 10


def _digits():
    digits = load_digits()
    images = np.stack([digit_image(c.reshape(8, 8)) for c in digits.data[:300]])
    return np.repeat(images[..., None], 3, axis=-1).astype("float32"), digits.target[:300]


def _dataset(x, y):
    return tltk.data.from_arrays(x, y, validation_split=0.0, batch_size=16, seed=0).train


@pytest.fixture(scope="module")
def tuned():
    """A LoRA model before and after a short `fine_tune` (weights by path), and test images.

    No head stage: its best epoch (or probe) would keep the adapters untouched on so few images.
    """
    keras.utils.set_random_seed(0)
    x, y = _digits()
    model = tltk.build_classifier("tltk_glyphnet", CLASSES, lora_rank=RANK)
    before = {w.path: w.numpy().copy() for w in model.weights}
    result = tltk.fine_tune(
        model,
        _dataset(x[:100], y[:100]),
        _dataset(x[100:200], y[100:200]),
        head_epochs=0,
        epochs=2,
        verbose=0,
    )
    return model, before, result, x[200:]


def test_lora_is_on_every_conv_and_only_adapters_and_head_train():
    model = tltk.build_classifier("tltk_glyphnet", CLASSES, lora_rank=RANK, lora_alpha=8)
    layers = lora.lora_layers(model)
    assert sorted(layer.name for layer in layers) == [
        "block1_conv1",
        "block1_conv2",
        "block2_conv1",
        "block2_conv2",
        "block3_conv1",
        "block3_conv2",
        "stem_conv",
        "top_conv",
    ]
    assert {(layer.lora_rank, layer.lora_alpha) for layer in layers} == {(RANK, 8)}
    trainable = {w.path for w in model.trainable_weights}
    assert trainable == {f"{layer.name}/{w}" for layer in layers for w in lora.LORA_WEIGHTS} | {
        "predictions/kernel",
        "predictions/bias",
    }
    assert 0.01 < freezing.trainable_fraction(model) < 0.05
    groups = tltk.layer_groups(model)
    assert all(0 < g.trainable_fraction < 0.15 for g in groups[:-1])
    assert groups[-1].trainable_fraction == 1.0
    assert (model.lora_rank, model.lora_alpha) == (RANK, 8)
    assert model.get_config()["lora_rank"] == RANK
    # BatchNorm policy unchanged: with train_bn=True its scale and offset train too.
    bn = tltk.build_classifier("tltk_glyphnet", CLASSES, lora_rank=RANK, train_bn=True)
    names = {w.name for w in bn.backbone.trainable_weights}
    assert names == {"lora_kernel_a", "lora_kernel_b", "gamma", "beta"}


def test_fine_tune_trains_only_adapters_and_head(tuned):
    model, before, result, _ = tuned
    after = {w.path: w.numpy() for w in model.weights}
    changed = {p for p, w in before.items() if not np.array_equal(w, after[p])}
    head = {"predictions/kernel", "predictions/bias"}
    assert changed - head
    assert all(p.endswith(lora.LORA_WEIGHTS) for p in changed - head)
    assert 0.01 < result.trainable_fraction == result.stages[0]["trainable_fraction"] < 0.05
    # The default plan: the head on cached features (adapters frozen, B = 0: the backbone is a
    # fixed function), then the adapters of every group and the head together.
    plan = tltk.plan_stages(model)
    assert [(s.cached, s.unfrozen) for s in plan] == [(True, ()), (False, tuple(model.groups))]


def test_merged_copy_computes_what_the_lora_model_does(tuned):
    model, _, _, test_x = tuned
    assert any(np.any(layer.lora_kernel_b.numpy()) for layer in lora.lora_layers(model))
    plain = lora.merged_copy(model)
    assert lora.lora_layers(plain) == [] and plain.lora_rank is None
    np.testing.assert_allclose(
        plain.predict(test_x, verbose=0), model.predict(test_x, verbose=0), atol=1e-5
    )


def test_export_is_a_plain_model_s_and_passes_parity(tuned, tmp_path):
    model, _, _, test_x = tuned
    report = tltk.export(model, tmp_path / "lora", parity_data=test_x)
    assert not report.failed and all(f.parity is not None for f in report.files)
    plain = tltk.build_classifier("tltk_glyphnet", CLASSES)
    plain_report = tltk.export(plain, tmp_path / "plain", parity_data=test_x)
    (saved, tflite), (plain_saved, plain_tflite) = report.files, plain_report.files
    assert tflite_ops(tflite.path) == tflite_ops(plain_tflite.path)
    for exported, reference in ((saved, plain_saved), (tflite, plain_tflite)):
        assert abs(exported.size_bytes / reference.size_bytes - 1) < 0.01
    # The SavedModel holds the merged kernels, no LoRA factor (TFLite's converter would fold
    # them into constants anyway; a SavedModel would keep them as variables).
    variables = [v.name for v in tf.saved_model.load(str(saved.path)).variables]
    assert variables and not [name for name in variables if "lora" in name]


@pytest.mark.slow  # 30-100 s on 2 cores: CI's slow step runs it
def test_reload_in_a_new_process_keeps_predictions_and_adapters(tuned, tmp_path):
    model, _, _, test_x = tuned
    model.save(tmp_path / "lora.keras")
    np.save(tmp_path / "x.npy", test_x[:16])
    np.save(tmp_path / "p.npy", model.predict(test_x[:16], verbose=0))
    script = textwrap.dedent(
        f"""
        import keras, numpy as np, tltk
        from tltk import lora
        folder = {str(tmp_path)!r}
        x, p = np.load(folder + "/x.npy"), np.load(folder + "/p.npy")
        for model in (keras.models.load_model(folder + "/lora.keras"),
                      tltk.load_model(folder + "/lora.keras")):
            np.testing.assert_allclose(model.predict(x, verbose=0), p, atol=1e-5)
            assert model.lora_rank == {RANK} and len(lora.lora_layers(model)) == 8
            print(any(np.any(l.lora_kernel_a.numpy()) for l in lora.lora_layers(model)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Keras loads the factors at zero; tltk.load_model draws A again (B stays 0).
    assert done.stdout.split()[-2:] == ["False", "True"]


def test_adapters_of_a_reloaded_model_train_again(tuned, tmp_path):
    model, _, _, test_x = tuned
    model.save(tmp_path / "lora.keras")
    again = keras.models.load_model(tmp_path / "lora.keras")
    layer = lora.lora_layers(again)[-1]
    assert not np.any(layer.lora_kernel_a.numpy())  # as Keras loads it: no gradient
    tltk.unfreeze(again, "all")
    np.testing.assert_allclose(
        again.predict(test_x[:8], verbose=0), model.predict(test_x[:8], verbose=0), atol=1e-5
    )
    again.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    again.fit(test_x[:16], np.arange(16) % CLASSES, epochs=1, verbose=0)
    assert np.any(layer.lora_kernel_b.numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lora_rank": 0}, r"`lora_rank` must be an integer >= 1. Received: lora_rank=0"),
        ({"lora_rank": -2}, "lora_rank=-2"),
        ({"lora_rank": 2.5}, "lora_rank=2.5"),
        ({"lora_rank": "4"}, "lora_rank='4'"),
        ({"lora_rank": True}, "lora_rank=True"),
        ({"lora_alpha": 8}, "`lora_alpha` .* needs `lora_rank`.*lora_alpha=8"),
        ({"lora_rank": 2, "lora_alpha": 0}, "`lora_alpha` .*lora_alpha=0"),
    ],
)
def test_bad_lora_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tltk.build_classifier("tltk_glyphnet", 3, weights=None, **kwargs)


def test_a_backbone_without_conv_or_dense_layers_is_refused():
    inputs = keras.Input((16, 16, 3))
    depthwise = keras.Model(inputs, keras.layers.DepthwiseConv2D(3)(inputs), name="depthwise")
    with pytest.raises(ValueError, match="no convolution or dense layer.*lora_rank=2"):
        tltk.build_classifier(depthwise, 3, lora_rank=2)
