"""`from_csv`: a CSV of file names and labels (single- or multi-label) -> `ImageData`."""

from __future__ import annotations

import codecs
import csv
import io
import os
import pathlib

import numpy as np

from tltk.data import head_labels, labels, pipeline
from tltk.data.folders import has_image_extension
from tltk.data.cache import load_files
from tltk.data.images import check_image_size

_TRUE, _FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no", "")


def from_csv(
    csv_path,
    image_dir=None,
    *,
    image_size,
    filename_column=None,
    label_column=None,
    label_separator=None,
    class_names=None,
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    label_mode=None,
    crop_to_aspect_ratio=False,
    num_workers=None,
    encoding="utf-8",
    cache="auto",
):
    """Loads the images a CSV file lists, with single labels or several labels per image.

    The CSV has a header row; a first row that names an image file (and a label) instead of
    columns is refused, rather than read as a header. Three label layouts are read:
    - one label per row (`cat`): single-label, `label_mode` `"int"` or `"categorical"`;
    - several labels in one cell (`cat dog`), with `label_separator=" "`: multi-label, multi-hot;
    - one 0/1 column per class, with `label_column=["cat", "dog"]`: multi-label, multi-hot.

    Rows whose file is missing or bad, or whose label is empty (single-label) or not in
    `class_names`, are left out and listed in `skipped` (as `"csv_path:line"` for label problems);
    the rest is used. Files are checked and decoded as `tltk.data.from_directory` does.

    A file listed on several usable rows is used once: a repeat with the same labels is left out
    and listed in `skipped` (`"csv_path:line"`, naming the line it repeats); a repeat with other
    labels raises an error naming the file and its lines, since its label is unknown (and used
    twice, it could land in two splits).

    Args:
        csv_path: str or Path. The CSV file.
        image_dir: str or Path or None. Folder the file names are relative to. Defaults to the
            CSV file's folder.
        image_size: tuple. `(height, width)` the images are resized to, or an int for a square.
        filename_column: str or None. Column of file names. Defaults to the first column.
        label_column: str, list of str, dict or None. Column of labels, or the 0/1 columns of
            a multi-label table; or `{head: column}` for a model with several heads, one
            single-label column per head (the datasets yield `{head: labels}`, `class_names`
            is then `{head: names}`; regression targets come from `from_arrays`). Defaults to
            the second column.
        label_separator: str or None. Splits a label cell into several labels (multi-label).
            Defaults to `None`: one label per cell.
        class_names: list of str or None. The classes, in label order; rows with other labels are
            skipped. Defaults to the sorted labels found (or the 0/1 column names).
        batch_size: int. Batch size. Defaults to `32`.
        validation_split: float. Share held out for validation, in [0, 1). Defaults to `0.2`.
        test_split: float. Share held out for test, in [0, 1). Defaults to `0.0`.
        seed: int. Seed of the split and of the per-epoch shuffle. Defaults to `0`.
        label_mode: str or None. `"int"` or `"categorical"` for single-label data; `"multi_hot"`
            for multi-label data. Defaults to `None`: `"int"` or `"multi_hot"`.
        crop_to_aspect_ratio: bool. Center crop to the target aspect ratio before resizing.
            Defaults to `False`.
        num_workers: int or None. Decoding threads. Defaults to `min(32, cpu_count + 4)`.
        encoding: str. The CSV file's text encoding, e.g. `"latin-1"` or `"cp1252"` (Excel on
            Windows). Defaults to `"utf-8"` (a byte order mark is skipped).
        cache: str, Path or None. Where decoded pixels live, as in `tltk.data.from_directory`:
            `"memory"`, a disk cache folder, `None` (decode every epoch) or `"auto"`. Defaults
            to `"auto"`.

    Returns:
        A `tltk.data.ImageData`.

    Example:

    ```python
    # labels.csv:  file,tags
    #              a.jpg,cat dog
    #              b.jpg,dog
    data = tltk.data.from_csv("labels.csv", image_size=(224, 224), label_separator=" ")
    data.label_mode  # "multi_hot"; labels are (batch, num_classes) float32 rows of 0 and 1
    ```
    """
    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(
            f"`csv_path` must be an existing file. Received: csv_path={str(csv_path)!r}"
        )
    image_dir = csv_path.parent if image_dir is None else pathlib.Path(image_dir)
    if not image_dir.is_dir():
        raise ValueError(f"`image_dir` must be a folder. Received: image_dir={str(image_dir)!r}")
    image_size = check_image_size(image_size)
    pipeline.check_split_args(
        batch_size=batch_size, validation_split=validation_split, test_split=test_split, seed=seed
    )
    if label_separator is not None and not (isinstance(label_separator, str) and label_separator):
        raise ValueError(
            f"`label_separator` must be a non-empty string or None. Received: {label_separator!r}"
        )
    cells = _read_cells(csv_path, encoding)
    if filename_column is None:
        _check_header(csv_path, image_dir, cells)
    rows, filename_column, label_column = _columns(csv_path, cells, filename_column, label_column)
    if isinstance(label_column, dict):
        return _from_heads(csv_path, image_dir, rows, filename_column, label_column, locals())
    multi_label = label_separator is not None or isinstance(label_column, list)
    label_mode = pipeline.resolve_label_mode(label_mode, multi_label)

    entries, skipped = _parse_rows(csv_path, rows, filename_column, label_column, label_separator)
    if class_names is None and isinstance(label_column, list):
        class_names = label_column
    elif class_names is None:
        class_names = sorted({label for _, _, row_labels in entries for label in row_labels})
    class_names = labels.check_class_names(class_names)
    known = set(class_names)
    usable = []
    for line, name, row_labels in entries:
        unknown = sorted(set(row_labels) - known)
        if unknown:
            skipped.append((f"{csv_path}:{line}", f"label(s) not in class_names: {unknown}"))
        else:
            usable.append((line, name, row_labels))
    usable = _drop_repeats(csv_path, usable, skipped)

    paths = [str(image_dir / name) for _, name, _ in usable]
    images, kept, bad = load_files(
        paths,
        image_size,
        crop_to_aspect_ratio=crop_to_aspect_ratio,
        num_workers=num_workers,
        cache=cache,
        where=csv_path,
    )
    skipped += bad
    usable = [usable[i] for i in kept]
    if multi_label:
        encoded = labels.multi_hot([row_labels for _, _, row_labels in usable], class_names)
    else:
        index = {name: i for i, name in enumerate(class_names)}
        encoded = np.array([index[row_labels[0]] for _, _, row_labels in usable], dtype=np.int64)
    labels.check_counts(encoded, class_names, multi_label, str(csv_path))
    splits = pipeline.stratified_split(
        [name for _, name, _ in usable],
        labels.strata(encoded, multi_label),
        validation_split=validation_split,
        test_split=test_split,
        seed=seed,
    )
    pipeline.warn_skipped(skipped, len(rows), csv_path)
    return pipeline.assemble(
        images,
        encoded,
        class_names=class_names,
        label_mode=label_mode,
        splits=splits,
        sources=[paths[i] for i in kept],
        batch_size=batch_size,
        seed=seed,
        image_size=image_size,
        skipped=skipped,
        rows=kept,
    )


def _from_heads(csv_path, image_dir, rows, filename_column, columns, settings):
    """`from_csv` with `label_column={head: column}`: one single-label column per head."""
    s = settings
    if s["label_separator"] is not None or s["label_mode"] not in (None, "int", "categorical"):
        raise ValueError(
            "With `label_column` per head, each head's column holds one label per row: "
            "`label_separator` is not used and `label_mode` is 'int' or 'categorical'. "
            f"Received: label_separator={s['label_separator']!r}, "
            f"label_mode={s['label_mode']!r}"
        )
    given = s["class_names"] if isinstance(s["class_names"], dict) else {}
    entries, skipped = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{csv_path}:{line}"
        name = (row.get(filename_column) or "").strip()
        cells = {head: (row.get(column) or "").strip() for head, column in columns.items()}
        empty = [head for head, cell in cells.items() if not cell]
        unknown = [h for h, cell in cells.items() if h in given and cell not in given[h]]
        if not name or empty or unknown:
            reason = (
                "empty file name"
                if not name
                else f"empty label of head(s) {empty}"
                if empty
                else f"label(s) not in class_names of head(s) {unknown}"
            )
            skipped.append((where, reason))
            continue
        entries.append((line, name.replace("/", os.sep), cells))
    entries = _drop_repeats(csv_path, entries, skipped)
    paths = [str(image_dir / name) for _, name, _ in entries]
    images, kept, bad = load_files(
        paths,
        s["image_size"],
        crop_to_aspect_ratio=s["crop_to_aspect_ratio"],
        num_workers=s["num_workers"],
        cache=s["cache"],
        where=csv_path,
    )
    skipped += bad
    pipeline.warn_skipped(skipped, len(rows), csv_path)
    return head_labels.assemble_heads(
        images,
        {head: [entries[i][2][head] for i in kept] for head in columns},
        class_names=s["class_names"],
        label_mode=s["label_mode"],
        keys=[entries[i][1] for i in kept],
        sources=[paths[i] for i in kept],
        rows=kept,
        skipped=skipped,
        where=str(csv_path),
        **{k: s[k] for k in ("batch_size", "validation_split", "test_split", "seed", "image_size")},
    )


def _read_cells(csv_path, encoding):
    """The file's rows as lists of cells; raises naming the line of an encoding problem."""
    raw = csv_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding)
    except (LookupError, TypeError):
        raise ValueError(
            "`encoding` must name a text encoding, e.g. 'utf-8' or 'latin-1'. "
            f"Received: encoding={encoding!r}"
        ) from None
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(
            f"The CSV file {csv_path} is not valid {encoding}: byte "
            f"{raw[error.start : error.start + 1]!r} on line {line} ({error.reason}). Save it as "
            "UTF-8, or pass its encoding, e.g. `encoding='latin-1'` (or 'cp1252', which Excel "
            f"on Windows writes). Received: encoding={encoding!r}"
        ) from None
    return list(csv.reader(io.StringIO(text, newline="")))


def _check_header(csv_path, image_dir, cells):
    """Raises when the first row looks like data (an image file and a label), not column names."""
    if len(cells) < 2 or len(cells[0]) < 2 or not has_image_extension(cells[0][0].strip()):
        return
    name, label = cells[0][0].strip(), cells[0][1].strip()
    exists = (image_dir / name).is_file()
    if exists or label in {row[1].strip() for row in cells[1:] if len(row) > 1}:
        found = "an image file that exists" if exists else f"an image file and the label {label!r}"
        raise ValueError(
            f"The CSV file {csv_path} has no header row: its first row ({name!r}, {label!r}) "
            f"names {found}, so it would be read as the column names and its image lost. Add a "
            "first row naming the columns, e.g. `filename,label`."
        )


def _columns(csv_path, cells, filename_column, label_column):
    """The rows (dicts) and the resolved column names; raises when a column is missing."""
    columns = cells[0] if cells else []
    rows = [dict(zip(columns, row)) for row in cells[1:] if row]  # as csv.DictReader reads
    if len(columns) < 2:
        raise ValueError(
            f"The CSV file {csv_path} needs a header row and at least two columns (file name and "
            f"label). Received: columns {columns}"
        )
    filename_column = columns[0] if filename_column is None else filename_column
    label_column = columns[1] if label_column is None else label_column
    labels_wanted = (
        list(label_column.values())
        if isinstance(label_column, dict)
        else label_column
        if isinstance(label_column, list)
        else [label_column]
    )
    wanted = [filename_column, *labels_wanted]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"Columns {missing} are not in {csv_path}; its columns are {columns}. Set "
            "`filename_column` and `label_column`."
        )
    return rows, filename_column, label_column


def _parse_rows(csv_path, rows, filename_column, label_column, label_separator):
    """`[(line, file name, [labels])]` for rows that parse, and `(where, reason)` for the others."""
    entries, skipped = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{csv_path}:{line}"
        name = (row.get(filename_column) or "").strip()
        if not name:
            skipped.append((where, "empty file name"))
            continue
        if isinstance(label_column, list):
            flags = [(row.get(c) or "").strip().lower() for c in label_column]
            odd = [f for f in flags if f not in _TRUE + _FALSE]
            if odd:
                skipped.append((where, f"0/1 label columns hold {odd}"))
                continue
            row_labels = [c for c, f in zip(label_column, flags) if f in _TRUE]
        else:
            cell = (row.get(label_column) or "").strip()
            if label_separator is None:
                if not cell:
                    skipped.append((where, "empty label"))
                    continue
                row_labels = [cell]
            else:
                row_labels = sorted({t.strip() for t in cell.split(label_separator) if t.strip()})
        entries.append((line, name.replace("/", os.sep), row_labels))
    return entries, skipped


def _drop_repeats(csv_path, entries, skipped):
    """Keeps the first row of each file; a repeat is skipped, or raises if its labels differ."""
    first, kept = {}, []
    for line, name, row_labels in entries:
        key = os.path.normpath(name)
        if key not in first:
            first[key] = (line, row_labels)
            kept.append((line, name, row_labels))
            continue
        first_line, first_labels = first[key]
        if row_labels != first_labels:
            raise ValueError(
                f"The CSV file {csv_path} lists {name!r} twice with different labels: "
                f"{first_labels} on line {first_line}, {row_labels} on line {line}. Keep one row "
                "per file, with its right label."
            )
        skipped.append((f"{csv_path}:{line}", f"repeats line {first_line} ({name!r})"))
    return kept
