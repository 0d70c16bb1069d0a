"""Loading backbone weights: Keras' download path, or a local file matched by layer name, shape."""

from __future__ import annotations

import logging
import os
import urllib.error
from dataclasses import dataclass

import keras

from tltk.model_file import load_model

logger = logging.getLogger("tltk")

WHOLE_MODEL_SUFFIXES = (".keras", ".h5")


@dataclass(frozen=True)
class WeightsReport:
    """What `load_weights_by_name` did.

    Attributes:
        path: str. The file read.
        matched: tuple. Names of backbone layers whose weights were set.
        unmatched: tuple. Names of backbone layers with weights that found no match.
    """

    path: str
    matched: tuple
    unmatched: tuple

    def __str__(self):
        return (
            f"Loaded {len(self.matched)} of {len(self.matched) + len(self.unmatched)} backbone "
            "layers "
            f"with weights from {self.path}"
        )


def construct_with_weights(spec, input_shape, weights):
    """Calls `spec.constructor`, turning a failed download into an error that says what to do."""
    try:
        return spec.constructor(input_shape, weights)
    except Exception as error:  # Keras raises a bare Exception("URL fetch failure ...")
        text = str(error)
        if weights in spec.weights and (
            "URL fetch failure" in text or isinstance(error, urllib.error.URLError)
        ):
            raise ConnectionError(
                f"Could not download the {weights!r} weights of backbone {spec.name!r} "
                f"({text.strip()}). "
                "Check the network connection, or pass a local file instead: "
                f"build_classifier({spec.name!r}, ..., weights='/path/to/{spec.name}.weights.h5') "
                "or the path of a saved .keras model that contains this backbone. Keras also "
                "reuses a file "
                "already in ~/.keras/models/ (copy it there from a machine that can download it)."
            ) from error
        raise


def check_weights_path(weights):
    """Raises a clear `ValueError` when a weights path does not exist or has an unknown suffix."""
    if not os.path.exists(weights):
        raise ValueError(
            f"`weights` file not found: {weights!r}. Pass an existing file, 'imagenet' or None."
        )
    if not (weights.endswith(".weights.h5") or weights.endswith(WHOLE_MODEL_SUFFIXES)):
        raise ValueError(
            "`weights` must be a registered weights name, None, a `.weights.h5` file of the "
            "backbone, "
            f"or a whole model saved as `.keras` or `.h5`. Received: weights={weights!r}"
        )


def load_weights_file(backbone: keras.Model, path: str) -> WeightsReport:
    """Loads `path` into `backbone`.

    A `.weights.h5` file is the backbone's own weights (`backbone.save_weights`) and must match
    exactly. A whole model (`.keras` or `.h5`) is opened with `tltk.load_model`, in safe mode
    (its TF Hub modules load only when trusted, see `tltk.trust_hub_handles`), and searched for
    layers with the same name and weight shapes as the backbone's; matches are copied, and zero
    matches is an error.

    Args:
        backbone: keras.Model. The backbone to fill.
        path: str. The weights or model file.

    Returns:
        A `WeightsReport`.
    """
    check_weights_path(path)
    with_weights = [layer.name for layer in _leaf_layers(backbone) if layer.weights]
    if path.endswith(".weights.h5"):
        try:
            backbone.load_weights(path)
        except Exception as error:
            raise ValueError(
                f"Could not load {path!r} into backbone {backbone.name!r}: {error}. A "
                "`.weights.h5` file "
                "must come from the same backbone's `save_weights`; for another model's file, "
                "pass its "
                "whole `.keras` model to match layers by name."
            ) from error
        return WeightsReport(path, tuple(with_weights), ())

    source = load_model(path, compile=False)
    donors = {}
    for layer in _leaf_layers(source):
        if layer.weights:
            donors.setdefault(layer.name, layer)
    matched, unmatched = [], []
    for layer in _leaf_layers(backbone):
        if not layer.weights:
            continue
        donor = donors.get(layer.name)
        if donor is not None and [w.shape for w in donor.weights] == [
            w.shape for w in layer.weights
        ]:
            layer.set_weights(donor.get_weights())
            matched.append(layer.name)
        else:
            unmatched.append(layer.name)
    report = WeightsReport(path, tuple(matched), tuple(unmatched))
    if not matched:
        raise ValueError(
            f"No layer of {path!r} matches backbone {backbone.name!r} by name and weight shape. "
            "Pass a model that contains this backbone, or a `.weights.h5` file saved from it."
        )
    logger.info("%s", report)
    return report


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer
