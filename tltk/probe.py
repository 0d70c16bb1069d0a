"""The linear probe of a converging head stage: L2 logistic regression on the cached features.

A linear softmax head trained with Adam on a few hundred examples stops (early, on a small and
noisy validation set) short of the regularised optimum that a convex solver reaches. scikit-learn's
`LogisticRegression` (L-BFGS) solves that problem exactly; its L2 strength `C` is chosen on the
cached validation features (the lowest log loss). `fine_tune` evaluates the probe as the head's
weights, like any epoch, and keeps it where it beats the head Adam trained (`tltk.Stage.probe`).
Written here because Keras has no convex solver and scikit-learn has no Keras head: this module
only copies scikit-learn's `coef_` and `intercept_` into the head's `Dense` layer.
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from tltk.heads import layer_activation

# L2 strengths tried (scikit-learn's `C`: larger is weaker), each fit warm-started from the last;
# the scan stops once the validation loss has not improved for `C_PATIENCE` strengths in a row.
C_GRID = tuple(float(c) for c in np.logspace(-3, 3, 13))
C_PATIENCE = 2
MAX_ITER = 500
# No probe above this many training rows (all cached views together): there the head Adam trains
# converges well, and the scan would take minutes.
MAX_ROWS = 20_000


@dataclasses.dataclass
class Probe:
    """A fitted linear probe.

    Attributes:
        C: float. The L2 strength chosen (scikit-learn's inverse regularization strength, for
            the features divided by their root mean square).
        kernel: np.ndarray. `(features, units)` weights for the head's `Dense` layer.
        bias: np.ndarray. `(units,)` biases for it.
        validation_log_loss: float. Its log loss on the validation features.
    """

    C: float
    kernel: np.ndarray
    bias: np.ndarray
    validation_log_loss: float


def linear_layer(head):
    """The `Dense` layer of `head` if `head` is linear: one softmax (2 units or more) or one-unit
    sigmoid `Dense` with a bias, and otherwise only `Dropout`; else `None`."""
    dense = None
    for layer in head.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
            continue
        if dense is not None or not isinstance(layer, keras.layers.Dense):
            return None
        dense = layer
    if dense is None or not dense.use_bias:
        return None
    if (layer_activation(dense), dense.units > 1) not in (("softmax", True), ("sigmoid", False)):
        return None
    return dense


def fit_probe(train, validation, units, *, class_weight=None):
    """Fits the probe on cached `(features, labels[, sample_weights])` arrays.

    Args:
        train: list of tuple. The training views (`FeatureCache.train`), used together.
        validation: tuple. The validation arrays (`FeatureCache.validation`).
        units: int. The head's output units (classes; 1 for a one-unit sigmoid).
        class_weight: dict or None. `{class index: weight}`, applied as sample weights.

    Returns:
        A `Probe`, or `None` when some class has no training example, the labels are not
        single-label classes, or there are more than `MAX_ROWS` training rows.
    """
    x = np.concatenate([view[0] for view in train]).reshape(sum(len(v[0]) for v in train), -1)
    y = _classes(np.concatenate([view[1] for view in train]), units)
    val_x = validation[0].reshape(len(validation[0]), -1)
    val_y = _classes(validation[1], units)
    val_weights = validation[2].reshape(-1) if len(validation) > 2 else None
    classes = max(units, 2)
    if y is None or val_y is None or len(np.unique(y)) != classes or len(x) > MAX_ROWS:
        return None
    weights = _weights(train, class_weight, y)
    # One scale for every feature dimension: L-BFGS converges in far fewer steps.
    scale = float(np.sqrt(np.mean(np.square(x)))) or 1.0
    model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
    best, stale = None, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in C_GRID:
            if stale == C_PATIENCE:
                break
            model.set_params(C=c).fit(x / scale, y, sample_weight=weights)
            probabilities = np.clip(model.predict_proba(val_x / scale), 1e-7, 1.0)
            picked = probabilities[np.arange(len(val_y)), val_y]
            loss = float(np.average(-np.log(picked), weights=val_weights))
            stale = 0 if best is None or loss < best.validation_log_loss else stale + 1
            if not stale:
                kernel, bias = model.coef_.T / scale, model.intercept_
                if units > 1 and kernel.shape[1] == 1:  # binary softmax: logits (0, w.x + b)
                    kernel = np.concatenate([np.zeros_like(kernel), kernel], axis=1)
                    bias = np.concatenate([[0.0], bias])
                best = Probe(c, kernel, bias, loss)
    return best


def _classes(labels, units):
    """Integer class labels from sparse, one-hot or 0/1 labels; `None` for other labels."""
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.shape[-1] == units and units > 1:
        if not np.all(np.isin(labels, (0, 1))) or not np.all(labels.sum(-1) == 1):
            return None  # soft or multi-hot labels
        return labels.argmax(-1)
    labels = labels.reshape(len(labels))
    if not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() >= max(units, 2):
        return None
    return labels.astype("int64")


def _weights(train, class_weight, y):
    weights = None
    if all(len(view) > 2 for view in train):
        weights = np.concatenate([view[2].reshape(-1) for view in train]).astype("float64")
    if class_weight:
        per_class = np.array([class_weight.get(int(c), 1.0) for c in y], "float64")
        weights = per_class if weights is None else weights * per_class
    return weights
