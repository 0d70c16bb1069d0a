"""`tltk.adapt`: unsupervised domain adaptation of a trained classifier to unlabelled target images.

A model trained on labelled source images (`tltk.fine_tune`) keeps training on them while one of
three methods pulls it towards the target images, whose labels it never sees:

- `"self_training"`: each epoch, the target images the model predicts with probability at least
  `confidence` are labelled with that prediction (pseudo-labels), and train with the source.
- `"coral"`: Deep CORAL (Sun & Saenko, 2016): the source cross-entropy plus `alignment_weight`
  times the distance of the source and target covariances of the pooled features.
- `"dann"`: DANN (Ganin et al., JMLR 2016): a domain classifier on the pooled features, through
  a gradient reversal layer whose factor rises as `2 / (1 + exp(-10 p)) - 1` over progress `p`.

The domain classifier and the reversal live in the training step only: the model comes back as
the same `tltk.TransferModel`, with the same layers, so `evaluate` and `export` work unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from tltk import freezing
from tltk.adapt_step import Trainer
from tltk.argcheck import integer, real
from tltk.data.image_data import ImageData
from tltk.features import resized_images, labelled_examples
from tltk.objectives import check_labels, output_activation
from tltk.training import LR_DECAY
from tltk.transfer_model import as_transfer_model

METHODS = ("self_training", "coral", "dann")
# `alignment_weight` defaults: the pseudo-label loss and DANN's reversal at full weight, as in
# the papers. CORAL's loss on pooled features is small (about 1e-3 between the digits and their
# textured shift in `bench/bench_adapt.py`, on the demo backbone); 100 brings it to the order of
# a fine-tuned model's source cross-entropy, the paper's rule (both losses about equal).
ALIGNMENT_WEIGHTS = {"self_training": 1.0, "coral": 100.0, "dann": 1.0}
# Label-free warnings: the source accuracy (inference mode, on the source examples) fell by more
# than this; the target's predicted classes fell below this fraction of their effective number
# before adapting (exp of the entropy of the predicted-class shares); self-training's share of
# pseudo-labelled target images fell below this fraction of its first epoch's.
SOURCE_DROP = 0.05
COLLAPSE = 0.5


@dataclasses.dataclass
class AdaptResult:
    """What `tltk.adapt` did.

    Attributes:
        model: tltk.TransferModel. The adapted model (the one passed in, trained in place); its
            weights are those of the last epoch.
        method: str. `"self_training"`, `"coral"` or `"dann"`.
        settings: dict. The settings used (`epochs`, `learning_rate`, `alignment_weight`...).
        history: dict. `{name: [value per epoch]}`: `source_loss` and `source_accuracy` (training
            batches), `alignment_loss` (the method's: pseudo-label cross-entropy, CORAL, or
            the domain classifier's loss), and measured after each epoch in inference mode:
            `source_eval_accuracy` (the source examples), `target_classes` (effective number
            of predicted classes on the target), `pseudo_label_rate` (share of target images
            predicted with at least `confidence`), and `target_accuracy` when `target_labels`
            were given.
        before: dict. The inference-mode measures before adapting (same names).
        warnings: list of str. The label-free signs that adapting hurt (also raised as
            `UserWarning`s).
    """

    model: keras.Model
    method: str
    settings: dict
    history: dict
    before: dict
    warnings: list


def adapt(
    model,
    source,
    target,
    *,
    method="self_training",
    epochs=10,
    learning_rate=1e-4,
    unfreeze="all",
    lr_decay=LR_DECAY,
    alignment_weight=None,
    confidence=0.9,
    batch_size=32,
    target_labels=None,
    seed=0,
    verbose=1,
):
    """Adapts a trained tltk classifier to unlabelled target images; returns an `AdaptResult`.

    Each epoch passes once over the larger of the source and target sets (the smaller one is
    cycled), each step on `batch_size` source and `batch_size` target images; the backbone
    groups in `unfreeze` and the head train (BatchNorm as `model.train_bn` says, see
    `tltk.unfreeze`) with Adam, the group `k` below the head at `learning_rate * lr_decay**k`.
    The last epoch's weights are kept: no target label chooses them. Instead, `adapt` warns
    (`UserWarning`, and `AdaptResult.warnings`) when signs that need no target label say it
    likely hurt: the source accuracy fell by more than 5 points, or the predicted classes on the
    target collapsed to fewer than half as many as before, or (self-training) the share of
    confident target predictions fell below half of its first epoch's.

    Args:
        model: tltk.TransferModel. A one-head image classifier (softmax or logits), usually
            trained on the source with `tltk.fine_tune`; trained in place.
        source: tf.data.Dataset, `tltk.data.ImageData` or `(images, labels)`. Labelled source
            images (0..255): batches of `(images, labels)`; an `ImageData`'s train split.
        target: tf.data.Dataset or array. Unlabelled target images (0..255, any size: resized to
            the model's input): a dataset of image batches, or of `(images, labels)` batches
            whose labels are ignored, never read; or an array `(n, height, width, 3)`.
        method: str. `"self_training"`, `"coral"` or `"dann"`. Defaults to `"self_training"`.
        epochs: int. Defaults to `10`.
        learning_rate: float. Adam's rate for the head. Defaults to `1e-4`.
        unfreeze: int, list of str or "all". Backbone groups that train, as `tltk.unfreeze`
            takes them (`0`: the head only). Defaults to `"all"`.
        lr_decay: float. Rate factor per group below the head, in (0, 1]. Defaults to `0.7`.
        alignment_weight: float or None. Weight of the method's loss (DANN: of the reversed
            gradient, times the schedule). Defaults to `ALIGNMENT_WEIGHTS[method]`.
        confidence: float. Self-training's threshold on the predicted probability, in (0, 1].
            Defaults to `0.9`.
        batch_size: int. Source images per step (and as many target images). Defaults to `32`.
        target_labels: array or None. The target's labels, in its order, for reporting the
            target accuracy per epoch only: never used to train or to choose weights.
            Defaults to `None`.
        seed: int. Seed of the batch order and the domain classifier. Defaults to `0`.
        verbose: int. 0 silent, 1 one line per epoch. Defaults to `1`.

    Returns:
        An `AdaptResult`.

    Example:

    ```python
    data = tltk.data.from_directory("studio_photos", image_size=(224, 224))
    model = tltk.build_classifier("mobilenet_v2", data.num_classes)
    tltk.fine_tune(model, data.train, data.validation)
    phone = tltk.data.from_directory("phone_photos", image_size=(224, 224)).train
    result = tltk.adapt(model, data, phone, method="dann", epochs=10)
    print(result.history["source_eval_accuracy"], result.warnings)
    ```
    """
    model = as_transfer_model(model)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}. Received: method={method!r}")
    settings = {
        "epochs": integer("epochs", epochs, minimum=1),
        "learning_rate": real("learning_rate", learning_rate, "(0, inf)"),
        "unfreeze": unfreeze,
        "lr_decay": real("lr_decay", lr_decay, "(0, 1]"),
        "alignment_weight": real(
            "alignment_weight",
            ALIGNMENT_WEIGHTS[method] if alignment_weight is None else alignment_weight,
            "[0, inf)",
        ),
        "confidence": real("confidence", confidence, "(0, 1]"),
        "batch_size": integer("batch_size", batch_size, minimum=2),
        "seed": integer("seed", seed),
    }
    _check_model(model)
    size = tuple(model.input_shape[1:3])
    source_x, source_y = _source(model, source, size)
    target_x = _target_images(target, size)
    if target_labels is not None:
        target_labels = np.asarray(target_labels).reshape(-1)
        if len(target_labels) != len(target_x):
            raise ValueError(
                f"`target_labels` must have one label per target image ({len(target_x)}). "
                f"Received: {len(target_labels)} labels"
            )
    freezing.freeze(model)
    freezing.unfreeze(model, unfreeze)
    trainer = Trainer(model, method, settings)
    measure = _Measure(model, source_x, source_y, target_x, target_labels, settings)
    before = measure()
    history = {}
    rng = np.random.default_rng(settings["seed"])
    steps = math.ceil(max(len(source_x), len(target_x)) / settings["batch_size"])
    for epoch in range(settings["epochs"]):
        pool, pool_labels = target_x, None
        if method == "self_training":
            confident = measure.target_confidence >= settings["confidence"]
            pool, pool_labels = target_x[confident], measure.target_predicted[confident]
        logs = trainer.epoch(source_x, source_y, pool, pool_labels, rng, steps, epoch)
        logs.update(measure())
        for name, value in logs.items():
            history.setdefault(name, []).append(value)
        if verbose:
            print(
                f"Epoch {epoch + 1}/{settings['epochs']} ({method}): "
                + ", ".join(f"{name} {value:.4f}" for name, value in logs.items())
            )
    found = _hurt_signs(method, before, history)
    for message in found:
        warnings.warn(message, UserWarning, stacklevel=2)
    return AdaptResult(model, method, settings, history, before, found)


def _check_model(model):
    if model.modality != "image" or len(model.heads) != 1:
        raise ValueError(
            "`model` must be a one-head image classifier (tltk.build_classifier). Received: a "
            f"{model.modality} model with heads {list(model.heads)}"
        )
    if output_activation(model) == "sigmoid":
        raise ValueError(
            "`model` must be a single-label classifier (softmax or logits); `adapt` does not "
            "adapt multi-label (sigmoid) models."
        )
    if model.features is None:
        raise ValueError(
            f"`model` {model.name!r} has no pooled features layer (`model.features`), which the "
            "alignment methods compare; build it with tltk.build_classifier."
        )


def _source(model, source, size):
    """The source images (float32, the model's size) and integer labels, checked."""
    if isinstance(source, ImageData):
        source = source.train
    x, labels, _ = labelled_examples(source, argument="source")
    check_labels(labels, model, "source")
    return np.asarray(resized_images(x, size)), labels.astype("int64")


def _target_images(target, size):
    """The target images as one float32 array at `size`; any labels in `target` are dropped."""
    if isinstance(target, tf.data.Dataset):
        spec = target.element_spec
        images = spec[0] if isinstance(spec, tuple) else spec
        if not isinstance(images, tf.TensorSpec) or images.shape.rank != 4:
            raise ValueError(
                "`target` must be a dataset of image batches (batch, height, width, channels), "
                f"or of (images, labels) batches. Received: element_spec={spec}"
            )
        # Only the first component is kept: the labels are never read.
        only_images = target.map(lambda *parts: parts[0])
        batches = [np.asarray(batch) for batch in only_images.as_numpy_iterator()]
        x = np.concatenate(batches) if batches else np.zeros((0, *size, 3), "float32")
    elif isinstance(target, (np.ndarray, tf.Tensor)):
        x = np.asarray(target)
    else:
        raise ValueError(
            "`target` must be a tf.data.Dataset of image batches or an array of images "
            f"(n, height, width, 3). Received: {type(target).__name__}"
        )
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"`target` images must be (n, height, width, 3) pixels in 0..255. Received: {x.shape}"
        )
    if len(x) < 2:
        raise ValueError(
            f"`target` is empty or has one image ({len(x)}): pass at least 2 unlabelled target "
            "images (more: the methods compare the two domains' statistics)."
        )
    return np.asarray(resized_images(x, size))


class _Measure:
    """The inference-mode measures after each epoch: source accuracy, target predictions."""

    def __init__(self, model, source_x, source_y, target_x, target_labels, settings):
        self.model, self.settings = model, settings
        self.source_x, self.source_y = source_x, source_y
        self.target_x, self.target_labels = target_x, target_labels
        self.target_confidence = self.target_predicted = None

    def __call__(self):
        source = self._predict(self.source_x)
        target = self._predict(self.target_x)
        self.target_confidence, self.target_predicted = target.max(1), target.argmax(1)
        shares = np.bincount(self.target_predicted, minlength=target.shape[1]) / len(target)
        logs = {
            "source_eval_accuracy": float(np.mean(source.argmax(1) == self.source_y)),
            "target_classes": float(np.exp(-np.sum(shares * np.log(np.maximum(shares, 1e-12))))),
            "pseudo_label_rate": float(
                np.mean(self.target_confidence >= self.settings["confidence"])
            ),
        }
        if self.target_labels is not None:
            logs["target_accuracy"] = float(np.mean(self.target_predicted == self.target_labels))
        return logs

    def _predict(self, x):
        batch = 2 * self.settings["batch_size"]
        parts = [self.model(x[i : i + batch], training=False) for i in range(0, len(x), batch)]
        outputs = np.concatenate([np.asarray(p, dtype="float64") for p in parts])
        if output_activation(self.model) == "linear":
            outputs = np.exp(outputs - outputs.max(1, keepdims=True))
            outputs /= outputs.sum(1, keepdims=True)
        return outputs


def _hurt_signs(method, before, history):
    """The label-free signs that adapting hurt, as sentences."""
    found = []
    drop = before["source_eval_accuracy"] - history["source_eval_accuracy"][-1]
    if drop > SOURCE_DROP:
        found.append(
            f"adapt ({method}) lowered the source accuracy by {100 * drop:.1f} points "
            f"({100 * before['source_eval_accuracy']:.1f}% -> "
            f"{100 * history['source_eval_accuracy'][-1]:.1f}%): the target accuracy is likely "
            "lower too. Try a lower `learning_rate` or `alignment_weight`, or fewer `epochs`."
        )
    classes = history["target_classes"][-1]
    if classes < COLLAPSE * before["target_classes"]:
        found.append(
            f"adapt ({method}): the predictions on the target collapsed onto fewer classes "
            f"(effective number {before['target_classes']:.1f} -> {classes:.1f}): the model "
            "likely lost classes there. Try a lower `learning_rate` or `alignment_weight`."
        )
    rates = history["pseudo_label_rate"]
    if method == "self_training" and rates[-1] < COLLAPSE * rates[0]:
        found.append(
            f"adapt (self_training): the share of confident target predictions fell from "
            f"{100 * rates[0]:.1f}% to {100 * rates[-1]:.1f}%: self-training likely drifted. "
            "Try a higher `confidence`, or another method."
        )
    return found
