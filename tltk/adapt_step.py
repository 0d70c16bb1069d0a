"""`tltk.adapt`'s training step, and its alignment losses: Deep CORAL, DANN's gradient reversal.

`Trainer` runs one method's epochs on a wrapper of the model's own layers (its pooled features
and predictions); the domain classifier lives in it only, never in the model.

- `coral_loss`: the squared Frobenius distance of the source and target feature covariances,
  over `4 d^2` (Sun & Saenko, "Deep CORAL", ECCV 2016 workshops, eq. 1).
- `gradient_reversal`: the identity forward, `-lambda` times the gradient backward (Ganin et al.,
  "Domain-Adversarial Training of Neural Networks", JMLR 2016, section 4.2).
- `dann_lambda`: the paper's schedule `2 / (1 + exp(-10 p)) - 1` over training progress `p`.
- `AnnealedRate`: the paper's rate `mu0 / (1 + 10 p) ** 0.75` (section 5.2.2).
- `domain_classifier`: the discriminator that lives only in `adapt`'s training step.
- `domain_statistics`: AdaBN (Li et al., 2016): the BatchNorm statistics of one domain's images.

BatchNorm runs per domain (as in AdaBN and domain-specific BatchNorm): in training, the source
and the target batches pass separately, each normalised by its own statistics; at inference,
each domain's statistics are set from its images (`domain_statistics`).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tltk.lr_multipliers import decayed_multipliers, discriminative_optimizer
from tltk.objectives import output_activation

# The domain classifier: two hidden ReLU layers of min(DOMAIN_UNITS, feature width) units, then
# one logit (the paper's 1024-1024 for deep features; as wide as the features when they are
# fewer, as the paper's 100 units for its small MNIST features).
DOMAIN_UNITS = 1024


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


@keras.saving.register_keras_serializable(package="tltk")
class AnnealedRate(keras.optimizers.schedules.LearningRateSchedule):
    """DANN's rate `rate / (1 + 10 p) ** 0.75` at progress `p = step / total_steps`.

    >>> [round(float(AnnealedRate(0.1, 10)(step)), 4) for step in (0, 10)]
    [0.1, 0.0166]
    """

    def __init__(self, rate, total_steps):
        self.rate, self.total_steps = float(rate), int(total_steps)

    def __call__(self, step):
        progress = tf.cast(step, "float32") / self.total_steps
        return self.rate / (1.0 + 10.0 * progress) ** 0.75

    def get_config(self):
        return {"rate": self.rate, "total_steps": self.total_steps}


def domain_classifier(seed, width):
    """A fresh domain classifier on `width` features: two ReLU layers, then one logit (target)."""
    units = min(DOMAIN_UNITS, width)
    dense = [
        keras.layers.Dense(
            units, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed + k)
        )
        for k in range(2)
    ]
    last = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + 2))
    return keras.Sequential([*dense, last], name="domain_classifier")


def batch_norms(layer):
    """The BatchNormalization layers in `layer`, nested models included, in order."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [layer]
    return [found for sub in getattr(layer, "layers", []) for found in batch_norms(sub)]


def domain_statistics(model, images, batch_size):
    """AdaBN: each BatchNorm layer's mean and variance over `images` (a running average of its
    batch statistics, the layers below normalised the same way); the model is left unchanged.

    Returns:
        A list of `(mean, variance)` arrays, one per layer of `batch_norms(model)`.
    """
    layers = batch_norms(model)
    kept = [(layer.trainable, layer.momentum, layer.get_weights()) for layer in layers]
    for layer in layers:
        layer.trainable = True  # a trainable BatchNorm uses and records batch statistics
    for k, start in enumerate(range(0, len(images), batch_size)):
        for layer in layers:
            layer.momentum = k / (k + 1)  # the running mean of the batches' statistics
        model(images[start : start + batch_size], training=True)
    found = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    for layer, (trainable, momentum, weights) in zip(layers, kept):
        layer.trainable, layer.momentum = trainable, momentum
        layer.set_weights(weights)
    return found


def set_statistics(model, statistics):
    """Sets the BatchNorm layers' moving statistics to `statistics` (`domain_statistics`)."""
    for layer, (mean, variance) in zip(batch_norms(model), statistics):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


class Trainer:
    """One method's training step, on a wrapper that outputs the pooled features and the
    predictions of the model's own layers (the domain classifier is outside the model).

    The variables that train are the model's trainable ones when the trainer is made; then
    every BatchNorm layer runs on batch statistics, the source and target batches apart.
    """

    def __init__(self, model, method, settings, steps):
        self.method, self.settings, self.steps = method, settings, steps
        self.wrapper = keras.Model(model.inputs, [model.features.output, model.outputs[0]])
        self.from_logits = output_activation(model) == "linear"
        width = int(model.features.output.shape[-1])
        self.domain = domain_classifier(settings["seed"], width) if method == "dann" else None
        multipliers = decayed_multipliers(model, settings["lr_decay"])
        rate = AnnealedRate(settings["learning_rate"], settings["epochs"] * steps)
        self.optimizer = discriminative_optimizer(
            keras.optimizers.Adam(rate),
            {g: m for g, m in multipliers.items() if m != 1},
            model=model,
        )
        if self.domain is not None:
            self.domain.build((None, width))
        self.variables = list(model.trainable_variables) + (
            list(self.domain.trainable_variables) if self.domain is not None else []
        )
        self.optimizer.build(self.variables)  # before tracing: a step that builds traces twice
        for layer in batch_norms(model):
            layer.trainable = True
        self.step = tf.function(self._step, reduce_retracing=True)

    def epoch(self, source_x, source_y, pool, pool_labels, rng, epoch):
        """Trains one epoch; returns its mean training logs. `pool`: the target images of this
        epoch (self-training: the pseudo-labelled ones, `pool_labels` their labels)."""
        size, steps = self.settings["batch_size"], self.steps
        source_order = _cycled(len(source_x), steps * size, rng)
        target_order = _cycled(len(pool), steps * size, rng)
        totals = np.zeros(4)
        for step in range(steps):
            picked = source_order[step * size : (step + 1) * size]
            chosen = target_order[step * size : (step + 1) * size]
            yt = pool_labels[chosen] if pool_labels is not None else np.zeros(0, "int64")
            progress = (epoch * steps + step) / (self.settings["epochs"] * steps)
            lam = self.settings["alignment_weight"] * dann_lambda(progress)
            values = self.step(
                source_x[picked], source_y[picked], pool[chosen], yt, tf.constant(lam, "float32")
            )
            totals += [float(v) for v in values]
        loss, alignment, correct, domain = totals / steps
        logs = {"source_loss": loss, "source_accuracy": correct, "alignment_loss": alignment}
        if self.method == "dann":
            logs["domain_accuracy"] = domain
        return logs

    def _step(self, xs, ys, xt, yt, lam):
        with tf.GradientTape() as tape:
            source_features, source_out = self._forward(xs)
            target_features, target_out = self._forward(xt)
            source_loss = tf.reduce_mean(self._cross_entropy(ys, source_out))
            domain_correct = tf.constant(0.0)
            if self.method == "self_training":
                alignment = tf.reduce_mean(self._cross_entropy(yt, target_out))
                total = source_loss + self.settings["alignment_weight"] * alignment
            elif self.method == "coral":
                alignment = coral_loss(source_features, target_features)
                total = source_loss + self.settings["alignment_weight"] * alignment
            else:
                features = tf.concat([source_features, target_features], 0)
                logits = self.domain(gradient_reversal(features, lam), training=True)[:, 0]
                domains = tf.concat(
                    [
                        tf.zeros_like(logits[: tf.shape(xs)[0]]),
                        tf.ones_like(logits[tf.shape(xs)[0] :]),
                    ],
                    0,
                )
                alignment = tf.reduce_mean(
                    tf.nn.sigmoid_cross_entropy_with_logits(labels=domains, logits=logits)
                )
                domain_correct = tf.reduce_mean(
                    tf.cast(tf.equal(tf.cast(logits > 0, "float32"), domains), "float32")
                )
                total = source_loss + alignment
        gradients = tape.gradient(total, self.variables)
        self.optimizer.apply_gradients(zip(gradients, self.variables))
        predicted = tf.argmax(source_out, axis=1, output_type=ys.dtype)
        correct = tf.reduce_mean(tf.cast(tf.equal(predicted, ys), "float32"))
        return source_loss, alignment, correct, domain_correct

    def _forward(self, x):
        features, outputs = self.wrapper(x, training=True)
        return tf.cast(features, "float32"), tf.cast(outputs, "float32")

    def _cross_entropy(self, labels, outputs):
        return keras.losses.sparse_categorical_crossentropy(
            labels, outputs, from_logits=self.from_logits
        )


def _cycled(count, length, rng):
    """`length` indexes into `count` items: shuffled passes, one after another."""
    passes = math.ceil(length / count)
    return np.concatenate([rng.permutation(count) for _ in range(passes)])[:length]
