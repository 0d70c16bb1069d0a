"""`find_lr`: the learning-rate range test (Smith 2015; fastai's `lr_find`), without side effects.

The rate grows exponentially from `min_lr` to `max_lr`, one training step per rate, on whatever
the model has trainable now; the loss curve is smoothed and the suggested rate is where it falls
fastest. All the model's weights (BatchNorm statistics included) are put back afterwards, and its
compiled state is not touched.
"""

from __future__ import annotations

import dataclasses
import pathlib

import keras
import numpy as np
import tensorflow as tf

from tltk import atomic
from tltk.argcheck import integer, real
from tltk.objectives import combined_loss, objective
from tltk.training_inputs import check_batched, first_batch


@dataclasses.dataclass
class LRFinderResult:
    """The outcome of `find_lr`.

    Attributes:
        learning_rates: np.ndarray. The rate of each step taken.
        losses: np.ndarray. The smoothed (bias-corrected exponential moving average) loss per step.
        raw_losses: np.ndarray. The loss of each step's batch.
        suggestion: float. The rate where the smoothed loss falls fastest, before its minimum.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggestion: float

    def plot(self, path):
        """Saves the smoothed loss against the rate (log scale), the suggestion marked, as a PNG.

        Args:
            path: str or Path. Where to write the image (atomically: see `tltk.atomic`).

        Returns:
            The path as a `pathlib.Path`.
        """
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        path = pathlib.Path(path)
        figure = Figure(figsize=(6, 4))
        axes = figure.subplots()
        axes.plot(self.learning_rates, self.losses)
        axes.axvline(
            self.suggestion,
            color="tab:red",
            linestyle="--",
            label=f"suggestion {self.suggestion:.2g}",
        )
        axes.set(
            xscale="log",
            xlabel="learning rate",
            ylabel="smoothed loss",
            title="Learning-rate range test",
        )
        axes.legend()
        with atomic.writing(path) as partial:
            figure.savefig(partial, format="png", dpi=100)
        return path


def find_lr(
    model,
    train,
    *,
    min_lr=1e-7,
    max_lr=1.0,
    steps=100,
    optimizer="adamw",
    loss=None,
    smoothing=0.98,
    divergence=4.0,
    plot_path=None,
):
    """Runs the learning-rate range test and returns the rates, losses and a suggested rate.

    Trains what is trainable now (a frozen backbone stays frozen), then restores every weight.
    Rates must be finite; an empty or unbatched `train` raises a `ValueError` before any step.

    Args:
        model: keras.Model. A tltk classifier, or any Keras model with `loss` given (a head
            model on cached features, for one).
        train: tf.data.Dataset. Batches of `(images, labels)`; repeated if shorter than `steps`.
        min_lr: float. First rate. Defaults to `1e-7`.
        max_lr: float. Last rate. Defaults to `1.0`.
        steps: int. Training steps (rates), at least 10. Defaults to `100`.
        optimizer: str or keras.optimizers.Optimizer. `"adamw"`, `"adam"`, `"sgd"` (momentum 0.9)
            or an optimizer instance to copy. Defaults to `"adamw"`.
        loss: str or keras loss. Defaults to the loss `fine_tune` would use (with several heads,
            the sum of their losses).
        smoothing: float. Moving-average factor for the loss, in [0, 1). Defaults to `0.98`.
        divergence: float. Stop once the smoothed loss exceeds this many times its minimum.
            Defaults to `4.0`.
        plot_path: str or Path. If given, save the curve there as a PNG. Defaults to `None`.

    Returns:
        An `LRFinderResult`.

    Example:

    ```python
    result = tltk.find_lr(model, data.train, plot_path="lr.png")
    tltk.fine_tune(model, data.train, data.validation, learning_rate=result.suggestion)
    ```
    """
    min_lr, max_lr, steps = _check_args(model, train, min_lr, max_lr, steps, smoothing, divergence)
    loss = loss if loss is not None else objective(model, train)[0]
    loss_fn = combined_loss(loss) if isinstance(loss, dict) else keras.losses.get(loss)
    rates = min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))
    variables = model.trainable_variables
    if not variables:
        raise ValueError(f"Model {model.name!r} has nothing trainable: unfreeze something first.")
    with model.distribute_strategy.scope():  # the model's strategy, if built under one
        opt = _optimizer(optimizer, min_lr)
        opt.build(variables)

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            value = loss_fn(y, model(x, training=True))
            if model.losses:
                value = value + tf.add_n(model.losses)
        opt.apply(tape.gradient(value, variables), variables)
        return value

    saved = model.get_weights()
    raw, smoothed, average = [], [], 0.0
    try:
        for step, batch in zip(range(steps), train.repeat()):
            opt.learning_rate = float(rates[step])
            value = float(train_step(batch[0], batch[1]))
            raw.append(value)
            average = smoothing * average + (1 - smoothing) * value
            smoothed.append(average / (1 - smoothing ** (step + 1)))
            if not np.isfinite(value) or smoothed[-1] > divergence * min(smoothed):
                break
    finally:
        model.set_weights(saved)
    result = LRFinderResult(
        rates[: len(raw)], np.array(smoothed), np.array(raw), _suggest(rates, smoothed)
    )
    if plot_path is not None:
        result.plot(plot_path)
    return result


def _suggest(rates, smoothed):
    """The rate of steepest descent of the smoothed loss (per log-rate), before its minimum."""
    losses = np.asarray(smoothed)
    finite = np.where(np.isfinite(losses), losses, np.inf)
    lowest = int(np.argmin(finite))
    skip = len(losses) // 10  # the first steps' average is too noisy to trust
    if lowest - skip < 2:
        return float(rates[lowest] / 10)
    slopes = np.gradient(losses[: lowest + 1], np.log(rates[: lowest + 1]))
    return float(rates[skip + int(np.argmin(slopes[skip:]))])


def _optimizer(optimizer, learning_rate):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config(
            {**optimizer.get_config(), "learning_rate": learning_rate}
        )
    choices = {
        "adamw": lambda: keras.optimizers.AdamW(learning_rate),
        "adam": lambda: keras.optimizers.Adam(learning_rate),
        "sgd": lambda: keras.optimizers.SGD(learning_rate, momentum=0.9),
    }
    if optimizer not in choices:
        raise ValueError(
            f"`optimizer` must be one of {list(choices)} or a Keras optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    return choices[optimizer]()


def _check_args(model, train, min_lr, max_lr, steps, smoothing, divergence):
    """Checks `find_lr`'s arguments; returns `(min_lr, max_lr, steps)` as float, float, int."""
    check_batched(model, train, "train")
    min_lr, max_lr = real("min_lr", min_lr, "(0, inf)"), real("max_lr", max_lr, "(0, inf)")
    real("divergence", divergence, "(0, inf)")
    if max_lr <= min_lr:
        raise ValueError(
            f"`max_lr` must be greater than `min_lr`. Received: min_lr={min_lr}, max_lr={max_lr}"
        )
    steps = integer("steps", steps, minimum=10)
    real("smoothing", smoothing, "[0, 1)")
    first_batch(train, "train")
    return min_lr, max_lr, steps
