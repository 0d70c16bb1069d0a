"""Inputs that once gave a silently wrong result or an unclear error (issue 17, data part)."""

import csv
import os
import socket
import time
import warnings

import numpy as np
import pytest
from PIL import Image

import tltk
from tests.test_data import epoch, unique_tree


def write_csv(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as file:
        csv.writer(file).writerows(rows)


def train_images(data):
    """The train split's images, in any order, as sorted lists of pixel values."""
    return sorted(epoch(data.train)[0].reshape(len(data.sources["train"]), -1).tolist())


def all_sources(data):
    return sorted(path for split in data.sources.values() for path in split)


# ---------------------------------------------------------------- folders


@pytest.mark.parametrize(
    "names",
    [("train", "valid", "test"), ("Train", "Test"), ("training", "validation"), ("TRAIN", "Val")],
)
def test_split_folders_in_any_spelling_are_splits_not_classes(tmp_path, names):
    for name in names:
        unique_tree(tmp_path / name, {"cat": 3, "dog": 2})
    data = tltk.data.from_directory(tmp_path, image_size=8, validation_split=0.0)
    assert data.class_names == ("cat", "dog")
    assert data.class_counts["train"] == {"cat": 3, "dog": 2}
    for split, name in zip(("validation", "test"), names[1:]):
        role = "test" if name.lower() == "test" else split
        assert data.class_counts[role] == {"cat": 3, "dog": 2}
        assert all(f"{os.sep}{name}{os.sep}" in path for path in data.sources[role])


def test_split_folders_that_cannot_be_read_as_splits_are_refused(tmp_path):
    unique_tree(tmp_path / "mixed" / "train", {"cat": 2, "dog": 2})
    unique_tree(tmp_path / "mixed" / "extra", {"cat": 2})
    with pytest.raises(ValueError, match=r"mixes split folders \(train/\) with other.*extra"):
        tltk.data.from_directory(tmp_path / "mixed", image_size=8)
    unique_tree(tmp_path / "untrained" / "valid", {"cat": 2, "dog": 2})
    unique_tree(tmp_path / "untrained" / "test", {"cat": 2, "dog": 2})
    with pytest.raises(ValueError, match=r"no `train/` folder.*point `path` at"):
        tltk.data.from_directory(tmp_path / "untrained", image_size=8)
    unique_tree(tmp_path / "twice" / "train", {"cat": 2, "dog": 2})
    unique_tree(tmp_path / "twice" / "Training", {"cat": 2, "dog": 2})
    with pytest.raises(ValueError, match=r"2 train folders \(Training, train\); keep one"):
        tltk.data.from_directory(tmp_path / "twice", image_size=8)
    # A class that is only named like a split (a vehicle dataset's "train") stays a class.
    unique_tree(tmp_path / "vehicles", {"bus": 2, "train": 2})
    vehicles = tltk.data.from_directory(tmp_path / "vehicles", image_size=8, validation_split=0)
    assert vehicles.class_names == ("bus", "train")


def test_linked_and_unreadable_folders_are_read_or_reported(tmp_path, monkeypatch):
    unique_tree(tmp_path / "data", {"cat": 2, "dog": 2})
    unique_tree(tmp_path / "elsewhere", {"more": 3, "locked": 1})
    os.symlink(tmp_path / "elsewhere" / "more", tmp_path / "data" / "cat" / "linked")
    os.symlink(tmp_path / "data" / "cat", tmp_path / "data" / "cat" / "loop")
    os.symlink(tmp_path / "elsewhere" / "locked", tmp_path / "data" / "dog" / "locked")
    locked = str(tmp_path / "data" / "dog" / "locked")
    refused = {locked}
    scandir = os.scandir

    def refusing_scandir(path="."):  # chmod 000 does not stop root, so refuse here
        if os.fspath(path) in refused:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    with pytest.warns(UserWarning, match="Skipped 2 of 9"):
        data = tltk.data.from_directory(tmp_path / "data", image_size=8, validation_split=0.0)
    assert data.class_counts["train"] == {"cat": 5, "dog": 2}
    reasons = dict(data.skipped)
    assert reasons[locked] == "unreadable folder (Permission denied)"
    loop = str(tmp_path / "data" / "cat" / "loop")
    assert reasons[loop].startswith("same folder as one already read")
    refused.add(str(tmp_path / "data" / "dog"))  # a class folder that cannot be read is named
    with pytest.raises(ValueError, match=r"dog: unreadable folder \(Permission denied\)"):
        tltk.data.from_directory(tmp_path / "data", image_size=8)


def test_file_names_that_are_not_utf8_load_and_bad_class_names_are_reported(tmp_path):
    unique_tree(tmp_path, {"cat": 2, "dog": 2})
    latin1 = os.path.join(os.fsencode(tmp_path / "cat"), b"caf\xe9.png")
    Image.new("RGB", (8, 8), (200, 100, 7)).save(latin1)
    unique_tree(tmp_path / os.fsdecode(b"b\xe4r"), {"sub": 1})
    with pytest.warns(UserWarning, match="class folder name is not valid UTF-8"):
        data = tltk.data.from_directory(tmp_path, image_size=8, validation_split=0.0)
    assert data.class_counts["train"] == {"cat": 3, "dog": 2}
    assert os.fsdecode(latin1) in data.sources["train"]
    assert dict(data.skipped)[os.fsdecode(os.path.join(os.fsencode(tmp_path), b"b\xe4r"))]
    assert tltk.data.load_image(latin1, 8)[0, 0].tolist() == [200, 100, 7]


def test_an_empty_validation_split_is_named_with_the_counts(tmp_path):
    unique_tree(tmp_path, {"cat": 2, "dog": 2})
    with pytest.warns(UserWarning, match=r"validation split is empty.*cat: 2, dog: 2"):
        data = tltk.data.from_directory(tmp_path, image_size=8, validation_split=0.1)
    assert data.validation is None


# ---------------------------------------------------------------- arrays


def test_from_arrays_reads_each_dtype_or_names_it():
    rng = np.random.default_rng(0)
    eight_bit = rng.integers(0, 256, (6, 4, 4, 3))
    y = [0, 1] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (eight_bit.astype(np.uint16), eight_bit.astype(np.int64), eight_bit * 1.0):
            data = tltk.data.from_arrays(x, y, validation_split=0.0)
            assert train_images(data) == sorted(eight_bit.reshape(6, -1).tolist())
    sixteen_bit = eight_bit.astype(np.uint16) * 256 + 3  # high byte: the 8-bit value
    with pytest.warns(UserWarning, match="uint16 with values up to 65") as caught:
        data = tltk.data.from_arrays(sixteen_bit, y, validation_split=0.0)
    assert "12-bit" in str(caught[0].message)
    assert train_images(data) == sorted(eight_bit.reshape(6, -1).tolist())
    for x, words in [
        (eight_bit / 255.0, "looks scaled to 0..1"),
        (eight_bit > 9, "dtype bool"),
        (eight_bit - 1, "dtype int64 and values in"),
        (eight_bit.astype(np.complex64), "dtype complex64"),
    ]:
        with pytest.raises(ValueError, match=words):
            tltk.data.from_arrays(x, y)


# ---------------------------------------------------------------- CSV


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 7)).save(folder / f"{i}.png")
    return folder


def test_csv_repeats_are_used_once_or_refused(images):
    rows = [["file", "label"]] + [[f"{i}.png", "ab"[i % 2]] for i in range(6)]
    write_csv(images / "repeat.csv", rows + [["./2.png", "a"]])
    with pytest.warns(UserWarning, match="Skipped 1 of 7"):
        data = tltk.data.from_csv(images / "repeat.csv", image_size=8, validation_split=0.3)
    assert len(all_sources(data)) == len(set(all_sources(data))) == 6
    assert dict(data.skipped)[f"{images / 'repeat.csv'}:8"] == "repeats line 4 ('./2.png')"
    write_csv(images / "conflict.csv", rows + [["2.png", "b"]])
    with pytest.raises(ValueError, match=r"'2.png' twice.*\['a'\] on line 4, \['b'\] on line 8"):
        tltk.data.from_csv(images / "conflict.csv", image_size=8)


def test_csv_without_a_header_row_is_refused(images):
    write_csv(images / "bare.csv", [[f"{i}.png", "ab"[i % 2]] for i in range(6)])
    with pytest.raises(ValueError, match=r"bare.csv has no header row.*'0.png', 'a'"):
        tltk.data.from_csv(images / "bare.csv", image_size=8)
    write_csv(images / "gone.csv", [["lost.png", "a"], ["1.png", "a"], ["2.png", "b"]])
    with pytest.raises(ValueError, match="the label 'a'"):
        tltk.data.from_csv(images / "gone.csv", image_size=8)


def test_csv_in_another_encoding_is_named_and_read_with_encoding(images):
    rows = [["file", "label"]] + [[f"{i}.png", ["café", "thé"][i % 2]] for i in range(6)]
    write_csv(images / "latin1.csv", rows, encoding="latin-1")
    with pytest.raises(ValueError, match=r"latin1.csv is not valid utf-8: byte b'\\xe9' on line 2"):
        tltk.data.from_csv(images / "latin1.csv", image_size=8)
    data = tltk.data.from_csv(
        images / "latin1.csv", image_size=8, encoding="latin-1", validation_split=0.0
    )
    assert data.class_names == ("café", "thé")
    with pytest.raises(ValueError, match="`encoding` must name a text encoding"):
        tltk.data.from_csv(images / "latin1.csv", image_size=8, encoding="klingon")


# ---------------------------------------------------------------- TFDS


def test_from_tfds_unknown_name_suggests_close_names(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(
        ValueError, match=r"Unknown TFDS dataset 'tf_flowerz'\. Closest.*tf_flowers"
    ) as error:
        tltk.data.from_tfds("tf_flowerz", image_size=8, data_dir=str(tmp_path))
    assert len(str(error.value)) < 400


def test_from_tfds_offline_fails_fast_and_says_how_to_use_a_copy(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")

    def offline(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"looks offline.*`data_dir=` with `download=False`"):
        tltk.data.from_tfds("tf_flowers", image_size=8, data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match=r"not prepared in .*`download=False`"):
        tltk.data.from_tfds("tf_flowers", image_size=8, data_dir=str(tmp_path), download=False)


def test_prediction_reads_uint16_arrays_as_training_does():
    from tltk.export.images import image_batch

    pixels = np.arange(0, 65536, 257, dtype=np.uint16).reshape(1, 16, 16, 1)[..., [0, 0, 0]]
    with pytest.warns(UserWarning, match="uint16"):
        trained_on = tltk.data.from_arrays(
            np.repeat(pixels, 4, axis=0),
            [0, 1, 0, 1],
            image_size=(16, 16),
            batch_size=4,
            validation_split=0,
            test_split=0,
        )
    with pytest.warns(UserWarning, match="uint16"):
        predicted_on = image_batch(pixels, (16, 16, 3), name="images")
    train_pixels = next(iter(trained_on.train))[0].numpy()[0]
    np.testing.assert_array_equal(predicted_on[0], train_pixels)
    assert predicted_on.max() == 255
