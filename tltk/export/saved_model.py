"""Writes a Keras classifier as a SavedModel whose signature returns probabilities.

`write_saved_model` writes an image classifier (raw pixels in); `write_archive` is the step every
SavedModel of tltk shares (the text adapter's too): one `serving_default` signature, the class
names in `assets.extra/labels.txt` (a model with several heads: `labels_<head>.txt` per labelled
head).
"""

from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

from tltk import atomic
from tltk.export.heads import head_outputs, labels_file, output_heads, write_heads

SIGNATURE_KEY = "serving_default"
INPUT_KEY = "image"
OUTPUT_KEY = "probabilities"
LABELS_FILE = "labels.txt"
# Files a SavedModel carries that its graph does not read (TensorFlow's own convention).
EXTRA_ASSETS = "assets.extra"
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


def check_image_input(model):
    """Checks that `model` is a Keras model with one fixed-size image input; returns its shape.

    Example:

    ```python
    height, width, channels = check_image_input(model)
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    if len(model.inputs) != 1:
        raise ValueError(
            f"`model` must have one image input. Received: {len(model.inputs)} input(s)"
        )
    input_shape = tuple(model.inputs[0].shape[1:])
    if len(input_shape) != 3 or None in input_shape:
        raise ValueError(
            "`model` must take images of a fixed size, (height, width, channels); build it with "
            f"`input_shape=`. Received: input shape {tuple(model.inputs[0].shape)}"
        )
    return input_shape


def check_classifier(model):
    """Checks that `model` can be exported and returns `(input_shape, num_classes, activation)`.

    `activation` is the name of the last layer's activation; a linear (logits) output gets a
    softmax added in the exported signature, so every file returns probabilities.

    Args:
        model: keras.Model. One image input of fixed size, one `(batch, classes)` output.

    Returns:
        A tuple `((height, width, channels), num_classes, activation)`.

    Example:

    ```python
    input_shape, num_classes, activation = check_classifier(model)
    ```
    """
    input_shape = check_image_input(model)
    if len(model.outputs) != 1:
        raise ValueError(
            "`model` must have one output, or one per named head (a dict: "
            "tltk.build_classifier(backbone, num_classes={head: classes})). Received: "
            f"{len(model.outputs)} outputs"
        )
    output_shape = tuple(model.outputs[0].shape)
    if len(output_shape) != 2 or output_shape[1] is None:
        raise ValueError(
            "`model` must output one score per class, shape (batch, classes). "
            f"Received: output shape {output_shape}"
        )
    return input_shape, int(output_shape[1]), last_activation(model)


def last_activation(model):
    """The name of the activation of `model`'s last layer; `"linear"` when it has none."""
    return getattr(getattr(model.layers[-1], "activation", None), "__name__", "linear")


def write_saved_model(model, path, *, class_names):
    """Writes `model` as a SavedModel with a `serving_default` signature on raw pixels.

    The signature takes `image`, float32 `(batch, H, W, C)` with values 0..255, and returns
    `{"probabilities": (batch, classes)}`, with the model's preprocessing inside. The class names
    go to `assets.extra/labels.txt`, where `tltk.load_exported` finds them. A model with several
    heads (`tltk.export.heads.output_heads`) returns one output per head, named by it
    (`tltk.export.heads.head_outputs`); each labelled head's names go to
    `assets.extra/labels_<head>.txt`, the heads in order to `assets.extra/heads.json`.

    Args:
        model: keras.Model. A classifier accepted by `check_classifier`, or a model with
            several heads.
        path: str or Path. Folder to create.
        class_names: list or dict. One name per class; with several heads `{head: names}` for
            each classification or multi-label head.

    Returns:
        The `pathlib.Path` of the SavedModel folder.

    Example:

    ```python
    write_saved_model(model, "/tmp/sm", class_names=["cat", "dog"])
    serve = tf.saved_model.load("/tmp/sm").signatures["serving_default"]
    probs = serve(image=tf.zeros((1, 224, 224, 3)))["probabilities"]
    layer = keras.layers.TFSMLayer("/tmp/sm", call_endpoint="serving_default")
    ```
    """
    input_dtype = model.inputs[0].dtype
    heads = output_heads(model)
    if heads is None:
        input_shape, _, activation = check_classifier(model)

        def serve(image):
            return serving_outputs(model(tf.cast(image, input_dtype), training=False), activation)
    else:
        input_shape = check_image_input(model)

        def serve(image):
            return head_outputs(model(tf.cast(image, input_dtype), training=False), heads)

    spec = tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_KEY)
    path = write_archive(model, path, serve, [spec], class_names=class_names)
    if heads is not None:
        (path / EXTRA_ASSETS).mkdir(exist_ok=True)
        write_heads(path / EXTRA_ASSETS, heads)
    return path


def serving_outputs(outputs, activation):
    """The signature's outputs: `{"probabilities": ...}`, a softmax added to logits.

    Args:
        outputs: tf.Tensor. The model's outputs, `(batch, classes)`.
        activation: str. The model's last activation (`last_activation`).

    Returns:
        A dict with one float32 tensor.
    """
    outputs = tf.cast(outputs, tf.float32)
    if activation not in PROBABILITY_ACTIVATIONS:
        outputs = tf.nn.softmax(outputs)
    return {OUTPUT_KEY: outputs}


def write_archive(model, path, serve, input_signature, *, class_names=None):
    """Writes a SavedModel whose `serving_default` signature is `serve`, tracking `model`.

    Args:
        model: keras.Model. The model whose variables the signature reads.
        path: str or Path. Folder to create.
        serve: callable. The signature: tensors in, a dict of tensors out.
        input_signature: list. One `tf.TensorSpec` per argument of `serve`, named.
        class_names: list, dict or None. Written to `assets.extra/labels.txt` when given, a dict
            `{head: names}` to `assets.extra/labels_<head>.txt`. Defaults to `None`.

    Returns:
        The `pathlib.Path` of the SavedModel folder.

    Example:

    ```python
    spec = tf.TensorSpec((None,), tf.string, name="text")
    write_archive(model, "/tmp/sm", lambda text: {"probabilities": model(text)}, [spec])
    ```
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=input_signature)
    path = pathlib.Path(path)
    archive.write_out(str(path), verbose=False)
    if class_names is not None:
        (path / EXTRA_ASSETS).mkdir(exist_ok=True)
        write_label_files(path / EXTRA_ASSETS, class_names)
    return path


def write_label_files(folder, class_names):
    """Writes `labels.txt` (a list of names) or `labels_<head>.txt` per head (a dict)."""
    if isinstance(class_names, dict):
        for head, names in class_names.items():
            write_labels(pathlib.Path(folder) / labels_file(head), names)
    else:
        write_labels(pathlib.Path(folder) / LABELS_FILE, class_names)


def write_labels(path, class_names):
    """Writes one class name per line, without a trailing newline (read as an empty label)."""
    return atomic.write_text(path, "\n".join(class_names))


def read_labels(path):
    """Reads a labels file written by `write_labels`; returns a list of names."""
    return pathlib.Path(path).read_text(encoding="utf-8").splitlines()
