"""The alignment losses of `tltk.adapt`: Deep CORAL, and DANN's gradient reversal and schedule.

- `coral_loss`: the squared Frobenius distance of the source and target feature covariances,
  over `4 d^2` (Sun & Saenko, "Deep CORAL", ECCV 2016 workshops, eq. 1).
- `gradient_reversal`: the identity forward, `-lambda` times the gradient backward (Ganin et al.,
  "Domain-Adversarial Training of Neural Networks", JMLR 2016, section 4.2).
- `dann_lambda`: the paper's schedule `2 / (1 + exp(-10 p)) - 1` over training progress `p`.
- `domain_classifier`: the small discriminator that lives only in `adapt`'s training step.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

# The domain classifier: one hidden ReLU layer on the pooled features, then one logit
# (the paper's MNIST -> MNIST-M discriminator has one 100-unit hidden layer).
DOMAIN_UNITS = 100


def coral_loss(source_features, target_features):
    """Deep CORAL's loss: `||C_s - C_t||_F^2 / (4 d^2)` for the features' covariances.

    Args:
        source_features: tensor. `(n_s, d)` features of source examples (`n_s >= 2`).
        target_features: tensor. `(n_t, d)` features of target examples (`n_t >= 2`).

    Returns:
        A scalar float32 tensor.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    >>> float(coral_loss(x, x)), float(coral_loss(x, 2 * x)) > 0
    (0.0, True)
    """
    source = tf.cast(source_features, "float32")
    target = tf.cast(target_features, "float32")
    d = tf.cast(tf.shape(source)[1], "float32")
    difference = _covariance(source) - _covariance(target)
    return tf.reduce_sum(tf.square(difference)) / (4.0 * d * d)


def _covariance(x):
    """The unbiased covariance `(x - mean)^T (x - mean) / (n - 1)` of the rows of `x`."""
    n = tf.cast(tf.shape(x)[0], "float32")
    centred = x - tf.reduce_mean(x, axis=0, keepdims=True)
    return tf.matmul(centred, centred, transpose_a=True) / (n - 1.0)


@tf.custom_gradient
def gradient_reversal(x, lam):
    """The identity on `x`; backward, the gradient times `-lam` (`lam` gets no gradient).

    >>> x = tf.constant([1.0, 2.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = tf.reduce_sum(3.0 * gradient_reversal(x, tf.constant(0.5)))
    >>> tape.gradient(y, x).numpy().tolist()
    [-1.5, -1.5]
    """

    def grad(upstream):
        return -tf.cast(lam, upstream.dtype) * upstream, tf.zeros_like(lam)

    return tf.identity(x), grad


def dann_lambda(progress):
    """DANN's adaptation factor `2 / (1 + exp(-10 p)) - 1` at training progress `p` in [0, 1].

    >>> round(dann_lambda(0.0), 3), round(dann_lambda(1.0), 3)
    (0.0, 1.0)
    """
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def domain_classifier(seed):
    """A fresh domain classifier: `Dense(DOMAIN_UNITS, relu) -> Dense(1)` (a logit: target)."""
    return keras.Sequential(
        [
            keras.layers.Dense(
                DOMAIN_UNITS,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed),
            ),
            keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
        ],
        name="domain_classifier",
    )
