"""Replay: rehearse the source task while the backbone fine-tunes on the target.

`fine_tune(..., replay=tltk.Replay(source_data, source_model))`: in each stage that trains the
backbone (not the head stage), each step also passes a batch of `source_data` through the model's
own layers up to its pooled features (the backbone being fine-tuned) and the source model's head,
and adds `weight` times that head's loss (the source model's objective) to the target loss. The
source head stays frozen: it is the reference of what the backbone knew, so the backbone must
keep features that it reads as before (a head that trained along could follow features that
drift, the forgetting replay is there to stop). The source head lives in the training step only:
nothing of it enters the model. The epoch's mean source loss is logged as `"replay_loss"` (the
logged `"loss"` stays the target's, with any regularization).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tltk import distribute
from tltk.argcheck import real
from tltk.feature_cache import _head_model
from tltk.objectives import objective
from tltk.transfer_model import TransferModel


@dataclasses.dataclass(frozen=True)
class Replay:
    """Source batches and the source head to rehearse them with, for `tltk.fine_tune(replay=)`.

    Attributes:
        data: tf.data.Dataset. Batches of source `(images, labels)` (raw pixels 0..255, the
            model's input size), cycled as long as a stage needs them.
        source_model: tltk.TransferModel. The source classifier: a model on the same backbone
            architecture (pooled features of the same width) whose head scores `data`'s labels,
            such as the classifier the backbone was pretrained in. Only its head (the layers
            after its pooled features) is used, frozen; its own backbone is not.
        weight: float. Weight of the source loss, added to the target loss. Defaults to `1.0`.

    Example:

    ```python
    source = tltk.load_model("pretrained_classifier.keras")  # the backbone under its source head
    model = tltk.build_classifier("tltk_glyphnet", data.num_classes)
    tltk.fine_tune(model, data.train, data.validation, replay=tltk.Replay(source_data, source))
    ```
    """

    data: tf.data.Dataset
    source_model: keras.Model
    # On `bench/bench_forgetting.py` (seeds 0-2; plain fine_tune kept 44% of the source accuracy
    # at 95.8% on the target): 1.0 kept 93% at 94.6%, 0.3 kept 89% at 96.3%.
    weight: float = 1.0


def check(replay, model):
    """Checks `fine_tune`'s `replay` against `model`; returns it (or None)."""
    if replay is None:
        return None
    if not isinstance(replay, Replay):
        raise ValueError(
            "`replay` must be None or tltk.Replay(source_data, source_model, weight=1.0). "
            f"Received: replay={replay!r}"
        )
    real("replay.weight", replay.weight, "[0, inf)")
    if len(model.heads) != 1:
        raise ValueError(
            f"`replay` rehearses the source task beside one target head; model {model.name!r} "
            f"has heads {list(model.heads)}. Train it without replay (or use regularizer='ewc')."
        )
    spec = replay.data.element_spec if isinstance(replay.data, tf.data.Dataset) else None
    if not (isinstance(spec, tuple) and len(spec) >= 2 and spec[0].shape.rank == 4):
        raise ValueError(
            "`replay.data` must be a tf.data.Dataset of batched source (images, labels). "
            f"Received: {spec if spec is not None else type(replay.data).__name__}"
        )
    if tuple(spec[0].shape[1:]) != tuple(model.input_shape[1:]):
        raise ValueError(
            f"`replay.data`'s images must have the model's input shape {model.input_shape[1:]}. "
            f"Received: {tuple(spec[0].shape[1:])}"
        )
    source = replay.source_model
    if not isinstance(source, TransferModel) or len(source.heads) != 1:
        raise ValueError(
            "`replay.source_model` must be a one-head tltk classifier (the source task's: "
            f"tltk.build_classifier or tltk.load_model). Received: {type(source).__name__}"
        )
    width, source_width = _cut(model).output.shape[1:], _cut(source).output.shape[1:]
    if tuple(width) != tuple(source_width):
        raise ValueError(
            f"`replay.source_model`'s head reads features of shape {tuple(source_width)}, but "
            f"this model's backbone gives {tuple(width)}: pass the source classifier of the "
            "same backbone."
        )
    if distribute.is_distributed(model.distribute_strategy):
        raise ValueError(
            "`replay` does not run under a tf.distribute strategy yet: train on one device, "
            "or use regularizer='l2sp' or 'ewc' to keep what the backbone knew."
        )
    return replay


def _cut(model):
    return model.features or model.backbone


class ReplayTrainer(keras.Model):
    """Trains `model` on `{"images": x}` batches; each training batch also carries
    `"source_images"` and `"source_labels"`, whose frozen source-head loss it adds (see the
    module). Only `model`'s trainable variables train."""

    def __init__(self, model, replay):
        super().__init__(name=f"{model.name}_replay")
        self.target = model
        self.features = keras.Model(model.inputs, _cut(model).output)
        source = replay.source_model
        head = _head_model(source, _cut(source))
        self.source_head = keras.models.clone_model(head)  # a frozen copy: the source model
        self.source_head.set_weights(head.get_weights())  # keeps its own trainable flags
        self.source_head.trainable = False
        self.source_loss = keras.losses.get(objective(source, replay.data)[0])
        self.weight = float(replay.weight)
        self.replay_tracker = keras.metrics.Mean(name="replay_loss")

    def call(self, inputs, training=False):
        return self.target(inputs["images"], training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            features = self.features(x["source_images"], training=True)
            source_pred = self.source_head(features, training=False)
            replay = tf.cast(self.source_loss(x["source_labels"], source_pred), loss.dtype)
            scaled = self.optimizer.scale_loss(loss + self.weight * replay)
        variables = self.target.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        self.replay_tracker.update_state(replay)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss, sample_weight=tf.shape(y_pred)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        logs = super().test_step(data)
        return {name: value for name, value in logs.items() if name != "replay_loss"}


def trainer(model, train, validation, replay, loss, metrics):
    """`(trainer, train, validation)`: a compiled `ReplayTrainer` of the compiled `model` (its
    optimizer) and the datasets it fits, the source batches zipped into `train`'s."""
    wrapper = ReplayTrainer(model, replay)
    wrapper.compile(optimizer=model.optimizer, loss=loss, metrics=metrics)
    source = replay.data.repeat()

    def with_source(batch, source_batch):
        inputs = {"images": batch[0], "source_images": source_batch[0]}
        return ({**inputs, "source_labels": source_batch[1]}, *batch[1:])

    def images_only(x, *rest):
        return ({"images": x}, *rest)

    validation = validation.map(images_only) if validation is not None else None
    return wrapper, tf.data.Dataset.zip(train, source).map(with_source), validation
