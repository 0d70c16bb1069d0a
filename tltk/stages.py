"""`fine_tune`'s stage plan: what trains in each stage, for how long, at what rate, on what.

A plan is a list of `Stage` records. `plan_stages` makes the default one from `fine_tune`'s
arguments (a head stage, then the backbone unfrozen from the top); a user can read it, change it,
and pass it back as `fine_tune(..., stages=...)`.
"""

from __future__ import annotations

import dataclasses
import math

from tltk import freezing
from tltk.argcheck import integer, is_integer, real
from tltk.feature_cache import cut_layer

AUTO = "auto"
HEAD_MAX_EPOCHS = 200  # `head_epochs="auto"` on cached features: an upper bound, rarely reached
HEAD_PATIENCE = 10  # epochs without a lower validation loss before a converging stage stops
UNCACHED_HEAD_EPOCHS = 5  # `head_epochs="auto"` when stage 1 runs the whole model every epoch
LATER_PATIENCE = 5  # `early_stopping=True` for the other stages, counted from mid-stage


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of `fine_tune`.

    Attributes:
        unfrozen: tuple of str. The backbone groups that train (`()`: the head alone).
        epochs: int. Epochs of the stage; with `converge`, the most it may run.
        learning_rate: float or str. Peak rate of the head; the group `k` steps below it trains
            at `lr_decay ** k` times it. `"auto"`: for a head-only stage, `fine_tune`'s
            `learning_rate` (itself `"auto"`: the range test's suggestion); for a later stage,
            `FINE_TUNE_FACTOR` times the head stage's rate. Defaults to `"auto"`.
        cached: bool. Train on cached backbone features (a head-only stage of a model
            `tltk.feature_cache.cut_layer` accepts). Defaults to `False`.
        converge: bool. Train at a constant rate until the validation loss has not improved for
            `patience` epochs (`epochs` is then an upper bound), instead of warmup and cosine
            decay over `epochs`. Defaults to `False`.
        patience: int. Early stopping, `0` for none: with `converge`, epochs without a lower
            validation loss; otherwise epochs without a better `monitor`, counted from the
            middle of the stage. Defaults to `0`.
        probe: bool. After a `cached` stage, also fit a linear probe (`tltk.probe`: L2 logistic
            regression by L-BFGS, its strength chosen on validation) when the head is one
            softmax or one-unit sigmoid `Dense` layer, and keep it unless the best epoch so far
            has both a lower validation loss and at least its `monitor`. Defaults to `False`.

    Example:

    >>> Stage(("top",), 4, 1e-4).as_dict()["unfrozen"]
    ['top']
    """

    unfrozen: tuple
    epochs: int
    learning_rate: float | str = AUTO
    cached: bool = False
    converge: bool = False
    patience: int = 0
    probe: bool = False

    def as_dict(self):
        """The stage as JSON-ready values (`unfrozen` as a list)."""
        return {**dataclasses.asdict(self), "unfrozen": list(self.unfrozen)}


def plan_stages(
    model,
    *,
    head_epochs=AUTO,
    epochs=10,
    unfreeze="all",
    learning_rate=AUTO,
    fine_tune_lr=None,
    early_stopping=True,
    cache_features=True,
):
    """The stages `fine_tune` runs for these arguments (the same names and meanings).

    Stage 1 trains the head. On cached features it converges: it stops once the validation loss
    has not improved for 10 epochs (`head_epochs`, or 200 for `"auto"`, is then an upper bound;
    `early_stopping=False` runs all of them), and a linear head is then also fitted as a linear
    probe, kept unless the trained head is better on validation (`Stage.probe`). Without the
    cache it runs `head_epochs` (`"auto"`: 5) with warmup and cosine decay. The later stages
    unfreeze the backbone as `unfreeze` says and share `epochs`, at `fine_tune_lr` (`"auto"` if
    neither rate is a number: derived from the head's rate when `fine_tune` runs).

    Args:
        model: tltk.TransferModel. The model to plan for (its layer groups; nothing changes).
        head_epochs, epochs, unfreeze, learning_rate, fine_tune_lr, early_stopping,
            cache_features: as `tltk.fine_tune` takes them.

    Returns:
        A list of `Stage`.

    Example:

    ```python
    stages = tltk.plan_stages(model, epochs=6, unfreeze=[1, "all"])
    [(s.unfrozen, s.epochs, s.cached) for s in stages]
    ```
    """
    head_epochs = head_epochs if is_auto(head_epochs) else integer("head_epochs", head_epochs)
    epochs = integer("epochs", epochs)
    if not head_epochs and not epochs:
        raise ValueError(
            "`head_epochs` and `epochs` are both 0: nothing to train. "
            "Received: head_epochs=0, epochs=0"
        )
    patience = _patience(early_stopping, LATER_PATIENCE)
    learning_rate = _rate("learning_rate", learning_rate)
    if fine_tune_lr is None:
        fine_tune_lr = AUTO if is_auto(learning_rate) else learning_rate * FINE_TUNE_FACTOR
    fine_tune_lr = _rate("fine_tune_lr", fine_tune_lr)
    stages = []
    if head_epochs:
        cached = bool(cache_features) and cut_layer(model, frozen=True) is not None
        stages.append(
            Stage(
                (),
                (HEAD_MAX_EPOCHS if cached else UNCACHED_HEAD_EPOCHS)
                if is_auto(head_epochs)
                else head_epochs,
                learning_rate,
                cached=cached,
                converge=cached,
                patience=_patience(early_stopping, HEAD_PATIENCE) if cached else patience,
                probe=cached,
            )
        )
    unfrozen = _unfrozen(model, unfreeze, epochs)
    for groups, n in zip(unfrozen, _split(epochs, len(unfrozen), gradual=unfreeze == "gradual")):
        stages.append(Stage(tuple(groups), n, fine_tune_lr, patience=patience))
    return stages


# The fine-tuning rate derives from the head's rate: FINE_TUNE_FACTOR times it (fastai's
# `fine_tune` halves its rate too). Measured on the few-shot digits (demo backbone, 20 training and
# 20 validation images per class, batches of 32, development seeds 3-5; accuracy on validation /
# on the rest of the pool, never the test split): the converged head at the range test's rate
# (0.015-0.021) reaches 95.0 / 96.3% (plain Keras `Adam(1e-3)` for 5 epochs: 67.5 / 69.6%; the
# former 5-epoch head stage: 40.5 / 43.2%); the default run (10 epochs unfrozen) at half that rate
# 96.3 / 96.7%, at a fixed fine-tuning rate of 1e-3 (about 0.06 x) 95.5 / 96.3%.
FINE_TUNE_FACTOR = 0.5


def resolve_rates(stages, head_rate):
    """`stages` with each `"auto"` rate replaced: `head_rate` for a head-only stage,
    `FINE_TUNE_FACTOR * head_rate` for a stage that unfreezes part of the backbone."""
    return [
        dataclasses.replace(
            stage,
            learning_rate=(head_rate if not stage.unfrozen else head_rate * FINE_TUNE_FACTOR),
        )
        if is_auto(stage.learning_rate)
        else stage
        for stage in stages
    ]


def check_stages(model, stages):
    """Checks a plan passed as `fine_tune(stages=...)`; returns it as a list of `Stage`."""
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ValueError(
            f"`stages` must be a non-empty list of tltk.Stage records. Received: stages={stages!r}"
        )
    names = [g.name for g in freezing.layer_groups(model)][:-1]
    cachable = cut_layer(model, frozen=True) is not None
    for i, stage in enumerate(stages):
        where = f"stages[{i}]"
        if not isinstance(stage, Stage):
            raise ValueError(f"`{where}` must be a tltk.Stage. Received: {stage!r}")
        integer(f"{where}.epochs", stage.epochs, minimum=1)
        integer(f"{where}.patience", stage.patience)
        _rate(f"{where}.learning_rate", stage.learning_rate)
        unknown = [g for g in stage.unfrozen if g not in names]
        if isinstance(stage.unfrozen, str) or unknown:
            raise ValueError(
                f"`{where}.unfrozen` must be a tuple of the group names {names}. "
                f"Received: unfrozen={stage.unfrozen!r}"
            )
        if stage.probe and not stage.cached:
            raise ValueError(
                f"`{where}` has probe=True but cached=False: the probe is fitted on cached "
                f"features. Set cached=True or probe=False. Received: {stage!r}"
            )
        if stage.cached and (stage.unfrozen or not cachable):
            raise ValueError(
                f"`{where}` cannot train on cached features: only a head-only stage of a model "
                "whose frozen backbone feeds the head directly can. Set cached=False. "
                f"Received: {stage!r}"
            )
    return list(stages)


def is_auto(value):
    """Whether `value` is the string `"auto"`."""
    return isinstance(value, str) and value == AUTO


def _patience(early_stopping, default):
    if isinstance(early_stopping, bool):
        return default if early_stopping else 0
    return integer("early_stopping", early_stopping, minimum=1)


def _rate(name, value):
    return value if is_auto(value) else real(name, value, "(0, inf)")


def _unfrozen(model, unfreeze, epochs):
    """The backbone groups unfrozen by each stage after the head stage."""
    names = [g.name for g in freezing.layer_groups(model)][:-1]
    if not epochs:
        return []
    if unfreeze == "gradual":
        count = min(len(names), epochs)
        return [
            names[len(names) - math.ceil(i * len(names) / count) :] for i in range(1, count + 1)
        ]
    if unfreeze == "all":
        return [names]
    if not isinstance(unfreeze, (list, tuple)) or not unfreeze:
        raise ValueError(
            "`unfreeze` must be 'gradual', 'all' or a non-empty list of stages. "
            f"Received: unfreeze={unfreeze!r}"
        )
    if len(unfreeze) > epochs:
        raise ValueError(
            f"{len(unfreeze)} stages need at least as many `epochs`. Received: epochs={epochs}"
        )
    stages = []
    for stage in unfreeze:
        if stage == "all":
            stages.append(names)
        elif is_integer(stage) and 1 <= stage <= len(names):
            stages.append(names[len(names) - stage :])
        elif isinstance(stage, (list, tuple)) and stage and all(s in names for s in stage):
            stages.append([n for n in names if n in stage])
        else:
            raise ValueError(
                f"Each stage of `unfreeze` must be 1..{len(names)}, 'all' or a list of the group "
                f"names {names}. Received: {stage!r}"
            )
    return stages


def _split(epochs, count, *, gradual):
    """Epochs per stage: even, or for "gradual" half of them for the last stage (all unfrozen)."""
    if gradual and count > 1:
        each = max(1, epochs // (2 * (count - 1)))
        return [each] * (count - 1) + [epochs - each * (count - 1)]
    return [epochs // count + (i >= count - epochs % count) for i in range(count)] if count else []
