"""Labelled examples and their pooled backbone features, whatever form and size they come in.

`labelled_examples` reads an `ImageData`, a `tf.data` dataset of batches or `(x, labels)` arrays
into arrays; `pooled_features` runs a tltk model's backbone (and pooling) over them in inference
mode, the images resized to the model's input size by `tltk.data`'s resize. Used by
`tltk.rank_backbones`, `tltk.build_prototype_classifier` and `tltk.adapt`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tltk.argcheck import integer
from tltk.data.decode import resize
from tltk.data.image_data import ImageData
from tltk.feature_cache import cut_layer, image_digests


def labelled_examples(data, max_examples=None, seed=0, *, argument="data"):
    """`(x, labels, num_classes)` arrays from `data`.

    Args:
        data: an `ImageData` (its training and validation examples), a `tf.data.Dataset` of
            `(x, labels)` batches, or an `(x, labels)` pair: images `(n, h, w, 3)` (or
            `(n, h, w, 1)`) in 0..255 at any size, or a list of strings. Labels are class indexes
            or one-hot rows.
        max_examples: int or None. Keep a stratified random subset of at most this many.
        seed: int. Seed of that subset.
        argument: str. The caller's name for `data`, in errors.

    Returns:
        `(x, labels, num_classes)`: `num_classes` from the `ImageData`, else the largest label + 1.
    """
    num_classes = None
    if isinstance(data, ImageData):
        if data.label_mode == "multi_hot":
            raise ValueError(
                f"`{argument}` must be single-label data; this ImageData is multi-label."
            )
        num_classes = data.num_classes
        data = data.train if data.validation is None else data.train.concatenate(data.validation)
    if isinstance(data, tf.data.Dataset):
        batches = list(data.as_numpy_iterator())
        if not batches:
            raise ValueError(f"`{argument}` is an empty dataset.")
        texts = batches[0][0].dtype.kind in "OSU"
        x = np.concatenate([b[0] for b in batches])
        x = [v.decode() if isinstance(v, bytes) else str(v) for v in x] if texts else x
        labels = np.concatenate([b[1] for b in batches])
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, labels = data
        x = list(x) if is_text(x) else np.asarray(x)
        labels = np.asarray(labels)
    else:
        raise ValueError(
            f"`{argument}` must be a tltk ImageData, a tf.data.Dataset of (x, labels) batches or "
            f"an (x, labels) pair of arrays. Received: {type(data).__name__}"
        )
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"`{argument}` has {len(x)} examples but {len(labels)} labels.")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError("The labels must be class indexes 0..n-1 (or one-hot rows).")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    counts = np.bincount(labels, minlength=num_classes)
    if (counts > 0).sum() < 2:
        raise ValueError(
            f"`{argument}` needs examples of at least 2 classes. "
            f"Received: {len(labels)} examples, class counts {counts.tolist()}"
        )
    if not is_text(x) and (x.ndim != 4 or x.shape[-1] not in (1, 3)):
        raise ValueError(
            f"Images must be an array (n, height, width, 3) of 0..255 pixels. Received: {x.shape}"
        )
    if max_examples is not None:
        keep = _stratified(labels, integer("max_examples", max_examples, minimum=2), seed)
        x = [x[i] for i in keep] if is_text(x) else x[keep]
        labels = labels[keep]
    return x, labels, num_classes


def _stratified(labels, count, seed):
    """Indexes of a stratified random subset of at most `count` examples, in order."""
    if count >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, count // len(classes))
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(keep))


def is_text(x):
    return isinstance(x, (list, tuple)) and x and isinstance(x[0], str)


def pooled_features(model, x, batch_size=64, verbose=0, output=None, digests=False):
    """Pooled features (or `output`'s values) of `x` through `model`, in inference mode; with
    `digests`, also each input image's `image_digests` (for images)."""
    layer = output if output is not None else (model.features or cut_layer(model))
    extractor = keras.Model(model.inputs[0], layer.output)
    size = tuple(model.input_shape[1:3]) if not is_text(x) else None
    progress = keras.utils.Progbar(len(x)) if verbose else None
    parts, names = [], []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if size is not None:
            batch = resized_images(batch, size)
            names += image_digests(batch) if digests else []
        else:
            batch = tf.constant(batch)
        parts.append(np.asarray(extractor(batch, training=False), dtype="float64"))
        if progress is not None:
            progress.add(len(parts[-1]))
    values = np.concatenate(parts)
    values = values.reshape(len(values), -1)
    return (values, names) if digests else values


def resized_images(batch, size):
    """Images resized to `size` as the data loaders resize them (float32, 0..255)."""
    images = tf.convert_to_tensor(batch)
    if images.shape[-1] == 1:
        images = tf.image.grayscale_to_rgb(images)
    if tuple(images.shape[1:3]) == size:
        return tf.cast(images, "float32")
    if images.dtype != tf.uint8:  # float pixels in 0..255, as tltk.data gives them
        images = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
    return tf.cast(resize(images, size), "float32")
