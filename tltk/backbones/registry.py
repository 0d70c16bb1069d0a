"""The backbone registry: one `BackboneSpec` record per pretrained backbone.

A spec is data, not a class (timm's `PretrainedCfg`, fastai's `model_meta`): how to construct the
feature extractor, which preprocessing it expects, its input sizes, feature width, the ordered layer
groups used for staged unfreezing, and which pretrained weights exist. Tests loop over the registry,
so registering a backbone also registers its tests.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from typing import Callable

SOURCES = ("keras_applications", "tfhub", "keras_hub", "tltk")
PREPROCESSING_MODES = ("caffe", "tf", "torch", "unit", "none")

_REGISTRY: dict[str, "BackboneSpec"] = {}
_ALIASES: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A pretrained backbone, described as a record.

    Args:
        name: str. Registry name, snake_case (`"mobilenet_v2"`).
        family: str. Architecture family (`"mobilenet_v2"`, `"resnet"`, ...).
        source: str. Where it comes from: one of `"keras_applications"`, `"tfhub"`,
            `"keras_hub"`, `"tltk"`.
        constructor: callable. `constructor(input_shape, weights)` returns a `keras.Model` (or a
            Keras layer) mapping preprocessed images to a feature map or feature vector.
            `weights` is one of `weights` below or `None`.
        preprocessing: str. In-graph preprocessing applied to raw 0..255 pixels before the backbone:
            `"caffe"` (RGB->BGR, ImageNet mean subtracted), `"tf"` (to [-1, 1]), `"torch"` (to
            [0, 1], then ImageNet mean/std), `"unit"` (to [0, 1]) or `"none"` (the backbone does
            its own).
        default_input_size: tuple. `(height, width)` the weights were trained at.
        min_input_size: tuple. Smallest `(height, width)` the architecture accepts.
        feature_dim: int. Width of the pooled feature vector.
        groups: tuple. Ordered `(group_name, layer_name_regex)` pairs, stem to top. A layer belongs
            to the first group whose pattern matches its name (`re.match`); a layer no pattern
            matches (auto-named adds, pads) joins the group of the next layer that does, or the last
            group if none follows.
        weights: tuple. Names of the pretrained weights that exist (`("imagenet",)`).
        aliases: tuple. Other accepted names, such as the Keras class name.
        channels: int. Number of input channels. Defaults to 3.
        description: str. One line for `tltk backbones`. Defaults to `""`.

    Example:

    ```python
    import keras, tltk
    spec = tltk.BackboneSpec(
        name="tiny_cnn", family="custom", source="tltk",
        constructor=lambda input_shape, weights: keras.Sequential(
            [keras.Input(input_shape), keras.layers.Conv2D(8, 3, name="stem_conv"),
             keras.layers.Conv2D(16, 3, name="top_conv")], name="tiny_cnn"),
        preprocessing="unit", default_input_size=(32, 32), min_input_size=(8, 8),
        feature_dim=16, groups=(("stem", "stem_"), ("top", "top_")), weights=())
    tltk.register_backbone(spec, overwrite=True)
    model = tltk.build_classifier("tiny_cnn", num_classes=3, weights=None)
    ```
    """

    name: str
    family: str
    source: str
    constructor: Callable
    preprocessing: str
    default_input_size: tuple
    min_input_size: tuple
    feature_dim: int
    groups: tuple
    weights: tuple = ()
    aliases: tuple = ()
    channels: int = 3
    description: str = ""

    def __post_init__(self):
        if not re.fullmatch(r"[a-z0-9_:./\-]+", self.name):
            raise ValueError(
                "`name` must be lower-case letters, digits and `_:./-`. "
                f"Received: name={self.name!r}"
            )
        if self.source not in SOURCES:
            raise ValueError(f"`source` must be one of {SOURCES}. Received: source={self.source!r}")
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"`preprocessing` must be one of {PREPROCESSING_MODES}. "
                f"Received: preprocessing={self.preprocessing!r}"
            )
        if not self.groups:
            raise ValueError(
                f"Backbone {self.name!r} needs at least one layer group. Received: groups=()"
            )
        for group in self.groups:
            if len(group) != 2:
                raise ValueError(
                    "Each entry of `groups` must be a (group_name, regex) pair. "
                    f"Received: {group!r}"
                )
            re.compile(group[1])

    @property
    def group_names(self) -> tuple:
        """The group names, stem to top."""
        return tuple(name for name, _ in self.groups)

    def default_input_shape(self) -> tuple:
        """`(height, width, channels)` at the default input size."""
        return (*self.default_input_size, self.channels)


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    """Adds `spec` to the registry under its name and aliases, and returns it.

    Args:
        spec: BackboneSpec. The record to add.
        overwrite: bool. Replace an existing entry of the same name. Defaults to `False`.
    """
    if not isinstance(spec, BackboneSpec):
        raise ValueError(f"`spec` must be a tltk.BackboneSpec. Received: {type(spec).__name__}")
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A backbone named {spec.name!r} is already registered; pass overwrite=True to "
            "replace it."
        )
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[_normalise(alias)] = spec.name
    _ALIASES[_normalise(spec.name)] = spec.name
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """Returns the registered spec for `name` (registry name, alias, or Keras class name).

    Raises:
        ValueError: for an unknown name, listing the closest registered names.

    Example:

    >>> import tltk
    >>> tltk.get_backbone("MobileNetV2").name
    'mobilenet_v2'
    """
    if isinstance(name, BackboneSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"`backbone` must be a registry name. Received: {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    key = _ALIASES.get(_normalise(name))
    if key is not None:
        return _REGISTRY[key]
    for prefix, module in (
        ("hub:", "tltk.backbones.hub"),
        ("keras_hub:", "tltk.backbones.keras_hub"),
    ):
        if name.startswith(prefix):  # any TF Hub handle or keras-hub preset, resolved on demand
            return importlib.import_module(module).resolve_dynamic(name)
    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=5, cutoff=0.5)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} Change the `backbone` argument; "
        "`tltk.list_backbones()` lists every name."
    )


def list_backbones(source: str | None = None) -> list:
    """Returns the registered backbone names, optionally only those from `source`.

    Example:

    >>> import tltk
    >>> "resnet50" in tltk.list_backbones(source="keras_applications")
    True
    """
    if source is not None and source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES} or None. Received: source={source!r}")
    return sorted(name for name, spec in _REGISTRY.items() if source in (None, spec.source))


def is_registered(name: str) -> bool:
    """Whether `name` is a registry name or alias."""
    return name in _REGISTRY or _normalise(name) in _ALIASES


def assign_groups(spec_groups: tuple, layer_names: list) -> list:
    """Maps each layer name to its group name, following `BackboneSpec.groups` rules.

    Layers matched by no pattern join the group of the next matched layer, or the last group.
    """
    compiled = [(group, re.compile(pattern)) for group, pattern in spec_groups]
    assigned = [next((g for g, rx in compiled if rx.match(n)), None) for n in layer_names]
    following = spec_groups[-1][0]
    for i in range(len(assigned) - 1, -1, -1):
        if assigned[i] is None:
            assigned[i] = following
        else:
            following = assigned[i]
    return assigned


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9:./]", "", name.lower())
