"""Tests for tltk.data: file checks, decoding, folders, splits, arrays, CSV, TFDS and mixing."""

import csv
import dataclasses
import os
import struct
import tempfile
import warnings
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

import tltk
from tltk.data import decode, images, pipeline
from tltk.data.jpeg_header import read_jpeg_header

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
SIZE = (16, 24)  # (height, width) the tests load at
# Pillow transposes that undo each EXIF orientation's turn: stored = displayed.transpose(...).
STORE_FOR = {
    2: Image.FLIP_LEFT_RIGHT,
    3: Image.ROTATE_180,
    4: Image.FLIP_TOP_BOTTOM,
    5: Image.TRANSPOSE,
    6: Image.ROTATE_90,
    7: Image.TRANSVERSE,
    8: Image.ROTATE_270,
}


# ---------------------------------------------------------------- image makers


def halves(width=48, height=32):
    """An image whose left half is red and right half blue, when upright."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


def exif(orientation):
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags.tobytes()


def save_rotated(image, path, orientation, mode="RGB"):
    """Stores `image` turned so that EXIF `orientation` turns it upright again."""
    stored = image if orientation == 1 else image.transpose(STORE_FOR[orientation])
    stored.convert(mode).save(path, exif=exif(orientation), quality=95)


def png16(path, rgb):
    """Writes a 16-bit RGB PNG by hand (Pillow cannot write one)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    with open(path, "wb") as file:
        file.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b"")
        )


def write_halves_class(folder):
    """Every supported format and mode, each showing red-left/blue-right once upright."""
    folder.mkdir(parents=True)
    image = halves()
    image.save(folder / "plain.jpg", quality=95)
    image.save(folder / "progressive.jpg", quality=95, progressive=True)
    save_rotated(image, folder / "exif6.jpg", 6)
    save_rotated(image, folder / "exif8.jpg", 8)
    save_rotated(image, folder / "exif3_cmyk.jpg", 3, mode="CMYK")
    image.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    image.convert("RGBA").save(folder / "rgba.png")
    image.convert("P", palette=Image.ADAPTIVE, colors=4).save(folder / "palette.png")
    png16(folder / "rgb16.png", np.asarray(image).astype(np.uint16) * 257)
    mirrored = ImageOps.mirror(image)
    image.save(folder / "anim.gif", save_all=True, append_images=[mirrored, mirrored], duration=50)
    image.save(folder / "lossless.webp", lossless=True)
    image.save(folder / "bitmap.bmp")
    image.save(folder / "upper.JPEG", quality=95)
    return 13


def write_gray_class(folder):
    """Grayscale images of value 100, in 8 and 16 bits, with and without alpha."""
    folder.mkdir(parents=True)
    Image.new("L", (40, 30), 100).save(folder / "gray8.png")
    Image.fromarray(np.full((30, 40), 100 * 256 + 255, np.uint16)).save(folder / "gray16.png")
    Image.new("L", (40, 30), 100).save(folder / "gray.jpg", quality=95)
    Image.new("LA", (40, 30), (100, 255)).save(folder / "gray_alpha.png")
    return 4


def write_bad_files(folder):
    """One bad entry of each kind; returns {name: expected words in the reason}."""
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    big.save(folder / "whole.tmp", format="JPEG", quality=90)
    data = (folder / "whole.tmp").read_bytes()
    (folder / "whole.tmp").unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    big.save(folder / "whole.tmp", format="PNG")
    data = (folder / "whole.tmp").read_bytes()
    (folder / "whole.tmp").unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not a picture")
    os.symlink(folder / "no_such_file.jpg", folder / "dangling.jpg")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._plain.jpg").write_bytes(b"\0\5\26\7 resource fork")
    (folder / "notes.txt").write_text("taken on holiday")
    (folder / ".thumbs").mkdir()
    halves().save(folder / ".thumbs" / "thumb.jpg")
    return {
        "truncated.jpg": "truncated image",
        "truncated.png": "truncated image",
        "empty.png": "empty file (0 bytes)",
        "text.jpg": "not a JPEG, PNG, BMP, GIF or WebP image",
        "dangling.jpg": "unreadable file",
        ".DS_Store": "hidden file",
        "._plain.jpg": "hidden file",
        "notes.txt": "unsupported extension (.txt)",
        ".thumbs": "hidden folder",
    }


def assert_halves(pixels, where):
    pixels = np.asarray(pixels, dtype=np.float32)
    width = pixels.shape[1]
    left = pixels[:, : width // 4].reshape(-1, 3).mean(axis=0)
    right = pixels[:, -(width // 4) :].reshape(-1, 3).mean(axis=0)
    assert np.abs(left - RED).max() < 40 and np.abs(right - BLUE).max() < 40, (where, left, right)


def unique_tree(root, counts):
    """Class folders of tiny PNGs whose first pixel encodes a unique id; returns {path: id}."""
    ids, next_id = {}, 0
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = root / name / f"{i:03d}.png"
            Image.new("RGB", (8, 8), (next_id % 256, next_id // 256, 7)).save(path)
            ids[str(path)] = next_id
            next_id += 1
    return ids


def epoch(dataset):
    """All `(images, labels)` of one pass, as numpy arrays."""
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def pixel_id(image):
    return round(image[0, 0, 0]) + 256 * round(image[0, 0, 1])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    good = {"halves": write_halves_class(root / "halves"), "gray": write_gray_class(root / "gray")}
    bad = write_bad_files(root / "halves")
    halves().save(root / "loose.jpg")
    bad["loose.jpg"] = "not inside a class folder"
    return root, good, bad


# ---------------------------------------------------------------- files and decoding


def test_bad_entries_are_skipped_with_their_reason(corpus):
    root, good, bad = corpus
    with pytest.warns(UserWarning, match=f"Skipped {len(bad)} of .* in {root}"):
        data = tltk.data.from_directory(root, image_size=SIZE, validation_split=0.0)
    reasons = {os.path.basename(path): reason for path, reason in data.skipped}
    assert set(reasons) == set(bad)
    for name, words in bad.items():
        assert words in reasons[name], (name, reasons[name])
    assert data.class_counts["train"] == good


def test_good_files_load_upright_with_their_label(corpus):
    root, good, _ = corpus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = tltk.data.from_directory(root, image_size=SIZE, validation_split=0.0, batch_size=5)
    assert data.class_names == ("gray", "halves")
    pixels, labels = epoch(data.train)
    assert pixels.dtype == np.float32 and pixels.shape[1:] == (*SIZE, 3)
    assert labels.dtype == np.int32
    assert (labels == 1).sum() == good["halves"] and (labels == 0).sum() == good["gray"]
    for image in pixels[labels == 1]:
        assert_halves(image, "halves class")
    gray = pixels[labels == 0]
    assert np.abs(gray - 100).max() <= 2, "every gray image (8/16-bit, alpha, JPEG) is 100"


@pytest.mark.parametrize(
    "name",
    [
        "plain.jpg",
        "progressive.jpg",
        "exif6.jpg",
        "exif8.jpg",
        "exif3_cmyk.jpg",
        "cmyk.jpg",
        "rgba.png",
        "palette.png",
        "rgb16.png",
        "anim.gif",
        "lossless.webp",
        "bitmap.bmp",
        "upper.JPEG",
    ],
)
def test_each_format_loads_upright(corpus, name):
    root, _, _ = corpus
    pixels = tltk.data.load_image(root / "halves" / name, SIZE)
    assert pixels.shape == (*SIZE, 3) and pixels.dtype == np.uint8
    assert_halves(pixels, name)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "CMYK"])  # decoded by TensorFlow / by Pillow
def test_every_exif_orientation_matches_pillow(tmp_path, orientation, mode):
    quadrants = np.zeros((32, 48, 3), np.uint8)
    quadrants[:16, :24], quadrants[:16, 24:] = RED, GREEN
    quadrants[16:, :24], quadrants[16:, 24:] = BLUE, (255, 255, 255)
    path = tmp_path / "photo.jpg"
    save_rotated(Image.fromarray(quadrants), path, orientation, mode)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), np.float32)
    assert upright.shape == quadrants.shape
    loaded = tltk.data.load_image(path, (32, 48)).astype(np.float32)
    assert np.abs(loaded - quadrants).mean() < 8
    assert np.abs(loaded - upright).mean() < 8


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, 10:] = (*BLUE, 255)  # left half fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    pixels = tltk.data.load_image(tmp_path / "cutout.png", (20, 20))
    assert (pixels[:, :8] == 255).all()
    assert (pixels[:, 12:] == BLUE).all()


def test_bulk_loading_matches_single_file_loading(corpus):
    root, _, _ = corpus
    paths = sorted(str(p) for p in (root / "halves").iterdir() if p.is_file())
    stored, kept, skipped = images.load_images(paths, SIZE, num_workers=3)
    assert len(kept) + len(skipped) == len(paths)
    for index in kept:
        single = tltk.data.load_image(paths[index], SIZE)
        np.testing.assert_array_equal(stored[index].numpy(), single, err_msg=paths[index])


def test_tensorflow_and_pillow_decoders_agree(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), np.uint8)).resize(
        (400, 300), Image.BICUBIC
    ).save(path, quality=92)
    assert images.inspect_file(path).route == "tf"
    by_tf = tltk.data.load_image(path, (48, 64)).astype(int)
    by_pil = images._decode_with_pil(path, 1, (48, 64), False).astype(int)
    assert np.abs(by_tf - by_pil).mean() < 1.5


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = tmp_path / "phone.jpg"
    halves(1600, 1200).save(path, quality=90)
    header = images.inspect_file(path)
    assert images._tf_plan(header, SIZE, False)[1] == 8  # DCT scale 1/8, still above 16x24
    assert_halves(tltk.data.load_image(path, SIZE), "phone.jpg")


def test_crop_to_aspect_ratio_keeps_the_center(tmp_path):
    bands = np.zeros((16, 64, 3), np.uint8)
    bands[:, :16], bands[:, 16:48], bands[:, 48:] = GREEN, RED, BLUE
    Image.fromarray(bands).save(tmp_path / "wide.png")
    stretched = tltk.data.load_image(tmp_path / "wide.png", (16, 16))
    cropped = tltk.data.load_image(tmp_path / "wide.png", (16, 16), crop_to_aspect_ratio=True)
    assert (stretched[:, 0] == GREEN).all()
    assert (cropped == RED).all()


def test_jpeg_header_reader_agrees_with_pillow(tmp_path):
    halves().save(tmp_path / "plain.jpg")
    halves().save(tmp_path / "progressive.jpg", progressive=True)
    halves().convert("L").save(tmp_path / "gray.jpg")
    save_rotated(halves(), tmp_path / "exif6.jpg", 6)
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="8"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    halves().save(tmp_path / "xmp8.jpg", xmp=xmp)
    for path in sorted(tmp_path.iterdir()):
        with Image.open(path) as image:
            expected = (
                image.width,
                image.height,
                len(image.getbands()),
                image.getexif().get(0x0112, 1),
            )
        assert tuple(read_jpeg_header(path)) == expected, path.name
    assert read_jpeg_header(tmp_path / "xmp8.jpg").orientation == 8
    (tmp_path / "fake.jpg").write_text("hello")
    assert read_jpeg_header(tmp_path / "fake.jpg") is None


def test_load_image_names_the_reason(tmp_path):
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(tltk.data.ImageFileError, match="not a JPEG") as error:
        tltk.data.load_image(tmp_path / "text.jpg", 8)
    assert isinstance(error.value, ValueError) and error.value.path.endswith("text.jpg")


# ---------------------------------------------------------------- folders, splits, errors


@pytest.mark.filterwarnings("ignore:No validation examples")
def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="must be an existing folder"):
        tltk.data.from_directory(tmp_path / "missing", image_size=8)
    with pytest.raises(ValueError, match=f"No class folders found in {tmp_path}"):
        tltk.data.from_directory(tmp_path, image_size=8)
    unique_tree(tmp_path, {"only": 3})
    with pytest.raises(ValueError, match="only one class folder, 'only'"):
        tltk.data.from_directory(tmp_path, image_size=8)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_text("x")
    with pytest.raises(ValueError, match=r"No usable training images in class .*broken"):
        tltk.data.from_directory(tmp_path, image_size=8)
    (tmp_path / "broken" / "a.jpg").unlink()
    unique_tree(tmp_path, {"broken": 1})
    with pytest.warns(UserWarning, match=f"{tmp_path / 'broken'} has only 1 usable"):
        tltk.data.from_directory(tmp_path, image_size=8)
    for bad in (
        {"image_size": (8,)},
        {"image_size": 8, "validation_split": 1.0},
        {"image_size": 8, "batch_size": 0},
        {"image_size": 8, "label_mode": "binary"},
        {"image_size": 8, "validation_split": 0.6, "test_split": 0.5},
    ):
        with pytest.raises(ValueError, match="Received"):
            tltk.data.from_directory(tmp_path, **bad)


def test_hidden_files_alone_do_not_warn(tmp_path):
    unique_tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = tltk.data.from_directory(tmp_path, image_size=8, validation_split=0.0)
    assert data.skipped == ((str(tmp_path / "a" / ".DS_Store"), "hidden file"),)


def test_split_is_stratified_deterministic_and_stable(tmp_path):
    unique_tree(tmp_path, {"a": 10, "b": 20, "c": 5})
    first = tltk.data.from_directory(tmp_path, image_size=8, seed=3)
    again = tltk.data.from_directory(tmp_path, image_size=8, seed=3)
    other = tltk.data.from_directory(tmp_path, image_size=8, seed=4)
    assert first.class_counts["validation"] == {"a": 2, "b": 4, "c": 1}
    assert first.class_counts["train"] == {"a": 8, "b": 16, "c": 4}
    assert first.sources == again.sources
    assert first.sources["validation"] != other.sources["validation"]
    assert not set(first.sources["train"]) & set(first.sources["validation"])
    Image.new("RGB", (8, 8), (200, 200, 7)).save(tmp_path / "a" / "new.png")  # a new file in a
    grown = tltk.data.from_directory(tmp_path, image_size=8, seed=3)
    for name in ("b", "c"):  # ... moves no file of the other classes
        keep = [p for p in first.sources["validation"] if f"{os.sep}{name}{os.sep}" in p]
        assert keep == [p for p in grown.sources["validation"] if f"{os.sep}{name}{os.sep}" in p]


def test_datasets_follow_sources_and_shuffle_deterministically(tmp_path):
    ids = unique_tree(tmp_path, {"a": 7, "b": 9})
    data = tltk.data.from_directory(tmp_path, image_size=8, batch_size=4, test_split=0.25, seed=1)
    for split in ("validation", "test"):
        pixels, labels = epoch(getattr(data, split))
        assert [pixel_id(p) for p in pixels] == [ids[s] for s in data.sources[split]]
        assert [data.class_names[i] for i in labels] == [
            os.path.basename(os.path.dirname(s)) for s in data.sources[split]
        ]
    order_1 = [pixel_id(p) for p in epoch(data.train)[0]]
    order_2 = [pixel_id(p) for p in epoch(data.train)[0]]
    same_seed = tltk.data.from_directory(
        tmp_path, image_size=8, batch_size=4, test_split=0.25, seed=1
    )
    assert sorted(order_1) == sorted(ids[s] for s in data.sources["train"])
    assert order_1 != order_2, "reshuffled every epoch"
    assert [pixel_id(p) for p in epoch(same_seed.train)[0]] == order_1


def test_split_tree_keeps_its_splits(tmp_path):
    unique_tree(tmp_path / "train", {"a": 6, "b": 6})
    unique_tree(tmp_path / "val", {"a": 2, "b": 3})
    unique_tree(tmp_path / "test", {"a": 1, "b": 1})
    data = tltk.data.from_directory(tmp_path, image_size=8)
    assert data.class_counts == {
        "train": {"a": 6, "b": 6},
        "validation": {"a": 2, "b": 3},
        "test": {"a": 1, "b": 1},
    }
    assert all(f"{os.sep}val{os.sep}" in p for p in data.sources["validation"])
    os.rename(tmp_path / "val", tmp_path.parent / f"{tmp_path.name}_val")  # no validation folder:
    carved = tltk.data.from_directory(tmp_path, image_size=8, validation_split=0.5)  # carved
    assert carved.class_counts["validation"] == {"a": 3, "b": 3}
    assert all(f"{os.sep}train{os.sep}" in p for p in carved.sources["validation"])
    unique_tree(tmp_path / "validation", {"a": 1, "z": 1})
    with pytest.raises(ValueError, match=r"lacks: \['z'\]"):
        tltk.data.from_directory(tmp_path, image_size=8)


def test_label_modes_class_weights_and_summary(tmp_path):
    unique_tree(tmp_path, {"a": 10, "b": 20, "c": 5})
    data = tltk.data.from_directory(tmp_path, image_size=8, label_mode="categorical")
    _, labels = epoch(data.validation)
    assert labels.dtype == np.float32 and labels.shape == (7, 3)
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    weights = tltk.class_weights(data)
    assert weights == pytest.approx({0: 28 / 24, 1: 28 / 48, 2: 28 / 12})
    assert data.num_classes == 3 and not data.multi_label
    assert "a" in data.summary() and "validation" in data.summary()
    assert "num_classes=3" in repr(data)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.train = None
    with pytest.raises(ValueError, match="ImageData"):
        tltk.class_weights(data.train)


def test_memory_warning(tmp_path, monkeypatch):
    unique_tree(tmp_path, {"a": 2, "b": 2})
    monkeypatch.setattr(pipeline, "_MEMORY_WARNING_SHARE", 1e-12)
    with pytest.warns(UserWarning, match="over half of this machine's"):
        tltk.data.from_directory(tmp_path, image_size=8, validation_split=0.0)


# ---------------------------------------------------------------- arrays, CSV, TFDS, mixing


def test_from_arrays():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    y = np.array(["dog", "cat", "cat"] * 10)
    data = tltk.data.from_arrays(x, y, batch_size=8)
    assert data.class_names == ("cat", "dog")
    assert data.class_counts["validation"] == {"cat": 4, "dog": 2}
    pixels, labels = epoch(data.validation)
    np.testing.assert_array_equal(pixels, x[list(data.sources["validation"])])
    np.testing.assert_array_equal(labels, (y[list(data.sources["validation"])] == "dog"))

    gray = tltk.data.from_arrays(x[..., 0], y, image_size=(4, 4), label_mode="categorical")
    pixels, labels = epoch(gray.train)
    assert pixels.shape[1:] == (4, 4, 3) and labels.shape[1:] == (2,)
    assert (pixels[..., 0] == pixels[..., 2]).all()

    rgba = np.zeros((4, 2, 2, 4), np.uint8)  # fully transparent
    clear = tltk.data.from_arrays(rgba, [0, 1, 0, 1], validation_split=0.0)
    assert (epoch(clear.train)[0] == 255).all()

    multi = np.array([[1, 0, 1], [0, 1, 0]] * 15)
    tags = tltk.data.from_arrays(x, multi, class_names=["sky", "sea", "sun"])
    assert tags.label_mode == "multi_hot" and tags.multi_label
    pixels, labels = epoch(tags.validation)
    np.testing.assert_array_equal(labels, multi[list(tags.sources["validation"])])
    with pytest.raises(ValueError, match="single-label"):
        tltk.class_weights(tags)

    for bad_x, bad_y, words in [
        (x / 255.0, y, "0..1"),
        (x * 2.0, y, "0..255"),
        (x, y[:5], "same length"),
        (x[..., :1].repeat(5, -1), y, "1 to 4 channels"),
        (x, np.zeros(30, int), "at least 2"),
        (x, multi, "multi-hot") if False else (x, multi * 2, "multi-hot rows"),
    ]:
        with pytest.raises(ValueError, match=words):
            tltk.data.from_arrays(bad_x, bad_y)


def write_csv(path, rows):
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(rows)


@pytest.mark.filterwarnings("ignore:Classes with fewer than 2")
def test_from_csv_single_and_multi_label(tmp_path):
    colours = {"red.png": RED, "green.png": GREEN, "blue.png": BLUE, "white.png": (255,) * 3}
    for name, colour in colours.items():
        Image.new("RGB", (10, 10), colour).save(tmp_path / name)
    write_csv(
        tmp_path / "single.csv",
        [
            ["file", "label"],
            ["red.png", "warm"],
            ["green.png", "cold"],
            ["blue.png", "cold"],
            ["white.png", "warm"],
            ["missing.png", "cold"],
            ["red.png", ""],
            ["green.png", "odd"],
        ],
    )
    with pytest.warns(UserWarning, match="Skipped 3 of 7"):
        data = tltk.data.from_csv(
            tmp_path / "single.csv",
            image_size=8,
            validation_split=0.0,
            class_names=["cold", "warm"],
        )
    reasons = dict(data.skipped)
    assert reasons[str(tmp_path / "missing.png")].startswith("unreadable file")
    assert reasons[f"{tmp_path / 'single.csv'}:7"] == "empty label"
    assert "not in class_names" in reasons[f"{tmp_path / 'single.csv'}:8"]
    assert data.class_counts["train"] == {"cold": 2, "warm": 2}

    write_csv(
        tmp_path / "multi.csv",
        [
            ["tags", "image"],
            ["warm|bright", "red.png"],
            ["cold", "green.png"],
            ["cold | bright", "blue.png"],
            ["", "white.png"],
        ],
    )
    expected = {RED: [1, 0, 1], GREEN: [0, 1, 0], BLUE: [1, 1, 0], (255,) * 3: [0, 0, 0]}
    multi = tltk.data.from_csv(
        tmp_path / "multi.csv",
        tmp_path,
        image_size=8,
        validation_split=0.0,
        label_separator="|",
        filename_column="image",
        label_column="tags",
    )
    assert multi.class_names == ("bright", "cold", "warm") and multi.label_mode == "multi_hot"
    for pixels, labels in zip(*epoch(multi.train)):
        assert labels.tolist() == expected[tuple(int(v) for v in pixels[0, 0])]

    write_csv(
        tmp_path / "wide.csv",
        [
            ["file", "bright", "cold", "warm"],
            ["red.png", 1, 0, 1],
            ["green.png", 0, 1, 0],
            ["blue.png", "1", "1", "0"],
            ["white.png", 0, 0, 0],
            ["red.png", 2, 0, 0],
        ],
    )
    with pytest.warns(UserWarning, match="Skipped 1"):
        wide = tltk.data.from_csv(
            tmp_path / "wide.csv",
            image_size=8,
            validation_split=0.0,
            label_column=["bright", "cold", "warm"],
        )
    for pixels, labels in zip(*epoch(wide.train)):
        assert labels.tolist() == expected[tuple(int(v) for v in pixels[0, 0])]
    with pytest.raises(ValueError, match=r"Columns \['nope'\] are not in"):
        tltk.data.from_csv(tmp_path / "wide.csv", image_size=8, label_column="nope")


def test_from_tfds_with_mock_data(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # TFDS leaves empty temp folders
    monkeypatch.setattr("requests.head", lambda *args, **kwargs: None)  # the network "answers"
    with tfds.testing.mock_data(num_examples=12), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flowers = tltk.data.from_tfds("tf_flowers", image_size=(16, 16), validation_split=0.25)
        digits = tltk.data.from_tfds(
            "mnist", image_size=8, split=("train", None, "test"), label_mode="categorical"
        )
        voc = tltk.data.from_tfds("voc", image_size=8, label_key="labels", validation_split=0.0)
        with pytest.raises(ValueError, match="label_key"):
            tltk.data.from_tfds("mnist", image_size=8, label_key="digit")
    assert flowers.num_classes == 5 and "roses" in flowers.class_names
    assert sum(len(s) for s in flowers.sources.values()) == 12 and flowers.test is None
    pixels, labels = epoch(flowers.validation)
    assert pixels.shape[1:] == (16, 16, 3) and labels.dtype == np.int32
    assert 0 <= pixels.min() and pixels.max() <= 255
    pixels, labels = epoch(digits.test)
    assert len(digits.sources["test"]) == 12  # the test split; validation carved out of train
    assert len(digits.sources["train"]) + len(digits.sources["validation"]) == 12
    assert (pixels[..., 0] == pixels[..., 1]).all() and labels.shape[1:] == (10,)
    assert voc.label_mode == "multi_hot" and voc.num_classes == 20
    _, labels = epoch(voc.train)
    assert set(np.unique(labels)) <= {0.0, 1.0} and labels.shape[1:] == (20,)


def test_mix_batches():
    x = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    data = tltk.data.from_arrays(x, [0, 1, 2, 3] * 4, batch_size=8, validation_split=0.0)
    for method in ("mixup", "cutmix"):
        pixels, labels = epoch(tltk.data.mix_batches(data, method, seed=0))
        assert labels.shape == (16, 4) and labels.dtype == np.float32
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
        assert pixels.shape == (16, 8, 8, 3) and pixels.max() <= 255
    assert (labels.max(axis=1) < 1).any(), "some labels are mixed"
    with pytest.raises(ValueError, match="num_classes"):
        tltk.data.mix_batches(data.train)
    with pytest.raises(ValueError, match="method"):
        tltk.data.mix_batches(data, "blend")


@pytest.mark.filterwarnings("ignore:Classes with fewer than 2")
def test_resize_rule_is_shared(tmp_path):
    assert decode.needs_antialias(64, 10, (16, 16)) and not decode.needs_antialias(31, 31, (16, 16))
    pixels = np.random.default_rng(2).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    from_file = tltk.data.load_image(tmp_path / "a.png", (20, 20))
    from_array = tltk.data.from_arrays(
        pixels[None].repeat(2, 0), [0, 1], image_size=(20, 20), validation_split=0.0
    )
    np.testing.assert_array_equal(epoch(from_array.train)[0][0], from_file)
    np.testing.assert_array_equal(decode.resize(tf.constant(pixels), (20, 20)).numpy(), from_file)
