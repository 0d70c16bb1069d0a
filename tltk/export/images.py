"""Turns what a user hands to export or a predictor (arrays, datasets, file paths) into pixels."""

from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image

# `representative_data` / `parity_data`: up to SAMPLE_POOL_FACTOR * limit images are read, and
# `limit` of them are drawn at random, so a dataset sorted by class still gives every class.
SAMPLE_POOL_FACTOR = 4


def image_batch(images, input_shape, *, name="images"):
    """Returns `images` as a float32 `(N, H, W, C)` array of raw pixels at `input_shape`.

    Args:
        images: array-like, str or Path, or a list of str/Path. One `(H, W, C)` image, a batch
            `(N, H, W, C)`, or image files (decoded with Pillow). Other sizes are resized
            (bilinear); a 2-D array is a single grayscale image.
        input_shape: tuple. The model's `(height, width, channels)`.
        name: str. Argument name used in error messages. Defaults to `"images"`.

    Returns:
        A float32 numpy array of shape `(N, *input_shape)`, values as given (0..255 expected).

    Example:

    >>> image_batch(np.zeros((20, 20, 3), "uint8"), (32, 32, 3)).shape
    (1, 32, 32, 3)
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike)):
        return np.stack([_read_file(path, input_shape, name) for path in images])
    array = np.asarray(images)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"`{name}` must be image arrays or image file paths. "
            f"Received: an array of dtype {array.dtype}"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(
            f"`{name}` must be one image (H, W, C) or a batch (N, H, W, C). "
            f"Received: shape={array.shape}"
        )
    return _fit(array.astype("float32"), input_shape, name)


def sample_images(data, input_shape, *, limit, name, seed=0):
    """Draws up to `limit` images from `data` as a float32 `(N, H, W, C)` array.

    Args:
        data: `tf.data.Dataset`, numpy array, or list of image paths. A dataset may yield image
            batches, single images, or `(images, labels)` tuples (the first item is used).
        input_shape: tuple. The model's `(height, width, channels)`.
        limit: int. Most images to return.
        name: str. Argument name used in error messages (`"representative_data"`).
        seed: int. Seed of the random draw. Defaults to `0`.

    Returns:
        A float32 numpy array of at most `limit` images, in the order they were read.

    Example:

    >>> sample_images(np.zeros((10, 32, 32, 3)), (32, 32, 3), limit=4, name="data").shape
    (4, 32, 32, 3)
    """
    if isinstance(data, tf.data.Dataset):
        images = _from_dataset(data, input_shape, limit * SAMPLE_POOL_FACTOR, name)
    else:
        images = image_batch(data, input_shape, name=name)
    if len(images) == 0:
        raise ValueError(f"`{name}` holds no images. Received: {data!r}")
    if len(images) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
        images = images[keep]
    if images.max() <= 1.0:
        warnings.warn(
            f"`{name}` looks scaled to [0, 1] (max {images.max():.3g}); tltk models take raw "
            "0..255 pixels, so calibration and parity figures will be off.",
            stacklevel=3,
        )
    return images


def _from_dataset(dataset, input_shape, most, name):
    chunks, count = [], 0
    for element in dataset.as_numpy_iterator():
        if isinstance(element, (tuple, list)):
            element = element[0]
        if isinstance(element, dict):
            raise ValueError(
                f"`{name}` must yield images or (images, labels). Received: a dict with keys "
                f"{sorted(element)}"
            )
        batch = image_batch(element, input_shape, name=name)
        chunks.append(batch)
        count += len(batch)
        if count >= most:
            break
    if not chunks:
        return np.zeros((0, *input_shape), "float32")
    return np.concatenate(chunks)[:most]


def _read_file(path, input_shape, name):
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"`{name}`: no image file at {path}. Received: {str(path)!r}")
    height, width, channels = input_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype="float32")
    except OSError as error:
        raise ValueError(f"`{name}`: cannot read {path} as an image ({error}).") from error
    return array.reshape(input_shape)


def _fit(batch, input_shape, name):
    height, width, channels = input_shape
    if batch.shape[-1] != channels:
        raise ValueError(
            f"`{name}` must have {channels} channel(s), as the model does. "
            f"Received: shape={batch.shape}"
        )
    if batch.shape[1:3] != (height, width):
        batch = tf.image.resize(batch, (height, width), method="bilinear").numpy()
    return batch
