"""`cache=`: memory, a disk cache and decoding every epoch give the same batches (issue 20)."""

import logging
import os
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

import tltk.data
from tltk import atomic
from tltk.data import cache as cache_module
from tltk.data import images

SIZE = (24, 20)
FORMATS = ("jpg", "png", "rgba.png", "gray.png", "bmp", "webp", "gif", "rotated.jpg", "big.jpg")
BAD = {"truncated.jpg", "empty.png", "text.png"}


def write_image(path, kind, rng):
    width, height = (int(v) for v in rng.integers(6, 90, 2))
    if kind == "big.jpg":
        width, height = 400, 300  # decoded at a reduced DCT scale
    pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
    image = Image.fromarray(pixels)
    if kind == "rgba.png":
        alpha = rng.integers(0, 256, (height, width, 1), np.uint8)
        image = Image.fromarray(np.concatenate([pixels, alpha], axis=-1), "RGBA")
    elif kind == "gray.png":
        image = image.convert("L")
    if kind == "rotated.jpg":
        tags = Image.Exif()
        tags[0x0112] = int(rng.integers(2, 9))
        image.save(path, quality=90, exif=tags)
    else:
        image.save(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """240 images of mixed formats, sizes and orientations in 2 classes, and 3 bad files."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (root / name).mkdir()
        for i in range(120):
            kind = FORMATS[i % len(FORMATS)]
            write_image(root / name / f"{i:03d}.{kind}", kind, rng)
    good = root / "cats" / "000.jpg"
    (root / "cats" / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    (root / "cats" / "empty.png").write_bytes(b"")
    (root / "dogs" / "text.png").write_text("not an image")
    return root


def load(root, cache, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bad files' warning
        return tltk.data.from_directory(
            root, image_size=SIZE, batch_size=16, seed=5, cache=cache, **kwargs
        )


def batches(data):
    """Two train epochs and the validation split, as lists of numpy batches."""
    passes = [data.train, data.train, data.validation]
    return [list(dataset.as_numpy_iterator()) for dataset in passes]


def assert_same_batches(expected, got):
    for passes_a, passes_b in zip(expected, got):
        assert len(passes_a) == len(passes_b)
        for (images_a, labels_a), (images_b, labels_b) in zip(passes_a, passes_b):
            np.testing.assert_array_equal(images_a, images_b)
            np.testing.assert_array_equal(labels_a, labels_b)


@pytest.fixture(scope="module")
def in_memory(tree):
    keras.utils.set_random_seed(0)  # TF's global seed joins the shuffle seed: as in each test
    data = load(tree, "memory")
    return data, batches(data)


def test_streaming_and_disk_cache_give_the_pixels_and_order_of_memory(tree, in_memory, tmp_path):
    data, expected = in_memory
    assert {os.path.basename(path) for path, _ in data.skipped} == BAD
    assert sum(len(s) for s in data.sources.values()) == 240
    first, second = expected[0], expected[1]
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second)), "reshuffled"
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # the disk cache built, reused
        streamed = load(tree, cache)
        assert streamed.skipped == data.skipped and streamed.sources == data.sources
        assert_same_batches(expected, batches(streamed))


def test_a_disk_cache_is_reused_without_reading_any_image(tree, in_memory, tmp_path, monkeypatch):
    load(tree, tmp_path)
    (built,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    stamp = os.stat(built / "pixels.u8").st_mtime_ns

    def no_reading(*args, **kwargs):
        raise AssertionError("a source image was read")

    monkeypatch.setattr(images, "inspect_file", no_reading)
    monkeypatch.setattr(images, "_decode_with_tf", no_reading)
    reused = load(tree, tmp_path)
    assert reused.skipped == in_memory[0].skipped
    assert_same_batches(in_memory[1], batches(reused))
    assert os.stat(built / "pixels.u8").st_mtime_ns == stamp


def test_a_changed_file_rebuilds_the_cache_and_removes_the_stale_one(tmp_path):
    root = tmp_path / "data"
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (30, 20), colour).save(root / name / f"{i}.png")
    cache = tmp_path / "cache"
    before = load(root, cache, validation_split=0.0)
    (old,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    changed = root / "red" / "0.png"
    Image.new("RGB", (30, 20), (0, 255, 0)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different modification time, whatever the clock
    after = load(root, cache, validation_split=0.0)
    (new,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert new != old and not old.exists()
    assert before.sources == after.sources
    pixels = np.concatenate([images for images, _ in after.train.as_numpy_iterator()])
    assert sum((image == (0, 255, 0)).all() for image in pixels) == 1


def test_a_killed_or_damaged_build_is_never_trusted(tree, in_memory, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    real_check = images.check_files

    def killed(*args, consume, **kwargs):
        def half(indexes, pixels):
            consume(indexes, pixels)
            raise KeyboardInterrupt  # the run stops after its first chunk

        return real_check(*args, consume=half, **kwargs)

    monkeypatch.setattr(cache_module, "check_files", killed)
    with pytest.raises(KeyboardInterrupt):
        load(tree, cache)
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []
    monkeypatch.undo()

    data = load(tree, cache)  # builds it whole
    (built,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    leftover = cache / f".{built.name}{atomic.MARKER}tmp-999999999-dead"  # a kill -9 leftover
    leftover.mkdir()
    with open(built / "pixels.u8", "r+b") as pixels:
        pixels.truncate(1000)  # damaged after it was published
    with caplog.at_level(logging.WARNING, logger="tltk.data"):
        rebuilt = load(tree, cache)
    assert "damaged" in caplog.text
    assert not leftover.exists()
    assert data.skipped == rebuilt.skipped
    assert_same_batches(in_memory[1], batches(rebuilt))


def test_auto_holds_memory_below_the_budget_and_a_disk_cache_above(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("TLTK_DATA_CACHE", str(tmp_path / "default"))
    monkeypatch.setattr(cache_module, "AUTO_MEMORY_BUDGET", 243 * SIZE[0] * SIZE[1] * 3)
    load(tree, "auto")
    assert not (tmp_path / "default").exists()
    monkeypatch.setattr(cache_module, "AUTO_MEMORY_BUDGET", 242 * SIZE[0] * SIZE[1] * 3)
    load(tree, "auto")
    assert [p for p in (tmp_path / "default").iterdir() if not p.name.startswith(".")]
    assert cache_module.resolve("auto", 243, SIZE, where=None, disk=False) is None


def test_arrays_give_the_same_batches_in_every_mode(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (60, 14, 30, 4), np.uint8)
    y = np.arange(60) % 3
    for crop in (False, True):
        runs = [
            batches(
                tltk.data.from_arrays(
                    x, y, image_size=SIZE, cache=cache, crop_to_aspect_ratio=crop, seed=1
                )
            )
            for cache in ("memory", None, tmp_path, tmp_path)
        ]
        for run in runs[1:]:
            assert_same_batches(runs[0], run)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


@pytest.mark.parametrize(
    "cache, message",
    [(3, "`cache` must be"), ("photos", "outside the data"), ("file", "not a file")],
)
def test_bad_cache_arguments_are_named(tree, tmp_path, cache, message):
    (tmp_path / "file").write_text("x")
    cache = {"photos": tree / "cats" / "cache", "file": tmp_path / "file"}.get(cache, cache)
    with pytest.raises(ValueError, match=message):
        load(tree, cache)
