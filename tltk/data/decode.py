"""TensorFlow graph functions that decode, orient and resize images, shared by every source.

JPEG and plain PNG files are decoded here, in `tf.data`'s C++ threads, as Keras'
`image_dataset_from_directory` does; large JPEGs are decoded at a reduced DCT scale (1/2, 1/4,
1/8, never below the target size). Pixels decoded by Pillow (the other formats and modes), arrays
and TFDS images end in the same `resize`, so an image gets the same pixels whichever way it came.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_JPEG_RATIOS = (8, 4, 2, 1)
DECODE_METHODS = (1, 2, 4, 8, None)  # JPEG DCT ratios, then the PNG decoder (None)
_GRAY_WEIGHTS = (19595.0, 38470.0, 7471.0)  # ITU-R 601-2 luma in 1/65536ths, as Pillow's "L"


def resize(image, image_size, crop_to_aspect_ratio=False, antialias=None):
    """Resizes a `(h, w, c)` uint8 image (or a batch of them) to `image_size`, in graph or eager.

    Bilinear interpolation, as Keras' `image_dataset_from_directory` does; when an axis shrinks by
    2x or more, an antialiasing filter is added so that large downscales do not alias. With
    `crop_to_aspect_ratio`, the central box with the target aspect ratio is kept first.

    Args:
        image: tensor. A `(height, width, channels)` uint8 image, or an `(n, height, width,
            channels)` batch of images of one size.
        image_size: tuple. `(height, width)` of the output.
        crop_to_aspect_ratio: bool. Center crop to the target aspect ratio. Defaults to `False`.
        antialias: bool or None. Whether to antialias, when the caller already knows
            (`needs_antialias`); `None` decides in the graph. Defaults to `None`.

    Returns:
        A uint8 tensor: `(height, width, channels)`, or `(n, height, width, channels)`.

    Example:

    >>> import numpy as np
    >>> resize(np.zeros((30, 40, 3), "uint8"), (16, 16)).shape
    TensorShape([16, 16, 3])
    """
    image = tf.convert_to_tensor(image, tf.uint8)
    target_height, target_width = image_size
    if crop_to_aspect_ratio:
        image = _center_crop(image, target_height, target_width)
    if antialias is None:
        shape = tf.shape(image)
        resized = tf.cond(
            tf.logical_or(shape[-3] >= 2 * target_height, shape[-2] >= 2 * target_width),
            lambda: tf.image.resize(image, image_size, antialias=True),
            lambda: tf.image.resize(image, image_size),
        )
    else:
        resized = tf.image.resize(image, image_size, antialias=antialias)
    # Bilinear and its antialiased form average with non-negative weights: no value leaves
    # 0..255, so rounding half up is all the conversion needs.
    return tf.cast(resized + 0.5, tf.uint8)


def needs_antialias(height, width, image_size, crop_to_aspect_ratio=False):
    """Whether `resize` antialiases an image of `height` x `width` (the rule it applies itself)."""
    target_height, target_width = image_size
    if crop_to_aspect_ratio:
        height, width = _crop_size(height, width, target_height, target_width, min, max)
    return height >= 2 * target_height or width >= 2 * target_width


def orient(image, orientation):
    """Turns an `(h, w, c)` image upright for its EXIF orientation, an int 1..8 (1 = upright).

    The transforms are those of `PIL.ImageOps.exif_transpose`. The orientation is a Python int,
    known from the file's header, so an upright image costs no operation at all.
    """
    if orientation in (5, 6, 7, 8):
        image = tf.transpose(image, [1, 0, 2])
    axes = [axis for axis, flips in ((0, (3, 4, 7, 8)), (1, (2, 3, 6, 7))) if orientation in flips]
    return tf.reverse(image, axes) if axes else image


def jpeg_ratio(height, width, orientation, image_size):
    """The largest DCT reduction (8, 4, 2 or 1) that keeps a JPEG at least `image_size` upright.

    A JPEG smaller than `image_size` in either axis (down to 1x1) is decoded at full scale, 1,
    and upscaled by `resize`.

    Example:

    >>> jpeg_ratio(48, 48, 1, (224, 224)), jpeg_ratio(2000, 1000, 6, (224, 224))
    (1, 4)
    """
    target_height, target_width = image_size
    if orientation in (5, 6, 7, 8):
        target_height, target_width = target_width, target_height
    room = min(height // target_height, width // target_width)
    return next((ratio for ratio in _JPEG_RATIOS if room >= ratio), 1)


def decode_file(
    path, image_size, crop_to_aspect_ratio=False, *, orientation=1, jpeg_ratio=None, antialias=None
):
    """Reads, decodes, orients and resizes a JPEG or an 8-bit RGB/grayscale PNG, in graph mode.

    Args:
        path: string tensor. The file.
        image_size: tuple. `(height, width)` of the output.
        crop_to_aspect_ratio: bool. As in `resize`. Defaults to `False`.
        orientation: int. The file's EXIF orientation, 1..8. Defaults to `1` (upright).
        jpeg_ratio: int or None. Decode a JPEG at 1/`jpeg_ratio` scale (1, 2, 4, 8); `None` for a
            PNG. Defaults to `None`.
        antialias: bool or None. As in `resize`. Defaults to `None`.

    Returns:
        A `(height, width, 3)` uint8 tensor. A file it cannot decode (truncated, corrupt, another
        format) raises a TensorFlow error, which callers catch and hand to Pillow.
    """
    image = _decode_contents(tf.io.read_file(path), jpeg_ratio)
    return resize(orient(image, orientation), image_size, crop_to_aspect_ratio, antialias)


def decode_file_dynamic(path, orientation, method, image_size, crop_to_aspect_ratio=False):
    """`decode_file` with the orientation and decoder as tensors: one graph for any single file.

    Args:
        path: string tensor. The file.
        orientation: int32 tensor. The EXIF orientation, 1..8.
        method: int32 tensor. Index into `DECODE_METHODS`: a JPEG ratio, or the PNG decoder.
        image_size: tuple. `(height, width)` of the output.
        crop_to_aspect_ratio: bool. As in `resize`. Defaults to `False`.

    Returns:
        The same `(height, width, 3)` uint8 tensor as `decode_file`.
    """
    contents = tf.io.read_file(path)
    image = tf.switch_case(
        method, [lambda m=m: _decode_contents(contents, m) for m in DECODE_METHODS]
    )
    return resize(orient_dynamic(image, orientation), image_size, crop_to_aspect_ratio)


def orient_dynamic(image, orientation):
    """`orient` with the orientation as an int32 tensor (1..8), through one branch per value."""
    return tf.switch_case(
        tf.clip_by_value(orientation, 1, 8) - 1,
        [lambda o=o: orient(image, o) for o in range(1, 9)],
    )


def _decode_contents(contents, jpeg_ratio):
    if jpeg_ratio is None:
        return tf.io.decode_png(contents, channels=3)
    return tf.io.decode_jpeg(contents, channels=3, ratio=jpeg_ratio)


def _center_crop(image, target_height, target_width):
    shape = tf.shape(image)
    height, width = _crop_size(
        shape[-3], shape[-2], target_height, target_width, tf.minimum, tf.maximum
    )
    top = (shape[-3] - height) // 2
    left = (shape[-2] - width) // 2
    return image[..., top : top + height, left : left + width, :]


def _crop_size(height, width, target_height, target_width, minimum, maximum):
    """The central crop with the target's aspect ratio, with the given min/max (Python or TF)."""
    crop_height = maximum(minimum(height, (width * target_height) // target_width), 1)
    crop_width = maximum(minimum(width, (height * target_width) // target_height), 1)
    return crop_height, crop_width


def to_rgb(image):
    """Turns an `(h, w, c)` uint8 or uint16 image, c in 1..4, into uint8 RGB, in graph mode.

    16-bit values keep their high byte; gray is repeated; alpha (c = 2 or 4) is composited over
    white, as `tltk.data.load_image` does for files.
    """
    if image.dtype == tf.uint16:
        image = tf.cast(tf.bitwise.right_shift(image, 8), tf.uint8)
    image = tf.convert_to_tensor(image, tf.uint8)
    channels = image.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"Images must have 1 to 4 channels. Received: shape={image.shape}")
    if channels == 3:
        return image
    color = image[..., :1] if channels <= 2 else image[..., :3]
    if channels in (1, 3):
        return tf.image.grayscale_to_rgb(color) if channels == 1 else color
    alpha = tf.cast(image[..., -1:], tf.float32) / 255.0
    color = tf.cast(color, tf.float32) * alpha + 255.0 * (1.0 - alpha)
    color = tf.cast(color + 0.5, tf.uint8)
    return tf.image.grayscale_to_rgb(color) if channels == 2 else color


def to_grayscale(image):
    """Turns RGB pixels into one gray channel, as tltk does wherever a model takes grayscale.

    Gray is the ITU-R 601-2 luma, `(19595 R + 38470 G + 7471 B + 32768) >> 16`: the integer
    formula of Pillow's `Image.convert("L")`, so it gives the very values Pillow gives for 8-bit
    pixels. Prediction, int8 calibration and parity samples (`tltk.export`) use it to feed a
    1-channel model from the RGB that `tltk.data.load_image` decodes; map it over a training
    dataset to train such a model on the same pixels.

    Args:
        image: tensor or array. `(..., 3)` RGB pixels, 0..255, of any numeric dtype.

    Returns:
        A `(..., 1)` tensor of the input's dtype (floats are rounded to whole values too).

    Example:

    >>> import numpy as np
    >>> to_grayscale(np.array([[[255, 0, 0], [10, 200, 30]]], "uint8")).numpy()[..., 0].tolist()
    [[76, 124]]
    """
    image = tf.convert_to_tensor(image)
    if image.shape[-1] != 3:
        raise ValueError(f"Images must have 3 channels (RGB). Received: shape={image.shape}")
    weights = tf.constant(_GRAY_WEIGHTS, tf.float64)
    weighted = tf.tensordot(tf.cast(image, tf.float64), weights, axes=[[-1], [0]])
    gray = tf.floor((weighted + 32768.0) / 65536.0)[..., None]
    return tf.cast(gray, image.dtype)


def resize_each(dataset, image_size, crop_to_aspect_ratio=False):
    """Converts and resizes every image of a `(image, extra)` dataset, in parallel, in order.

    Args:
        dataset: tf.data.Dataset. Unbatched `(image, extra)` pairs; images `(h, w, c)` uint8 or
            uint16 with a static channel count of 1 to 4.
        image_size: tuple. `(height, width)` of the output.
        crop_to_aspect_ratio: bool. As in `resize`. Defaults to `False`.

    Yields:
        `(pixels, extras)` numpy batches: `(n, height, width, 3)` uint8 and the `extra` values.
    """

    def convert(image, extra):
        return resize(to_rgb(image), image_size, crop_to_aspect_ratio), extra

    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    yield from dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def resize_all(dataset, image_size, crop_to_aspect_ratio=False):
    """`resize_each` gathered: a `(n, height, width, 3)` uint8 host tensor and the extras."""
    images, extras = [], []
    for batch, extra in resize_each(dataset, image_size, crop_to_aspect_ratio):
        with tf.device("/CPU:0"):
            images.append(tf.convert_to_tensor(batch))
        extras.append(extra)
    with tf.device("/CPU:0"):
        if not images:
            return tf.zeros((0, *image_size, 3), tf.uint8), np.zeros((0,))
        return tf.concat(images, axis=0), np.concatenate(extras)
