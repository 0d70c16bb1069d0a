"""`from_directory`: a tree of class folders (or of train/validation/test splits) -> `ImageData`."""

from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np

from tltk.data import pipeline
from tltk.data.image_data import SPLITS
from tltk.data.cache import load_files
from tltk.data.images import SUPPORTED_EXTENSIONS, check_image_size

# Folder names (any capitalisation) that mark a tree already split, and the split each one fills.
_SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "test": "test",
    "testing": "test",
}
_SPLIT_HINT = (
    "A split tree holds only `train/` (or `training/`), `valid/` (or `validation/`, `val/`) and "
    "`test/` (or `testing/`) folders, any capitalisation, each with one folder per class."
)
_WINDOWS_JUNK = ("thumbs.db", "desktop.ini")
_RENAME = "rename it (class names become labels in the exported model)"


def from_directory(
    path,
    *,
    image_size,
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    label_mode="int",
    crop_to_aspect_ratio=False,
    num_workers=None,
    cache="auto",
):
    """Loads a tree of class folders, or of `train/`, `valid/` (or `validation/`), `test/` splits.

    Two layouts are read. A class tree, `path/<class>/<image>`, is split into train, validation and
    test by `validation_split` and `test_split`, per class (stratified), deterministically for a
    `seed`. A split tree, `path/train/<class>/<image>` with `valid/` and `test/` beside it (the
    layout Roboflow and many dataset sites export), keeps its splits; when the validation or test
    folder is missing, that split is carved out of `train/` by `validation_split` or `test_split`.
    Split folders are recognised in any capitalisation: `train`/`training`,
    `valid`/`validation`/`val`, `test`/`testing`. A tree is a split tree when it has a train folder
    and no other folders; split folders (holding subfolders) beside other folders, or without a
    train folder, raise an error rather than being taken for classes. Class names are the sorted
    folder names (of the train folder in a split tree); the validation and test folders may not
    have classes the train folder lacks. Images may sit in subfolders of a class, and folders
    linked into a class folder are followed (a link back into a folder already read is skipped).

    Every file is checked up front: hidden files (`.DS_Store`, `._x.jpg`), files without an image
    extension, unreadable folders, and empty, truncated, corrupt or unreadable images are left out,
    listed with the reason in `skipped`, and summed up in one warning; the rest is used. A file
    whose name is not valid UTF-8 is read like any other. Each image is decoded (see
    `tltk.data.load_image`: EXIF orientation applied, RGB, 8 bits) at `image_size`, and `cache`
    says where the pixels live: in memory, `height * width * 3` bytes per image (5,000 images at
    160x160 take 366 MiB), in a disk cache reused by later runs, or nowhere (decoded every epoch).

    Args:
        path: str or Path. The root folder.
        image_size: tuple. `(height, width)` the images are resized to, or an int for a square.
        batch_size: int. Batch size of every split. Defaults to `32`.
        validation_split: float. Share of each class held out for validation, in [0, 1); ignored
            when the tree has a validation folder. Defaults to `0.2`.
        test_split: float. Share of each class held out for test, in [0, 1); ignored when the tree
            has a test folder. Defaults to `0.0`.
        seed: int. Seed of the split and of the per-epoch shuffle. Defaults to `0`.
        label_mode: str. `"int"` (int32 class indexes) or `"categorical"` (one-hot float32).
            Defaults to `"int"`.
        crop_to_aspect_ratio: bool. Center crop each image to the target aspect ratio instead of
            stretching it. Defaults to `False`.
        num_workers: int or None. Decoding threads. Defaults to `min(32, cpu_count + 4)`.
        cache: str, Path or None. `"memory"` (decode once, hold in RAM), a folder outside `path`
            (decode once into a disk cache there, reused while the files are unchanged), `None`
            (decode every epoch) or `"auto"`: memory up to 1 GiB of pixels, else a disk cache in
            `~/.cache/tltk/data`. See `tltk.data.cache`. Defaults to `"auto"`.

    Returns:
        A `tltk.data.ImageData`.

    Raises:
        ValueError: for bad arguments; when `path` has no class folders, only one, or a class
            folder without a usable image; for split folders mixed with other folders or
            without a train folder (the message names the folder).

    Example:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> scratch = tempfile.TemporaryDirectory()  # removed when garbage-collected
    >>> root = pathlib.Path(scratch.name)
    >>> for name, colour in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
    ...     (root / name).mkdir()
    ...     for i in range(5):
    ...         Image.new("RGB", (40, 30), colour).save(root / name / f"{i}.png")
    >>> data = from_directory(root, image_size=(32, 32), batch_size=4)
    >>> data.class_names, data.class_counts["validation"]
    (('blue', 'red'), {'blue': 1, 'red': 1})
    >>> images, labels = next(iter(data.train))
    >>> images.shape, images.dtype.name, labels.dtype.name
    (TensorShape([4, 32, 32, 3]), 'float32', 'int32')
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise ValueError(f"`path` must be an existing folder. Received: path={str(path)!r}")
    image_size = check_image_size(image_size)
    pipeline.check_split_args(
        batch_size=batch_size, validation_split=validation_split, test_split=test_split, seed=seed
    )
    label_mode = pipeline.resolve_label_mode(label_mode, multi_label=False)

    skipped = []
    split_folders = _split_folders(root)
    if split_folders is None:
        split_folders = {"train": root}
    class_folders = {
        split: _class_folders(folder, skipped) for split, folder in split_folders.items()
    }
    class_names = sorted(class_folders["train"])
    _check_classes(split_folders, class_folders, class_names, skipped)

    files, labels, split_of = [], [], []
    for split, classes in class_folders.items():
        for name, folder in classes.items():
            found, left_out = list_image_files(folder)
            skipped += left_out
            files += found
            labels += [class_names.index(name)] * len(found)
            split_of += [split] * len(found)
    total = len(files) + len(skipped)
    train_labels = np.asarray(labels, dtype=np.int64)[np.asarray(split_of) == "train"]
    _check_counts(train_labels, class_folders["train"], class_names, skipped, warn=False)
    images, kept, bad = load_files(
        files,
        image_size,
        crop_to_aspect_ratio=crop_to_aspect_ratio,
        num_workers=num_workers,
        cache=cache,
        where=root,
    )
    skipped = sorted(skipped + bad)
    files = [files[i] for i in kept]
    labels = np.asarray([labels[i] for i in kept], dtype=np.int64)
    split_of = np.asarray([split_of[i] for i in kept])
    _check_counts(labels[split_of == "train"], class_folders["train"], class_names, skipped)

    splits = _splits(root, files, labels, split_of, validation_split, test_split, seed)
    pipeline.warn_skipped(skipped, total, root)
    data = pipeline.assemble(
        images,
        labels,
        class_names=class_names,
        label_mode=label_mode,
        splits=splits,
        sources=files,
        batch_size=batch_size,
        seed=seed,
        image_size=image_size,
        skipped=skipped,
        rows=kept,
    )
    pipeline.logger.info(
        "Found %d usable images in %d classes under %s; skipped %d.",
        len(files),
        len(class_names),
        root,
        len(skipped),
    )
    return data


def _split_folders(root):
    """`{split: folder}` when `root` is a split tree, else None; raises for an ambiguous tree."""
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not is_hidden(e.name))
    splits = {
        name: _SPLIT_FOLDERS[name.lower()] for name in names if name.lower() in _SPLIT_FOLDERS
    }
    others = [name for name in names if name not in splits]
    if not splits:
        return None
    if others or "train" not in splits.values():
        if not any(_looks_like_split(root / name) for name in splits):
            return None  # class folders that happen to be named like splits ("train", "test")
        found = ", ".join(f"{name}/" for name in splits)
        problem = (
            f"mixes split folders ({found}) with other folders ({', '.join(others[:5])})"
            if others
            else f"has split folders ({found}) but no `train/` folder"
        )
        raise ValueError(
            f"The folder {root} {problem}: tltk cannot tell its splits from its classes. "
            f"{_SPLIT_HINT} Arrange it so, or point `path` at a folder of class folders. "
            f"Received: path={str(root)!r}"
        )
    by_split = {}
    for name, split in splits.items():
        by_split.setdefault(split, []).append(name)
    for split, same in by_split.items():
        if len(same) > 1:
            raise ValueError(
                f"The folder {root} has {len(same)} {split} folders ({', '.join(same)}); keep "
                f"one. Received: path={str(root)!r}"
            )
    return {split: root / by_split[split][0] for split in SPLITS if split in by_split}


def _looks_like_split(folder):
    """Whether `folder` holds subfolders (classes) and no image files of its own."""
    entries = [e for e in os.scandir(folder) if not is_hidden(e.name)]
    return any(e.is_dir() for e in entries) and not any(
        e.is_file() and has_image_extension(e.name) for e in entries
    )


def _class_folders(folder, skipped):
    """`{class_name: folder}` for the subfolders of `folder`; other entries go to `skipped`."""
    classes = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if is_hidden(entry.name):
            skipped.append((entry.path, "hidden folder" if entry.is_dir() else "hidden file"))
        elif entry.is_dir() and not _is_utf8(entry.name):
            skipped.append((entry.path, f"class folder name is not valid UTF-8: {_RENAME}"))
        elif entry.is_dir():
            classes[entry.name] = pathlib.Path(entry.path)
        else:
            skipped.append((entry.path, "not inside a class folder"))
    return classes


def _check_classes(split_folders, class_folders, class_names, skipped):
    train_folder = split_folders["train"]
    if not class_names:
        loose = sum(reason == "not inside a class folder" for _, reason in skipped)
        found = f" It holds {loose} files directly." if loose else ""
        raise ValueError(
            f"No class folders found in {train_folder}.{found} Put the images of each class in a "
            f"folder of their own: {train_folder}/<class_name>/<image>. "
            f"Received: path={str(train_folder)!r}"
        )
    if len(class_names) < 2:
        raise ValueError(
            f"Found only one class folder, {class_names[0]!r}, in {train_folder}; a classifier "
            f"needs at least 2 classes. Received: path={str(train_folder)!r}"
        )
    for split, classes in class_folders.items():
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ValueError(
                f"The {split} folder {split_folders[split]} has class folders that "
                f"{train_folder} lacks: {unknown}. Every class needs training images."
            )


def _check_counts(train_labels, folders, class_names, skipped, warn=True):
    """Raises for a class folder without usable images; warns (if `warn`) for one with one."""
    counts = np.bincount(train_labels, minlength=len(class_names))
    empty = [folders[name] for name, count in zip(class_names, counts) if count == 0]
    if empty:
        prefixes = tuple(os.path.join(folder, "") for folder in empty)
        within = [(p, r) for p, r in skipped if os.path.join(p, "").startswith(prefixes)]
        reasons = [f"{path}: {reason}" for path, reason in within]
        detail = f" Files left out there: {'; '.join(reasons[:5])}." if reasons else ""
        raise ValueError(
            f"No usable training images in class folder(s) {', '.join(map(str, empty))}.{detail} "
            "Add images or remove the folder."
        )
    for name, count in zip(class_names, counts):
        if warn and count < 2:
            warnings.warn(
                f"The class folder {folders[name]} has only {count} usable training image: too "
                "few to learn the class, and none can be held out for validation or test.",
                stacklevel=3,
            )


def _splits(root, files, labels, split_of, validation_split, test_split, seed):
    """Index arrays per split: the split folders' own, plus what is carved out of train."""
    present = set(split_of.tolist())
    carve_validation = 0.0 if "validation" in present else validation_split
    carve_test = 0.0 if "test" in present else test_split
    train = np.flatnonzero(split_of == "train")
    prefix = len(os.path.join(str(root), ""))
    keys = [files[i][prefix:].replace(os.sep, "/") for i in train]
    parts = pipeline.stratified_split(
        keys, labels[train], validation_split=carve_validation, test_split=carve_test, seed=seed
    )
    splits = {}
    for split in ("train", "validation", "test"):
        if split in present and split != "train":
            splits[split] = np.flatnonzero(split_of == split)
        elif parts[split] is not None:
            splits[split] = train[parts[split]]
        else:
            splits[split] = None
    return splits


def is_hidden(name):
    """Whether a file or folder name is hidden or junk (`.DS_Store`, `._x.jpg`, `__MACOSX`)."""
    return name.startswith(".") or name == "__MACOSX" or name.lower() in _WINDOWS_JUNK


def has_image_extension(name):
    """Whether a file name ends with one of `SUPPORTED_EXTENSIONS` (any case)."""
    return name.lower().endswith(SUPPORTED_EXTENSIONS)


def list_image_files(folder):
    """Lists the image files under `folder` (recursively, sorted) and the entries left out.

    Hidden files and folders, files without a supported extension, and folders that cannot be
    read are left out and reported. Linked folders are followed, except a link to a folder
    already read (a loop), which is reported.

    Args:
        folder: str or Path. The folder to walk.

    Returns:
        A tuple `(files, skipped)`: a sorted list of paths (str), and a list of `(path, reason)`.

    Example:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     list_image_files(folder)
    ([], [])
    """
    files, skipped = [], []
    read = {os.path.realpath(folder)}

    def unreadable(error):
        skipped.append((error.filename, f"unreadable folder ({error.strerror})"))

    for root, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        kept = []
        for name in sorted(dirs):
            path = os.path.join(root, name)
            real = os.path.realpath(path)
            if is_hidden(name):
                skipped.append((path, "hidden folder"))
            elif real in read:
                skipped.append((path, f"same folder as one already read ({real})"))
            else:
                read.add(real)
                kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            path = os.path.join(root, name)
            reason = file_skip_reason(name)
            if reason:
                skipped.append((path, reason))
            else:
                files.append(path)
    return files, skipped


def file_skip_reason(name):
    """Why a file is left out by its name alone, or `None` when it should be decoded."""
    if is_hidden(name):
        return "hidden file"
    if not has_image_extension(name):
        suffix = pathlib.PurePath(name).suffix or "none"
        return f"unsupported extension ({suffix}); supported: {', '.join(SUPPORTED_EXTENSIONS)}"
    return None


def _is_utf8(name):
    """Whether a name from the file system is valid UTF-8 (Python holds bad bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
