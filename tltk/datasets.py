"""Real datasets that need no download, written as class-folder trees of image files."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from tltk import atomic

DIGITS_COUNT = 1797


def digit_image(counts, *, size=32):
    """Turns an 8x8 array of ink counts (0..16) into a grayscale image, as `digits` writes it.

    Counts are scaled to 0..255 (255 = full ink, light strokes on a dark background), then resized
    bilinearly to `size` x `size`.

    Args:
        counts: array-like. An `(8, 8)` array with values in 0..16.
        size: int. Side of the output image, at least 8. Defaults to `32`.

    Returns:
        A `(size, size)` uint8 numpy array.

    Example:

    >>> import numpy as np
    >>> int(digit_image(np.full((8, 8), 16), size=16).min())
    255
    """
    counts = np.asarray(counts, dtype="float32")
    if counts.shape != (8, 8) or counts.min() < 0 or counts.max() > 16:
        raise ValueError(
            "`counts` must be an (8, 8) array with values in 0..16. "
            f"Received: shape={counts.shape}, range=({counts.min()}, {counts.max()})"
        )
    _check_size(size)
    image = Image.fromarray(np.round(counts * (255 / 16)).astype("uint8"))
    if size != 8:
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image)


def digits(path, *, size=32):
    """Writes scikit-learn's handwritten digits as a class-folder tree of PNG files.

    The 1,797 real 8x8 digits of `sklearn.datasets.load_digits` become grayscale PNGs under
    `path/<class>/<index>.png` (classes `"0"`..`"9"`), resized to `size` x `size` by `digit_image`.
    Files already there are kept, so calling it twice costs nothing; each new file is written
    atomically (`tltk.atomic`), so a crash never leaves a half-written image.

    Args:
        path: str or Path. Folder to write into; created if missing.
        size: int. Side of each image, at least 8. Defaults to `32`.

    Returns:
        The folder as a `pathlib.Path`.

    Raises:
        ValueError: if `size` is invalid, or `path` holds digits written at another size.

    Example:

    >>> import tempfile
    >>> root = digits(tempfile.mkdtemp())
    >>> sorted(p.name for p in root.iterdir())[:3], len(list(root.glob("*/*.png")))
    (['0', '1', '2'], 1797)
    """
    from sklearn.datasets import load_digits

    _check_size(size)
    root = pathlib.Path(path)
    data = load_digits()
    for index, (counts, label) in enumerate(zip(data.images, data.target)):
        target = root / str(label) / f"{index:04d}.png"
        if target.exists():
            _check_existing(target, size)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.writing(target) as partial:
            Image.fromarray(digit_image(counts, size=size)).save(partial, format="PNG")
    return root


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"`size` must be an integer of at least 8. Received: size={size!r}")


def _check_existing(target, size):
    with Image.open(target) as image:
        if image.size != (size, size):
            raise ValueError(
                f"{target} is {image.size[0]}x{image.size[1]}, not {size}x{size}: `path` already "
                f"holds digits at another size. Received: size={size}; use another `path`."
            )
