"""GlyphNet: a small convolutional backbone that ships with tltk, pretrained offline.

No model hub is needed to show transfer learning: `scripts/pretrain_demo_backbone.py` pretrains
GlyphNet on characters rendered from matplotlib's fonts (letters, Greek, Cyrillic and symbols; no
digits, nor characters that look like one), and the weights file it writes ships inside the
package (`tltk/weights/tltk_glyphnet.weights.h5`), checked against the SHA-256 recorded beside it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import keras

from tltk.backbones.registry import BackboneSpec, register_backbone

NAME = "tltk_glyphnet"
WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "weights"
WEIGHTS_FILE = f"{NAME}.weights.h5"
MANIFEST_FILE = f"{NAME}.json"
REGENERATE = "python scripts/pretrain_demo_backbone.py"
DEFAULT_INPUT_SIZE = (32, 32)
# Filters: a stride-2 stem, three blocks of two 3x3 convs, a 1x1 "top" conv giving the features.
STEM_FILTERS = 32
BLOCK_FILTERS = (32, 64, 128)
TOP_FILTERS = 256


def glyphnet(input_shape=None, *, weights="tltk"):
    """Builds GlyphNet, a fully convolutional feature extractor (about 0.33M parameters).

    Layers are named by group (`stem_*`, `block1_*`..`block3_*`, `top_*`); every conv is followed by
    BatchNorm and ReLU. The model maps images scaled to [0, 1] (preprocessing `"unit"`) to a
    `(H/8, W/8, 256)` feature map; any input size of at least 8x8 works.

    Args:
        input_shape: tuple. `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        weights: str or None. `"tltk"` loads the weights shipped with tltk (3 channels only), after
            checking their SHA-256; `None` leaves them random. Defaults to `"tltk"`.

    Returns:
        A `keras.Model` named `"tltk_glyphnet"`.

    Example:

    >>> model = glyphnet((48, 48, 3))
    >>> model.output.shape
    (None, 6, 6, 256)
    >>> glyphnet((32, 32, 1), weights=None).count_params() > 300_000
    True

    In a classifier, through the registry: `tltk.build_classifier("tltk_glyphnet", 10,
    weights="tltk")`.
    """
    input_shape = tuple(input_shape or (*DEFAULT_INPUT_SIZE, 3))
    if len(input_shape) != 3 or any(d is not None and d < 1 for d in input_shape):
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}"
        )
    if any(d is not None and d < 8 for d in input_shape[:2]):
        raise ValueError(
            f"GlyphNet needs inputs of at least 8x8. Received: input_shape={input_shape}"
        )
    if weights not in ("tltk", None):
        raise ValueError(f"`weights` must be 'tltk' or None. Received: weights={weights!r}")
    if weights == "tltk" and input_shape[2] != 3:
        raise ValueError(
            f"The 'tltk' weights take 3 channels. Received: input_shape={input_shape}; "
            "pass weights=None for another channel count."
        )
    inputs = keras.Input(input_shape, name="input")
    x = _conv_bn(inputs, STEM_FILTERS, 3, "stem", strides=2)
    for i, filters in enumerate(BLOCK_FILTERS, start=1):
        x = _conv_bn(x, filters, 3, f"block{i}", suffix="1")
        x = _conv_bn(x, filters, 3, f"block{i}", suffix="2")
        if i < len(BLOCK_FILTERS):
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")(x)
    x = _conv_bn(x, TOP_FILTERS, 1, "top")
    model = keras.Model(inputs, x, name=NAME)
    if weights == "tltk":
        model.load_weights(verified_weights_path())
    return model


def verified_weights_path(weights_dir=None):
    """Returns the path of the shipped weights file after checking its SHA-256.

    Args:
        weights_dir: str or Path. Folder holding the weights file and its JSON manifest.
            Defaults to `tltk/weights` inside the installed package.

    Returns:
        A `pathlib.Path` to `tltk_glyphnet.weights.h5`.

    Raises:
        ValueError: if the weights file or its manifest is missing, or the file's SHA-256 does not
            match the manifest; the message names the file and the command that regenerates it.

    Example:

    >>> verified_weights_path().name
    'tltk_glyphnet.weights.h5'
    """
    folder = pathlib.Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path, manifest = folder / WEIGHTS_FILE, folder / MANIFEST_FILE
    for needed in (path, manifest):
        if not needed.is_file():
            raise ValueError(_weights_error(needed, "is missing"))
    expected = json.loads(manifest.read_text())["sha256"]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        reason = f"is corrupt: its SHA-256 is {actual}, {manifest.name} says {expected}"
        raise ValueError(_weights_error(path, reason))
    return path


def _weights_error(path, reason):
    return (
        f"The GlyphNet weights file {path} {reason}. "
        f"Regenerate it with `{REGENERATE}` (run from the tltk repository)."
    )


def _conv_bn(x, filters, kernel_size, group, *, strides=1, suffix=""):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        name=f"{group}_conv{suffix}",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{group}_bn{suffix}")(x)
    return keras.layers.ReLU(name=f"{group}_relu{suffix}")(x)


SPEC = register_backbone(
    BackboneSpec(
        name=NAME,
        family="glyphnet",
        source="tltk",
        constructor=lambda input_shape, weights: glyphnet(input_shape, weights=weights),
        preprocessing="unit",
        default_input_size=DEFAULT_INPUT_SIZE,
        min_input_size=(8, 8),
        feature_dim=TOP_FILTERS,
        groups=(("stem", "^stem_"),)
        + tuple((f"block{i}", f"^block{i}_") for i in range(1, len(BLOCK_FILTERS) + 1))
        + (("top", "^top_"),),
        weights=("tltk",),
        aliases=("glyphnet",),
        description="Small CNN shipped with tltk, pretrained offline on rendered characters.",
    )
)
