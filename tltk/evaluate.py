"""Evaluation: metrics, confusion matrix, plots and a JSON report."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from sklearn import metrics as skm

from tltk import atomic, plots


@dataclasses.dataclass
class EvaluationReport:
    """Metrics of one evaluation.

    Attributes:
        accuracy: float. Top-1 accuracy (single-label) or exact-match ratio (multi-label).
        top_k_accuracy: dict. `{k: accuracy}` for single-label models with more than k classes.
        per_class: dict. `{class_name: {"precision", "recall", "f1", "support"}}`.
        confusion_matrix: list. Rows are true classes, columns predicted (single-label only).
        mean_average_precision: float or None. Multi-label only.
        num_examples: int. How many examples were evaluated.
        files: dict. Paths of the files written (`report`, `confusion_matrix`, ...).
        skipped: list. `[path, reason]` of each file the data left out (an `ImageData`'s
            `skipped`), so that `report.json` lists them.
    """

    accuracy: float
    top_k_accuracy: dict
    per_class: dict
    confusion_matrix: list
    mean_average_precision: float | None
    num_examples: int
    class_names: list
    multi_label: bool
    files: dict = dataclasses.field(default_factory=dict)
    skipped: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """A short text table: overall figures, then one line per class."""
        lines = [f"examples: {self.num_examples}", f"accuracy: {self.accuracy:.4f}"]
        if self.skipped:
            lines.append(f"skipped files: {len(self.skipped)}")
        lines += [f"top-{k} accuracy: {v:.4f}" for k, v in self.top_k_accuracy.items()]
        if self.mean_average_precision is not None:
            lines.append(f"mAP: {self.mean_average_precision:.4f}")
        lines.append(f"{'class':<20} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
        for name, m in self.per_class.items():
            lines.append(
                f"{name[:20]:<20} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>7.3f} "
                f"{m['support']:>8d}"
            )
        return "\n".join(lines)


@dataclasses.dataclass
class RegressionReport:
    """Metrics of a regression head: mean absolute and root mean squared error, and R^2 (over all
    its outputs)."""

    mae: float
    rmse: float
    r2: float
    num_examples: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (
            f"examples: {self.num_examples}\nMAE: {self.mae:.4f}\nRMSE: {self.rmse:.4f}\n"
            f"R^2: {self.r2:.4f}"
        )


@dataclasses.dataclass
class HeadsReport:
    """The evaluation of a model with several heads: one report per head.

    Attributes:
        heads: dict. `{head: EvaluationReport}` for heads with classes, `{head:
            RegressionReport}` for regression heads.
        files: dict. Paths of the files written: `report` (every head's figures) and, per head
            with classes, `confusion_matrix_<head>` and `misclassified_<head>`.
    """

    heads: dict
    files: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"heads": {h: r.to_dict() for h, r in self.heads.items()}, "files": self.files}

    def summary(self) -> str:
        """Each head's summary under its name."""
        return "\n\n".join(f"[{head}]\n{r.summary()}" for head, r in self.heads.items())


def evaluate(
    model,
    data,
    *,
    class_names=None,
    out_dir=None,
    history=None,
    top_k=(3, 5),
    threshold=0.5,
    max_misclassified=16,
):
    """Evaluates a classifier and, with `out_dir`, writes a report and plots.

    Args:
        model: keras.Model or predictor. Anything with `predict(images) -> probabilities`, such as
            a Keras model, `tltk.load_exported(path)`, or a text classifier (inputs are strings;
            no image grid is drawn then). A model with several heads (its predictions a dict,
            its labels `{head: labels}`) is evaluated head by head: see `HeadsReport`.
        data: tf.data.Dataset, `tltk.data.ImageData` or `(images, labels)`. Batches of
            `(images, labels)`; an `ImageData` is evaluated on its `test` split, else `validation`.
            Labels are integers, one-hot or multi-hot.
        class_names: list. Names for the report. Defaults to the data's, else "0", "1", ...
        out_dir: str. Folder for `report.json`, `confusion_matrix.png`, `misclassified.png` and,
            with `history`, `training_curves.png`. Defaults to `None` (nothing written).
        history: fine-tune result, `keras.callbacks.History` or dict. Curves to plot.
            Defaults to `None`.
        top_k: tuple. The k values of top-k accuracy. Defaults to `(3, 5)`.
        threshold: float. Decision threshold for multi-label outputs. Defaults to `0.5`.
        max_misclassified: int. Most images in `misclassified.png`. Defaults to `16`.

    Returns:
        An `EvaluationReport` (a `HeadsReport` for a model with several heads).

    Example:

    ```python
    report = tltk.evaluate(model, data, out_dir="reports/run1")
    print(report.summary())
    ```
    """
    images, labels, names = _collect(data, class_names)
    if len(images) == 0:
        raise ValueError("`data` holds no examples to evaluate. Received: an empty dataset")
    names = names or getattr(model, "class_names", None)
    is_text = images.dtype.kind in "OSU"
    inputs = _as_strings(images) if is_text else images
    probs = model.predict(inputs, verbose=0) if _is_keras(model) else model.predict(inputs)
    options = dict(
        top_k=top_k,
        threshold=threshold,
        max_misclassified=max_misclassified,
        skipped=getattr(data, "skipped", ()),
        is_text=is_text,
    )
    if isinstance(probs, dict) or isinstance(labels, dict):
        if not (isinstance(probs, dict) and isinstance(labels, dict)) or set(labels) - set(probs):
            raise ValueError(
                "A model with several heads is evaluated on labels per head, `{head: labels}`, "
                f"for heads it has. Received: predictions of "
                f"{list(probs) if isinstance(probs, dict) else 'one head'}, labels of "
                f"{list(labels) if isinstance(labels, dict) else 'one head'}"
            )
        options["tasks"] = getattr(model, "tasks", {})
        return _heads_report(images, labels, probs, names or {}, out_dir, history, **options)
    return _report(images, labels, probs, names, out_dir, history, **options)


def _heads_report(images, labels, probs, names, out_dir, history, *, tasks, **options):
    """A `HeadsReport`: each labelled head as `evaluate` reports one head, files suffixed by head;
    regression heads (by the model's `tasks`, else float labels that are not 0/1) by their
    errors."""
    report = HeadsReport({})
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    for head, truth in labels.items():
        scores = _scores(probs[head])
        regression = tasks.get(head) == "regression" or (
            head not in tasks and truth.dtype.kind == "f" and not np.isin(truth, (0, 1)).all()
        )
        if regression:
            scores = scores.astype("float64")
            truth = truth.astype("float64").reshape(scores.shape)
            report.heads[head] = RegressionReport(
                mae=float(skm.mean_absolute_error(truth, scores)),
                rmse=float(np.sqrt(skm.mean_squared_error(truth, scores))),
                r2=float(skm.r2_score(truth, scores)),
                num_examples=int(len(truth)),
            )
            continue
        head_report = _report(images, truth, scores, names.get(head), None, None, **options)
        if out_dir:
            limit, is_text = options["max_misclassified"], options["is_text"]
            _write_plots(
                head_report, images, truth, scores, out_dir, limit, is_text, suffix=f"_{head}"
            )
            report.files.update(head_report.files)
        report.heads[head] = head_report
    if out_dir:
        _write_report(report, out_dir, history)
    return report


def _scores(prediction):
    """The scores array of a prediction (a tltk predictor gives `(names, scores)`)."""
    return np.asarray(prediction[1] if isinstance(prediction, tuple) else prediction)


def _write_report(report, out_dir, history):
    """Writes the training curves (with `history`) and `report.json` into `out_dir`."""
    if history is not None:
        report.files["training_curves"] = plots.training_curves(
            history, os.path.join(out_dir, "training_curves.png")
        )
    report.files["report"] = os.path.join(out_dir, "report.json")
    _write_json(report.to_dict(), report.files["report"])


def _report(
    images,
    labels,
    probs,
    names,
    out_dir,
    history,
    *,
    top_k,
    threshold,
    max_misclassified,
    skipped,
    is_text,
):
    """The `EvaluationReport` of one head's scores, and its files in `out_dir`."""
    probs = _scores(probs)
    if probs.ndim != 2:
        raise ValueError(
            f"The model must return (batch, classes) scores. Received: shape {probs.shape}"
        )
    num_classes = probs.shape[1]
    names = list(names or [str(i) for i in range(num_classes)])
    if len(names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(names)} names but the model has {num_classes} outputs."
        )
    multi_label = labels.ndim == 2 and not _is_one_hot(labels)
    report = (
        _multi_label_report(labels, probs, names, threshold)
        if multi_label
        else _single_label_report(labels, probs, names, top_k)
    )
    report.skipped = [[os.fsdecode(path), reason] for path, reason in skipped]

    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        _write_plots(report, images, labels, probs, out_dir, max_misclassified, is_text)
        _write_report(report, out_dir, history)
    return report


def _write_plots(report, images, labels, probs, out_dir, limit, is_text, suffix=""):
    """The confusion matrix and misclassified images of a single-label report, into its files."""
    if report.multi_label:
        return
    names = report.class_names
    report.files[f"confusion_matrix{suffix}"] = plots.confusion_matrix(
        np.asarray(report.confusion_matrix),
        names,
        os.path.join(out_dir, f"confusion_matrix{suffix}.png"),
    )
    if not is_text:
        truth = labels.argmax(1) if labels.ndim == 2 else labels
        report.files[f"misclassified{suffix}"] = plots.misclassified(
            images,
            truth,
            probs,
            names,
            os.path.join(out_dir, f"misclassified{suffix}.png"),
            limit=limit,
        )


def _single_label_report(labels, probs, names, top_k):
    truth = labels.argmax(1) if labels.ndim == 2 else labels.astype(int)
    predicted = probs.argmax(1)
    classes = list(range(len(names)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, predicted, labels=classes, zero_division=0
    )
    top = {
        int(k): float(skm.top_k_accuracy_score(truth, probs, k=k, labels=classes))
        for k in top_k
        if k < len(names)
    }
    return EvaluationReport(
        accuracy=float((truth == predicted).mean()),
        top_k_accuracy=top,
        per_class=_per_class(names, precision, recall, f1, support),
        confusion_matrix=skm.confusion_matrix(truth, predicted, labels=classes).tolist(),
        mean_average_precision=None,
        num_examples=int(len(truth)),
        class_names=names,
        multi_label=False,
    )


def _multi_label_report(labels, probs, names, threshold):
    predicted = (probs >= threshold).astype(int)
    truth = labels.astype(int)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, predicted, zero_division=0
    )
    present = truth.sum(0) > 0
    m_ap = (
        float(skm.average_precision_score(truth[:, present], probs[:, present], average="macro"))
        if present.any()
        else 0.0
    )
    return EvaluationReport(
        accuracy=float((predicted == truth).all(1).mean()),
        top_k_accuracy={},
        per_class=_per_class(names, precision, recall, f1, support),
        confusion_matrix=[],
        mean_average_precision=m_ap,
        num_examples=int(len(truth)),
        class_names=names,
        multi_label=True,
    )


def _per_class(names, precision, recall, f1, support):
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support)
    }


def _collect(data, class_names):
    """Returns `(images, labels, class_names)` as NumPy arrays from any supported `data`."""
    names = class_names
    if hasattr(data, "class_names") and hasattr(data, "validation"):
        given = data.class_names
        names = names or (dict(given) if isinstance(given, dict) else list(given))
        split = data.test if getattr(data, "test", None) is not None else data.validation
        if split is None:
            raise ValueError("`data` has neither a test nor a validation split to evaluate on.")
        data = split
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0]), _arrays(data[1]), names
    images, labels = [], []
    for batch in data:
        if not (isinstance(batch, tuple) and len(batch) >= 2):
            raise ValueError(
                "`data` must yield (images, labels) batches. Received: a dataset of single tensors"
            )
        images.append(np.asarray(batch[0]))
        labels.append(_arrays(batch[1]))
    if not images:
        return np.zeros((0,)), np.zeros((0,)), names
    if isinstance(labels[0], dict):
        return (
            np.concatenate(images),
            {h: np.concatenate([b[h] for b in labels]) for h in labels[0]},
            names,
        )
    return np.concatenate(images), np.concatenate(labels), names


def _arrays(labels):
    """Labels as a NumPy array, or `{head: array}` for labels per head."""
    if isinstance(labels, dict):
        return {head: np.asarray(value) for head, value in labels.items()}
    return np.asarray(labels)


def _as_strings(texts):
    import tensorflow as tf

    return tf.constant([t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts])


def _is_one_hot(labels):
    return bool(np.all(labels.sum(1) == 1) and np.all((labels == 0) | (labels == 1)))


def _is_keras(model):
    import keras

    return isinstance(model, keras.Model)


def _write_json(payload, path):
    atomic.write_text(path, json.dumps(payload, indent=2))
