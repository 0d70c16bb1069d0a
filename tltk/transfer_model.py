"""`TransferModel`: the tltk model class, a functional Keras model that carries its own structure.

`tltk.build_classifier` and `tltk.build_text_classifier` return it. It is a plain functional
`keras.Model` (anything that takes a `keras.Model` takes it) that also records which of its
layers is the backbone, the preprocessing, the augmentation, the pooled features and each head,
the backbone's ordered layer groups (name -> layer-name pattern), the BatchNorm policy and the
backbone's registry name. All of it is in `get_config`, so a model saved in one process and
loaded in another (safe mode) still knows its structure: freezing, feature caching, objectives,
learning-rate multipliers, evaluation and export read these attributes, never layer-name
conventions or the backbone registry (keras-hub's task classes do the same with `.backbone`).
"""

from __future__ import annotations

import re

import keras

from tltk.heads import TASKS, layer_activation
from tltk.precision import check_dtype_policy

MODALITIES = ("image", "text")
HEAD_GROUP = "head"


@keras.saving.register_keras_serializable(package="tltk")
class TransferModel(keras.Model):
    """A functional model made of a backbone, its preprocessing and one or more heads.

    Build one with `tltk.build_classifier` or `tltk.build_text_classifier`; construct it
    directly only to wrap your own functional graph. Every structural argument names a
    top-level layer of the graph.

    Args:
        inputs: KerasTensor or list. The functional inputs.
        outputs: KerasTensor, list or dict. The functional outputs.
        name: str. Model name. Defaults to `None`.
        backbone: str. Name of the backbone layer (a nested model, or one layer such as
            `tltk.HubLayer`).
        heads: dict. `{head_name: [layer names]}`, each head's layers in call order, its output
            layer last.
        groups: sequence. Ordered `(group_name, regex)` pairs, stem to top, that split the
            backbone's layers into groups (`tltk.BackboneSpec.groups` rules). Defaults to one
            group, `"backbone"`.
        features: str or None. Name of the layer whose output the heads share (the pooling);
            `None` when the heads take the backbone's output directly. Defaults to `None`.
        preprocessing: str or None. Name of the in-graph preprocessing layer. Defaults to `None`.
        augmentation: str or None. Name of the training-only augmentation layer. Defaults to
            `None`.
        train_bn: bool. Whether BatchNorm layers train when their group is unfrozen. Defaults to
            `False`.
        backbone_name: str or None. The backbone's registry name (`"mobilenet_v2"`), or `None`
            for a backbone from outside the registry. Defaults to `None`.
        modality: str. `"image"` (raw pixels in) or `"text"` (raw strings in). Defaults to
            `"image"`.
        class_names: list, dict or None. The class names of the output, one per unit: a list for
            a one-head model, or `{head_name: list}`. Prediction, evaluation and export use them.
            Defaults to `None` (set them later with `model.class_names = [...]`).
        lora_rank: int or None. The LoRA rank of the backbone's adapted layers
            (`tltk.build_classifier(..., lora_rank=...)`), `None` without LoRA. Defaults to
            `None`.
        lora_alpha: float or None. The LoRA scale's numerator (`alpha / rank`). Defaults to
            `None`.
        tasks: dict or None. `{head_name: task}` for heads whose task the output activation
            does not tell (`"regression"`: see `tltk.HeadSpec`). Defaults to `None`: a sigmoid
            head is `"multi_label"`, any other `"classification"`.
        dtype_policy: str or None. The policy the model was built under (`"mixed_float16"`,
            `"mixed_bfloat16"`, `"float32"`), kept in its config so that a reloaded model trains
            as it was built (`compile` adds loss scaling for `"mixed_float16"`) whatever the
            global policy. Defaults to `None`: the global policy at construction.
        **kwargs: Other `keras.Model` arguments (`trainable`).

    Example:

    >>> import tltk
    >>> model = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    >>> isinstance(model, tltk.TransferModel), model.backbone_name, list(model.heads)
    (True, 'tltk_glyphnet', ['predictions'])
    >>> list(model.groups)
    ['stem', 'block1', 'block2', 'block3', 'top']
    >>> model.class_names = ["cat", "dog", "fox"]
    >>> model.class_names
    ['cat', 'dog', 'fox']
    """

    # The config entries that describe the structure (what a copy of the graph keeps).
    STRUCTURE = (
        "backbone",
        "heads",
        "groups",
        "features",
        "preprocessing",
        "augmentation",
        "train_bn",
        "backbone_name",
        "modality",
        "class_names",
        "lora_rank",
        "lora_alpha",
        "tasks",
    )

    def __init__(
        self,
        inputs,
        outputs,
        name=None,
        *,
        backbone,
        heads,
        groups=(("backbone", ".*"),),
        features=None,
        preprocessing=None,
        augmentation=None,
        train_bn=False,
        backbone_name=None,
        modality="image",
        class_names=None,
        lora_rank=None,
        lora_alpha=None,
        tasks=None,
        dtype_policy=None,
        **kwargs,
    ):
        super().__init__(inputs, outputs, name=name, **kwargs)
        if dtype_policy is not None:  # a functional model ignores `dtype=`
            self.dtype_policy = check_dtype_policy(dtype_policy)
        names = {layer.name for layer in self.layers}
        for argument, value in (
            ("backbone", backbone),
            ("features", features),
            ("preprocessing", preprocessing),
            ("augmentation", augmentation),
        ):
            if value is not None and value not in names:
                raise ValueError(
                    f"`{argument}` must name a layer of the model. Received: {argument}={value!r}"
                )
        self._heads = _check_heads(heads, names)
        self._tasks = _check_tasks(tasks, self._heads)
        self._groups = _check_groups(groups)
        if modality not in MODALITIES:
            raise ValueError(
                f"`modality` must be one of {MODALITIES}. Received: modality={modality!r}"
            )
        self._backbone_layer = backbone
        self._features_layer = features
        self._preprocessing_layer = preprocessing
        self._augmentation_layer = augmentation
        self._backbone_name = backbone_name
        self._modality = modality
        self.train_bn = train_bn
        self.class_names = class_names
        self._lora_rank, self._lora_alpha = lora_rank, lora_alpha

    @property
    def backbone(self):
        """The backbone: a nested `keras.Model`, or one layer (`tltk.HubLayer`)."""
        return self.get_layer(self._backbone_layer)

    @property
    def preprocessing(self):
        """The in-graph preprocessing layer, or `None`."""
        return self._layer(self._preprocessing_layer)

    @property
    def augmentation(self):
        """The training-only augmentation layer, or `None`."""
        return self._layer(self._augmentation_layer)

    @property
    def features(self):
        """The layer whose output the heads share (pooling), or `None`."""
        return self._layer(self._features_layer)

    @property
    def heads(self) -> dict:
        """`{head_name: (layers...)}`, each head's layers in call order, its output layer last."""
        return {
            head: tuple(self.get_layer(n) for n in layers) for head, layers in self._heads.items()
        }

    @property
    def tasks(self) -> dict:
        """`{head_name: task}`: `"classification"`, `"multi_label"` or `"regression"`."""
        return {
            head: self._tasks.get(head)
            or (
                "multi_label"
                if layer_activation(self.get_layer(layers[-1])) == "sigmoid"
                else "classification"
            )
            for head, layers in self._heads.items()
        }

    @property
    def head_layers(self) -> list:
        """The layers after the backbone: the shared features layer, then every head's layers."""
        layers = [self.features] if self._features_layer else []
        for head in self.heads.values():
            layers.extend(layer for layer in head if layer not in layers)
        return layers

    @property
    def groups(self) -> dict:
        """The backbone's layer groups, stem to top: `{group_name: layer-name regex}`."""
        return dict(self._groups)

    @property
    def train_bn(self) -> bool:
        """Whether BatchNorm layers train when their group is unfrozen (saved with the model)."""
        return self._train_bn

    @train_bn.setter
    def train_bn(self, value):
        if not isinstance(value, bool):
            raise ValueError(f"`train_bn` must be True or False. Received: train_bn={value!r}")
        self._train_bn = value

    @property
    def backbone_name(self):
        """The backbone's registry name, or `None` for a backbone from outside the registry."""
        return self._backbone_name

    @property
    def lora_rank(self):
        """The LoRA rank of the backbone's adapted layers, or `None` without LoRA."""
        return self._lora_rank

    @property
    def lora_alpha(self):
        """The LoRA update's scale is `lora_alpha / lora_rank`; `None` without LoRA."""
        return self._lora_alpha

    @property
    def modality(self) -> str:
        """`"image"` or `"text"`: what the model takes."""
        return self._modality

    @property
    def class_names(self):
        """The class names: a list for a one-head model (`None` if unset), else `{head: list}`.

        Set them with a list (one-head model) or a dict of lists; each list has one non-empty
        name per output unit. They are saved with the model.
        """
        names = {head: list(names) for head, names in self._class_names.items()}
        if len(self._heads) == 1:
            return next(iter(names.values()), None)
        return names

    @class_names.setter
    def class_names(self, value):
        names = _check_class_names(value, self._head_widths())
        regression = [head for head in names if self._tasks.get(head) == "regression"]
        if regression:
            raise ValueError(
                f"Heads {regression} are regression heads: their outputs are values, not "
                f"classes, so they take no `class_names`. Received: class_names={value!r}"
            )
        self._class_names = names

    def _head_widths(self):
        return {
            head: int(self.get_layer(layers[-1]).output.shape[-1])
            for head, layers in self._heads.items()
        }

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": self._backbone_layer,
            "heads": {head: list(layers) for head, layers in self._heads.items()},
            "groups": [list(group) for group in self._groups],
            "features": self._features_layer,
            "preprocessing": self._preprocessing_layer,
            "augmentation": self._augmentation_layer,
            "train_bn": self._train_bn,
            "backbone_name": self._backbone_name,
            "modality": self._modality,
            "class_names": {head: list(names) for head, names in self._class_names.items()} or None,
            "lora_rank": self._lora_rank,
            "lora_alpha": self._lora_alpha,
            "tasks": dict(self._tasks) or None,
            "dtype_policy": self.dtype_policy.name,
        }

    def _layer(self, name):
        return None if name is None else self.get_layer(name)


def as_transfer_model(model, argument="model"):
    """Returns `model` if it is a `TransferModel`, else raises a `ValueError` saying what to do.

    A `.keras` file written by tltk 0.1 loads as a plain functional model: `tltk.upgrade_model`
    turns it into a `TransferModel` once (save it again to keep the result).
    """
    if isinstance(model, TransferModel):
        return model
    if isinstance(model, keras.Model):
        raise ValueError(
            f"`{argument}` must be a tltk.TransferModel (built by tltk.build_classifier or "
            f"tltk.build_text_classifier). Received: a {type(model).__name__} named "
            f"{model.name!r}. "
            "If it is a .keras file written by tltk 0.1, convert it with "
            "`model = tltk.upgrade_model(model)` and save it again."
        )
    raise ValueError(f"`{argument}` must be a tltk.TransferModel. Received: {type(model).__name__}")


def class_names_of(model):
    """The class names of a one-head `TransferModel`, else `None` (any other model, or unset)."""
    names = model.class_names if isinstance(model, TransferModel) else None
    return names if isinstance(names, list) else None


def _check_heads(heads, names):
    if not isinstance(heads, dict) or not heads:
        raise ValueError(
            f"`heads` must be a non-empty dict of name -> layer names. Received: heads={heads!r}"
        )
    checked = {}
    for head, layers in heads.items():
        layers = [layers] if isinstance(layers, str) else list(layers)
        missing = [n for n in layers if n not in names]
        if not isinstance(head, str) or not layers or missing:
            raise ValueError(
                "Each entry of `heads` must map a name to the model's layer names, output last. "
                f"Received: {head!r}: {layers!r}" + (f" (no layers {missing})" if missing else "")
            )
        checked[head] = tuple(layers)
    return checked


def _check_tasks(tasks, heads):
    tasks = dict(tasks or {})
    for head, task in tasks.items():
        if head not in heads or task not in TASKS:
            raise ValueError(
                f"`tasks` must map head names {list(heads)} to one of {TASKS}. "
                f"Received: {head!r}: {task!r}"
            )
    return tasks


def _check_class_names(value, widths):
    """`{head: tuple of names}` for the heads that have names, checked against output widths."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        if len(widths) != 1:
            raise ValueError(
                f"This model has {len(widths)} heads {list(widths)}: set `class_names` as a dict "
                f"of head name -> list of names. Received: class_names={value!r}"
            )
        value = {next(iter(widths)): value}
    checked = {}
    for head, names in value.items():
        if head not in widths:
            raise ValueError(
                f"`class_names` names a head the model does not have; its heads are "
                f"{list(widths)}. Received: {head!r}"
            )
        if isinstance(names, str) or not isinstance(names, (list, tuple)):
            raise ValueError(
                f"`class_names` must be a list of strings, one per output. Received: {names!r}"
            )
        names = tuple(names)
        bad = [n for n in names if not isinstance(n, str) or not n.strip() or n.splitlines() != [n]]
        if bad or len(names) != widths[head]:
            raise ValueError(
                f"`class_names` of head {head!r} must be {widths[head]} non-empty strings "
                "without line breaks, one per output"
                + (f"; these are not: {bad!r}" if bad else "")
                + f". Received: {len(names)} names {list(names)!r}"
            )
        if len(set(names)) != len(names):
            raise ValueError(
                f"`class_names` of head {head!r} must be distinct. Received: {list(names)!r}"
            )
        checked[head] = names
    return checked


def _check_groups(groups):
    checked = []
    for group in groups:
        if len(group) != 2 or not all(isinstance(part, str) for part in group):
            raise ValueError(
                f"Each entry of `groups` must be a (name, regex) pair. Received: {group!r}"
            )
        re.compile(group[1])
        checked.append((group[0], group[1]))
    if (
        not checked
        or len({name for name, _ in checked}) != len(checked)
        or HEAD_GROUP in dict(checked)
    ):
        raise ValueError(
            f"`groups` must be one or more uniquely named groups, none named {HEAD_GROUP!r}. "
            f"Received: groups={groups!r}"
        )
    return tuple(checked)
