"""Pretrains GlyphNet, the backbone shipped with tltk, on characters rendered offline.

The source task is character recognition on glyphs drawn from the text fonts matplotlib ships
(DejaVu Sans/Serif/Sans Mono and STIXGeneral in all weights; cmr10, cmb10, cmss10 and cmtt10 for
Latin letters only, as their other code points hold TeX symbols), with random rotation, shear,
aspect, elastic distortion, stroke width and noise. Each glyph is size-normalised into a 32x32
box, thresholded, and summed over 4x4 blocks into 8x8 ink counts (0..16), then turned into an
image by `tltk.datasets.digit_image`: the pipeline that made the target task, scikit-learn's
handwritten digits, so light strokes on a dark background, low resolution and blur come out alike.

The source task holds no digits, and leaves out the characters that look like one. Latin letters
left out: O o Q D (0), I l i (1), Z z (2), S s (5), b G (6), B (8), g q (9). Lower- and upper-case
letters that differ only in size (c/C, k/K, p/P, u/U, v/V, w/W, x/X, y/Y) are one class, as size
is normalised away. Greek, Cyrillic and symbol classes (`OTHERS` below) add variety; those left
out are listed beside it. 84 classes in all.

Everything is seeded: with the same library versions, running it again writes the same weights
file byte for byte (checked on a 2-core CPU machine), and elsewhere one of the same quality. It
writes `tltk/weights/tltk_glyphnet.weights.h5`, its manifest `tltk_glyphnet.json` (SHA-256
included), and `bench/results/pretrain_glyphnet.json` (run time, source-task accuracy).

Usage:

    python scripts/pretrain_demo_backbone.py             # the shipped defaults
    python scripts/pretrain_demo_backbone.py --samples 4000 --epochs 1 --out /tmp/glyph
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import string
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from fontTools.ttLib import TTFont  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from scipy import ndimage  # noqa: E402

import tltk  # noqa: E402
from bench.record import write_record  # noqa: E402
from tltk.backbones import glyphnet  # noqa: E402
from tltk.datasets import digit_image  # noqa: E402

_DEJAVU_STYLES = ("", "-Bold", "-Oblique", "-BoldOblique")
UNICODE_FONTS = tuple(
    [f"DejaVu{family}{style}.ttf" for family in ("Sans", "SansMono") for style in _DEJAVU_STYLES]
    + [f"DejaVuSerif{style}.ttf" for style in ("", "-Bold", "-Italic", "-BoldItalic")]
    + [f"STIXGeneral{style}.ttf" for style in ("", "Bol", "Italic", "BolIta")]
)
TEX_FONTS = ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf")  # ASCII letters only
EXCLUDED = "OoQDIliZzSsbGBgq"  # look like 0, 1, 2, 5, 6, 8, 9
MERGED = "CKPUVWXY"  # lower case is the upper case, smaller
LATIN = "".join(c for c in string.ascii_letters if c not in EXCLUDED)
# Greek, Cyrillic and symbols that look like no digit, each drawn in the fonts that have it.
EXCLUDED_OTHERS = "βδεζθξΞρσφБЗЧЭЮФÞþ∃∞∂≈$%§?!/↑↓"  # look like a digit: left out
OTHERS = "αγηκλμπψωΓΔΛΠΣΨΩЖЯДИЛШЩЦ&@#*<>€¥←→↔∀∇√≠≤≥⊂⊃∩∪♠♣♥♦★✓♪ÆæŒœ"
CLASSES = sorted({c.upper() if c in MERGED.lower() else c for c in LATIN + OTHERS})
STROKES = (0, 1, 2)  # extra stroke width, in pixels at the 64-pixel render size
BOX = 32


def render_templates():
    """Renders each character in each font and stroke as a cropped [0, 1] mask, with its class."""
    font_dir = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    jobs = [(font, LATIN + OTHERS) for font in UNICODE_FONTS]
    jobs += [(font, LATIN) for font in TEX_FONTS]
    templates = []
    for font_name, chars in jobs:
        font = ImageFont.truetype(str(font_dir / font_name), 64)
        cmap = TTFont(font_dir / font_name).getBestCmap()
        for char in (c for c in chars if ord(c) in cmap):
            label = CLASSES.index(char.upper() if char in MERGED.lower() else char)
            for stroke in STROKES:
                canvas = Image.new("L", (160, 160))
                draw = ImageDraw.Draw(canvas)
                draw.text((40, 20), char, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
                templates.append((_crop(np.asarray(canvas, dtype="float32") / 255), label))
    return templates


def synthesize(templates, count, seed):
    """Draws `count` distorted glyphs; returns `(images uint8 (count, 32, 32), labels)`."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, BOX, BOX), "uint8")
    labels = np.empty((count,), "int32")
    for i in range(count):
        mask, labels[i] = templates[rng.integers(len(templates))]
        images[i] = digit_image(_distort(mask, rng), size=BOX)
    return images, labels


def _distort(mask, rng):
    """Random affine + elastic warp, size normalisation, stroke width and noise -> 8x8 counts."""
    mask = np.pad(mask, 24)
    size = np.array(mask.shape, "float32")
    angle = np.deg2rad(rng.uniform(-15, 15))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1, rng.uniform(-0.3, 0.3)], [0, 1]])
    affine = rotation @ shear @ np.diag([1, np.exp(rng.uniform(-0.3, 0.3))])
    rows, cols = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    centre = size[:, None, None] / 2
    coords = np.einsum("ij,jhw->ihw", np.linalg.inv(affine), np.stack([rows, cols]) - centre)
    coords += centre
    strength = rng.uniform(0, 30)  # elastic: a smooth random displacement field
    for axis in range(2):
        coords[axis] += ndimage.gaussian_filter(rng.uniform(-1, 1, mask.shape), 6) * strength
    warped = _crop(ndimage.map_coordinates(mask, coords, order=1))

    height = round(BOX * rng.uniform(0.85, 1.0))  # digits fill the box's height
    width = min(BOX - 6, max(1, round(warped.shape[1] * height / warped.shape[0])))
    glyph = Image.fromarray((warped * 255).astype("uint8")).resize((width, height), Image.BILINEAR)
    canvas = np.zeros((BOX, BOX), "float32")
    top = int(np.clip((BOX - height) // 2 + rng.integers(-1, 2), 0, BOX - height))
    left = int(np.clip((BOX - width) // 2 + rng.integers(-2, 3), 0, BOX - width))
    canvas[top : top + height, left : left + width] = np.asarray(glyph, "float32") / 255
    ink = canvas > rng.uniform(0.35, 0.65)
    if rng.random() < 0.3:
        ink = ndimage.binary_dilation(ink)
    counts = ink.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype("float32")
    if rng.random() < 0.5:
        counts += rng.normal(0, 0.7, counts.shape)
    return np.clip(np.round(counts), 0, 16)


def _crop(mask):
    rows, cols = np.nonzero(mask > 0.5)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def to_dataset(images, labels, *, batch_size, shuffle_seed=None):
    """Grayscale uint8 arrays -> batched RGB `tf.data.Dataset` of raw 0..255 pixels."""
    ds = tf.data.Dataset.from_tensor_slices((images[..., None], labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda x, y: (tf.image.grayscale_to_rgb(x), y), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def build_model(num_classes):
    """GlyphNet from scratch under a linear classifier, every layer (BatchNorm too) trainable."""
    model = tltk.build_classifier(
        glyphnet.NAME, num_classes, weights=None, dropout=0.2, train_bn=True
    )
    return tltk.unfreeze(model, "all", train_bn=True)


def save_backbone(model, out_dir, metadata):
    """Writes the backbone's weights and manifest beside their final names, then renames them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone = model.get_layer(glyphnet.NAME)
    partial = out_dir / f"partial.{glyphnet.WEIGHTS_FILE}"
    backbone.save_weights(str(partial))
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    manifest = {
        "file": glyphnet.WEIGHTS_FILE,
        "sha256": digest,
        "bytes": partial.stat().st_size,
        "parameters": backbone.count_params(),
        "regenerate": glyphnet.REGENERATE,
        **metadata,
    }
    manifest_partial = out_dir / f"partial.{glyphnet.MANIFEST_FILE}"
    manifest_partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, out_dir / glyphnet.WEIGHTS_FILE)
    os.replace(manifest_partial, out_dir / glyphnet.MANIFEST_FILE)
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64000, help="training glyphs")
    parser.add_argument("--val-samples", type=int, default=4000, help="held-out glyphs")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training glyphs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=glyphnet.WEIGHTS_DIR, help="folder")
    parser.add_argument(
        "--bench", type=pathlib.Path, default=REPO / "bench" / "results" / "pretrain_glyphnet.json"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    templates = render_templates()
    train_x, train_y = synthesize(templates, args.samples, args.seed)
    val_x, val_y = synthesize(templates, args.val_samples, args.seed + 1)
    data_seconds = time.perf_counter() - start
    print(
        f"{len(CLASSES)} classes, {len(templates)} templates, "
        f"{args.samples} + {args.val_samples} glyphs in {data_seconds:.0f} s"
    )

    model = build_model(len(CLASSES))
    steps = args.epochs * -(-args.samples // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    train_ds = to_dataset(train_x, train_y, batch_size=args.batch_size, shuffle_seed=args.seed)
    val_ds = to_dataset(val_x, val_y, batch_size=512)
    model.fit(train_ds, epochs=args.epochs, validation_data=val_ds, shuffle=False, verbose=2)
    _, val_accuracy = model.evaluate(val_ds, verbose=0)
    seconds = time.perf_counter() - start

    source_task = {
        "classes": CLASSES,
        "excluded_letters": EXCLUDED,
        "excluded_others": EXCLUDED_OTHERS,
        "merged_case_pairs": MERGED,
        "fonts": list(UNICODE_FONTS + TEX_FONTS),
        "train_samples": args.samples,
        "val_samples": args.val_samples,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "val_accuracy": round(float(val_accuracy), 4),
    }
    metadata = {
        "input_size": list(glyphnet.DEFAULT_INPUT_SIZE),
        "preprocessing": glyphnet.SPEC.preprocessing,
        "source_task": source_task,
    }
    manifest = save_backbone(model, args.out, metadata)
    arguments = sys.argv[1:] if argv is None else list(argv)
    record = {
        "command": " ".join(["python scripts/pretrain_demo_backbone.py", *arguments]),
        "seconds_total": round(seconds, 1),
        "seconds_data": round(data_seconds, 1),
        "source_val_accuracy": round(float(val_accuracy), 4),
        "source_classes": len(CLASSES),
        "parameters": manifest["parameters"],
        "weights_bytes": manifest["bytes"],
        "sha256": manifest["sha256"],
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "source_task": source_task,
    }
    write_record(args.bench, record)
    print(json.dumps({k: v for k, v in record.items() if k != "source_task"}, indent=2))
    return record


if __name__ == "__main__":
    main()
