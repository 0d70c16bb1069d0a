"""The loss and accuracy metric that match a classifier's output activation and its labels."""

from __future__ import annotations

import keras
import tensorflow as tf

from tltk.transfer_model import TransferModel


def output_layer(model):
    """The output layer of a one-head `tltk.TransferModel` (the last layer of its head)."""
    if not isinstance(model, TransferModel) or len(model.heads) != 1:
        raise ValueError(
            f"Model {model.name!r} is not a one-head tltk.TransferModel; build it with "
            "tltk.build_classifier or pass `loss` explicitly."
        )
    (head,) = model.heads.values()
    return head[-1]


def output_activation(model):
    """`"softmax"`, `"sigmoid"` or `"linear"`: the activation of the model's output layer."""
    activation = getattr(output_layer(model).activation, "__name__", "linear")
    return activation if activation in ("softmax", "sigmoid") else "linear"


def objective(model, dataset, *, loss=None):
    """Chooses the loss and an `"accuracy"` metric from the output activation and the label shape.

    Softmax with integer labels gives sparse categorical cross-entropy, with one-hot labels
    categorical cross-entropy; sigmoid gives binary cross-entropy (multi-label) and a ROC AUC
    metric named `"auc"` besides accuracy; a linear output (logits) gives the same losses with
    `from_logits=True`.

    Args:
        model: tltk.TransferModel. A one-head classifier.
        dataset: tf.data.Dataset. Batches of `(images, labels, ...)`; only its spec is read.
        loss: str, keras loss or None. Use this loss instead of inferring one; the metric is still
            inferred where possible. Defaults to `None`.

    Returns:
        `(loss, metrics)`, ready for `model.compile`.

    Example:

    ```python
    loss, metrics = objective(model, data.train)
    model.compile(optimizer="adam", loss=loss, metrics=metrics)
    ```
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"`dataset` must be a tf.data.Dataset. Received: {type(dataset).__name__}")
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            f"The dataset must yield (images, labels) batches. Received: element_spec={spec}"
        )
    try:
        inferred, metrics = _infer(model, spec[1])
    except ValueError:
        if loss is None:
            raise
        return loss, []
    return (loss if loss is not None else inferred), metrics


def _infer(model, labels):
    activation = output_activation(model)
    units = int(output_layer(model).units)
    logits = activation == "linear"
    rank = labels.shape.rank
    last = labels.shape[-1] if rank else None
    sparse = labels.dtype.is_integer and (rank == 1 or (rank == 2 and last == 1)) and units > 1
    dense = rank == 2 and last == units
    if activation == "sigmoid" or (logits and units == 1):
        if not (dense or (units == 1 and rank == 1)):
            raise _mismatch(activation, units, labels)
        metrics = [
            keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else 0.5),
            keras.metrics.AUC(name="auc", multi_label=units > 1, from_logits=logits),
        ]
        return keras.losses.BinaryCrossentropy(from_logits=logits), metrics
    if sparse:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
        return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if dense and activation == "softmax":
        return keras.losses.CategoricalCrossentropy(), [
            keras.metrics.CategoricalAccuracy(name="accuracy")
        ]
    raise _mismatch(activation, units, labels)


def _mismatch(activation, units, labels):
    hint = (
        " Logits with (batch, classes) labels may be one-hot or multi-hot: pass `loss` "
        "(e.g. keras.losses.CategoricalCrossentropy(from_logits=True))."
        if activation == "linear"
        else ""
    )
    return ValueError(
        f"Cannot choose a loss for a {activation} output of {units} unit(s) and labels of shape "
        f"{labels.shape} ({labels.dtype.name}): expected integer class indexes (batch,) or "
        f"(batch, {units}) one-hot / multi-hot labels.{hint} Received: labels spec {labels}"
    )
