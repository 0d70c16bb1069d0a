"""keras-hub image presets as tltk backbones, offline: tiny presets saved by the tests
themselves."""

import socket
import time

import keras
import keras_hub
import numpy as np
import pytest

import tltk
from tltk.backbones import keras_hub as kh
from tltk.backbones.registry import assign_groups
from tltk.export import export

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
TORCH = {"scale": list(1 / (255 * IMAGENET_STD)), "offset": list(-IMAGENET_MEAN / IMAGENET_STD)}


def _tiny_resnet(**kwargs):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        **kwargs,
    )


def _tiny_vit():
    return keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=8
    )


def _no_network(*args, **kwargs):
    raise socket.gaierror(
        socket.EAI_NONAME, "Name or service not known (network disabled by the test)"
    )


def _preset(folder, backbone, converter):
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    base = tmp_path_factory.mktemp("keras_hub_presets")
    return {
        "resnet": _preset(
            base / "Tiny_ResNet",
            _tiny_resnet(),
            keras_hub.layers.ResNetImageConverter(image_size=(32, 32), **TORCH),
        ),
        "vit": _preset(
            base / "tiny_vit",
            _tiny_vit(),
            keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0),
        ),
    }


def test_local_image_preset_builds_trains_reloads_and_exports(presets, tmp_path):
    model = tltk.build_classifier(
        "keras_hub:" + presets["resnet"], 3, input_shape=(32, 32, 3), dropout=0.0
    )
    name = "keras_hub_" + kh.slug(presets["resnet"])
    assert model.get_layer(name).name == name and tltk.get_backbone(name).source == "keras_hub"
    assert (
        model.get_layer("preprocessing").mode == "torch"
    )  # read from the preset's image converter
    assert [g.name for g in tltk.layer_groups(model)] == ["backbone", "head"]
    assert tltk.layer_groups(model)[0].trainable_params == 0

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (24, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 3, 24)
    tltk.unfreeze(model, "all")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    history = model.fit(images, labels, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")  # safe mode
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5
    )
    norms = [
        layer
        for layer in reloaded.get_layer(name).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms and not any(
        layer.trainable for layer in norms
    )  # the BatchNorm policy survives the round trip
    report = export(model, tmp_path / "export", labels=["a", "b", "c"])
    assert report.passed and report.file("tflite").parity.max_abs_diff <= 1e-5


def test_vit_preset_gives_class_token_features(presets, tmp_path):
    model = tltk.build_classifier("keras_hub:" + presets["vit"], 2, input_shape=(32, 32, 3))
    backbone = model.get_layer("keras_hub_" + kh.slug(presets["vit"]))
    assert backbone.output.shape == (None, 8) and isinstance(
        backbone.get_layer("class_token"), kh.ClassToken
    )
    assert model.get_layer("preprocessing").mode == "tf"
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "vit.keras")
    np.testing.assert_allclose(
        keras.models.load_model(tmp_path / "vit.keras").predict(x, verbose=0),
        model.predict(x, verbose=0),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "family, backbone",
    [
        ("resnet", lambda: _tiny_resnet()),
        ("resnet_v2", lambda: _tiny_resnet(use_pre_activation=True)),
        ("densenet", lambda: keras_hub.models.DenseNetBackbone(stackwise_num_repeats=[1, 1, 1, 1])),
    ],
)
def test_table_groups_match_keras_hub_layer_names(family, backbone):
    """The group patterns of the table, checked against the layers keras-hub really builds."""
    groups = {"resnet": kh._RESNET, "resnet_v2": kh._RESNET, "densenet": kh._DENSENET}[family]
    model = backbone()
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assigned = assign_groups(groups, [layer.name for layer in layers])
    first_with_weights = next(i for i, layer in enumerate(layers) if layer.weights)
    assert assigned[first_with_weights] == groups[0][0]
    for group, _ in groups:
        members = [layer for layer, g in zip(layers, assigned) if g == group]
        assert members and any(layer.weights for layer in members), (
            f"group {group} of {family} is empty"
        )


def test_table_entries_name_real_presets():
    presets = keras_hub.models.Backbone.presets
    table = [n for n in tltk.list_backbones(source="keras_hub") if tltk.get_backbone(n).aliases]
    assert {
        "keras_hub_resnet_50_imagenet",
        "keras_hub_efficientnet_b0_ra_imagenet",
        "keras_hub_vit_base_patch16_224_imagenet",
        "keras_hub_densenet_121_imagenet",
    } <= set(table)
    for name in table:
        spec = tltk.get_backbone(name)
        (alias,) = spec.aliases
        preset = alias[len("keras_hub:") :]
        assert preset in presets and name == "keras_hub_" + preset
        assert tltk.get_backbone(alias) is spec
        assert spec.preprocessing in ("torch", "tf") and spec.feature_dim > 0


@pytest.mark.parametrize(
    "scale, offset, mode",
    [
        (None, None, "none"),
        (1 / 255, None, "unit"),
        (1 / 127.5, -1.0, "tf"),
        (TORCH["scale"], TORCH["offset"], "torch"),
    ],
)
def test_converter_mode(tmp_path, scale, offset, mode):
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(32, 32), scale=scale, offset=offset
    )
    assert kh.converter_mode(_preset(tmp_path, _tiny_resnet(), converter)) == mode


def test_bad_presets_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(
        ValueError,
        match="Unknown keras-hub preset 'resnet_50_imagenett'.*Closest presets: resnet_50_imagenet",
    ):
        tltk.build_classifier("keras_hub:resnet_50_imagenett", 2)
    with pytest.raises(ValueError, match="not a keras-hub preset or Hugging Face model folder"):
        tltk.get_backbone("keras_hub:" + str(tmp_path))
    odd = keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=2.0, offset=None)
    with pytest.raises(ValueError, match="normalises pixels with scale=\\[2.0, 2.0, 2.0\\]"):
        tltk.get_backbone("keras_hub:" + _preset(tmp_path / "odd", _tiny_resnet(), odd))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kaggle"))
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)  # offline, even where the network is up
    start = time.monotonic()
    with pytest.raises(ValueError, match="Could not load keras-hub preset 'resnet_18_imagenet'"):
        tltk.build_classifier("keras_hub_resnet_18_imagenet", 2, input_shape=(32, 32, 3))
    assert time.monotonic() - start < 60
