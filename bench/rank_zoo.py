"""A zoo of GlyphNet backbones that learned different things, for `bench/bench_rank.py`.

Every member has GlyphNet's architecture (`tltk_glyphnet`, 32x32 RGB) under a softmax head over its
source classes, and is saved whole as `<name>.keras` (named `<name>`), so that
`tltk.build_classifier("tltk_glyphnet", n, weights="<name>.keras")` takes its backbone and LEEP its
source classifier. Members:

- `glyphs_full`: the shipped pretrained weights (`weights="tltk"`); the backbone is not trained,
  only a linear head over the 84 glyph classes is fitted on its frozen features (for LEEP).
- `glyphs_early`, `glyphs_late`: two checkpoints of one GlyphNet pretraining on glyphs
  (`scripts/pretrain_demo_backbone.py`'s data and model), after 2 and 8 of 8 epochs.
- `shapes`: pretrained on 8 procedural shapes (circle, triangle, square, pentagon, hexagon, star,
  cross, arrow), filled or outlined, at random pose, scale and brightness.
- `textures`: pretrained on 8 procedural textures that are not the target texture task's classes
  (crosshatch, zigzag, grid, spiral, rays, concentric squares, speckle, plaid).
- `colours`: pretrained on colour gradients, classed by hue (8 bins): features that should
  transfer badly to grey glyphs.
- `random`: random initialisation (seeded), no training; its head is random too.

Each trained member sees `SAMPLES` source images for `EPOCHS` epochs of `BATCH_SIZE` (about 500
AdamW steps, cosine decay, about 1.5 minutes on 2 cores) and is scored on `VAL_SAMPLES` held-out
ones. Members are cached in `--out` (default `~/.cache/tltk/bench_rank_zoo`) under `VERSION` and
rebuilt only when missing; per-member records (source task, steps, source accuracy, seconds) go to
`bench/results/rank_zoo.json`.

`shapes_task()` is the shape target task: 6 other shapes (ring, crescent, semicircle, 4-pointed
star, L, heart), drawn the same way from another seed.

Usage:

    python bench/rank_zoo.py                 # build (or reuse) the zoo: about 10 minutes
    python bench/rank_zoo.py --out /tmp/zoo --epochs 1 --samples 512
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from scipy import ndimage  # noqa: E402

import tltk  # noqa: E402
from bench import tasks  # noqa: E402
from bench.record import write_record  # noqa: E402
from scripts import pretrain_demo_backbone as glyph_source  # noqa: E402
from tltk import atomic  # noqa: E402
from tltk.backbones import glyphnet  # noqa: E402

VERSION = "1"
DEFAULT_OUT = pathlib.Path.home() / ".cache" / "tltk" / "bench_rank_zoo"
MEMBERS = ("glyphs_full", "glyphs_early", "glyphs_late", "shapes", "textures", "colours", "random")
SAMPLES, VAL_SAMPLES, EPOCHS, EARLY_EPOCHS, BATCH_SIZE = 8000, 1000, 8, 2, 128
LEARNING_RATE = 3e-3
SOURCE_SHAPES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "arrow")
TARGET_SHAPES = ("ring", "crescent", "semicircle", "star4", "ell", "heart")
SOURCE_TEXTURES = (
    "crosshatch",
    "zigzag",
    "grid",
    "spiral",
    "rays",
    "squares",
    "speckle",
    "plaid",
)
HUE_BINS = 8
RANDOM_CLASSES = 8
BOX = 32
_RENDER = 4 * BOX  # shapes are drawn at 4x and reduced: smooth edges


# ---- sources: each draws `(images uint8 (n, 32, 32, 3), labels)` from a seed ----


def shape_images(names, count, seed):
    """`count` shapes of the classes `names`, light on dark, filled or outlined, at random pose."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(names), size=count)
    images = np.stack([_shape(names[label], rng) for label in labels])
    return np.repeat(images[..., None], 3, axis=-1), labels


def texture_images(count, seed):
    """`count` images of the 8 `SOURCE_TEXTURES`, at random orientation, period, phase, contrast."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(SOURCE_TEXTURES), size=count)
    images = np.stack([_texture(SOURCE_TEXTURES[label], rng) for label in labels])
    return np.repeat(images[..., None], 3, axis=-1), labels


def colour_images(count, seed):
    """`count` colour gradients; the label is the hue bin (of `HUE_BINS`) of the first colour."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(HUE_BINS, size=count)
    rows, cols = np.mgrid[0:BOX, 0:BOX] / (BOX - 1)
    images = np.empty((count, BOX, BOX, 3), "uint8")
    for i, label in enumerate(labels):
        hue = (label + rng.uniform()) / HUE_BINS
        first = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1), rng.uniform(0.5, 1))
        second = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.5), rng.uniform(0, 1))
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.clip(0.5 + (cols - 0.5) * np.cos(angle) + (rows - 0.5) * np.sin(angle), 0, 1)
        ramp = ramp[..., None] * rng.uniform(0.3, 1)  # the second colour covers part of the image
        image = (1 - ramp) * np.array(first) + ramp * np.array(second)
        image += rng.normal(0, rng.uniform(0.02, 0.1), image.shape)
        images[i] = (255 * np.clip(image, 0, 1)).astype("uint8")
    return images, labels


def glyph_images(count, seed, templates):
    """`count` distorted glyphs of the demo backbone's source task (its 84 classes)."""
    images, labels = glyph_source.synthesize(templates, count, seed)
    return np.repeat(images[..., None], 3, axis=-1), labels.astype("int64")


def shapes_task(*, pool=40, test=60, seed=1):
    """The shape target: the 6 `TARGET_SHAPES` (none is a source shape), as a `tasks.Task`."""
    per_class = pool + test
    labels = np.repeat(np.arange(len(TARGET_SHAPES)), per_class)
    rng = np.random.default_rng(seed)
    images = np.stack([_shape(TARGET_SHAPES[label], rng) for label in labels])
    return tasks._split("shapes", TARGET_SHAPES, images, labels, pool, test)


def _outline(name, rng):
    """The shape's polygons in unit coordinates (centred, radius about 1) as `(points, fill)`."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    polygons = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
    if name in polygons:
        k = polygons[name]
        a = np.arange(k) * 2 * np.pi / k
        return [(np.stack([np.cos(a), np.sin(a)], axis=1), 1)]
    if name in ("star", "star4"):
        k = 5 if name == "star" else 4
        a = np.arange(2 * k) * np.pi / k
        r = np.where(np.arange(2 * k) % 2 == 0, 1.0, rng.uniform(0.35, 0.5))
        return [(np.stack([r * np.cos(a), r * np.sin(a)], axis=1), 1)]
    if name == "circle":
        return [(circle, 1)]
    if name == "ring":
        return [(circle, 1), (circle * rng.uniform(0.45, 0.65), 0)]
    if name == "crescent":
        shift = np.array([rng.uniform(0.35, 0.6), 0])
        return [(circle, 1), (circle * 0.9 + shift, 0)]
    if name == "semicircle":
        half = np.linspace(0, np.pi, 36)
        return [(np.stack([np.cos(half), np.sin(half) - 0.4], axis=1), 1)]
    if name == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x, y], axis=1) / 17, 1)]
    w = rng.uniform(0.25, 0.4)  # arm half-width
    arms = {
        "cross": [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1)]
        + [(-w, w), (-1, w), (-1, -w), (-w, -w)],
        "arrow": [(-1, -w), (0.2, -w), (0.2, -0.8), (1, 0), (0.2, 0.8), (0.2, w), (-1, w)],
        "ell": [(-0.8, -1), (-0.8 + 2 * w, -1), (-0.8 + 2 * w, 1 - 2 * w), (0.8, 1 - 2 * w)]
        + [(0.8, 1), (-0.8, 1)],
    }
    return [(np.array(arms[name], "float64"), 1)]


def _shape(name, rng):
    """One 32x32 uint8 shape: random rotation, scale, centre, fill or outline, blur and noise."""
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = _RENDER * rng.uniform(0.28, 0.45) * np.exp(rng.uniform(-0.15, 0.15, 2))
    centre = _RENDER / 2 + rng.uniform(-0.1, 0.1, 2) * _RENDER
    canvas = Image.new("L", (_RENDER, _RENDER))
    draw = ImageDraw.Draw(canvas)
    for points, fill in _outline(name, rng):
        xy = (points @ rotation.T) * scale + centre
        draw.polygon([tuple(p) for p in xy], fill=255 * fill)
    mask = np.asarray(canvas) > 127
    if rng.random() < 0.5:  # outlined: the mask minus its erosion
        mask = mask & ~ndimage.binary_erosion(mask, iterations=int(rng.integers(4, 10)))
    small = mask.reshape(BOX, 4, BOX, 4).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, rng.uniform(0, 0.8))
    low, high = rng.uniform(0, 0.3), rng.uniform(0.6, 1)
    image = low + (high - low) * small + rng.normal(0, rng.uniform(0.02, 0.12), small.shape)
    return (255 * np.clip(image, 0, 1)).astype("uint8")


def _texture(kind, rng):
    """One 32x32 uint8 image of texture `kind` (one of `SOURCE_TEXTURES`)."""
    angle, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 10), rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:BOX, 0:BOX].astype("float64")
    u = cols * np.cos(angle) + rows * np.sin(angle)
    v = -cols * np.sin(angle) + rows * np.cos(angle)
    r0, c0 = rng.uniform(0, BOX, 2)
    radius, theta = np.hypot(rows - r0, cols - c0), np.arctan2(rows - r0, cols - c0)
    wave = 2 * np.pi / period
    if kind == "crosshatch":
        pattern = np.maximum(np.sin(wave * (u + v) + phase), np.sin(wave * (u - v)))
    elif kind == "zigzag":
        pattern = np.sin(wave * (u + 2 * np.abs(((v / period) % 1) - 0.5) * period) + phase)
    elif kind == "grid":
        pattern = np.where(
            (np.abs(np.sin(wave * u / 2)) < 0.3) | (np.abs(np.sin(wave * v / 2)) < 0.3), 1.0, -1.0
        )
    elif kind == "spiral":
        pattern = np.sin(wave * radius + rng.choice([-1, 1]) * 2 * theta + phase)
    elif kind == "rays":
        pattern = np.sin(rng.integers(4, 10) * theta + phase)
    elif kind == "squares":
        pattern = np.sin(wave * np.maximum(np.abs(u - u.mean()), np.abs(v - v.mean())) + phase)
    elif kind == "speckle":
        pattern = np.where(rng.random((BOX, BOX)) < rng.uniform(0.1, 0.3), 1.0, -1.0)
    else:  # plaid: two perpendicular waves of different periods, summed
        pattern = 0.5 * (np.sin(wave * u + phase) + np.sin(wave * v * rng.uniform(0.3, 0.6)))
    contrast = rng.uniform(0.3, 1.0)
    noisy = 0.5 + 0.5 * contrast * pattern + rng.normal(0, rng.uniform(0.05, 0.2), pattern.shape)
    return (255 * np.clip(noisy, 0, 1)).astype("uint8")


# ---- the zoo ----


def build_zoo(out=DEFAULT_OUT, *, samples=SAMPLES, epochs=EPOCHS):
    """Builds the members missing from `out` and returns `(folder, {name: record})`.

    The folder is `out/v<VERSION>-<samples>x<epochs>`; member `name` is `folder/<name>.keras` with
    its record `folder/<name>.json` (source task, classes, steps, source accuracy, seconds).
    """
    if samples < BATCH_SIZE or not EARLY_EPOCHS < epochs:
        raise ValueError(
            f"`samples` must be at least {BATCH_SIZE} and `epochs` above {EARLY_EPOCHS}. "
            f"Received: samples={samples}, epochs={epochs}"
        )
    folder = pathlib.Path(out).expanduser() / f"v{VERSION}-{samples}x{epochs}"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [name for name in MEMBERS if not (folder / f"{name}.json").is_file()]
    if {"glyphs_full", "glyphs_early", "glyphs_late"} & set(missing):
        _glyph_members(folder, samples, epochs)
    sources = {
        "shapes": (lambda n, s: shape_images(SOURCE_SHAPES, n, s), SOURCE_SHAPES),
        "textures": (texture_images, SOURCE_TEXTURES),
        "colours": (colour_images, tuple(f"hue{i}" for i in range(HUE_BINS))),
    }
    for name in [name for name in sources if name in missing]:
        draw, classes = sources[name]
        start = time.perf_counter()
        train, val = draw(samples, 0), draw(VAL_SAMPLES, 1)
        model = _new_classifier(name, len(classes))
        steps = _pretrain(model, train, epochs, 0, epochs)
        _save(folder, model, val, classes, steps, time.perf_counter() - start)
    if "random" in missing:
        model = _new_classifier("random", RANDOM_CLASSES)
        _save(folder, model, None, (), 0, 0.0, note=f"random head over {RANDOM_CLASSES} outputs")
    return folder, {name: json.loads((folder / f"{name}.json").read_text()) for name in MEMBERS}


def _glyph_members(folder, samples, epochs):
    """`glyphs_early` and `glyphs_late` (one pretraining), and `glyphs_full`'s source head."""
    start = time.perf_counter()
    templates = glyph_source.render_templates()
    train = glyph_images(samples, 0, templates)
    val = glyph_images(VAL_SAMPLES, 1, templates)
    classes = tuple(glyph_source.CLASSES)
    data_seconds = time.perf_counter() - start
    model = _new_classifier("glyphs_early", len(classes))
    steps = _pretrain(model, train, epochs, 0, EARLY_EPOCHS)
    _save(folder, model, val, classes, steps, time.perf_counter() - start)
    model.name = "glyphs_late"
    steps += _pretrain(model, train, epochs, EARLY_EPOCHS, epochs)
    _save(folder, model, val, classes, steps, time.perf_counter() - start)

    head_start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = tltk.build_classifier(glyphnet.NAME, len(classes), name="glyphs_full")
    split = {"class_names": list(classes), "validation_split": 0.0, "batch_size": BATCH_SIZE}
    tltk.fine_tune(
        model,
        tltk.data.from_arrays(*train, **split).train,
        tltk.data.from_arrays(*val, **split).train,
        epochs=0,
        verbose=0,
    )
    seconds = data_seconds + time.perf_counter() - head_start
    _save(folder, model, val, classes, 0, seconds, note="shipped backbone; only its head fitted")


def _new_classifier(name, num_classes):
    """GlyphNet from scratch under a linear head (the pretraining script's model), named `name`."""
    keras.utils.set_random_seed(0)
    model = glyph_source.build_model(num_classes)
    model.name = name
    return model


def _pretrain(model, train, epochs, initial_epoch, until):
    """Trains `model` on `train` from epoch `initial_epoch` to `until` of an `epochs` schedule;
    returns the steps it took."""
    steps_per_epoch = -(-len(train[1]) // BATCH_SIZE)
    if initial_epoch == 0:
        schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, epochs * steps_per_epoch)
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    model.fit(*train, batch_size=BATCH_SIZE, epochs=until, initial_epoch=initial_epoch, verbose=0)
    return (until - initial_epoch) * steps_per_epoch


def _save(folder, model, val, classes, steps, seconds, note=None):
    """Writes `<name>.keras` and its record `<name>.json`; prints the record."""
    name = model.name
    with atomic.writing(folder / f"{name}.keras") as partial:
        model.save(partial)
    accuracy = None
    if val is not None:
        probabilities = model.predict(val[0], batch_size=512, verbose=0)
        accuracy = round(float(np.mean(np.argmax(probabilities, axis=1) == val[1])), 4)
    record = {
        "source": {"glyphs": "glyphs", "random": "none"}.get(name.split("_")[0], name),
        "classes": list(classes),
        "steps": steps,
        "source_val_accuracy": accuracy,
        "seconds": round(seconds, 1),
        "version": VERSION,
    }
    if note:
        record["note"] = note
    atomic.write_text(folder / f"{name}.json", json.dumps(record, indent=2) + "\n")
    print(f"{name}: {json.dumps(record | {'classes': len(classes)})}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="cache folder")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="source images per member")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="pretraining epochs")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    folder, members = build_zoo(args.out, samples=args.samples, epochs=args.epochs)
    record = {
        "command": " ".join(["python bench/rank_zoo.py", *(argv or sys.argv[1:])]),
        "cpu_count": os.cpu_count(),
        "folder": str(folder),
        "seconds_this_run": round(time.perf_counter() - start, 1),
        "members": members,
    }
    write_record(REPO / "bench" / "results" / "rank_zoo.json", record)
    return record


if __name__ == "__main__":
    main()
