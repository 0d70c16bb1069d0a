"""Turns what a user hands to export or a predictor (arrays, datasets, file paths) into pixels.

Image files are decoded by the training pipeline's decoder, `tltk.data.images.load_images` (EXIF
orientation applied, 8-bit RGB, the same resize), so a file gives a predictor, int8 calibration
and the parity gate the very pixels it gave training. A 1-channel (grayscale) model gets the RGB
turned gray by `tltk.data.decode.to_grayscale`, the same everywhere.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

from tltk.data import decode
from tltk.data.arrays import to_uint8
from tltk.data.images import load_images

# `representative_data` / `parity_data`: up to SAMPLE_POOL_FACTOR * limit images are read, and
# `limit` of them are drawn at random, so a dataset sorted by class still gives every class.
SAMPLE_POOL_FACTOR = 4
_NAMED_FILES = 5  # bad files named in an error; the rest are counted


def image_batch(images, input_shape, *, name="images", crop_to_aspect_ratio=False):
    """Returns `images` as a float32 `(N, H, W, C)` array of raw pixels at `input_shape`.

    Files are read as `tltk.data.load_image` reads them for training. Arrays at the model's size
    are used as given; arrays of another size (or with `crop_to_aspect_ratio`) are rounded to
    uint8 and resized as `tltk.data.from_arrays` does. RGB images given to a 1-channel model are
    turned gray with `tltk.data.decode.to_grayscale` (Pillow's `"L"` formula).

    Args:
        images: array-like, str or Path, or a list of str/Path. One `(H, W, C)` image, a batch
            `(N, H, W, C)`, or image files; a 2-D array is a single grayscale image.
        input_shape: tuple. The model's `(height, width, channels)`.
        name: str. Argument name used in error messages. Defaults to `"images"`.
        crop_to_aspect_ratio: bool. Center crop to the model's aspect ratio before resizing, as
            the training data was prepared with the same argument. Defaults to `False`.

    Returns:
        A float32 numpy array of shape `(N, *input_shape)`, values as given (0..255 expected).

    Raises:
        ValueError: an image file cannot be read (each bad file is named, with the reason), or
            the images do not fit the model.

    Example:

    >>> image_batch(np.zeros((20, 20, 3), "uint8"), (32, 32, 3)).shape
    (1, 32, 32, 3)
    >>> image_batch(np.zeros((5, 20, 20), "uint8"), (32, 32, 3)).shape  # 5 grayscale images
    (5, 32, 32, 3)
    """
    paths = _paths(images, name)
    if paths is not None:
        return _read_files(paths, input_shape, name, crop_to_aspect_ratio)
    array = np.asarray(images)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"`{name}` must be image arrays or image file paths. "
            f"Received: an array of dtype {array.dtype}"
        )
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4)):
        array = array[..., None]  # one grayscale image, or a batch of them (as from_arrays takes)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(
            f"`{name}` must be one image (H, W, C) or a batch (N, H, W, C). "
            f"Received: shape={array.shape}"
        )
    if array.dtype.kind in "iu":  # integer pixels (uint16 too) read as `from_arrays` reads them
        array = to_uint8(array, name)
    return _fit(array, input_shape, name, crop_to_aspect_ratio)


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
    paths = None if isinstance(data, tf.data.Dataset) else _paths(data, name)
    if isinstance(data, tf.data.Dataset):
        images = _from_dataset(data, input_shape, limit * SAMPLE_POOL_FACTOR, name)
    elif paths is not None:  # draw the files first: only those drawn are decoded
        images = image_batch(_draw(paths, limit, seed), input_shape, name=name)
    else:
        images = image_batch(data, input_shape, name=name)
    if len(images) == 0:
        raise ValueError(f"`{name}` holds no images. Received: {data!r}")
    images = _draw(images, limit, seed)
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


def _draw(items, limit, seed):
    """`limit` of `items` drawn at random (in their order), or all of them when there are fewer."""
    if len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
    return items[keep] if isinstance(items, np.ndarray) else [items[i] for i in keep]


def _paths(images, name):
    """`images` as a list of file paths, or `None` when it holds no paths (arrays)."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if not isinstance(images, (list, tuple)) or not images:
        return None
    is_path = [isinstance(item, (str, os.PathLike)) for item in images]
    if not any(is_path):
        return None
    if not all(is_path):
        raise ValueError(
            f"`{name}` must be all image file paths or all arrays. Received: a list mixing "
            f"{sum(is_path)} paths with {len(images) - sum(is_path)} other items"
        )
    return list(images)


def _read_files(paths, input_shape, name, crop_to_aspect_ratio):
    """Decodes `paths` with the training pipeline's decoder; raises naming every bad file."""
    height, width, channels = input_shape
    pixels, _, skipped = load_images(
        paths, (height, width), crop_to_aspect_ratio=crop_to_aspect_ratio
    )
    if skipped:
        named = "; ".join(f"{path!r} ({reason})" for path, reason in skipped[:_NAMED_FILES])
        more = f"; and {len(skipped) - _NAMED_FILES} more" if len(skipped) > _NAMED_FILES else ""
        raise ValueError(
            f"`{name}`: cannot use {len(skipped)} of {len(paths)} image files. "
            f"Received: {named}{more}"
        )
    return _channels(pixels.numpy(), channels, name).astype("float32")


def _fit(batch, input_shape, name, crop_to_aspect_ratio):
    height, width, channels = input_shape
    batch = _channels(batch, channels, name)
    if batch.shape[1:3] != (height, width) or crop_to_aspect_ratio:
        pixels = np.round(np.clip(batch, 0, 255)).astype(np.uint8)
        batch = decode.resize(pixels, (height, width), crop_to_aspect_ratio).numpy()
    return batch.astype("float32")


def _channels(batch, channels, name):
    """`batch` with the model's channel count: RGB to gray for a 1-channel model; gray, gray and
    alpha or RGBA to RGB for an RGB model, as `tltk.data` reads them."""
    if batch.shape[-1] == 3 and channels == 1:
        return decode.to_grayscale(batch).numpy()
    if channels == 3 and batch.shape[-1] in (1, 2, 4):
        return decode.to_rgb(np.round(np.clip(batch, 0, 255)).astype(np.uint8)).numpy()
    if batch.shape[-1] != channels:
        raise ValueError(
            f"`{name}` must have {channels} channel(s), as the model does. "
            f"Received: shape={batch.shape}"
        )
    return batch
