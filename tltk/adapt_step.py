"""`tltk.adapt`'s training step, and its alignment losses: Deep CORAL, DANN's gradient reversal.

`Trainer` runs one method's epochs on a wrapper of the model's own layers (its pooled features
and predictions); the domain classifier lives in it only, never in the model.

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
import numpy as np
import tensorflow as tf

from tltk.lr_multipliers import decayed_multipliers, discriminative_optimizer
from tltk.objectives import output_activation

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


class Trainer:
    """One method's training step, on a wrapper that outputs the pooled features and the
    predictions of the model's own layers (the domain classifier is outside the model)."""

    def __init__(self, model, method, settings):
        self.method, self.settings = method, settings
        self.wrapper = keras.Model(model.inputs, [model.features.output, model.outputs[0]])
        self.from_logits = output_activation(model) == "linear"
        self.domain = domain_classifier(settings["seed"]) if method == "dann" else None
        multipliers = decayed_multipliers(model, settings["lr_decay"])
        self.optimizer = discriminative_optimizer(
            keras.optimizers.Adam(settings["learning_rate"]),
            {g: m for g, m in multipliers.items() if m != 1},
            model=model,
        )
        if self.domain is not None:
            self.domain.build((None, int(model.features.output.shape[-1])))
        self.variables = list(model.trainable_variables) + (
            list(self.domain.trainable_variables) if self.domain is not None else []
        )
        self.step = tf.function(self._step, reduce_retracing=True)

    def epoch(self, source_x, source_y, pool, pool_labels, rng, steps, epoch):
        """Trains one epoch of `steps` steps; returns the epoch's mean training logs."""
        size = self.settings["batch_size"]
        source_order = _cycled(len(source_x), steps * size, rng)
        target_order = _cycled(len(pool), steps * size, rng) if len(pool) else None
        totals = np.zeros(3)
        for step in range(steps):
            picked = source_order[step * size : (step + 1) * size]
            if target_order is None:  # self-training without a confident target image
                xt, yt = pool[:0], np.zeros(0, "int64")
            else:
                chosen = target_order[step * size : (step + 1) * size]
                xt = pool[chosen]
                yt = pool_labels[chosen] if pool_labels is not None else np.zeros(0, "int64")
            progress = (epoch * steps + step) / (self.settings["epochs"] * steps)
            lam = self.settings["alignment_weight"] * dann_lambda(progress)
            values = self.step(
                source_x[picked], source_y[picked], xt, yt, tf.constant(lam, "float32")
            )
            totals += [float(v) for v in values]
        loss, alignment, correct = totals / steps
        return {
            "source_loss": loss,
            "source_accuracy": correct,
            "alignment_loss": alignment,
        }

    def _step(self, xs, ys, xt, yt, lam):
        ns = tf.shape(xs)[0]
        with tf.GradientTape() as tape:
            features, outputs = self.wrapper(tf.concat([xs, xt], 0), training=True)
            features, outputs = tf.cast(features, "float32"), tf.cast(outputs, "float32")
            source_out = outputs[:ns]
            source_loss = tf.reduce_mean(self._cross_entropy(ys, source_out))
            if self.method == "self_training":
                per_example = self._cross_entropy(yt, outputs[ns:])
                alignment = tf.reduce_sum(per_example) / tf.maximum(
                    tf.cast(tf.shape(yt)[0], "float32"), 1.0
                )
                total = source_loss + self.settings["alignment_weight"] * alignment
            elif self.method == "coral":
                alignment = coral_loss(features[:ns], features[ns:])
                total = source_loss + self.settings["alignment_weight"] * alignment
            else:
                logits = self.domain(gradient_reversal(features, lam), training=True)[:, 0]
                domains = tf.concat([tf.zeros([ns]), tf.ones([tf.shape(xt)[0]])], 0)
                alignment = tf.reduce_mean(
                    tf.nn.sigmoid_cross_entropy_with_logits(labels=domains, logits=logits)
                )
                total = source_loss + alignment
        gradients = tape.gradient(total, self.variables)
        self.optimizer.apply_gradients(zip(gradients, self.variables))
        predicted = tf.argmax(source_out, axis=1, output_type=ys.dtype)
        correct = tf.reduce_mean(tf.cast(tf.equal(predicted, ys), "float32"))
        return source_loss, alignment, correct

    def _cross_entropy(self, labels, outputs):
        return keras.losses.sparse_categorical_crossentropy(
            labels, outputs, from_logits=self.from_logits
        )


def _cycled(count, length, rng):
    """`length` indexes into `count` items: shuffled passes, one after another."""
    passes = math.ceil(length / count)
    return np.concatenate([rng.permutation(count) for _ in range(passes)])[:length]
