"""`from_arrays`: NumPy images and labels (single- or multi-label) -> `ImageData`."""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

from tltk.data import cache as cache_module
from tltk.data import decode, head_labels, labels, pipeline
from tltk.data.images import check_image_size
from tltk.data.sources import DiskPixels, MemoryPixels

_RESIZE_ROWS = 128  # arrays resized at a time into a disk cache


def from_arrays(
    x,
    y,
    *,
    class_names=None,
    image_size=None,
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    label_mode=None,
    crop_to_aspect_ratio=False,
    cache="auto",
):
    """Builds train / validation / test pipelines from in-memory images and labels.

    Images are raw pixels, 0..255. uint8 is used as is; ints and floats in 0..255 (uint16 too)
    are rounded to uint8; floats in 0..1 are refused (pass `x * 255`). uint16 with values above
    255 is taken as 16-bit pixels and keeps its high byte (as 16-bit PNG files do), with a
    warning. Other dtypes, negative, non-finite or larger values are refused, naming the dtype and
    range. Grayscale and alpha channels are handled as for files (alpha composited over white).
    The split is stratified by class (for multi-label data, by each example's rarest label) and
    deterministic for a seed.

    Args:
        x: array. `(n, height, width)` or `(n, height, width, channels)` images, 1 to 4 channels.
        y: array or dict. `(n,)` class indexes or class-name strings, or `(n, num_classes)`
            multi-hot 0/1 rows for multi-label data. A dict `{head: array}` gives the labels of
            a model with several heads (the datasets then yield `{head: labels}`): each array
            as above, or floats for a regression head; the split is stratified by the first
            head with classes.
        class_names: list of str, dict or None. Names of the classes, in label order (a dict
            `{head: names}` with labels per head). Defaults to the sorted names in `y`
            (strings), `"0"`.. (indexes), or `"0"`.. per column (multi-hot).
        image_size: tuple or None. `(height, width)` to resize to, or an int for a square.
            Defaults to `None`: keep the arrays' size.
        batch_size: int. Batch size. Defaults to `32`.
        validation_split: float. Share held out for validation, in [0, 1). Defaults to `0.2`.
        test_split: float. Share held out for test, in [0, 1). Defaults to `0.0`.
        seed: int. Seed of the split and of the per-epoch shuffle. Defaults to `0`.
        label_mode: str or None. `"int"` or `"categorical"` for single-label data, `"multi_hot"`
            for multi-label data. Defaults to `None`: `"int"`, or `"multi_hot"` for 2-D `y`.
        crop_to_aspect_ratio: bool. Center crop to the target aspect ratio before resizing.
            Defaults to `False`.
        cache: str, Path or None. The arrays are in memory already; `cache` says what is held
            at `image_size`: `"memory"` holds a resized uint8 copy; `None` resizes each batch
            from a uint8 copy of `x` as given (the choice when `image_size` is larger than the
            arrays); a folder writes the resized images to a disk cache there, keyed on the
            arrays' contents (reused by a later run with the same arrays); `"auto"` is
            `"memory"` up to 1 GiB of resized pixels, else `None`. Defaults to `"auto"`.

    Returns:
        A `tltk.data.ImageData`; `sources` holds indexes into `x`.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 10)
    >>> data = from_arrays(x, y, image_size=(16, 16), batch_size=4)
    >>> data.class_names, data.class_counts["train"]
    (('cat', 'dog'), {'cat': 8, 'dog': 8})
    """
    pipeline.check_split_args(
        batch_size=batch_size, validation_split=validation_split, test_split=test_split, seed=seed
    )
    x = _check_images(x)
    image_size = x.shape[1:3] if image_size is None else check_image_size(image_size)
    if isinstance(y, dict):
        return head_labels.assemble_heads(
            _pixels(x, tuple(image_size), crop_to_aspect_ratio, cache),
            y,
            class_names=class_names,
            label_mode=label_mode,
            keys=[str(i) for i in range(len(x))],
            where="the arrays",
            image_size=image_size,
            sources=list(range(len(x))),
            skipped=[],
            batch_size=batch_size,
            validation_split=validation_split,
            test_split=test_split,
            seed=seed,
        )
    encoded, class_names, multi_label = encode_labels(y, class_names, len(x))
    label_mode = pipeline.resolve_label_mode(label_mode, multi_label)
    labels.check_counts(encoded, class_names, multi_label, "the arrays")
    images = _pixels(x, tuple(image_size), crop_to_aspect_ratio, cache)
    splits = pipeline.stratified_split(
        [str(i) for i in range(len(x))],
        labels.strata(encoded, multi_label),
        validation_split=validation_split,
        test_split=test_split,
        seed=seed,
    )
    return pipeline.assemble(
        images,
        encoded,
        class_names=class_names,
        label_mode=label_mode,
        splits=splits,
        sources=list(range(len(x))),
        batch_size=batch_size,
        seed=seed,
        image_size=tuple(image_size),
        skipped=[],
    )


def _pixels(x, image_size, crop_to_aspect_ratio, cache):
    """What `pipeline.assemble` takes as images, for `cache` (see `from_arrays`)."""
    mode = cache_module.resolve(cache, len(x), image_size, where=None, disk=False)
    as_is = x.shape[1:] == (*image_size, 3) and not crop_to_aspect_ratio
    if mode == "memory" or (mode is None and as_is):
        pipeline.check_memory(len(x), image_size, "the arrays")
        if as_is:
            with tf.device("/CPU:0"):
                return tf.convert_to_tensor(x)
        dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(len(x))))
        return decode.resize_all(dataset, image_size, crop_to_aspect_ratio)[0]
    if mode is None:
        return MemoryPixels(pipeline.as_variable(x), image_size, crop_to_aspect_ratio)
    digest = cache_module.key(image_size, crop_to_aspect_ratio)
    digest.update(repr((x.shape, x.dtype.str)).encode())
    digest.update(np.ascontiguousarray(x).data)

    def build(write):
        for start in range(0, len(x), _RESIZE_ROWS):
            rows = x[start : start + _RESIZE_ROWS]
            write(decode.resize(decode.to_rgb(rows), image_size, crop_to_aspect_ratio).numpy())
        return {}

    name = f"arrays-{digest.hexdigest()}"  # a source known by its contents: nothing is stale
    target, _ = cache_module.disk_cache(mode, name, digest, image_size, build)
    return DiskPixels(target / cache_module.PIXELS, np.arange(len(x)), image_size)


def _check_images(x):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 2, 3, 4) or min(x.shape[1:3], default=0) < 1:
        raise ValueError(
            "`x` must be images shaped (n, height, width) or (n, height, width, channels) with 1 "
            f"to 4 channels. Received: x with shape {x.shape}"
        )
    return to_uint8(x, "x")


def to_uint8(x, name):
    """Raw pixels 0..255 as uint8, from the dtypes a user's arrays come in; else a `ValueError`.

    uint8 is kept; ints and floats in 0..255 (uint16 too) are rounded; uint16 above 255 keeps its
    high byte, as 16-bit PNG files do (with a warning); floats in 0..1 are refused. `from_arrays`
    and prediction (`tltk.export.images.image_batch`) read arrays through this one rule.

    >>> to_uint8(np.array([[0.4, 254.6]]), "x")
    array([[  0, 255]], dtype=uint8)
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf":
        raise ValueError(
            f"`{name}` must hold numbers: uint8 pixels, uint16, or ints or floats in 0..255. "
            f"Received: {name} with dtype {x.dtype}"
        )
    if not x.size:
        return x.astype(np.uint8)
    low, high = float(np.min(x)), float(np.max(x))
    if x.dtype == np.uint16 and high > 255:
        warnings.warn(
            f"`{name}` is uint16 with values up to {high:.0f}: read as 16-bit pixels and scaled to "
            "0..255 by keeping the high byte, as for 16-bit PNG files. If your images use fewer "
            "bits (12-bit values reach 4095), scale them to 0..255 yourself and pass uint8.",
            stacklevel=3,
        )
        return (x >> 8).astype(np.uint8)
    if not np.isfinite([low, high]).all() or low < 0 or high > 255:
        raise ValueError(
            f"`{name}` must hold raw pixels in 0..255 (tltk models take raw pixels). "
            f"Received: {name} with dtype {x.dtype} and values in [{low}, {high}]"
        )
    if x.dtype.kind == "f" and 0 < high <= 1.0:
        raise ValueError(
            f"`{name}` looks scaled to 0..1, but tltk takes raw pixels in 0..255: pass "
            f"`{name} * 255`. Received: {name} with dtype {x.dtype} and values in [{low}, {high}]"
        )
    return np.round(x).astype(np.uint8)


def encode_labels(y, class_names, count):
    """`(encoded labels, class names, multi_label)` from `y` (one label array: `from_arrays`' and
    each head's of `tltk.data.head_labels`); raises naming what is wrong."""
    y = np.asarray(y)
    if len(y) != count:
        raise ValueError(
            f"`x` and `y` must have the same length. Received: {count} images and {len(y)} labels"
        )
    if y.ndim == 2:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("A 2-D `y` must be multi-hot rows of 0 and 1. Received: other values")
        names = class_names if class_names is not None else [str(i) for i in range(y.shape[1])]
        names = labels.check_class_names(names)
        if len(names) != y.shape[1]:
            raise ValueError(
                f"`class_names` must name the {y.shape[1]} columns of `y`. "
                f"Received: {len(names)} class names"
            )
        return y.astype(np.float32), names, True
    if y.ndim != 1:
        raise ValueError(f"`y` must be 1-D labels or 2-D multi-hot rows. Received: shape {y.shape}")
    if y.dtype.kind in "USO":
        values = [str(v) for v in y]
        names = labels.check_class_names(
            class_names if class_names is not None else sorted(set(values))
        )
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"`y` has labels missing from `class_names`. Received: {unknown[:10]}")
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[v] for v in values], dtype=np.int64), names, False
    if y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise ValueError(
            f"`y` must hold class indexes (ints from 0) or class names. Received: dtype {y.dtype}"
        )
    top = int(y.max()) + 1 if len(y) else 0
    names = labels.check_class_names(
        class_names if class_names is not None else [str(i) for i in range(top)]
    )
    if top > len(names):
        raise ValueError(
            f"`y` has class index {top - 1}, but `class_names` names {len(names)} classes."
        )
    return y.astype(np.int64), names, False
