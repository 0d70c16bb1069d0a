"""The named heads of a model with several outputs, as the exported files name them.

A model built with `tltk.build_classifier(backbone, num_classes={head: ...})` returns a dict, one
output per head. Every exported file keeps those names: the SavedModel signature's outputs, the
TFLite signature's outputs and output tensors, and the per-head labels files
`labels_<head>.txt` (classification and multi-label heads; regression heads have none). A
SavedModel also carries `assets.extra/heads.json`: each head's name, task and width, in order.
"""

from __future__ import annotations

import json
import pathlib
import typing

import tensorflow as tf

from tltk import atomic

from tltk.heads import layer_activation
from tltk.transfer_model import TransferModel

LABELLED_TASKS = ("classification", "multi_label")
HEADS_FILE = "heads.json"


class OutputHead(typing.NamedTuple):
    """One output of a model with several heads.

    Attributes:
        name: str. The head's name: its output key in every file.
        task: str. `"classification"` (probabilities, a softmax added to logits),
            `"multi_label"` (sigmoid scores) or `"regression"` (raw values).
        units: int. The output width.
        activation: str. The output layer's activation: `"softmax"`, `"sigmoid"` or `"linear"`.
    """

    name: str
    task: str
    units: int
    activation: str = "linear"

    @property
    def labelled(self):
        """Whether the head's outputs are scores of named labels (not regression values)."""
        return self.task in LABELLED_TASKS


def labels_file(head):
    """The labels file of a head: `labels_<head>.txt`.

    >>> labels_file("species")
    'labels_species.txt'
    """
    return f"labels_{head}.txt"


def write_heads(folder, heads):
    """Writes `heads.json` in `folder`: `[{"name", "task", "units"}, ...]`, in head order."""
    entries = [{"name": h.name, "task": h.task, "units": h.units} for h in heads]
    return atomic.write_text(pathlib.Path(folder) / HEADS_FILE, json.dumps(entries, indent=2))


def read_heads(folder):
    """The `OutputHead`s written by `write_heads` in `folder`, or `None` when it has none."""
    path = pathlib.Path(folder) / HEADS_FILE
    if not path.is_file():
        return None
    try:
        return tuple(
            OutputHead(entry["name"], entry["task"], int(entry["units"]))
            for entry in json.loads(path.read_text(encoding="utf-8"))
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is damaged ({type(error).__name__}: {error}); export the model again."
        ) from None


def output_heads(model):
    """The heads of a model whose output is a dict, in the model's order; `None` for one output.

    Args:
        model: keras.Model. A `tltk.TransferModel` (its `tasks` tell regression heads, which are
            linear, from classification heads with logits) or any model with one output.

    Returns:
        A tuple of `OutputHead`, or `None` when the model has a single (unnamed) output.

    Example:

    ```python
    model = tltk.build_classifier("tltk_glyphnet", {"digit": 10, "parity": 2}, weights=None)
    output_heads(model)   # (OutputHead('digit', 'classification', 10), OutputHead('parity', ...))
    ```
    """
    try:
        outputs = model.output
    except (AttributeError, ValueError):  # not a model, or one never called: checked elsewhere
        return None
    if not isinstance(outputs, dict):
        return None
    if not isinstance(model, TransferModel):
        raise ValueError(
            "Export of a model with several named outputs needs a tltk.TransferModel, whose "
            "`tasks` say which heads are regression: build it with "
            "tltk.build_classifier(backbone, num_classes={head: classes or tltk.HeadSpec}). "
            f"Received: a {type(model).__name__} with outputs {sorted(outputs)}"
        )
    tasks = model.tasks
    heads = []
    for name in model.heads:
        tensor = outputs[name]
        if len(tensor.shape) != 2 or tensor.shape[1] is None:
            raise ValueError(
                f"Each head must output (batch, units). Received: head {name!r} of shape "
                f"{tuple(tensor.shape)}"
            )
        activation = layer_activation(model.heads[name][-1])
        heads.append(OutputHead(name, tasks[name], int(tensor.shape[1]), activation))
    return tuple(heads)


def head_outputs(outputs, heads):
    """The exported outputs of each head, float32: probabilities for classification heads (a
    softmax added to logits), sigmoid scores for multi-label heads, raw values for regression.

    Args:
        outputs: dict. The model's outputs, `{head: (batch, units)}`.
        heads: tuple. The model's `OutputHead`s.

    Returns:
        A dict `{head: float32 tensor}` in the order of `heads`.
    """
    added = {("classification", "linear"): tf.nn.softmax, ("multi_label", "linear"): tf.sigmoid}
    result = {}
    for head in heads:
        output = tf.cast(outputs[head.name], tf.float32)
        result[head.name] = added.get((head.task, head.activation), tf.identity)(output)
    return result


def head_class_names(model, heads):
    """`{head: names}` the model itself carries (`TransferModel.class_names`, a list when the
    model has one head), for the heads that have them."""
    names = model.class_names
    return {heads[0].name: names} if isinstance(names, list) else dict(names or {})


def check_head_labels(labels, heads, class_names, check):
    """Returns `{head: names}` for every labelled head, `labels` checked against the heads.

    Args:
        labels: dict or None. `{head: names}` for some or all labelled heads.
        heads: tuple. The model's `OutputHead`s.
        class_names: dict. The model's own names per head (`head_class_names`), used for the
            heads `labels` leaves out, else `"0"`, `"1"`, ...
        check: callable. `check(names or None, units)` checks one head's names (the one-head
            `tltk.export.exporter.check_labels`).

    Returns:
        A dict `{head: list of names}` over the labelled heads, in output order.

    Example:

    >>> heads = (OutputHead("parity", "classification", 2), OutputHead("ink", "regression", 1))
    >>> check_head_labels({"parity": ["even", "odd"]}, heads, {}, lambda n, u: list(n))
    {'parity': ['even', 'odd']}
    """
    by_name = {head.name: head for head in heads}
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise ValueError(
            f"This model has {len(heads)} heads {list(by_name)}: pass `labels` as a dict "
            f"{{head: class names}} for its classification or multi-label heads. "
            f"Received: labels={labels!r}"
        )
    for name in labels:
        if name not in by_name or not by_name[name].labelled:
            labelled = [head.name for head in heads if head.labelled]
            raise ValueError(
                f"`labels` may name only the model's classification or multi-label heads "
                f"{labelled}"
                + (" (regression heads have no labels)" if name in by_name else "")
                + f". Received: {name!r}"
            )
    names = {}
    for head in heads:
        if head.labelled:
            given = labels.get(head.name, class_names.get(head.name))
            try:
                names[head.name] = check(given, head.units)
            except ValueError as error:
                raise ValueError(f"Head {head.name!r}: {error}") from None
    return names
