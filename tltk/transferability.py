"""Transferability scores: how well a backbone's features fit a labelled target, without training.

Each function takes pooled features `(n, d)` (or a source classifier's probabilities) and integer
labels, and returns one number, larger for a better fit:

- `logme`: LogME (You et al., ICML 2021), the log marginal evidence per example of a Bayesian
  linear model from the features to each one-hot target column, maximised over its prior and noise
  precisions by the paper's fixed-point iteration, averaged over classes.
- `leep`: LEEP (Nguyen et al., ICML 2020), the log expected empirical prediction of a source
  classifier's outputs through the empirical conditional `P(target | source class)`.
- `hscore`: H-score (Bao et al., ICIP 2019), `tr(cov(f)^-1 cov(E[f | y]))`, with a
  shrinkage-regularised feature covariance (Ibrahim et al., ICLR 2022) so it is defined when
  `d > n`.
- `knn`: leave-one-out k-nearest-neighbour accuracy (cosine similarity).
- `linear`: cross-validated accuracy of an L2 logistic-regression probe (scikit-learn).

Published implementations are PyTorch or NumPy scripts; these are written here from the papers'
formulas in NumPy (scikit-learn for the two baselines).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.covariance import ledoit_wolf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

# LogME's fixed-point iteration: at most this many steps, until alpha / beta changes by less than
# `LOGME_TOLERANCE` relatively (the paper stops at 1e-2; a tighter stop costs little after the SVD).
LOGME_MAX_STEPS = 100
LOGME_TOLERANCE = 1e-10
KNN_NEIGHBOURS = 5
LINEAR_FOLDS = 5


def logme(features, labels):
    """LogME: mean over classes of the maximised log evidence per example.

    Args:
        features: array `(n, d)`.
        labels: array `(n,)` of class indexes.

    Returns:
        float.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(40) % 2
    >>> good = labels[:, None] + 0.1 * rng.normal(size=(40, 3))
    >>> bool(logme(good, labels) > logme(rng.normal(size=(40, 3)), labels))
    True
    """
    f, y = _check(features, labels)
    n, d = f.shape
    # Eigen-decomposition of F^T F once; each class then costs O(d) per step.
    sigma, v = np.linalg.eigh(f.T @ f)
    sigma = np.clip(sigma, 0.0, None)
    evidences = []
    for k in np.unique(y):
        target = (y == k).astype("float64")
        projected = v.T @ (f.T @ target)  # V^T F^T y
        alpha, beta = 1.0, 1.0
        for _ in range(LOGME_MAX_STEPS):
            m = v @ (beta * projected / (alpha + beta * sigma))  # posterior mean
            gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
            residual = float(np.sum((target - f @ m) ** 2))
            squared = float(m @ m)
            new_alpha = gamma / max(squared, 1e-12)
            new_beta = max(n - gamma, 1e-12) / max(residual, 1e-12)
            converged = abs(new_alpha / new_beta - alpha / beta) <= LOGME_TOLERANCE * (alpha / beta)
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        m = v @ (beta * projected / (alpha + beta * sigma))
        residual = float(np.sum((target - f @ m) ** 2))
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2 * residual
            - alpha / 2 * float(m @ m)
            - n / 2 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def leep(source_probabilities, labels):
    """LEEP: mean log-likelihood of the labels under `P(y | z)` composed with the source outputs.

    Args:
        source_probabilities: array `(n, z)`. A source classifier's softmax outputs.
        labels: array `(n,)` of target class indexes.

    Returns:
        float (at most 0).

    Example:

    >>> probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    >>> round(leep(probabilities, np.array([0, 0, 1, 1])), 4)
    -0.2955
    """
    theta, y = _check(source_probabilities, labels)
    if np.any(theta < 0) or not np.allclose(theta.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(
            "`source_probabilities` must be probabilities (rows of non-negative values summing "
            "to 1): the softmax outputs of a source classifier."
        )
    classes = int(y.max()) + 1
    joint = np.zeros((classes, theta.shape[1]))
    np.add.at(joint, y, theta)
    joint /= len(y)  # P(y, z)
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-300)  # P(y | z)
    expected = np.sum(theta * conditional[y], axis=1)
    return float(np.mean(np.log(np.maximum(expected, 1e-300))))


def hscore(features, labels):
    """H-score with a Ledoit-Wolf shrinkage covariance: `tr(cov(f)^-1 cov(E[f | y]))`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(40) % 2
    >>> good = labels[:, None] + 0.1 * rng.normal(size=(40, 3))
    >>> bool(hscore(good, labels) > hscore(rng.normal(size=(40, 3)), labels))
    True
    """
    f, y = _check(features, labels)
    f = f - f.mean(axis=0)
    covariance = ledoit_wolf(f, assume_centered=True)[0]
    means = np.zeros_like(f)
    for k in np.unique(y):
        means[y == k] = f[y == k].mean(axis=0)
    between = means.T @ means / len(f)
    return float(np.trace(np.linalg.solve(covariance, between)))


def knn(features, labels, k=KNN_NEIGHBOURS):
    """Leave-one-out accuracy of a `k`-nearest-neighbour vote by cosine similarity.

    Example:

    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> features = np.array([[1, 0], [1, .1], [1, .2], [0, 1], [.1, 1], [.2, 1]])
    >>> knn(features, labels, k=2)
    1.0
    """
    f, y = _check(features, labels)
    k = min(k, len(f) - 1)
    unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # leave each example out
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(f), int(y.max()) + 1))
    np.add.at(votes, (np.repeat(np.arange(len(f)), k), y[neighbours].ravel()), 1.0)
    return float(np.mean(votes.argmax(axis=1) == y))


def linear(features, labels, folds=LINEAR_FOLDS, seed=0):
    """Stratified cross-validated accuracy of an L2 logistic-regression probe (`C=1` on the
    features over their root mean square); as many folds as the rarest class allows, at most
    `folds`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(40) % 2
    >>> round(linear(labels[:, None] + 0.1 * rng.normal(size=(40, 3)), labels), 2)
    1.0
    """
    f, y = _check(features, labels)
    folds = min(folds, int(np.bincount(y)[np.unique(y)].min()))
    if folds < 2:
        raise ValueError(
            "`linear` needs at least 2 examples of every class for cross-validation. "
            f"Received: class counts {np.bincount(y).tolist()}"
        )
    scale = float(np.sqrt(np.mean(np.square(f)))) or 1.0
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    probe = LogisticRegression(max_iter=1000)
    with warnings.catch_warnings():  # a probe stopped at 1000 L-BFGS steps still scores
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(np.mean(cross_val_score(probe, f / scale, y, cv=splits)))


SCORES = {"logme": logme, "leep": leep, "hscore": hscore, "knn": knn, "linear": linear}


def _check(values, labels):
    values = np.asarray(values, dtype="float64")
    labels = np.asarray(labels)
    if values.ndim != 2 or labels.shape != (len(values),) or len(values) < 2:
        raise ValueError(
            "Expected features (or probabilities) of shape (n, d) and labels of shape (n,), "
            "n >= 2. "
            f"Received: {values.shape} and {labels.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("The features hold NaN or infinite values.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"`labels` must be class indexes >= 0. Received dtype {labels.dtype}")
    if len(np.unique(labels)) < 2:
        raise ValueError("`labels` must hold at least 2 classes.")
    return values, labels.astype("int64")
