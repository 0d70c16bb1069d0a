"""One test over the whole registry: build, forward pass, groups, freezing, `.keras` round trip."""

import math

import keras
import numpy as np
import pytest

import tltk
from tltk.backbones.registry import assign_groups

# Big enough to make the default run slow; CI runs them in its separate `-m slow` step.
LARGE = {
    "convnext_base", "convnext_large", "convnext_xlarge", "convnext_small",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "nasnet_large", "nasnet_mobile", "resnet152", "resnet152_v2", "resnet101", "resnet101_v2",
    "densenet169", "densenet201", "inception_resnet_v2", "vgg19",
    # 8-16 s each on 2 cores; EfficientNet keeps b0 and v2_b0 in the default run.
    "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_b3", "inception_v3",
    # 13-27 s each: Inception, DenseNet and ConvNeXt run in CI's slow step only.
    "densenet121", "convnext_tiny",
}  # fmt: skip

KERAS_APPS = tltk.list_backbones(source="keras_applications")


def _params(backbone_names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in backbone_names]


def test_registry_holds_every_keras_application():
    classes = {n for n in dir(keras.applications) if n[0].isupper()}
    assert len(classes) == 40
    registered = {tltk.get_backbone(c).name for c in classes}
    assert registered == set(KERAS_APPS)


@pytest.mark.parametrize("name", _params(KERAS_APPS))
def test_backbone_builds_freezes_and_round_trips(name, tmp_path):
    spec = tltk.get_backbone(name)
    shape = (*spec.min_input_size, 3)
    model = tltk.build_classifier(name, 3, input_shape=shape, weights=None, dropout=0.0)
    backbone = model.get_layer(name)

    # The spec matches the model it builds.
    assert backbone.output.shape[-1] == spec.feature_dim
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    assigned = assign_groups(spec.groups, [layer.name for layer in layers])
    first_with_weights = next(i for i, layer in enumerate(layers) if layer.weights)
    assert assigned[first_with_weights] == spec.group_names[0]
    groups = tltk.layer_groups(model)
    assert [g.name for g in groups] == [*spec.group_names, "head"]
    for group in groups:
        assert group.layers, f"group {group.name} of {name} is empty"
        assert group.total_params > 0, f"group {group.name} of {name} has no weights"
    assert sum(g.total_params for g in groups) == model.count_params()

    # Frozen: only the head trains; unfreezing the top group adds exactly its non-BN weights.
    head_params = groups[-1].total_params
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == head_params
    tltk.unfreeze(model, groups=1)
    top = tltk.layer_groups(model)[-2]
    expected = sum(
        math.prod(w.shape)
        for layer in top.layers
        if not isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.weights
        if w.trainable
    )
    assert top.trainable_params == expected > 0
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == head_params + expected
    tltk.unfreeze(model, groups="all", train_bn=True)
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == sum(
        g.trainable_params for g in tltk.layer_groups(model)
    )
    tltk.freeze(model)
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == head_params

    # Forward pass on raw uint8 pixels, then a safe-mode `.keras` round trip.
    x = np.random.default_rng(0).integers(0, 256, (2, *shape), dtype=np.uint8)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), probs, atol=1e-6)
    assert [g.name for g in tltk.layer_groups(reloaded)] == [g.name for g in groups]


FAMILIES = sorted({(tltk.get_backbone(n).family, n) for n in KERAS_APPS}, key=lambda p: p[0])
ONE_PER_FAMILY = {family: name for family, name in FAMILIES}


@pytest.mark.parametrize("family", sorted(ONE_PER_FAMILY))
def test_in_graph_preprocessing_equals_keras_preprocess_input(family):
    spec = tltk.get_backbone(ONE_PER_FAMILY[family])
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = np.asarray(tltk.ImagePreprocessing(spec.preprocessing)(x))
    reference = getattr(keras.applications, family).preprocess_input(x.copy())
    np.testing.assert_allclose(ours, np.asarray(reference), rtol=1e-5, atol=1e-4)


def test_unknown_name_lists_closest():
    with pytest.raises(ValueError, match="Closest names: .*mobilenet_v2"):
        tltk.get_backbone("mobilenet_v22")


def test_keras_class_name_and_snake_case_agree():
    assert tltk.get_backbone("MobileNetV2") is tltk.get_backbone("mobilenet_v2")
    assert tltk.get_backbone("EfficientNetV2B0").name == "efficientnet_v2_b0"


def test_register_custom_spec_and_refuse_duplicates():
    spec = tltk.BackboneSpec(
        name="test_tiny_cnn",
        family="custom",
        source="tltk",
        constructor=lambda input_shape, weights: keras.Sequential(
            [
                keras.Input(input_shape),
                keras.layers.Conv2D(4, 3, name="stem_conv"),
                keras.layers.Conv2D(8, 3, name="top_conv"),
            ],
            name="x",
        ),
        preprocessing="unit",
        default_input_size=(16, 16),
        min_input_size=(8, 8),
        feature_dim=8,
        groups=(("stem", "stem_"), ("top", "top_")),
    )
    tltk.register_backbone(spec, overwrite=True)
    with pytest.raises(ValueError, match="already registered"):
        tltk.register_backbone(spec)
    model = tltk.build_classifier("test_tiny_cnn", 2, weights=None)
    assert [g.name for g in tltk.layer_groups(model)] == ["stem", "top", "head"]
    assert "test_tiny_cnn" in tltk.list_backbones(source="tltk")
