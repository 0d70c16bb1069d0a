"""Image files -> RGB uint8 arrays, with every file checked before training.

Every file is decoded fully, once, up front (`check_files`), so a truncated or corrupt file is
found before training starts instead of halfway through an epoch; the decoded, resized pixels are
kept in memory (`load_images`), written to a disk cache, or dropped and decoded again each epoch
(`decode_planned`), as `cache=` asks. JPEG and plain PNG files (nearly all photos) are decoded by a
parallel `tf.data` pipeline, as fast as Keras' own loader; Pillow, in a thread pool, decodes the
other formats and modes and any file TensorFlow refuses, and says why a bad file is bad.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import typing

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from tltk.data import decode
from tltk.data.jpeg_header import read_jpeg_header

SUPPORTED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Pillow's JPEG reader also opens MPO, the multi-picture JPEG some phones write (first picture).
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees
_TF_ROUTE, _PIL_ROUTE = "tf", "pil"
_CHUNK_BYTES = 64 * 2**20  # decoded pixels `check_files` holds at a time


class Header(typing.NamedTuple):
    """What `inspect_file` reads from a file's header."""

    route: str
    orientation: int
    width: int
    height: int
    jpeg: bool


class ImageFileError(ValueError):
    """A file that cannot be used as an image; `reason` says why, in a few words."""

    def __init__(self, path, reason):
        super().__init__(f"Cannot use image file {str(path)!r}: {reason}")
        self.path = str(path)
        self.reason = reason


def check_image_size(image_size, name="image_size"):
    """Returns `image_size` as a `(height, width)` tuple of positive ints; an int gives a square."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (int(image_size), int(image_size))
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in image_size)
        or min(image_size) < 1
    ):
        raise ValueError(
            f"`{name}` must be a (height, width) tuple of positive ints, or one int. "
            f"Received: {name}={image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def load_image(path, image_size, *, crop_to_aspect_ratio=False):
    """Reads one image file as tltk's pipelines do: RGB uint8 pixels at `image_size`.

    JPEG (and phone MPO), PNG, BMP, GIF (first frame) and WebP are read. The EXIF orientation is
    applied; grayscale, palette, CMYK and 16-bit images become 8-bit RGB (16-bit values keep their
    high byte); transparent pixels are composited over white. The image is then resized bilinearly
    (antialiased when an axis shrinks 2x or more), stretched to `image_size` or, with
    `crop_to_aspect_ratio`, center cropped to its aspect ratio first. An image smaller than
    `image_size` in one axis or both (down to 1x1 pixel) is upscaled the same way. Large JPEGs are
    decoded at a reduced DCT scale (never below `image_size`), which skips most of the inverse DCT
    and colour conversion work of a phone photo (the entropy decoding remains).

    JPEG and 8-bit RGB or grayscale PNG files are decoded by TensorFlow, the rest by Pillow; both
    end in the same `tltk.data.decode.resize`. Predictors (`tltk.load_exported`, `tltk predict`)
    and export's calibration and parity samples decode files with it too (through
    `load_images`), so a file gives the same pixels everywhere; a grayscale model gets them
    through `tltk.data.decode.to_grayscale`.

    Args:
        path: str or Path. The image file.
        image_size: tuple. `(height, width)` of the output, or an int for a square.
        crop_to_aspect_ratio: bool. Center crop to the target aspect ratio instead of stretching.
            Defaults to `False`.

    Returns:
        A `(height, width, 3)` uint8 numpy array.

    Raises:
        ImageFileError: a `ValueError` whose `reason` says why the file cannot be used (empty,
            not an image, truncated, corrupt, unreadable).

    Example:

    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> scratch = tempfile.TemporaryDirectory()
    >>> path = scratch.name + "/red.png"
    >>> Image.new("RGB", (64, 48), (255, 0, 0)).save(path)
    >>> load_image(path, (32, 32))[0, 0].tolist()
    [255, 0, 0]
    """
    image_size = check_image_size(image_size)
    header = inspect_file(path)
    if header.route == _TF_ROUTE:
        _, jpeg_ratio, _ = _tf_plan(header, image_size, crop_to_aspect_ratio)
        decode_one = _file_decoder(image_size, bool(crop_to_aspect_ratio))
        method = decode.DECODE_METHODS.index(jpeg_ratio)
        try:
            return decode_one(os.fsencode(path), header.orientation, method).numpy()
        except tf.errors.OpError:
            pass  # Pillow decodes what TensorFlow refuses, or says why it cannot.
    return _decode_with_pil(path, header.orientation, image_size, crop_to_aspect_ratio)


def load_images(paths, image_size, *, crop_to_aspect_ratio=False, num_workers=None):
    """Decodes many files into one tensor variable, and says why the files that fail are bad.

    The files are decoded by `check_files`; each image is written, chunk by chunk, into its row of
    one uint8 variable in host memory: no second copy of all the pixels is ever made.

    Args:
        paths: list of str or Path. The files, in the order wanted.
        image_size: tuple. `(height, width)` of every output image.
        crop_to_aspect_ratio: bool. As in `load_image`. Defaults to `False`.
        num_workers: int or None. Threads for headers and Pillow. Defaults to
            `min(32, cpu_count + 4)`.

    Returns:
        A tuple `(images, kept, skipped)`: a `(len(paths), height, width, 3)` uint8 `tf.Variable`
        whose row `i` holds `paths[i]` when `i` is in `kept` (other rows are unset), the indexes
        of the files that loaded (ascending), and a list of `(path, reason)` for the others.

    Example:

    >>> images, kept, skipped = load_images([], (8, 8))
    >>> tuple(images.shape), kept, skipped
    ((0, 8, 8, 3), [], [])
    """
    image_size = check_image_size(image_size)
    store = _empty_store(len(paths), image_size)
    checked = check_files(
        paths,
        image_size,
        crop_to_aspect_ratio=crop_to_aspect_ratio,
        num_workers=num_workers,
        consume=functools.partial(_write, store),
    )
    return store, checked.kept, checked.skipped


class Checked(typing.NamedTuple):
    """What `check_files` found: the files that decode, how, and why the others do not."""

    kept: list
    skipped: list
    plans: dict  # {index: `_tf_plan` tuple, or PILLOW}
    orientations: dict  # {index: EXIF orientation}


PILLOW = "pillow"  # the plan of a file that Pillow decodes


def check_files(paths, image_size, *, crop_to_aspect_ratio=False, num_workers=None, consume=None):
    """Decodes every file once, in order, chunk by chunk, and says why the files that fail are bad.

    Headers are read first (in a thread pool). Then consecutive files are decoded a chunk at a
    time (about 64 MiB of pixels): JPEG and plain PNG files in parallel `tf.data` pipelines, the
    rest (and any file TensorFlow refuses) by Pillow in the thread pool. Each chunk's good images
    go to `consume` in file order and are then dropped, so memory stays flat however many files
    there are: the check that `cache=None` and the disk cache build run.

    Args:
        paths: list of str or Path. The files.
        image_size: tuple. `(height, width)` of every output image.
        crop_to_aspect_ratio: bool. As in `load_image`. Defaults to `False`.
        num_workers: int or None. Threads for headers and Pillow. Defaults to
            `min(32, cpu_count + 4)`.
        consume: callable or None. Called as `consume(indexes, pixels)` for each chunk, with the
            ascending int64 indexes of its good files and their `(n, height, width, 3)` uint8
            pixels. Defaults to `None`: the pixels are dropped.

    Returns:
        A `Checked(kept, skipped, plans, orientations)`: the ascending indexes of the files that
        decode, `(path, reason)` for the others, and for each kept file how `decode_planned`
        decodes it again.

    Example:

    >>> check_files([], (8, 8)).kept
    []
    """
    image_size = check_image_size(image_size)
    paths = [str(p) for p in paths]
    if num_workers is None:
        num_workers = min(32, (os.cpu_count() or 1) + 4)
    reasons, headers, plans = {}, {}, {}

    def read_headers(indexes):
        for index in indexes:
            try:
                headers[index] = inspect_file(paths[index])
            except ImageFileError as error:
                reasons[index] = error.reason

    workers = max(1, min(num_workers, len(paths)))
    chunk_size = max(1, _CHUNK_BYTES // (image_size[0] * image_size[1] * 3))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(read_headers, _chunks(range(len(paths)), workers)))
        readable = sorted(headers)
        for start in range(0, len(readable), chunk_size):
            chunk = readable[start : start + chunk_size]
            pixels = np.empty((len(chunk), *image_size, 3), np.uint8)
            row = {index: i for i, index in enumerate(chunk)}
            fast = [i for i in chunk if headers[i].route == _TF_ROUTE]
            for indexes, batch, plan in _decode_with_tf(
                paths, headers, fast, image_size, crop_to_aspect_ratio
            ):
                pixels[[row[i] for i in indexes]] = batch
                plans.update(dict.fromkeys(indexes, plan))
            slow = [i for i in chunk if i not in plans]

            def decode_with_pil(indexes):
                for index in indexes:
                    try:
                        pixels[row[index]] = _decode_with_pil(
                            paths[index],
                            headers[index].orientation,
                            image_size,
                            crop_to_aspect_ratio,
                        )
                        plans[index] = PILLOW
                    except ImageFileError as error:
                        reasons[index] = error.reason

            if slow:  # trace once here: threads tracing it at the same time would each trace it
                _array_resizer(image_size, bool(crop_to_aspect_ratio)).get_concrete_function()
            list(pool.map(decode_with_pil, _chunks(slow, workers)))
            good = np.array([i for i in chunk if i in plans], dtype=np.int64)
            if consume is not None and len(good):
                kept_rows = [row[i] for i in good]
                consume(good, pixels if len(good) == len(chunk) else pixels[kept_rows])
    kept = sorted(plans)
    skipped = [(paths[i], reasons[i]) for i in sorted(reasons)]
    orientations = {i: headers[i].orientation for i in kept}
    return Checked(kept, skipped, plans, orientations)


def inspect_file(path):
    """Reads a file's header: its size, EXIF orientation, and which decoder will read it.

    Args:
        path: str or Path. The file.

    Returns:
        A `Header(route, orientation, width, height, jpeg)`: route `"tf"` for JPEG and 8-bit RGB
        or grayscale PNG without transparency, `"pil"` for the rest; orientation 1..8 (1 =
        upright); the stored (not yet oriented) size; whether TensorFlow reads it as a JPEG.

    Raises:
        ImageFileError: the file is empty, unreadable, or not a supported image.
    """
    try:
        if os.path.getsize(path) == 0:
            raise ImageFileError(path, "empty file (0 bytes)")
        jpeg = read_jpeg_header(path)
        if jpeg is not None and jpeg.components in (1, 3):  # grayscale or colour, not CMYK
            orientation = jpeg.orientation if 1 <= jpeg.orientation <= 8 else 1
            return Header(_TF_ROUTE, orientation, jpeg.width, jpeg.height, jpeg=True)
        with Image.open(path, formats=_PIL_FORMATS) as image:
            # A PNG's getexif() decodes the whole image to look for EXIF after the pixels; the
            # header's EXIF (where the PNG spec puts it) is enough.
            if image.format == "PNG" and "exif" not in image.info:
                orientation = 1
            else:
                orientation = int(image.getexif().get(_ORIENTATION_TAG, 1))
            plain = image.mode in ("RGB", "L") and "transparency" not in image.info
            route = _TF_ROUTE if image.format in ("JPEG", "PNG") and plain else _PIL_ROUTE
            return Header(
                route=route,
                orientation=orientation if 1 <= orientation <= 8 else 1,
                width=image.width,
                height=image.height,
                jpeg=image.format == "JPEG",
            )
    except Exception as error:
        raise _file_error(path, error) from None


def _tf_plan(header, image_size, crop_to_aspect_ratio):
    """`(orientation, jpeg_ratio, antialias)` to decode a `"tf"` route file, known beforehand."""
    height, width = header.height, header.width
    jpeg_ratio = None
    if header.jpeg:
        jpeg_ratio = decode.jpeg_ratio(height, width, header.orientation, image_size)
        height, width = -(-height // jpeg_ratio), -(-width // jpeg_ratio)
    if header.orientation >= 5:
        height, width = width, height
    antialias = decode.needs_antialias(height, width, image_size, crop_to_aspect_ratio)
    return header.orientation, jpeg_ratio, antialias


def _decode_with_tf(paths, headers, indexes, image_size, crop_to_aspect_ratio):
    """Decodes `indexes` in parallel tf.data pipelines; yields `(indexes, pixels, method)` batches.

    Files are grouped by their decoding plan (orientation, JPEG DCT ratio, antialiasing), so that
    no control flow runs per image. A file TensorFlow cannot decode is left out, for Pillow to try.
    """
    groups = {}
    for index in indexes:
        plan = _tf_plan(headers[index], image_size, crop_to_aspect_ratio)
        groups.setdefault(plan, []).append(index)
    for plan, members in sorted(groups.items(), key=str):
        # Bytes, not str: a file name that is not valid UTF-8 is still a path TensorFlow reads.
        dataset = tf.data.Dataset.from_tensor_slices(
            ([os.fsencode(paths[i]) for i in members], np.array(members, dtype=np.int64))
        )

        def decode_one(path, index, plan=plan):
            orientation, jpeg_ratio, antialias = plan
            pixels = decode.decode_file(
                path,
                image_size,
                crop_to_aspect_ratio,
                orientation=orientation,
                jpeg_ratio=jpeg_ratio,
                antialias=antialias,
            )
            return index, pixels

        dataset = dataset.map(decode_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        dataset = dataset.ignore_errors().batch(64).prefetch(tf.data.AUTOTUNE)
        for batch_indexes, batch in dataset.as_numpy_iterator():
            yield batch_indexes.tolist(), batch, plan


def decode_planned(path, plan_id, orientation, plans, image_size, crop_to_aspect_ratio):
    """Decodes one file, in graph mode, as `check_files` did: the streaming path (`cache=None`).

    Each distinct plan is one branch of static operations (as in `check_files`), so a folder of
    like files (one plan) runs no control flow per image at all.

    Args:
        path: string tensor. The file (bytes).
        plan_id: int32 tensor. The file's plan: an index into `plans`.
        orientation: int32 tensor. The file's EXIF orientation (used by the Pillow plan).
        plans: list. The distinct plans of `Checked.plans`.
        image_size: tuple. `(height, width)`.
        crop_to_aspect_ratio: bool. As in `load_image`.

    Returns:
        A `(height, width, 3)` uint8 tensor: the very pixels `load_images` gives.
    """

    def with_pillow():
        pixels = tf.numpy_function(
            functools.partial(_pillow_rgb, image_size=image_size),
            [path, orientation],
            tf.uint8,
            stateful=False,
        )
        pixels.set_shape([None, None, 3])
        return decode.resize(
            decode.orient_dynamic(pixels, orientation), image_size, crop_to_aspect_ratio
        )

    def with_tf(plan):
        orientation, jpeg_ratio, antialias = plan
        return decode.decode_file(
            path,
            image_size,
            crop_to_aspect_ratio,
            orientation=orientation,
            jpeg_ratio=jpeg_ratio,
            antialias=antialias,
        )

    branches = [
        with_pillow if plan == PILLOW else functools.partial(with_tf, plan) for plan in plans
    ]
    return branches[0]() if len(branches) == 1 else tf.switch_case(plan_id, branches)


def _empty_store(count, image_size):
    """An uninitialised `(count, h, w, 3)` uint8 variable in host memory (pages come on write)."""
    with tf.device("/CPU:0"):
        empty = tf.raw_ops.Empty(shape=[count, *image_size, 3], dtype=tf.uint8, init=False)
        return tf.Variable(empty, trainable=False, name="tltk_images")


def _write(store, indexes, pixels):
    with tf.device("/CPU:0"):
        store.scatter_update(tf.IndexedSlices(tf.convert_to_tensor(pixels, tf.uint8), indexes))


def _chunks(items, count):
    """`items` cut into at most `count * 4` contiguous lists, for a thread pool."""
    items = list(items)
    size = max(1, -(-len(items) // (count * 4)))
    return [items[start : start + size] for start in range(0, len(items), size)]


def _decode_with_pil(path, orientation, image_size, crop_to_aspect_ratio):
    """Decodes with Pillow to 8-bit RGB, then orients and resizes with the TF route's ops."""
    pixels = _pillow_rgb(path, orientation, image_size)
    resize_one = _array_resizer(image_size, bool(crop_to_aspect_ratio))
    try:
        return resize_one(pixels, orientation).numpy()
    except tf.errors.OpError as error:  # e.g. too large to resize in memory
        raise ImageFileError(
            path,
            f"cannot resize a {pixels.shape[1]}x{pixels.shape[0]} image "
            f"to {image_size[1]}x{image_size[0]} ({error.message})",
        ) from None


def _pillow_rgb(path, orientation, image_size):
    """A file's 8-bit RGB pixels by Pillow, not yet oriented (JPEGs drafted near `image_size`)."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    height, width = image_size
    try:
        with Image.open(path, formats=_PIL_FORMATS) as image:
            image.seek(0)
            if image.format in ("JPEG", "MPO"):
                turned = orientation in _SWAPS_AXES
                image.draft(None, (height, width) if turned else (width, height))
            image.load()
            return np.asarray(_to_rgb(image), dtype=np.uint8)
    except Exception as error:
        raise _file_error(path, error) from None


def _file_error(path, error):
    """An `ImageFileError` whose reason describes `error` in a few words."""
    if isinstance(error, ImageFileError):
        return error
    if isinstance(error, UnidentifiedImageError):
        return ImageFileError(path, "not a JPEG, PNG, BMP, GIF or WebP image")
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return ImageFileError(path, f"unreadable file ({error.strerror})")
    if isinstance(error, Image.DecompressionBombError):
        return ImageFileError(path, f"image too large ({error})")
    # Pillow raises OSError, SyntaxError, ValueError... for bad data.
    message = str(error) or type(error).__name__
    kind = "truncated image" if "truncated" in message else "corrupt image"
    return ImageFileError(path, f"{kind} ({message})")


# One traced function per (image_size, crop) for single files; the bulk path in `load_images`
# traces static plans instead, with the same operations.
@functools.lru_cache(maxsize=16)
def _file_decoder(image_size, crop_to_aspect_ratio):
    @tf.function(input_signature=[tf.TensorSpec([], tf.string)] + [tf.TensorSpec([], tf.int32)] * 2)
    def decode_one(path, orientation, method):
        return decode.decode_file_dynamic(
            path, orientation, method, image_size, crop_to_aspect_ratio
        )

    return decode_one


@functools.lru_cache(maxsize=16)
def _array_resizer(image_size, crop_to_aspect_ratio):
    @tf.function(
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int32)]
    )
    def resize_one(pixels, orientation):
        oriented = decode.orient_dynamic(pixels, orientation)
        return decode.resize(oriented, image_size, crop_to_aspect_ratio)

    return resize_one


def _to_rgb(image):
    if image.mode in _SIXTEEN_BIT_MODES:  # keep the high byte, as Pillow and TF do for 16-bit RGB
        values = np.asarray(image).astype(np.int64) >> 8
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
