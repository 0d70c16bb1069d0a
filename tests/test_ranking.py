"""`tltk.rank_backbones` and the transferability scores (issue 21)."""

import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

import tltk
from tltk import transferability
from tltk.cli import main

from tests.helpers import TINY_BN_CNN

# ---- the scores against the papers' formulas, written out directly ----


def reference_logme(f, y):
    """LogME (You et al., 2021, Algorithm 1) with the matrices themselves: A = aI + bF'F,
    m = b A^-1 F'y, gamma = sum b s / (a + b s), a = gamma / m'm, b = (n - gamma) / |y - Fm|^2,
    to convergence; evidence = d/2 log a + n/2 log b - 1/2 log|A| - b/2 |y - Fm|^2 - a/2 m'm
    - n/2 log 2 pi, divided by n, averaged over the one-hot columns."""
    n, d = f.shape
    s = np.linalg.eigvalsh(f.T @ f)
    out = []
    for k in np.unique(y):
        t = (y == k).astype(float)
        a, b = 1.0, 1.0
        for _ in range(500):
            A = a * np.eye(d) + b * f.T @ f
            m = b * np.linalg.solve(A, f.T @ t)
            gamma = np.sum(b * s / (a + b * s))
            a, b = gamma / (m @ m), (n - gamma) / np.sum((t - f @ m) ** 2)
        A = a * np.eye(d) + b * f.T @ f
        m = b * np.linalg.solve(A, f.T @ t)
        evidence = (
            d / 2 * np.log(a)
            + n / 2 * np.log(b)
            - 0.5 * np.linalg.slogdet(A)[1]
            - b / 2 * np.sum((t - f @ m) ** 2)
            - a / 2 * (m @ m)
            - n / 2 * np.log(2 * np.pi)
        )
        out.append(evidence / n)
    return np.mean(out)


def reference_leep(theta, y):
    """LEEP (Nguyen et al., 2020, eq. 1-2), with explicit sums."""
    n, z = theta.shape
    classes = y.max() + 1
    joint = np.array(
        [
            [sum(theta[i, j] for i in range(n) if y[i] == c) / n for j in range(z)]
            for c in range(classes)
        ]
    )
    conditional = joint / joint.sum(axis=0)
    return np.mean(
        [np.log(sum(conditional[y[i], j] * theta[i, j] for j in range(z))) for i in range(n)]
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_logme_and_leep_agree_with_the_papers_formulas(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=60)
    f = rng.normal(size=(60, 8)) + 0.5 * np.eye(8)[y]
    assert transferability.logme(f, y) == pytest.approx(reference_logme(f, y), abs=1e-6)
    logits = rng.normal(size=(60, 5)) * 2
    theta = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert transferability.leep(theta, y) == pytest.approx(reference_leep(theta, y), abs=1e-6)


def test_knn_hscore_and_linear_against_their_definitions():
    rng = np.random.default_rng(0)
    y = np.arange(50) % 3
    f = rng.normal(size=(50, 4)) + np.eye(4)[y] * 1.5
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    hits = [
        KNeighborsClassifier(5).fit(np.delete(unit, i, 0), np.delete(y, i)).predict(unit[i : i + 1])
        == y[i]
        for i in range(50)
    ]
    assert transferability.knn(f, y) == pytest.approx(np.mean(hits))
    # H-score: with many more examples than dimensions the shrinkage vanishes, and it is the
    # paper's tr(cov(f)^-1 cov(E[f|y])).
    big_y = np.arange(3000) % 3
    big = rng.normal(size=(3000, 4)) + np.eye(4)[big_y] * 1.5
    centred = big - big.mean(0)
    between = sum(
        np.outer(centred[big_y == c].mean(0), centred[big_y == c].mean(0)) / 3 for c in range(3)
    )
    plain = np.trace(np.linalg.inv(np.cov(centred.T, bias=True)) @ between)
    assert transferability.hscore(big, big_y) == pytest.approx(plain, rel=0.02)
    assert 0.5 < transferability.linear(f, y) <= 1.0
    with pytest.raises(ValueError, match="at least 2 examples of every class"):
        transferability.linear(f[:4], np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="probabilities"):
        transferability.leep(f, y)


# ---- rank_backbones as a user calls it ----


@pytest.fixture(scope="module")
def digits():
    """200 digits at 24x24 (the candidates take 32x32: each resizes them)."""
    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8, 1) / 16 * 255).astype("uint8")
    images = np.repeat(np.repeat(images, 3, 1), 3, 2).repeat(3, -1)
    return images[:200], y[:200]


@pytest.fixture(scope="module")
def ranked(digits):
    random = tltk.build_classifier("tltk_glyphnet", 10, weights=None, name="glyph_random")
    return tltk.rank_backbones(digits, ["tltk_glyphnet", random], method="all", verbose=0)


def test_the_pretrained_backbone_ranks_above_a_random_one(ranked, tmp_path):
    assert [row.name for row in ranked.rows] == ["tltk_glyphnet", "glyph_random"]
    best = ranked.best
    assert best.score == best.scores["logme"] and best.feature_dim == 256
    assert set(best.scores) == {"logme", "leep", "hscore", "knn", "linear"}
    assert math.isnan(best.scores["leep"])  # a registry name: no source classifier
    assert math.isfinite(ranked.rows[1].scores["leep"])  # a built model: its own outputs
    assert ranked.rows[1].scores["logme"] < best.scores["logme"]
    assert best.scores["knn"] > ranked.rows[1].scores["knn"] - 0.05
    assert best.seconds > 0 and ranked.warnings == []
    model = ranked.model()
    assert model.output_shape == (None, 10) and ranked.features["tltk_glyphnet"][0].shape == (
        200,
        256,
    )
    table = ranked.table().splitlines()
    assert table[0].split()[:3] == ["rank", "backbone", "logme"] and "n/a" in table[1]
    frame = ranked.to_dataframe()
    assert list(frame["backbone"]) == ["tltk_glyphnet", "glyph_random"]
    assert frame["logme"].iloc[0] == best.scores["logme"]
    path = ranked.plot(tmp_path / "rank.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_imagedata_at_any_size_and_a_subset(tmp_path, digits):
    x, y = digits
    data = tltk.data.from_arrays(x[:, :20, :20], y, image_size=(20, 20), validation_split=0.2)
    names = ["tltk_glyphnet", TINY_BN_CNN.name]  # a registered backbone with random weights
    ranking = tltk.rank_backbones(data, names, max_examples=50, verbose=0)
    features, labels = ranking.features["tltk_glyphnet"]
    assert len(features) == len(labels) == 50 and set(labels) == set(range(10))
    loser = ranking.rows[1].name
    assert set(ranking.models) == {ranking.best.name}  # the other registry candidate not kept
    again = ranking.model(loser)  # built again on demand
    assert again.output_shape == (None, 10) and set(ranking.models) == set(names)
    with pytest.raises(ValueError, match="No candidate 'nope'"):
        ranking.model("nope")


def test_near_chance_data_is_warned_about(digits):
    x, _ = digits
    noise = np.random.default_rng(0).integers(0, 3, size=len(x))  # labels unrelated to images
    with pytest.warns(UserWarning, match="close to chance"):
        ranking = tltk.rank_backbones((x, noise), ["tltk_glyphnet"], method="knn", verbose=0)
    assert "too far from every candidate's pretraining" in ranking.warnings[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backbones=[]), "non-empty list"),
        (dict(backbones="tltk_glyphnet"), "non-empty list"),
        (dict(backbones=["no_such_net"]), "no_such_net"),
        (dict(backbones=["tltk_glyphnet", "tltk_glyphnet"]), "Two candidates are named"),
        (dict(method="logmee"), "`method` must be one of"),
        (dict(data=(np.zeros((6, 8, 8, 3)), np.zeros(6, int))), "at least 2 classes"),
        (dict(data=(np.zeros((6, 8, 3)), np.arange(6) % 2)), r"\(n, height, width, 3\)"),
        (dict(data="photos/"), "must be a tltk ImageData"),
        (dict(max_examples=1), "`max_examples` must be an integer >= 2"),
    ],
)
def test_bad_arguments_say_what_to_pass(digits, kwargs, match):
    call = {"data": digits, "backbones": ["tltk_glyphnet"], "verbose": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        tltk.rank_backbones(call.pop("data"), call.pop("backbones"), **call)


def test_the_rank_command(tmp_path, digits):
    x, y = digits
    for label in (0, 1, 7):
        folder = tmp_path / "photos" / str(label)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(y == label)[:8]:
            Image.fromarray(x[i]).save(folder / f"{i}.png")
    random = tltk.build_classifier("tltk_glyphnet", 3, weights=None, name="glyph_random")
    random.save(tmp_path / "random.keras")
    result = CliRunner().invoke(
        main,
        [
            "rank",
            str(tmp_path / "photos"),
            "--backbone",
            "tltk_glyphnet",
            "--model",
            str(tmp_path / "random.keras"),
            "--plot",
            str(tmp_path / "r.png"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["rank", "backbone", "logme"]
    assert {lines[1].split()[1], lines[2].split()[1]} == {"tltk_glyphnet", "glyph_random"}
    assert (tmp_path / "r.png").is_file() and "Bar chart:" in lines[-1]
    empty = CliRunner().invoke(main, ["rank", str(tmp_path / "photos")])
    assert empty.exit_code == 2 and "--backbone NAME or --model FILE" in empty.output


def test_fine_tune_reuses_the_ranked_features(digits):
    """The ranking's features of `data.train` and `data.validation` go into the head stage's
    cache instead of a second pass of the backbone; the run is the same as without them."""
    import keras

    from tltk.feature_cache import FeatureCache, KnownFeatures

    x, y = digits
    data = tltk.data.from_arrays(
        x[:120], y[:120], image_size=(32, 32), validation_split=0.25, seed=1
    )
    ranking = tltk.rank_backbones(data, ["tltk_glyphnet"], verbose=0)
    known = ranking.known_features()
    assert len(known.vectors) == 120
    model = ranking.model()
    marked = KnownFeatures(known.extractor, {d: v * 0 + 7 for d, v in known.vectors.items()})
    cache = FeatureCache(model, data.train, data.validation, known=marked)
    assert np.all(cache.train[0][0] == 7) and np.all(cache.validation[0] == 7)  # not recomputed

    runs = []
    for cached in (True, known):  # fresh datasets: the shuffle order is part of the run
        keras.utils.set_random_seed(5)
        again = tltk.data.from_arrays(
            x[:120], y[:120], image_size=(32, 32), validation_split=0.25, seed=1
        )
        fresh = tltk.build_classifier("tltk_glyphnet", 10)
        result = tltk.fine_tune(
            fresh,
            again.train,
            again.validation,
            head_epochs=3,
            epochs=0,
            learning_rate=1e-2,
            cache_features=cached,
            verbose=0,
        )
        runs.append(result.histories[0]["val_loss"])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5)

    other = tltk.build_classifier("tltk_glyphnet", 10, weights=None)
    with pytest.raises(ValueError, match="computed by another backbone"):
        tltk.fine_tune(other, data.train, data.validation, cache_features=known, verbose=0)
