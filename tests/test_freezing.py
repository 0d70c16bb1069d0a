"""Staged freezing and the BatchNorm policy, checked by training, not assumed."""

import keras
import numpy as np
import pytest

import tltk
from tests.helpers import TINY_BN_CNN

SHAPE = (32, 32, 3)


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *SHAPE)).astype("float32"), rng.integers(0, 3, n)


def _train_step(model):
    x, y = _data()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def _snapshot(layers):
    return {
        f"{layer.name}/{i}": np.array(w.numpy())
        for layer in layers
        for i, w in enumerate(layer.weights)
    }


@pytest.mark.parametrize("train_bn", [False, True])
def test_unfrozen_group_trains_and_batchnorm_follows_policy(train_bn):
    model = tltk.build_classifier(
        TINY_BN_CNN.name, 3, input_shape=SHAPE, weights=None, train_bn=train_bn
    )
    tltk.unfreeze(model, groups=["top"])
    groups = {g.name: g for g in tltk.layer_groups(model)}
    top_bn = [
        layer
        for layer in groups["top"].layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    top_conv = [layer for layer in groups["top"].layers if isinstance(layer, keras.layers.Conv2D)]
    frozen = [
        layer for name, g in groups.items() if name not in ("top", "head") for layer in g.layers
    ]
    assert top_bn and top_conv
    before_bn, before_conv, before_frozen = (
        _snapshot(top_bn),
        _snapshot(top_conv),
        _snapshot(frozen),
    )

    _train_step(model)

    after_bn = _snapshot(top_bn)
    assert all(not np.array_equal(before_conv[k], v) for k, v in _snapshot(top_conv).items())
    for key, value in _snapshot(frozen).items():
        np.testing.assert_array_equal(before_frozen[key], value, err_msg=key)
    stats = [
        k for k in after_bn if k.endswith("/2") or k.endswith("/3")
    ]  # moving mean, moving variance
    changed = [not np.array_equal(before_bn[k], after_bn[k]) for k in stats]
    assert all(changed) if train_bn else not any(changed)
    assert all(layer.trainable == train_bn for layer in top_bn)


def test_freeze_and_unfreeze_by_count_name_and_all():
    model = tltk.build_classifier("mobilenet_v2", 3, input_shape=SHAPE, weights=None)
    names = [g.name for g in tltk.layer_groups(model)]
    assert names == [
        "stem",
        "block_1-2",
        "block_3-5",
        "block_6-9",
        "block_10-12",
        "block_13-15",
        "block_16",
        "top",
        "head",
    ]
    trainable = lambda: [g.name for g in tltk.layer_groups(model) if g.trainable]  # noqa: E731
    assert trainable() == ["head"]
    tltk.unfreeze(model, groups=np.int64(2))  # numpy integers count as integers
    assert trainable() == ["block_16", "top", "head"]
    tltk.unfreeze(model, groups=["stem"])
    assert trainable() == ["stem", "block_16", "top", "head"]
    tltk.unfreeze(model, groups="all")
    assert trainable() == names
    tltk.freeze(model)
    assert trainable() == ["head"]


@pytest.mark.parametrize(
    "groups, message",
    [
        (["block_99"], r"Unknown layer group\(s\) \['block_99'\] in `groups`; .* \['stem'"),
        (-1, r"`groups` must be 0 to 8 .*Received: groups=-1"),
        (10, r"`groups` must be 0 to 8 \(this backbone's groups: \['stem', .*Received: groups=10"),
        (True, r"Received: groups=True"),
        ("some", r"Received: groups='some'"),
    ],
)
def test_unfreeze_rejects_bad_groups(groups, message):
    model = tltk.build_classifier("mobilenet_v2", 3, input_shape=SHAPE, weights=None)
    with pytest.raises(ValueError, match=message):
        tltk.unfreeze(model, groups=groups)
    assert [g.name for g in tltk.layer_groups(model) if g.trainable] == [
        "head"
    ]  # nothing half-done
    tltk.unfreeze(model, groups=8)
    assert all(g.trainable for g in tltk.layer_groups(model))
    with pytest.raises(ValueError, match="train_bn"):
        tltk.unfreeze(model, 1, train_bn="yes")
