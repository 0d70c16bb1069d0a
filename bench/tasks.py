"""Offline image tasks for `bench/bench_recipes.py`: a pool for few-shot splits, and a test set.

Every task goes through `tltk.data` as a user's data would, and returns a `Task`: 32x32 RGB uint8
pool and test arrays. Three tasks:

- `digits`: scikit-learn's 1,797 handwritten digits as class folders (`tltk.datasets.digits`),
  loaded with `tltk.data.from_directory`; a fixed stratified 30% (539 images) is the test set.
- `letters`: the 16 Latin letters the demo backbone's pretraining left out
  (`scripts/pretrain_demo_backbone.py`, `EXCLUDED`), 13 classes (o/O, s/S, z/Z are one class each,
  as size is normalised away), drawn from matplotlib's text fonts with the pretraining's
  distortions (rotation, shear, elastic warp, stroke width, noise) and its glyph -> 8x8 ink counts
  -> `tltk.datasets.digit_image` pipeline; 40 pool and 40 test images per class.
- `textures`: six procedural texture classes at 32x32 (stripes, checkerboards, dots, rings, wavy
  lines, blobs), each with a random orientation, scale, phase, contrast and noise, so no single
  cue separates them; 40 pool and 60 test images per class.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

import tltk
from scripts.pretrain_demo_backbone import BOX, STROKES, TEX_FONTS, UNICODE_FONTS, _crop, _distort
from tltk.datasets import digit_image

LETTERS = "BDGIOQSZbgilq"  # EXCLUDED = "OoQDIliZzSsbGBgq" with o, s, z merged into O, S, Z
TEXTURES = ("stripes", "checkerboard", "dots", "rings", "waves", "blobs")


@dataclasses.dataclass(frozen=True)
class Task:
    """A pool to draw training and validation images from, and a fixed held-out test set.

    Attributes:
        name: str. The task's name.
        class_names: tuple of str. Label `i` is `class_names[i]`.
        pool_x, pool_y: arrays. `(n, 32, 32, 3)` uint8 images and their int labels.
        test_x, test_y: arrays. The test images and labels, read once per run at its end.
    """

    name: str
    class_names: tuple
    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def digits(folder):
    """The digits under `folder` (written there once), 30% of each class held out for test."""
    data = tltk.data.from_directory(
        tltk.datasets.digits(folder, size=32),
        image_size=(32, 32),
        validation_split=0.0,
        test_split=0.3,
        seed=0,
        batch_size=256,
    )
    return Task("digits", data.class_names, *_arrays(data.train), *_arrays(data.test))


def letters(*, pool=40, test=40, seed=0):
    """The letters left out of GlyphNet's pretraining, rendered and distorted as it was."""
    templates = _letter_templates()
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(LETTERS)):
        masks = [mask for mask, y in templates if y == label]
        for _ in range(pool + test):
            mask = masks[rng.integers(len(masks))]
            images.append(digit_image(_distort(mask, rng), size=BOX))
            labels.append(label)
    return _split("letters", tuple(LETTERS), np.stack(images), np.array(labels), pool, test)


def textures(*, pool=40, test=60, seed=0):
    """Six procedural texture classes with random orientation, scale, phase, contrast, noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(TEXTURES)):
        for _ in range(pool + test):
            images.append(_texture(label, rng))
            labels.append(label)
    return _split("textures", TEXTURES, np.stack(images), np.array(labels), pool, test)


def _split(name, class_names, images, labels, pool, test):
    """Grayscale arrays -> `tltk.data.from_arrays`; `test / (pool + test)` of each class is test."""
    data = tltk.data.from_arrays(
        np.repeat(images[..., None], 3, axis=-1),
        labels,
        class_names=list(class_names),
        validation_split=0.0,
        test_split=test / (pool + test),
        seed=0,
        batch_size=256,
    )
    return Task(name, data.class_names, *_arrays(data.train), *_arrays(data.test))


def _arrays(dataset):
    """A split's images and labels, ordered by label then content (the train split is shuffled)."""
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    images, labels = np.concatenate(images).astype("uint8"), np.concatenate(labels).astype("int64")
    content = [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    order = sorted(range(len(labels)), key=lambda i: (labels[i], content[i]))
    return images[order], labels[order]


def _letter_templates():
    """Each letter in each text font and stroke width, as a cropped [0, 1] mask with its label."""
    font_dir = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    chars = {c: LETTERS.index(c) for c in LETTERS} | {c: LETTERS.index(c.upper()) for c in "osz"}
    templates = []
    for font_name in UNICODE_FONTS + TEX_FONTS:
        font = ImageFont.truetype(str(font_dir / font_name), 64)
        for char, label in chars.items():
            for stroke in STROKES:
                canvas = Image.new("L", (160, 160))
                draw = ImageDraw.Draw(canvas)
                draw.text((40, 20), char, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
                templates.append((_crop(np.asarray(canvas, dtype="float32") / 255), label))
    return templates


def _texture(label, rng, size=BOX):
    """One `size` x `size` uint8 image of texture class `label`."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 10)
    rows, cols = np.mgrid[0:size, 0:size].astype("float32")
    u = cols * np.cos(angle) + rows * np.sin(angle)
    v = -cols * np.sin(angle) + rows * np.cos(angle)
    phase = rng.uniform(0, 2 * np.pi)
    kind = TEXTURES[label]
    if kind == "stripes":
        pattern = np.sin(2 * np.pi * u / period + phase)
    elif kind == "checkerboard":
        pattern = np.sign(np.sin(2 * np.pi * u / period + phase) * np.sin(2 * np.pi * v / period))
    elif kind == "dots":
        pattern = np.full((size, size), -1.0)
        for _ in range(rng.integers(6, 16)):
            r, c = rng.uniform(0, size, 2)
            pattern += 2 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (period / 3) ** 2)
    elif kind == "rings":
        r, c = rng.uniform(0, size, 2)
        pattern = np.sin(2 * np.pi * np.hypot(rows - r, cols - c) / period + phase)
    elif kind == "waves":
        bend = rng.uniform(1.5, 3.5) * np.sin(2 * np.pi * v / rng.uniform(8, 16))
        pattern = np.sin(2 * np.pi * (u + bend) / period + phase)
    else:  # blobs: smoothed noise, thresholded softly
        pattern = np.tanh(3 * ndimage.gaussian_filter(rng.normal(size=(size, size)), period / 3))
        pattern /= max(np.abs(pattern).max(), 1e-6)
    contrast = rng.uniform(0.3, 1.0)
    noisy = 0.5 + 0.5 * contrast * pattern + rng.normal(0, rng.uniform(0.05, 0.25), pattern.shape)
    return (255 * np.clip(noisy, 0, 1)).astype("uint8")
