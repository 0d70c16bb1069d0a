"""`fine_tune`: train the head on a frozen backbone to convergence, then unfreeze it at lower rates.

The recipe of fastai's `fine_tune`, over tltk's public primitives: a stage plan
(`tltk.plan_stages`, a list of `tltk.Stage`), the learning-rate range test (`tltk.find_lr`),
`freezing` (groups, BatchNorm policy), `feature_cache` (the head stage on cached backbone features),
`probe` (a linear head fitted by L-BFGS there),
`schedules`, `lr_multipliers` (a rate per group) and `run_state` (best weights, checkpoints), run by
one stage runner.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from tltk import distribute, freezing, regularizers
from tltk.feature_cache import FeatureCache, cut_layer
from tltk.lr_finder import find_lr
from tltk.lr_multipliers import decayed_multipliers, discriminative_optimizer
from tltk.objectives import check_class_weight, combined_loss, is_multi_head, objective
from tltk.probe import fit_probe, linear_layer
from tltk.replay import trainer as replay_trainer
from tltk.run_callbacks import ContinuousRun, HeadsAccuracy
from tltk.run_state import BestTracker, RunState
from tltk.schedules import warmup_cosine
from tltk.stages import AUTO, Stage, is_auto, resolve_rates
from tltk.training_inputs import check_data, check_settings, fingerprint, label_range_error
from tltk.transfer_model import as_transfer_model

# The default recipe after stage 1 is fastai's `fine_tune` for vision: unfreeze everything at once,
# each group at 0.7 x the rate of the group above. On the few-shot digits it was the best of 10
# settings on development seeds 3-7 (averaged over the find_lr and the fixed rate; at the fixed rate
# alone no decay at all was higher), and on seeds 8-12, not used to choose it, it gains more over
# head-only training than ULMFiT's gradual unfreezing with 1/2.6 per group (the previous default):
# +1.6 / +3.1 points against +0.9 / +1.8 at the find_lr / fixed rate
# (`python bench/bench_training.py --part recipes`). Gradual unfreezing trains the lower groups in
# its last stage only, and at 1/2.6 per group they barely move.
UNFREEZE = "all"
LR_DECAY = 0.7
# The range test of `learning_rate="auto"`: rates scanned, steps (one batch each).
LR_RANGE = dict(min_lr=1e-6, max_lr=10.0, steps=100)
# Its suggestion is used no lower than this: when the smoothed loss is lowest in the test's first,
# noisy steps, the suggestion is a tenth of a tiny rate, at which a head barely trains; at 1e-3 the
# converged head on the few-shot digits was as good as at the suggestion (95.2% against 95.0%
# validation accuracy, see `tltk.stages.FINE_TUNE_FACTOR`).
MIN_AUTO_RATE = 1e-3


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` did.

    Attributes:
        model: keras.Model. The trained model (the same object that was passed in).
        stages: list of dict. Per stage, its `tltk.Stage` fields (`"unfrozen"`, `"epochs"`,
            `"learning_rate"`, `"cached"`, `"converge"`, `"patience"`) with the rates chosen,
            `"learning_rates"` (`{group: peak rate}`) and `"trainable_fraction"` (of all the
            model's parameters, `tltk.freezing.trainable_fraction`).
        histories: list of dict. Per stage, `{metric: [value per epoch]}` as `History.history`.
        monitor: str. The validation metric that chose the weights, e.g. `"val_accuracy"`.
        best_metric: float. Its best value, which the returned weights have.
        best_stage: int. The stage it came from (1 is the head stage).
        best_epoch: int or None. The epoch in that stage (0-based); `None` when the weights are
            stage 1's linear probe.
        stage1_metric: float or None. The best value of stage 1, if stage 1 ran.
        restored_stage1: bool. Whether later stages did not beat stage 1, so its weights were kept.
        diverged: list of tuple. `(stage, epoch)` of each stage stopped early because its
            training loss became NaN or infinite (the weights of that epoch are never kept).
        learning_rate: float or None. The head's rate (stage 1's), as chosen or given.
        fine_tune_lr: float or None. The head's rate in the first stage that unfreezes the
            backbone, if there is one.
        lr_finder: tltk.lr_finder.LRFinderResult or None. The range test that chose the rates
            (`learning_rate="auto"`; `None` for given rates or a resumed run).
        probe: dict or None. The linear probe of the head stage (`tltk.Stage.probe`): its
            `"stage"`, `"C"`, validation logs (`"val_loss"`, ...) and whether it was `"kept"`
            (no epoch before it had both a lower validation loss and at least its `monitor`; a
            later stage may still beat it); `None` where none was fitted (a head that is not
            linear, no validation data).
    """

    model: keras.Model
    stages: list
    histories: list
    monitor: str
    best_metric: float
    best_stage: int
    best_epoch: int
    stage1_metric: float | None
    restored_stage1: bool
    diverged: list
    learning_rate: float | None = None
    fine_tune_lr: float | None = None
    lr_finder: object = None
    probe: dict | None = None

    @property
    def trainable_fraction(self) -> float:
        """The largest fraction of the model's parameters that a stage trained (a LoRA model:
        its adapters and head)."""
        return max(stage["trainable_fraction"] for stage in self.stages)


def fine_tune(
    model,
    train,
    validation,
    *,
    head_epochs=AUTO,
    epochs=10,
    unfreeze=UNFREEZE,
    learning_rate=AUTO,
    fine_tune_lr=None,
    lr_decay=LR_DECAY,
    warmup=0.1,
    weight_decay=1e-2,
    optimizer="adamw",
    class_weight=None,
    early_stopping=True,
    callbacks=(),
    checkpoint_dir=None,
    cache_features=True,
    augmented_views=4,
    train_bn=None,
    loss=None,
    loss_weights=None,
    monitor="val_accuracy",
    stages=None,
    regularizer=None,
    regularizer_strength=None,
    fisher=None,
    replay=None,
    verbose=1,
):
    """Trains a tltk classifier in stages and ends with its best weights by validation metric.

    Stage 1 trains the head on the frozen backbone. On cached backbone features (where valid) an
    epoch costs milliseconds, so it trains to convergence: at a constant rate until the
    validation loss has not improved for 10 epochs, keeping its best epoch; a linear head is
    also fitted as an L2 logistic-regression probe by L-BFGS (`tltk.probe`), which replaces the
    trained head unless that is better on validation loss and `monitor` both. Then the backbone
    is
    unfrozen (all at once by default, or from the top in stages) and trains with warmup then
    cosine decay, the group `k` steps below the head at `fine_tune_lr * lr_decay ** k`. Every
    stage starts from the best weights so far, and the run ends with the best weights of all: if
    later stages do not beat stage 1 (say, at too high a `fine_tune_lr`), the stage-1 weights
    are kept, and `fine_tune` says so. `tltk.plan_stages` shows the stages these arguments make;
    `stages=` runs another plan.

    With `learning_rate="auto"`, the head's rate is the suggestion of the learning-rate range
    test (`tltk.find_lr`, on the cached features: a fraction of a second), at least 1e-3, and
    the fine-tuning rate half of it; both are printed and returned.

    A stage whose training loss becomes NaN or infinite (it diverged) stops there with a warning,
    and the next stage starts from the best weights so far; `FineTuneResult.diverged` lists it.
    Integers may be numpy integers; rates must be finite. Datasets are checked before training:
    batched, `validation` not empty, labels within the model's classes.

    Args:
        model: tltk.TransferModel. A model from `tltk.build_classifier` or
            `tltk.build_text_classifier` (or one of them reloaded); trained in place.
        train: tf.data.Dataset. Batches of `(images, labels)` (raw pixels 0..255); labels are
            class indexes, one-hot or multi-hot, as the model's output requires; with several
            heads a dict `{head: labels}` (`tltk.data.from_arrays(images, {head: labels})`).
            A model with several heads trains its head stage on the whole model (no feature
            cache, no linear probe: 5 epochs by default).
        validation: tf.data.Dataset. Batches like `train`; chooses the weights and when the head
            stage stops.
        head_epochs: int or str. Epochs of stage 1 (head only); `0` skips it. On cached features
            an upper bound (the stage stops once it converges); `"auto"`: 200 there, 5 without
            the cache. Defaults to `"auto"`.
        epochs: int. Epochs of all later stages together; `0` trains the head only.
            Defaults to `10`.
        unfreeze: str or list. `"gradual"`: one more group per stage, up to all of them (as many
            stages as groups, or `epochs` if fewer, spread evenly over the groups); the last stage
            gets half of `epochs`, the others share the rest. `"all"`: one stage with everything.
            Or a list of stages, each a number of groups from the top, a list of group names, or
            `"all"`, sharing `epochs` evenly (any remainder to the last). Defaults to `"all"`
            (fastai's `fine_tune`).
        learning_rate: float or str. Rate of stage 1 (its peak, without the cache). `"auto"`:
            the range test's suggestion, at least 1e-3 (`FineTuneResult.lr_finder` holds the
            test).
            Defaults to `"auto"`.
        fine_tune_lr: float. Peak rate of the head in later stages. Defaults to half the head's
            rate (as fastai's `fine_tune`).
        lr_decay: float. Rate factor per group below the head, in (0, 1]. Defaults to `0.7`
            (ULMFiT used `1 / 2.6` with gradual unfreezing).
        warmup: float. Fraction of each stage's steps spent warming up (not in a converging
            head stage). Defaults to `0.1`.
        weight_decay: float. Decoupled weight decay for `"adamw"` and `"sgd"`. Defaults to `1e-2`.
        optimizer: str or keras.optimizers.Optimizer. `"adamw"`, `"adam"`, `"sgd"` (momentum
            0.9), or an optimizer used as a template (its class and settings; the rate is
            replaced). Defaults to `"adamw"`.
        class_weight: dict. `{class: weight}`: keys are class indexes, or class names once
            `model.class_names` is set; weights are finite numbers >= 0, and a class left out
            weighs 1. Checked before training. Defaults to `None`.
        early_stopping: bool or int. Patience: stop a stage after this many epochs (`True`: 5)
            without improvement of `monitor`, counted from the middle of the stage; a head stage
            on cached features stops after this many (`True`: 10) without a lower validation
            loss. `False`: every stage runs all its epochs. Defaults to `True`.
        callbacks: callback or sequence. Keras callbacks that see the stages as one run of the
            full model: `on_train_begin` and `on_train_end` once, epochs numbered on across
            stages, `self.model` the full model even in a cached stage (so
            `keras.callbacks.CSVLogger` writes every stage's rows, `ModelCheckpoint` saves a
            model that takes images, and `TensorBoard`, installed with `tltk[tensorboard]`, logs
            every stage). One that sets `model.stop_training` ends the running stage.
            Defaults to `()`.
        checkpoint_dir: str or Path. Folder for checkpoints: a killed run called again with the
            same model, data and settings resumes where it stopped (with the rates it chose),
            and a finished one returns its result with a warning. A call with anything else that
            changes the result (a setting, the class count or names, the data's spec, batches or
            first batch) is refused with an error naming each difference: pass a new folder to
            train anew. Defaults to `None`.
        cache_features: bool or KnownFeatures. Train stage 1 on cached backbone features when
            the model allows it (see `tltk.feature_cache`); `ranking.known_features(name)` (from
            `tltk.rank_backbones`) also reuses the features the ranking computed, where the
            images are the same. Defaults to `True`.
        augmented_views: int. With an augmentation layer, how many augmented views of the
            training set stage 1 caches. Defaults to `4`.
        train_bn: bool. Let BatchNorm layers of unfrozen groups train. Defaults to the model's
            own setting (`model.train_bn`, from `build_classifier(train_bn=...)`).
        loss: str or keras loss. Defaults to one chosen from the output activation and the labels
            (see `tltk.objectives.objective`); with several heads a dict `{head: loss}` naming
            any of them.
        loss_weights: dict or None. With several heads, `{head: weight}` (1.0 for a head left
            out): the training loss is the weighted sum of the heads' losses. Defaults to
            `None` (every head weighs 1).
        monitor: str. Validation metric that chooses the weights; `"val_loss"` is minimised,
            anything else maximised, and a tie goes to the epoch with the lower `val_loss`.
            With several heads, `"val_accuracy"` is the mean of the heads' validation
            accuracies (regression heads have none), `"val_loss"` the weighted sum of their
            losses, and one head's metric is `"val_<head>_accuracy"`. Defaults to
            `"val_accuracy"`.
        stages: list of tltk.Stage. Run this plan instead of the one `tltk.plan_stages` makes
            from `head_epochs`, `epochs`, `unfreeze`, `fine_tune_lr`, `early_stopping` and
            `cache_features` (which are then not used). Defaults to `None`.
        regularizer: str or None. Keep the backbone near its weights at the call while it
            trains (`tltk.regularizers`): `"l2sp"` (L2-SP: after each step,
            `w <- w - lr * strength * (w - w0)`, decoupled as AdamW's weight decay) or `"ewc"`
            (the same weighted by `fisher`). The penalty `strength / 2 * sum (w - w0)^2` (EWC:
            weighted) is logged per epoch under its name. Defaults to `None`.
        regularizer_strength: float or None. Its strength. Defaults to
            `tltk.regularizers.DEFAULT_STRENGTH` (100 for L2-SP, 1e5 for EWC).
        fisher: tltk.regularizers.Fisher or None. For `"ewc"`: `tltk.fisher(source_model,
            source_data)`. Defaults to `None`.
        replay: tltk.Replay or None. Rehearse the source task in the stages that train the
            backbone: each step adds `replay.weight` times the frozen source head's loss on a
            source batch (`tltk.replay`; logged as `"replay_loss"`). Not under a
            `tf.distribute` strategy. Defaults to `None`.
        verbose: int. 0 silent, 1 progress bars and stage lines, 2 one line per epoch.
            Defaults to `1`.

    Returns:
        A `FineTuneResult`. The model itself is trained in place and left as the last stage set
        it: those groups trainable, compiled with that stage's optimizer.

    Example:

    ```python
    data = tltk.data.from_directory("photos", image_size=(224, 224))
    model = tltk.build_classifier("mobilenet_v2", data.num_classes)
    print(tltk.plan_stages(model, epochs=10))
    result = tltk.fine_tune(model, data.train, data.validation, epochs=10)
    print(result.learning_rate, result.best_metric, result.best_stage)
    ```
    """
    model = as_transfer_model(model)
    s = check_settings(**locals())  # the checked settings, a `training_inputs.Settings`
    check_data(model, train, validation)
    steps = _steps_per_epoch(train)
    mode = "min" if s.monitor.endswith("loss") else "max"
    checkpointed = s.checkpoint_dir is not None  # only then is the fingerprint (it reads data) used
    run = fingerprint(s, model, train, validation) if checkpointed else {}
    # Only the chief writes checkpoints; another worker writes into a temporary folder.
    with (
        regularizers.anchored(model, s.regularizer, s.regularizer_strength, s.fisher),
        distribute.write_folder(s.checkpoint_dir, model) as writes,
    ):  # anchored at the weights as passed, before a resumed run restores its own
        state = RunState.resume(run, len(s.stages), mode, s.checkpoint_dir, writes)
        if state.best_weights is not None:
            model.set_weights(state.best_weights)
        cache = _cache(model, train, validation, s, state)
        plan, finder = _choose_rates(model, train, s, state, cache)
        user = ContinuousRun(s.callbacks, model)
        records = []
        for index, stage in enumerate(plan):
            records.append(_prepare(model, stage, s))
            if index < state.completed:
                continue
            if s.verbose:
                rates = ", ".join(f"{g} {r:.2g}" for g, r in records[-1]["learning_rates"].items())
                print(
                    f"Stage {index + 1}/{len(plan)}: {'up to ' if stage.converge else ''}"
                    f"{stage.epochs} epoch(s), {'cached features, ' if stage.cached else ''}"
                    f"learning rates: {rates}"
                )
            offset = sum(len(h) for h in state.histories[:index])  # the user's epochs run on
            stage_callbacks = [*_stage_callbacks(model, state, index, stage, s), user.stage(offset)]
            _run_stage(model, stage, train, validation, s, steps, stage_callbacks, cache)
            if stage.probe:
                _probe(model, train, cache, state, index, s)
            if state.best_weights is not None:
                model.set_weights(state.best_weights)
            state.completed = index + 1
            state.save()
        user.end()
        if not model.compiled:  # a finished run, resumed: no stage ran
            with distribute.scope(model):
                stage_loss, metrics = objective(model, train, loss=s.loss)
                model.compile(
                    optimizer=_optimizer(s.optimizer, plan[0].learning_rate, s.weight_decay),
                    loss=stage_loss,
                    metrics=metrics,
                    loss_weights=s.loss_weights,
                )
        return _result(model, state, records, s, finder)


def _cache(model, train, validation, settings, state):
    """The `FeatureCache` for a cached stage still to run or an automatic rate, else `None`."""
    remaining = settings.stages[state.completed :]
    needed = any(stage.cached for stage in remaining) or (
        state.plan is None
        and is_auto(settings.learning_rate)
        and any(is_auto(stage.learning_rate) for stage in settings.stages)
    )
    if not needed or not settings.cache_features or cut_layer(model, frozen=True) is None:
        return None
    freezing.freeze(model)
    return FeatureCache(
        model, train, validation, views=settings.augmented_views, known=settings.known_features
    )


def _choose_rates(model, train, settings, state, cache):
    """The plan with every `"auto"` rate chosen, and the range test that chose them (or None).

    A resumed run keeps the rates it chose when it started (saved in its state).

    The head's rate is a head stage's own, else `learning_rate`, else (`"auto"`) the range test's
    suggestion on the cached features (at least `MIN_AUTO_RATE`); the fine-tuning rate is
    `tltk.stages.FINE_TUNE_FACTOR` times it (see the measurements there).
    """
    if state.plan is not None:
        return [Stage(**{**d, "unfrozen": tuple(d["unfrozen"])}) for d in state.plan], None
    head_rate = next(
        (s.learning_rate for s in settings.stages if not (s.unfrozen or is_auto(s.learning_rate))),
        settings.learning_rate,
    )  # a head stage's own rate, else `learning_rate`
    finder = None
    if is_auto(head_rate) and any(is_auto(stage.learning_rate) for stage in settings.stages):
        loss = objective(model, train, loss=settings.loss)[0]
        if isinstance(loss, dict):  # several heads: their weighted sum, as compile trains it
            loss = combined_loss(loss, settings.loss_weights)
        if cache is not None:
            features = tf.data.Dataset.from_tensor_slices(cache.train[0]).batch(cache.batch_size)
            finder = find_lr(
                cache.head, features, optimizer=settings.optimizer, loss=loss, **LR_RANGE
            )
        else:
            freezing.freeze(model)
            finder = find_lr(model, train, optimizer=settings.optimizer, loss=loss, **LR_RANGE)
        head_rate = distribute.agree(model, max(finder.suggestion, MIN_AUTO_RATE))
    plan = resolve_rates(settings.stages, head_rate)
    if finder is not None and settings.verbose:
        tuned = next((f", fine-tuning {s.learning_rate:.2g}" for s in plan if s.unfrozen), "")
        print(f"Learning rates from the range test: head {head_rate:.2g}{tuned}")
    state.plan = [stage.as_dict() for stage in plan]
    return plan, finder


def _prepare(model, stage, settings):
    """Freezes the model as `stage` trains it; returns the stage's record with its group rates."""
    freezing.freeze(model)
    if stage.unfrozen:
        freezing.unfreeze(model, list(stage.unfrozen), train_bn=settings.train_bn)
    multipliers = decayed_multipliers(model, settings.lr_decay)
    return {
        **stage.as_dict(),
        "learning_rates": {g: stage.learning_rate * m for g, m in multipliers.items()},
        "trainable_fraction": freezing.trainable_fraction(model),
    }


def _run_stage(model, stage, train, validation, settings, steps, callbacks, cache):
    """Trains one stage of a prepared model (see `_prepare`): the one stage runner."""
    s = settings
    rate = (
        stage.learning_rate
        if stage.converge
        else warmup_cosine(stage.learning_rate, steps * stage.epochs, warmup=s.warmup)
    )
    with distribute.scope(model):  # optimizers and metrics in the model's strategy
        optimizer = _optimizer(s.optimizer, rate, s.weight_decay)
        if stage.unfrozen:
            multipliers = decayed_multipliers(model, s.lr_decay)
            optimizer = discriminative_optimizer(
                optimizer, {g: m for g, m in multipliers.items() if m != 1}, model=model
            )
        stage_loss, metrics = objective(model, train, loss=s.loss)
        # The full model is compiled with the optimizer that trains the head in a cached stage
        # too: callbacks see the full model, and read its optimizer (TensorBoard logs its rate).
        model.compile(
            optimizer=optimizer, loss=stage_loss, metrics=metrics, loss_weights=s.loss_weights
        )
        head_metrics = objective(model, train, loss=s.loss)[1]  # not shared: each model its own
        fitted = model
        if s.replay is not None and stage.unfrozen:  # the source head's loss added to each step
            fitted, train, validation = replay_trainer(
                model, train, validation, s.replay, stage_loss, head_metrics
            )
    if stage.cached:
        cache.fit(
            stage.epochs,
            optimizer=model.optimizer,  # as compile wrapped it: loss scaling for mixed_float16
            loss=stage_loss,
            metrics=head_metrics,
            callbacks=callbacks,
            class_weight=s.class_weight,
            verbose=s.verbose,
        )
        return
    try:
        distribute.fit(
            fitted,
            train,
            validation,
            epochs=stage.epochs,
            class_weight=s.class_weight,
            callbacks=callbacks,
            verbose=s.verbose,
        )
    except tf.errors.InvalidArgumentError as error:
        clear = label_range_error(error, model)
        if clear is None:
            raise
        raise clear from error


def _probe(model, train, cache, state, index, settings):
    """Fits stage `index`'s linear probe (`tltk.probe`) and makes it the best weights unless the
    best so far has both a lower validation loss and at least its `monitor`; records it in
    `state.probe`. Nothing for a head that is not linear, without validation data, or under a
    `tf.distribute` strategy (the head then keeps Adam's)."""
    dense = linear_layer(cache.head)
    if (
        dense is None
        or cache.validation is None
        or distribute.is_distributed(model.distribute_strategy)
    ):
        return
    class_weight = check_class_weight(settings.class_weight, model)
    probe = fit_probe(cache.train, cache.validation, dense.units, class_weight=class_weight)
    if probe is None:
        return
    dtype = dense.kernel.dtype
    dense.set_weights([probe.kernel.astype(dtype), probe.bias.astype(dtype)])
    x, y, *weights = cache.validation
    with distribute.scope(model):  # fresh metrics: the stage's were updated in the cache's graph
        loss, metrics = objective(model, train, loss=settings.loss)
        cache.head.compile(loss=loss, metrics=metrics)
    logs = cache.head.evaluate(
        x,
        y,
        sample_weight=weights[0] if weights else None,
        batch_size=cache.batch_size,
        verbose=0,
        return_dict=True,
    )
    logs = {f"val_{k}": float(v) for k, v in logs.items()}
    value, loss = logs.get(settings.monitor), logs.get("val_loss")
    # Preferred to the trained head unless that is better on both (`bench/bench_head_probe.py`).
    finite = value is not None and math.isfinite(value) and math.isfinite(loss or 0.0)
    kept = finite and not state.dominates(value, loss)
    if kept:
        state.best_value, state.best_stage, state.best_epoch = value, index, None
        state.best_loss, state.best_weights = loss, model.get_weights()
    state.probe = {"stage": index + 1, "C": probe.C, **logs, "kept": kept}
    state.save(weights=kept)
    if settings.verbose:
        print(
            f"Linear probe (L2 logistic regression, C={probe.C:.3g}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
            + (": kept." if kept else ": the trained head is better on both.")
        )


def _stage_callbacks(model, state, index, stage, settings):
    callbacks = [BestTracker(model, state, index, settings.monitor)]
    if is_multi_head(model):  # first: the others see the heads' mean accuracy
        callbacks.insert(0, HeadsAccuracy(model))
    if settings.regularizer is not None and stage.unfrozen:  # before others: they see its value
        callbacks.insert(0, regularizers.PenaltyLog(model, settings.regularizer))
    if settings.checkpoint_dir is not None:
        folder = f"stage_{index + 1}"
        callbacks.insert(
            0,
            distribute.backup_and_restore(
                f"{state.directory}/{folder}", f"{state.write_directory}/{folder}"
            ),
        )
    if stage.patience and stage.converge:
        callbacks.append(
            keras.callbacks.EarlyStopping("val_loss", patience=stage.patience, mode="min")
        )
    elif stage.patience:
        # Not before mid-stage: the rate is still high then; gains come in the cosine tail.
        mode = "min" if settings.monitor.endswith("loss") else "max"
        callbacks.append(
            keras.callbacks.EarlyStopping(
                settings.monitor,
                patience=stage.patience,
                mode=mode,
                start_from_epoch=stage.epochs // 2,
            )
        )
    return callbacks


def _result(model, state, records, settings, finder):
    monitor, verbose = settings.monitor, settings.verbose
    head_stage = not records[0]["unfrozen"]
    if state.best_value is None:
        why = (
            f"the training diverged (stage {state.diverged[0][0] + 1}, epoch "
            f"{state.diverged[0][1]}: the loss became NaN or infinite) before any epoch ended "
            "with a finite loss, and the model's weights are not usable. Lower `learning_rate` "
            "(try `tltk.find_lr`) and build the model again"
            if state.diverged
            else f"every value of {monitor!r} was NaN"
        )
        raise ValueError(f"No epoch produced a valid {monitor!r}: {why}.")
    histories = [
        {k: [logs[k] for logs in epochs] for k in (epochs[0] if epochs else {})}
        for epochs in state.histories
    ]
    stage1 = None
    if head_stage:
        probed = state.probe is not None and state.probe["stage"] == 1
        values = histories[0][monitor] + ([state.probe[monitor]] if probed else [])
        stage1 = (max if state.mode == "max" else min)(values)
    restored = head_stage and len(records) > 1 and state.best_stage == 0
    if restored and verbose:
        print(
            f"Later stages did not improve {monitor} over stage 1 ({state.best_value:.4f}); "
            "restored the stage-1 weights."
        )
    return FineTuneResult(
        model,
        records,
        histories,
        monitor,
        state.best_value,
        state.best_stage + 1,
        state.best_epoch,
        stage1,
        restored,
        [(stage + 1, epoch) for stage, epoch in state.diverged],
        records[0]["learning_rate"] if head_stage else None,
        next((r["learning_rate"] for r in records if r["unfrozen"]), None),
        finder,
        state.probe,
    )


def _steps_per_epoch(train):
    cardinality = int(train.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "`train` is infinite (repeated); pass one epoch of batches. "
            "Received: an infinite dataset"
        )
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        cardinality = int(train.reduce(0, lambda count, _: count + 1))
    if cardinality < 1:
        raise ValueError("`train` is empty. Received: a dataset of 0 batches")
    return cardinality


def _optimizer(optimizer, schedule, weight_decay):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config({**optimizer.get_config(), "learning_rate": schedule})
    decay = weight_decay or None
    if optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    if optimizer == "adam":
        return keras.optimizers.Adam(schedule)
    return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=decay)
