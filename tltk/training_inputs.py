"""`fine_tune`'s inputs, checked before anything trains: its settings as one record, its datasets,
and the fingerprint that a checkpointed run must match to resume.

The fingerprint holds the settings that change the result, the model's outputs and weight shapes,
and the data: each dataset's element spec, batch count and a digest of its first batch (when two
reads give the same batch; a dataset shuffled on every read is known by its spec and size).
"""

from __future__ import annotations

import dataclasses
import hashlib

import keras
import numpy as np
import tensorflow as tf

from tltk import regularizers, replay as replays
from tltk.argcheck import integer, real
from tltk import distribute
from tltk.objectives import check_class_weight, check_labels, is_multi_head
from tltk.stages import check_stages, plan_stages

OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclasses.dataclass(frozen=True)
class Settings:
    """`fine_tune`'s arguments after `check_settings`: checked, with their defaults resolved.

    `stages` is the plan that runs (`fine_tune`'s `stages`, or the one `tltk.plan_stages` makes
    from its arguments; rates may still be `"auto"`), `class_weight` covers every class and
    `callbacks` is a list; the other fields are `fine_tune`'s arguments.
    """

    stages: list
    regularizer: str | None
    regularizer_strength: float | None
    fisher: object  # a `regularizers.Fisher` (fingerprinted by a digest of its values)
    replay: object  # a `replay.Replay` (fingerprinted by its weight and the source head's weights)
    head_epochs: int | str
    epochs: int
    unfreeze: object
    learning_rate: float | str
    fine_tune_lr: float | None
    lr_decay: float
    warmup: float
    weight_decay: float
    optimizer: object
    class_weight: dict | None
    early_stopping: bool | int
    callbacks: list
    checkpoint_dir: object
    cache_features: bool
    known_features: object  # `cache_features` when it is a `feature_cache.KnownFeatures`
    augmented_views: int
    train_bn: bool
    loss: object
    loss_weights: dict | None
    monitor: str
    verbose: int

    def fingerprint(self):
        """The settings that change the result, as JSON-ready values, by name."""
        values = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name
            not in ("callbacks", "checkpoint_dir", "verbose", "known_features", "fisher", "replay")
        }
        values["stages"] = [stage.as_dict() for stage in self.stages]
        values["optimizer"] = _describe(self.optimizer)
        values["loss"] = _describe(self.loss)
        if self.fisher is not None:
            digest = hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in self.fisher.values))
            values["fisher"] = digest.hexdigest()
        if self.replay is not None:
            head = self.replay.source_model.get_weights()
            values["replay"] = {
                "weight": self.replay.weight,
                "source": _digest(*(np.asarray(w).tobytes() for w in head)),
                "data": str(self.replay.data.element_spec),
            }
        return values


def check_settings(
    *,
    model,
    head_epochs,
    epochs,
    unfreeze,
    learning_rate,
    fine_tune_lr,
    lr_decay,
    warmup,
    weight_decay,
    optimizer,
    class_weight,
    early_stopping,
    callbacks,
    checkpoint_dir,
    cache_features,
    augmented_views,
    train_bn,
    loss,
    loss_weights,
    monitor,
    stages,
    regularizer,
    regularizer_strength,
    fisher,
    replay,
    verbose,
    **_,
):
    """Checks `fine_tune`'s settings (it passes its `locals()`) and returns them as `Settings`.

    Raises a `ValueError` naming the first bad argument and what was received.
    """
    regularizer, regularizer_strength = regularizers.check(
        regularizer, regularizer_strength, fisher, model
    )
    plan = plan_stages(
        model,
        head_epochs=head_epochs,
        epochs=epochs,
        unfreeze=unfreeze,
        learning_rate=learning_rate,
        fine_tune_lr=fine_tune_lr,
        early_stopping=early_stopping,
        cache_features=cache_features,
    )  # checks these arguments
    if not isinstance(optimizer, keras.optimizers.Optimizer) and optimizer not in OPTIMIZERS:
        raise ValueError(
            f"`optimizer` must be one of {OPTIMIZERS} or a Keras optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    if not isinstance(monitor, str) or not monitor.startswith("val_"):
        raise ValueError(
            "`monitor` must name a validation metric such as 'val_accuracy'. "
            f"Received: monitor={monitor!r}"
        )
    if (
        is_multi_head(model)
        and monitor in ("val_accuracy", "accuracy")
        and set(model.tasks.values()) == {"regression"}
    ):
        raise ValueError(
            f"Model {model.name!r} has only regression heads, which have no accuracy: pass "
            "monitor='val_loss' (or a head's metric, e.g. 'val_<head>_mae' with a lower-is-"
            f"better name ending in 'loss'). Received: monitor={monitor!r}"
        )
    return Settings(
        stages=plan if stages is None else check_stages(model, stages),
        head_epochs=head_epochs if isinstance(head_epochs, str) else int(head_epochs),
        epochs=int(epochs),
        unfreeze=unfreeze,
        learning_rate=learning_rate,
        fine_tune_lr=fine_tune_lr,
        lr_decay=real("lr_decay", lr_decay, "(0, 1]"),
        warmup=real("warmup", warmup, "[0, 1)"),
        weight_decay=real("weight_decay", weight_decay, "[0, inf)"),
        optimizer=optimizer,
        class_weight=check_class_weight(class_weight, model),
        early_stopping=early_stopping if isinstance(early_stopping, bool) else int(early_stopping),
        callbacks=_callbacks(callbacks),
        checkpoint_dir=checkpoint_dir,
        cache_features=bool(cache_features),
        known_features=None if isinstance(cache_features, bool) else cache_features,
        augmented_views=integer("augmented_views", augmented_views, minimum=1),
        train_bn=bool(model.train_bn if train_bn is None else train_bn),
        loss=loss,
        loss_weights=_loss_weights(loss_weights, model),
        monitor=monitor,
        regularizer=regularizer,
        regularizer_strength=regularizer_strength,
        fisher=fisher,
        replay=replays.check(replay, model),
        verbose=verbose,
    )


def _loss_weights(loss_weights, model):
    """`{head: weight}` for a model with several heads (1.0 where unnamed), else `None`."""
    if loss_weights is None:
        return None
    heads = list(model.heads)
    if not is_multi_head(model) or not isinstance(loss_weights, dict):
        raise ValueError(
            f"`loss_weights` weighs the heads of a model with several heads, as a dict "
            f"{{head: weight}}; model {model.name!r} has heads {heads}. "
            f"Received: loss_weights={loss_weights!r}"
        )
    unknown = [h for h in loss_weights if h not in heads]
    if unknown:
        raise ValueError(
            f"`loss_weights` names heads {unknown} the model does not have; its heads are "
            f"{heads}. Received: loss_weights={loss_weights!r}"
        )
    return {h: real(f"loss_weights[{h!r}]", loss_weights.get(h, 1.0), "[0, inf)") for h in heads}


def check_data(model, train, validation):
    """Checks that both datasets yield batches the model takes, `validation` is not empty, and
    its first batch's labels are classes of the model."""
    if is_multi_head(model) and distribute.is_multi_worker(model.distribute_strategy):
        raise ValueError(
            f"Model {model.name!r} has several heads, which tltk's multi-worker training step "
            "does not train yet: train it on one machine (or under a MirroredStrategy)."
        )
    for name, dataset in (("train", train), ("validation", validation)):
        check_batched(model, dataset, name)
    check_labels(first_batch(validation, "validation")[1], model, "The first batch of `validation`")


def check_batched(model, dataset, name):
    """Raises a `ValueError` unless `dataset` yields `(inputs, labels, ...)` batches for `model`."""
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"`{name}` must be a tf.data.Dataset of (inputs, labels) batches. "
            f"Received: {name}={type(dataset).__name__}"
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            f"`{name}` must yield (inputs, labels) batches. Received: element_spec={spec}"
        )
    rank = spec[0].shape.rank
    if rank is not None and rank == len(model.inputs[0].shape) - 1:
        raise ValueError(
            f"`{name}` yields single examples (inputs of shape {tuple(spec[0].shape)}), not "
            f"batches: batch it first, e.g. `{name}.batch(32)`. Received: element_spec={spec}"
        )


def first_batch(dataset, name):
    """The first batch of `dataset`; a `ValueError` naming `name` if it yields none."""
    for batch in dataset.take(1):
        return batch
    raise ValueError(
        f"`{name}` is empty: it yields no batches. Pass a dataset with at least one batch. "
        f"Received: {name} of 0 batches"
    )


def fingerprint(settings, model, train, validation):
    """What a checkpointed run must match to resume: settings, stage plan, model and data."""
    return {
        **settings.fingerprint(),
        "model": {
            "outputs": _widths(model),
            "class_names": model.class_names,
            "weight_shapes": _digest(str([tuple(w.shape) for w in model.weights]).encode()),
        },
        "data": {
            name: {
                "element_spec": str(dataset.element_spec),
                "batches": int(dataset.cardinality()),
                "first_batch": _first_batch_digest(dataset, name),
            }
            for name, dataset in (("train", train), ("validation", validation))
        },
    }


def label_range_error(error, model):
    """A clear `ValueError` for TensorFlow's error on a label outside the model's classes, or
    `None` for any other error."""
    message = str(error)
    if "Received a label value of" not in message:
        return None
    value = message.split("Received a label value of")[1].split()[0]
    units = _widths(model)
    return ValueError(
        f"`train` or `validation` holds label {value}, but the model has {units} output(s): "
        "build it with `num_classes` equal to the data's class count (e.g. `data.num_classes`), "
        "or fix the labels."
    )


def _widths(model):
    """The output width of a one-head model (as checkpoints of earlier runs recorded it), else
    `{head: width}`."""
    widths = {head: int(layers[-1].units) for head, layers in model.heads.items()}
    return next(iter(widths.values())) if len(widths) == 1 else widths


def _callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)) or not all(
        isinstance(c, keras.callbacks.Callback) for c in callbacks
    ):
        raise ValueError(
            "`callbacks` must be a Keras callback or a list of them. "
            f"Received: callbacks={callbacks!r}"
        )
    return list(callbacks)


def _describe(value):
    """An optimizer or loss as JSON-ready data: its class and settings (a rate is left out)."""
    if isinstance(value, keras.optimizers.Optimizer):
        config = value.get_config()
        skip = ("name", "learning_rate")
        return {"class": type(value).__name__, **{k: v for k, v in config.items() if k not in skip}}
    if isinstance(value, keras.losses.Loss):
        return {"class": type(value).__name__, **value.get_config()}
    return (
        value
        if value is None or isinstance(value, str)
        else getattr(value, "__name__", repr(value))
    )


def _first_batch_digest(dataset, name):
    digests = {
        _digest(*(tf.io.serialize_tensor(t).numpy() for t in tf.nest.flatten(batch)))
        for batch in (first_batch(dataset, name) for _ in range(2))
    }
    return digests.pop() if len(digests) == 1 else "differs between reads"


def _digest(*parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]
