"""build_classifier: arguments, heads, weights from files, and the download error."""

import keras
import numpy as np
import pytest

import tltk

SHAPE = (32, 32, 3)


def _images(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (16, 16, 3)}, "at least 32x32. Received: input_shape=\\(16, 16, 3\\)"),
        (
            {"input_shape": (32, 32, 1)},
            "takes 3 input channels. Received: input_shape=\\(32, 32, 1\\)",
        ),
        ({"num_classes": 1}, "num_classes` must be an integer >= 2 .* Received: num_classes=1"),
        (
            {"num_classes": 0, "multi_label": True},
            ">= 1 for a multi-label .* Received: num_classes=0",
        ),
        ({"pooling": "flatten"}, "`pooling` must be one of .* Received: pooling='flatten'"),
        ({"dropout": 1.5}, "`dropout` must be .* Received: dropout=1.5"),
        (
            {"weights": "instagram"},
            "has pretrained weights \\['imagenet'\\].* Received: weights='instagram'",
        ),
        ({"weights": "/no/such/file.weights.h5"}, "not found: '/no/such/file.weights.h5'"),
        ({"classifier_activation": "relu"}, "Received: classifier_activation='relu'"),
    ],
)
def test_bad_arguments_fail_before_building(kwargs, message):
    args = {"num_classes": 3, "input_shape": SHAPE, "weights": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        tltk.build_classifier("mobilenet_v2", **args)


def test_model_takes_raw_uint8_or_float_pixels():
    model = tltk.build_classifier("mobilenet_v2", 4, input_shape=SHAPE, weights=None)
    x = _images()
    np.testing.assert_allclose(
        model.predict(x, verbose=0), model.predict(x.astype("float32"), verbose=0), atol=1e-6
    )
    assert [layer.name for layer in model.layers][:3] == ["image", "preprocessing", "mobilenet_v2"]
    assert model.get_layer("preprocessing").mode == "tf"
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


def test_heads_multi_label_logits_and_hidden_units():
    multi = tltk.build_classifier(
        "mobilenet_v2", 1, input_shape=SHAPE, weights=None, multi_label=True
    )
    assert multi.get_layer("predictions").activation.__name__ == "sigmoid"
    logits = tltk.build_classifier(
        "mobilenet_v2", 3, input_shape=SHAPE, weights=None, classifier_activation=None
    )
    assert logits.get_layer("predictions").activation.__name__ == "linear"
    out = logits.predict(_images(), verbose=0)
    assert (out < 0).any()  # logits, not probabilities
    hidden = tltk.build_classifier(
        "mobilenet_v2", 3, input_shape=SHAPE, weights=None, hidden_units=(64, 32)
    )
    assert (
        hidden.get_layer("head_dense_0").units == 64
        and hidden.get_layer("head_dense_1").units == 32
    )
    assert [g.name for g in tltk.layer_groups(hidden)][-1] == "head"
    assert tltk.layer_groups(hidden)[-1].total_params == 1280 * 64 + 64 + 64 * 32 + 32 + 32 * 3 + 3


def test_backbone_weights_file_reproduces_outputs(tmp_path):
    source = tltk.build_classifier("mobilenet_v2", 3, input_shape=SHAPE, weights=None)
    path = str(tmp_path / "mobilenet_v2.weights.h5")
    source.get_layer("mobilenet_v2").save_weights(path)
    keras.utils.set_random_seed(123)  # a different initialisation, overwritten by the file
    loaded = tltk.build_classifier("mobilenet_v2", 3, input_shape=SHAPE, weights=path)
    x = _images()
    features = [
        keras.Model(m.input, m.get_layer("pool").output).predict(x, verbose=0)
        for m in (source, loaded)
    ]
    np.testing.assert_array_equal(features[0], features[1])


def test_whole_model_file_with_other_head_loads_backbone_by_name(tmp_path, caplog):
    source = tltk.build_classifier(
        "mobilenet_v2", 7, input_shape=SHAPE, weights=None, hidden_units=(16,)
    )
    path = str(tmp_path / "other_task.keras")
    source.save(path)
    keras.utils.set_random_seed(99)
    with caplog.at_level("INFO", logger="tltk"):
        model = tltk.build_classifier("mobilenet_v2", 2, input_shape=SHAPE, weights=path)
    assert "Loaded 104 of 104 backbone layers" in caplog.text
    for a, b in zip(
        source.get_layer("mobilenet_v2").weights, model.get_layer("mobilenet_v2").weights
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert model.get_layer("predictions").units == 2


def test_whole_model_file_without_matching_layers_is_an_error(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="unrelated")])
    path = str(tmp_path / "unrelated.keras")
    other.save(path)
    with pytest.raises(
        ValueError, match="No layer of .*unrelated.keras.* matches backbone 'mobilenet_v2'"
    ):
        tltk.build_classifier("mobilenet_v2", 2, input_shape=SHAPE, weights=path)


def test_failed_download_says_how_to_pass_a_local_file(monkeypatch):
    from keras.src.applications import mobilenet_v2

    def no_network(*args, **kwargs):
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
            "[Errno -2] Name or service not known"
        )

    monkeypatch.setattr(mobilenet_v2.file_utils, "get_file", no_network)
    with pytest.raises(
        ConnectionError,
        match=(
            "Could not download the 'imagenet' weights .*weights='/path/to/mobilenet_v2.weights.h5'"
        ),
    ):
        tltk.build_classifier("mobilenet_v2", 2, input_shape=SHAPE)


def test_custom_keras_model_backbone_is_one_group():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    mine = keras.Model(inputs, keras.layers.Conv2D(16, 3, name="c2")(x), name="my_features")
    model = tltk.build_classifier(mine, 3)
    groups = tltk.layer_groups(model)
    assert [g.name for g in groups] == ["backbone", "head"]
    assert groups[0].trainable_params == 0
    tltk.unfreeze(model, "all")
    assert model.get_layer("my_features").get_layer("c1").trainable
    assert not model.get_layer("my_features").get_layer("bn1").trainable
    assert model.predict(_images(), verbose=0).shape == (4, 3)


def test_user_augmentation_layer_runs_only_in_training():
    model = tltk.build_classifier(
        "mobilenet_v2",
        3,
        input_shape=SHAPE,
        weights=None,
        augmentation=keras.layers.RandomFlip("horizontal", seed=3),
    )
    x = np.tile(np.arange(32, dtype="float32")[None, None, :, None], (8, 32, 1, 3)) * 8
    layer = model.get_layer("augmentation")
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference: untouched
    flipped = np.asarray(layer(x, training=True))
    assert any(np.array_equal(f, x[0, :, ::-1]) for f in flipped)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
