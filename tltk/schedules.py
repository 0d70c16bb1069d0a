"""Learning-rate schedules for fine-tuning: linear warmup then cosine decay; a scaled schedule."""

from __future__ import annotations

import keras

from tltk.argcheck import integer, real


def warmup_cosine(peak_lr, total_steps, *, warmup=0.1, alpha=0.0):
    """Linear warmup to `peak_lr`, then cosine decay to `alpha * peak_lr`, over `total_steps` steps.

    The first step already trains (at `peak_lr / (warmup_steps + 1)`), so no step is wasted at a
    rate of zero. The result is Keras' own `CosineDecay`, so it serializes with the model.

    Args:
        peak_lr: float. Learning rate at the end of warmup.
        total_steps: int. Optimizer steps the schedule covers, warmup included (at least 1).
        warmup: float. Fraction of `total_steps` spent warming up, in [0, 1). Defaults to `0.1`.
        alpha: float. Final learning rate as a fraction of `peak_lr`. Defaults to `0.0`.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Example:

    >>> schedule = warmup_cosine(1e-3, 100, warmup=0.1)
    >>> round(float(schedule(10)), 6), round(float(schedule(55)), 6)
    (0.001, 0.0005)
    """
    peak_lr = real("peak_lr", peak_lr, "(0, inf)")
    total_steps = integer("total_steps", total_steps, minimum=1)
    warmup = real("warmup", warmup, "[0, 1)")
    alpha = real("alpha", alpha, "[0, 1]")
    warmup_steps = int(round(warmup * total_steps))
    decay_steps = max(total_steps - warmup_steps, 1)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(peak_lr, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        peak_lr / (warmup_steps + 1),
        decay_steps,
        alpha=alpha,
        warmup_target=peak_lr,
        warmup_steps=warmup_steps,
    )


@keras.saving.register_keras_serializable(package="tltk")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Another schedule multiplied by a constant: the rate of one group under discriminative rates.

    Args:
        schedule: keras.optimizers.schedules.LearningRateSchedule. The schedule to scale.
        factor: float. The multiplier, positive.

    Example:

    >>> base = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.5)
    >>> round(float(ScaledSchedule(base, 0.1)(10)), 6)
    0.0005
    """

    def __init__(self, schedule, factor):
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                f"`schedule` must be a keras LearningRateSchedule. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.factor = real("factor", factor, "(0, inf)")

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "factor": self.factor,
        }
