"""The loss and accuracy metric that match a classifier's output activation and its labels."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tltk.argcheck import is_integer, real
from tltk.heads import layer_activation
from tltk.transfer_model import TransferModel


def is_multi_head(model):
    """Whether `model` is a `tltk.TransferModel` with several heads (a dict output)."""
    return isinstance(model, TransferModel) and len(model.heads) > 1


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
    return layer_activation(output_layer(model))


def objective(model, dataset, *, loss=None):
    """Chooses the loss and an `"accuracy"` metric from the output activation and the label shape.

    Softmax with integer labels gives sparse categorical cross-entropy, with one-hot labels
    categorical cross-entropy; sigmoid gives binary cross-entropy (multi-label) and a ROC AUC
    metric named `"auc"` besides accuracy; a linear output (logits) gives the same losses with
    `from_logits=True`. A model with several heads gets them per head (`{head: loss}`,
    `{head: metrics}`, as `compile` takes them for a dict output; its labels are a dict keyed by
    head); a `"regression"` head gets the mean squared error and a metric `"mae"`.

    Args:
        model: tltk.TransferModel. A classifier.
        dataset: tf.data.Dataset. Batches of `(images, labels, ...)`; only its spec is read.
        loss: str, keras loss, dict or None. Use this loss instead of inferring one (with several
            heads: a dict naming some of them); the metric is still inferred where possible.
            Defaults to `None`.

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
    if is_multi_head(model):
        return _per_head(model, spec[1], loss)
    try:
        inferred, metrics = _infer(output_layer(model), spec[1])
    except ValueError:
        if loss is None:
            raise
        return loss, []
    return (loss if loss is not None else inferred), metrics


def _per_head(model, labels, loss):
    """`({head: loss}, {head: metrics})` for a model with several heads and dict labels."""
    heads = list(model.heads)
    _check_heads_labelled(model, labels)
    given = loss if isinstance(loss, dict) else {}
    if loss is not None and (not isinstance(loss, dict) or set(loss) - set(heads)):
        raise ValueError(
            f"`loss` of a model with heads {heads} must be a dict naming some of them. "
            f"Received: loss={loss!r}"
        )
    losses, metrics = {}, {}
    for head, layers in model.heads.items():
        if model.tasks[head] == "regression":
            inferred = keras.losses.MeanSquaredError()
            metrics[head] = [keras.metrics.MeanAbsoluteError(name="mae")]
        else:
            inferred, metrics[head] = _infer(layers[-1], labels[head])
        losses[head] = given.get(head, inferred)
    return losses, metrics


def _check_heads_labelled(model, labels):
    heads = list(model.heads)
    missing = [h for h in heads if not isinstance(labels, dict) or h not in labels]
    if missing:
        got = list(labels) if isinstance(labels, dict) else f"of shape {tuple(labels.shape)}"
        raise ValueError(
            f"Model {model.name!r} has heads {heads}: its labels must be a dict with one entry "
            f"per head (missing {missing}), as `tltk.data.from_arrays(images, {{head: labels}})` "
            f"or `from_csv(..., label_column={{head: column}})` make them. Received: labels {got}"
        )


def combined_loss(losses, weights=None):
    """One loss function of dict labels and predictions: `sum(weight * loss)` over the heads
    (what `compile(loss=losses, loss_weights=weights)` trains on)."""
    losses = {head: keras.losses.get(loss) for head, loss in losses.items()}
    weights = weights or {}

    def loss(y_true, y_pred):
        return tf.add_n(
            [weights.get(h, 1.0) * fn(y_true[h], y_pred[h]) for h, fn in losses.items()]
        )

    return loss


def _infer(layer, labels):
    activation = layer_activation(layer)
    units = int(layer.units)
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


def classes(model):
    """The number of classes a one-head classifier tells apart (2 for one sigmoid unit)."""
    return max(int(output_layer(model).units), 2)


def check_labels(labels, model, where):
    """Raises a `ValueError` naming `where` if integer `labels` fall outside the model's classes
    (per head for a model with several heads, whose labels are a dict)."""
    if is_multi_head(model):
        _check_heads_labelled(model, labels)
        for head, layers in model.heads.items():
            if head in labels and model.tasks[head] == "classification":
                _check_range(labels[head], int(layers[-1].units), f"{where} (head {head!r})")
        return
    _check_range(labels, int(output_layer(model).units), where)


def _check_range(labels, units, where):
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or not labels.size:
        return
    count = max(units, 2)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= count:
        raise ValueError(
            f"{where} holds label {low if low < 0 else high}, but the model has {units} "
            f"output(s), classes 0..{count - 1}: build it with `num_classes` equal to the "
            "data's class count (e.g. `data.num_classes`), or fix the labels."
        )


def check_class_weight(class_weight, model):
    """`class_weight` as `{class_index: weight}` for every class, 1.0 where it names none.

    Keys are class indexes or, once `model.class_names` is set, class names; weights are finite
    numbers >= 0. Anything else raises a `ValueError` naming the key.
    """
    if class_weight is None:
        return None
    if is_multi_head(model):
        raise ValueError(
            f"`class_weight` weighs the classes of one head; model {model.name!r} has heads "
            f"{list(model.heads)}: put per-head sample weights in the dataset instead, "
            "`(images, labels, {head: weights})`, and weigh the heads with `loss_weights`. "
            f"Received: class_weight={class_weight!r}"
        )
    if not isinstance(class_weight, dict):
        raise ValueError(
            "`class_weight` must be a dict {class_index: weight}. "
            f"Received: class_weight={class_weight!r}"
        )
    count = classes(model)
    names = model.class_names if isinstance(model.class_names, list) else None
    weights = dict.fromkeys(range(count), 1.0)
    for key, value in class_weight.items():
        if is_integer(key) and 0 <= key < count:
            index = int(key)
        elif names and key in names:
            index = names.index(key)
        else:
            hint = (
                f"or one of the model's class_names {names}"
                if names
                else ("(or class names, once `model.class_names` is set)")
            )
            label = f"class index {key}" if is_integer(key) else repr(key)
            raise ValueError(
                f"`class_weight` names {label}, but the model has {count} classes "
                f"(0..{count - 1}): keys must be class indexes {hint}. "
                f"Received: class_weight={class_weight!r}"
            )
        weights[index] = real(f"class_weight[{key!r}]", value, "[0, inf)")
    return weights


def _mismatch(activation, units, labels):
    if labels.shape.rank == 2 and labels.shape[-1] not in (None, 1, units):
        width = labels.shape[-1]
        return ValueError(
            f"The labels are vectors of {width} classes, but the model has {units} outputs: "
            f"build it with num_classes={width}. Received: labels spec {labels}"
        )
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
