"""`fine_tune`: train the head on a frozen backbone, then unfreeze from the top at lower rates.

The recipe of fastai's `fine_tune`, over tltk's primitives: `freezing` (groups, BatchNorm policy),
`feature_cache` (stage 1 on cached backbone features), `schedules` (warmup + cosine per stage),
`lr_multipliers` (a rate per group) and `run_state` (best weights, resumable checkpoints).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from tltk import freezing
from tltk.argcheck import is_integer
from tltk.feature_cache import FeatureCache, cut_layer
from tltk.lr_multipliers import decayed_multipliers, discriminative_optimizer
from tltk.objectives import objective
from tltk.run_state import BestTracker, RunState
from tltk.schedules import warmup_cosine
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


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` did.

    Attributes:
        model: keras.Model. The trained model (the same object that was passed in).
        stages: list of dict. Per stage: `"unfrozen"` (backbone groups), `"epochs"`,
            `"learning_rates"` (`{group: peak rate}`) and `"cached"` (trained on cached features).
        histories: list of dict. Per stage, `{metric: [value per epoch]}` as `History.history`.
        monitor: str. The validation metric that chose the weights, e.g. `"val_accuracy"`.
        best_metric: float. Its best value, which the returned weights have.
        best_stage: int. The stage it came from (1 is the head stage).
        best_epoch: int. The epoch in that stage (0-based).
        stage1_metric: float or None. The best value of stage 1, if stage 1 ran.
        restored_stage1: bool. Whether later stages did not beat stage 1, so its weights were kept.
        diverged: list of tuple. `(stage, epoch)` of each stage stopped early because its
            training loss became NaN or infinite (the weights of that epoch are never kept).
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


def fine_tune(
    model,
    train,
    validation,
    *,
    head_epochs=5,
    epochs=10,
    unfreeze=UNFREEZE,
    learning_rate=1e-3,
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
    monitor="val_accuracy",
    verbose=1,
):
    """Trains a tltk classifier in stages and ends with its best weights by validation metric.

    Stage 1 trains the head on the frozen backbone (on cached backbone features where valid).
    Then the backbone is unfrozen (all at once by default, or from the top in stages) and trains
    with warmup then cosine decay, the group `k` steps below the head at
    `fine_tune_lr * lr_decay ** k`. Every stage starts from the best weights so far, and the run
    ends with the best weights of all: if later stages do not beat stage 1, the stage-1 weights
    are kept, and `fine_tune` says so.

    A stage whose training loss becomes NaN or infinite (it diverged) stops there with a warning,
    and the next stage starts from the best weights so far; `FineTuneResult.diverged` lists it.
    Integers may be numpy integers; rates must be finite. Datasets are checked before training:
    batched, `validation` not empty, labels within the model's classes.

    Args:
        model: tltk.TransferModel. A model from `tltk.build_classifier` or
            `tltk.build_text_classifier` (or one of them reloaded); trained in place.
        train: tf.data.Dataset. Batches of `(images, labels)` (raw pixels 0..255); labels are
            class indexes, one-hot or multi-hot, as the model's output requires.
        validation: tf.data.Dataset. Batches like `train`; chooses the weights.
        head_epochs: int. Epochs of stage 1 (head only); `0` skips it. Defaults to `5`.
        epochs: int. Epochs of all later stages together; `0` trains the head only.
            Defaults to `10`.
        unfreeze: str or list. `"gradual"`: one more group per stage, up to all of them (as many
            stages as groups, or `epochs` if fewer, spread evenly over the groups); the last stage
            gets half of `epochs`, the others share the rest. `"all"`: one stage with everything.
            Or a list of stages, each a number of groups from the top, a list of group names, or
            `"all"`, sharing `epochs` evenly (any remainder to the last). Defaults to `"all"`
            (fastai's `fine_tune`).
        learning_rate: float. Peak rate of stage 1. Defaults to `1e-3`.
        fine_tune_lr: float. Peak rate of the head in later stages. Defaults to `learning_rate / 2`
            (as fastai's `fine_tune`).
        lr_decay: float. Rate factor per group below the head, in (0, 1]. Defaults to `0.7`
            (ULMFiT used `1 / 2.6` with gradual unfreezing).
        warmup: float. Fraction of each stage's steps spent warming up. Defaults to `0.1`.
        weight_decay: float. Decoupled weight decay for `"adamw"` and `"sgd"`. Defaults to `1e-2`.
        optimizer: str or keras.optimizers.Optimizer. `"adamw"`, `"adam"`, `"sgd"` (momentum
            0.9), or an optimizer used as a template (its class and settings; the rate is
            replaced). Defaults to `"adamw"`.
        class_weight: dict. `{class: weight}`: keys are class indexes, or class names once
            `model.class_names` is set; weights are finite numbers >= 0, and a class left out
            weighs 1. Checked before training. Defaults to `None`.
        early_stopping: bool or int. Stop a stage after this many epochs (`True`: 5) without
            improvement of `monitor`, counted from the middle of the stage. Defaults to `True`.
        callbacks: callback or sequence. Extra Keras callbacks for every stage. In a cached stage
            they see the head model. Defaults to `()`.
        checkpoint_dir: str or Path. Folder for checkpoints: a killed run called again with the
            same model, data and settings resumes where it stopped, and a finished one returns
            its result with a warning. A call with anything else that changes the result (a
            setting, the class count or names, the data's spec, batches or first batch) is
            refused with an error naming each difference: pass a new folder to train anew.
            Defaults to `None`.
        cache_features: bool. Train stage 1 on cached backbone features when the model allows
            it (see `tltk.feature_cache`). Defaults to `True`.
        augmented_views: int. With an augmentation layer, how many augmented views of the
            training set stage 1 caches. Defaults to `4`.
        train_bn: bool. Let BatchNorm layers of unfrozen groups train. Defaults to the model's
            own setting (`model.train_bn`, from `build_classifier(train_bn=...)`).
        loss: str or keras loss. Defaults to one chosen from the output activation and the labels
            (see `tltk.objectives.objective`).
        monitor: str. Validation metric that chooses the weights; `"val_loss"` is minimised,
            anything else maximised, and a tie goes to the epoch with the lower `val_loss`.
            Defaults to `"val_accuracy"`.
        verbose: int. 0 silent, 1 progress bars and stage lines, 2 one line per epoch.
            Defaults to `1`.

    Returns:
        A `FineTuneResult`. The model itself is trained in place and left as the last stage set
        it: those groups trainable, compiled with that stage's optimizer.

    Example:

    ```python
    data = tltk.data.from_directory("photos", image_size=(224, 224))
    model = tltk.build_classifier("mobilenet_v2", data.num_classes)
    result = tltk.fine_tune(model, data.train, data.validation, head_epochs=5, epochs=10)
    print(result.best_metric, result.best_stage)
    ```
    """
    model = as_transfer_model(model)
    s = check_settings(**locals())  # the checked settings, a `training_inputs.Settings`
    check_data(model, train, validation)
    stages = ([[]] if s.head_epochs else []) + _plan(model, s.unfreeze, s.epochs)
    stage_epochs = ([s.head_epochs] if s.head_epochs else []) + _split(
        s.epochs, len(stages) - bool(s.head_epochs), gradual=s.unfreeze == "gradual"
    )
    steps = _steps_per_epoch(train)
    mode = "min" if s.monitor.endswith("loss") else "max"
    checkpointed = s.checkpoint_dir is not None  # only then is the fingerprint (it reads data) used
    run = fingerprint(s, stages, stage_epochs, model, train, validation) if checkpointed else {}
    state = RunState.resume(run, len(stages), mode, s.checkpoint_dir)
    if state.best_weights is not None:
        model.set_weights(state.best_weights)
    records = []
    for index, (unfrozen, n_epochs) in enumerate(zip(stages, stage_epochs)):
        freezing.freeze(model)
        if unfrozen:
            freezing.unfreeze(model, unfrozen, train_bn=s.train_bn)
        peak = s.learning_rate if not unfrozen else s.fine_tune_lr
        base = _optimizer(
            s.optimizer, warmup_cosine(peak, steps * n_epochs, warmup=s.warmup), s.weight_decay
        )
        multipliers = decayed_multipliers(model, s.lr_decay)
        cached = not unfrozen and s.cache_features and cut_layer(model) is not None
        records.append(
            {
                "unfrozen": list(unfrozen),
                "epochs": n_epochs,
                "cached": cached,
                "learning_rates": {g: peak * m for g, m in multipliers.items()},
            }
        )
        if index < state.completed:
            continue
        if s.verbose:
            rates = ", ".join(f"{g} {r:.2g}" for g, r in records[-1]["learning_rates"].items())
            print(
                f"Stage {index + 1}/{len(stages)}: {n_epochs} epoch(s), "
                f"{'cached features, ' if cached else ''}learning rates: {rates}"
            )
        if unfrozen:
            base = discriminative_optimizer(
                base, {g: m for g, m in multipliers.items() if m != 1}, model=model
            )
        stage_loss, metrics = objective(model, train, loss=s.loss)
        stage_callbacks = _stage_callbacks(model, state, index, n_epochs, mode, s) + s.callbacks
        if cached:
            cache = FeatureCache(model, train, validation, views=s.augmented_views)
            cache.fit(
                n_epochs,
                optimizer=base,
                loss=stage_loss,
                metrics=metrics,
                callbacks=stage_callbacks,
                class_weight=s.class_weight,
                verbose=s.verbose,
            )
        else:
            model.compile(optimizer=base, loss=stage_loss, metrics=metrics)
            try:
                model.fit(
                    train,
                    validation_data=validation,
                    epochs=n_epochs,
                    class_weight=s.class_weight,
                    callbacks=stage_callbacks,
                    shuffle=False,
                    verbose=s.verbose,
                )
            except tf.errors.InvalidArgumentError as error:
                clear = label_range_error(error, model)
                if clear is None:
                    raise
                raise clear from error
        if state.best_weights is not None:
            model.set_weights(state.best_weights)
        state.completed = index + 1
        state.save()
    if not model.compiled:  # only the cached head model was fitted
        stage_loss, metrics = objective(model, train, loss=s.loss)
        model.compile(
            optimizer=_optimizer(s.optimizer, s.learning_rate, s.weight_decay),
            loss=stage_loss,
            metrics=metrics,
        )
    return _result(
        model, state, records, s.monitor, head_stage=bool(s.head_epochs), verbose=s.verbose
    )


def _stage_callbacks(model, state, index, n_epochs, mode, settings):
    callbacks = [BestTracker(model, state, index, settings.monitor)]
    if settings.checkpoint_dir is not None:
        folder = f"{settings.checkpoint_dir}/stage_{index + 1}"
        callbacks.insert(0, keras.callbacks.BackupAndRestore(folder))
    if settings.patience:
        # Not before mid-stage: the rate is still high then; gains come in the cosine tail.
        start = n_epochs // 2
        callbacks.append(
            keras.callbacks.EarlyStopping(
                settings.monitor, patience=settings.patience, mode=mode, start_from_epoch=start
            )
        )
    return callbacks


def _result(model, state, records, monitor, *, head_stage, verbose):
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
    stage1 = (max if state.mode == "max" else min)(histories[0][monitor]) if head_stage else None
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
    )


def _plan(model, unfreeze, epochs):
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
