"""What every source shares: argument checks, a stable stratified split, and the tf.data pipeline.

Each split is a list of example rows. An epoch shuffles the rows (train only, seeded), batches
them, and takes their pixels from a `tltk.data.sources` source: one uint8 variable in host memory
(a gather, no decoding; the splits share one copy), a disk cache, or the files decoded again; the
batches are prefetched. Every source yields the same pixels in the same order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings

import numpy as np
import tensorflow as tf

from tltk.data.sources import MemoryPixels
from tltk.data.image_data import LABEL_MODES, SPLITS, ImageData

logger = logging.getLogger("tltk.data")

# Warn when the decoded images would take more than this share of the machine's memory.
_MEMORY_WARNING_SHARE = 0.5


def check_split_args(*, batch_size, validation_split, test_split, seed):
    """Checks the arguments all `from_*` functions share; raises `ValueError` naming the bad one."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    if validation_split + test_split >= 1:
        raise ValueError(
            "`validation_split + test_split` must be below 1 to leave training examples. "
            f"Received: validation_split={validation_split}, test_split={test_split}"
        )
    if not _is_int(seed):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")


def resolve_label_mode(label_mode, multi_label):
    """Returns the label mode to use: `None` means `"int"`, or `"multi_hot"` if multi-label."""
    allowed = ("multi_hot",) if multi_label else ("int", "categorical")
    if label_mode is None:
        return allowed[0]
    if label_mode not in allowed:
        kind = "multi-label" if multi_label else "single-label"
        raise ValueError(
            f"`label_mode` must be one of {allowed} (or None) for {kind} data. "
            f"Received: label_mode={label_mode!r}"
        )
    return label_mode


def stratified_split(keys, groups, *, validation_split, test_split, seed):
    """Splits examples into train, validation and test, per group, deterministically for a seed.

    Within each group (class) of `n`, examples are ranked by a hash of `(seed, key)`; the first
    `n * test_split` (rounded half up) go to test, the next `n * validation_split` to validation,
    and the rest, never fewer than one, to train. Ranking by hash, not by position, keeps an
    example where it was when other files are added or removed.

    Args:
        keys: list of str. A stable name per example (a relative path, a row index).
        groups: array of int. The stratum of each example (its class).
        validation_split: float. Share of each group for validation.
        test_split: float. Share of each group for test.
        seed: int. Seed of the ranking.

    Returns:
        A dict `{split: ascending int64 index array or None}`; a split is None when its share is 0.

    Example:

    >>> parts = stratified_split(["a", "b", "c", "d"], [0, 0, 1, 1], validation_split=0.5,
    ...                          test_split=0.0, seed=0)
    >>> len(parts["train"]), len(parts["validation"]), parts["test"]
    (2, 2, None)
    """
    groups = np.asarray(groups)
    scores = np.array([_rank(seed, key) for key in keys], dtype=np.uint64)
    parts = {split: [] for split in SPLITS}
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        members = members[np.argsort(scores[members], kind="stable")]
        count = len(members)
        n_test = min(int(count * test_split + 0.5), count - 1)  # rounded half up
        n_val = min(int(count * validation_split + 0.5), count - 1 - n_test)
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    shares = {"train": 1.0, "validation": validation_split, "test": test_split}
    return {
        split: np.sort(np.concatenate(idx or [np.zeros(0, np.int64)])).astype(np.int64)
        if shares[split] > 0
        else None
        for split, idx in parts.items()
    }


def check_memory(count, image_size, where):
    """Logs what `count` decoded images take, and warns when that is over half the machine's RAM."""
    size = count * image_size[0] * image_size[1] * 3
    logger.info("Holding %d images of %s in memory: %.1f MiB.", count, image_size, size / 2**20)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if size > _MEMORY_WARNING_SHARE * total:
        warnings.warn(
            f"The {count} images of {where} take {size / 2**30:.1f} GiB decoded at image_size="
            f"{image_size}, over half of this machine's {total / 2**30:.1f} GiB of memory. "
            "Use a smaller `image_size` or a subset of the data.",
            stacklevel=3,
        )


def assemble(
    images,
    labels,
    *,
    class_names,
    label_mode,
    splits,
    sources,
    batch_size,
    seed,
    image_size,
    skipped,
    rows=None,
):
    """Builds the `ImageData` from decoded images, their labels, and the split indexes.

    Args:
        images: uint8 array, tensor or variable of decoded `(rows, height, width, 3)` images, or a
            pixel source from `tltk.data.sources`.
        labels: array or dict. `(n,)` class indexes, or `(n, num_classes)` multi-hot for
            `"multi_hot"`; or `{head: array}` for several heads (`tltk.data.head_labels`).
        class_names: list of str, or `{head: list}` (no entry for a regression head).
        label_mode: str. `"int"`, `"categorical"` or `"multi_hot"`; or `{head: mode}`, where a
            mode may also be `"regression"`.
        splits: dict. `{split: index array or None}`; `"train"` must hold at least one index.
        sources: list. Where each of the `n` examples came from (path or index).
        batch_size: int. Batch size.
        seed: int. Seed of the per-epoch shuffle of the train split.
        image_size: tuple. `(height, width)`.
        skipped: list. `(path, reason)` for the files left out.
        rows: array or None. The row of `images` holding each example. Defaults to `None`:
            example `i` is row `i`.

    Returns:
        A `tltk.data.ImageData`.
    """
    per_head = isinstance(labels, dict)  # `{head: labels}`: see `tltk.data.head_labels`
    heads = labels if per_head else {None: labels}
    names = class_names if per_head else {None: class_names}
    modes = label_mode if per_head else {None: label_mode}
    labelled = [h for h in heads if modes[h] != "regression"]
    rows = np.arange(len(heads[next(iter(heads))])) if rows is None else np.asarray(rows, np.int64)
    pixels = images if hasattr(images, "batches") else MemoryPixels(as_variable(images))
    tensors, counts, split_sources, datasets = {}, {}, {}, {}
    for head, values in heads.items():
        encoded = _encode(np.asarray(values), names.get(head), modes[head])
        with tf.device("/CPU:0"):
            label_rows = np.zeros((pixels.num_rows, *encoded.shape[1:]), dtype=encoded.dtype)
            label_rows[rows] = encoded
            tensors[head] = tf.constant(label_rows)
    label_tensor = tensors if per_head else tensors[None]
    for split in SPLITS:
        indices = splits.get(split)
        if indices is None or (split != "train" and len(indices) == 0):
            if indices is not None and labelled:
                first = labelled[0]
                train_labels = np.asarray(heads[first])[splits["train"]]
                _warn_empty_split(split, train_labels, names[first], modes[first])
            datasets[split] = None
            continue
        datasets[split] = _batches(
            pixels, label_tensor, rows[indices], batch_size, shuffle=split == "train", seed=seed
        )
        split_counts = {
            h: _count(np.asarray(heads[h])[indices], names[h], modes[h]) for h in labelled
        }
        counts[split] = split_counts if per_head else split_counts[None]
        split_sources[split] = tuple(sources[i] for i in indices)
    for head in labelled:
        _warn_missing_classes(
            {s: c[head] if per_head else c for s, c in counts.items()}, names[head]
        )
    return ImageData(
        train=datasets["train"],
        validation=datasets["validation"],
        test=datasets["test"],
        class_names={h: tuple(n) for h, n in class_names.items()}
        if per_head
        else tuple(class_names),
        class_counts=counts,
        skipped=tuple((str(path), reason) for path, reason in skipped),
        image_size=tuple(image_size),
        label_mode=label_mode,
        sources=split_sources,
    )


def warn_skipped(skipped, total, where):
    """Warns once, naming `where`, when files were left out, listing the first few.

    Hidden files (`.DS_Store`, `._x.jpg`) alone are only logged: every Mac folder has them.
    """
    if not skipped:
        return
    notable = [(path, reason) for path, reason in skipped if not reason.startswith("hidden")]
    if not notable:
        logger.info("Skipped %d hidden entries in %s.", len(skipped), where)
        return
    shown = "; ".join(f"{path}: {reason}" for path, reason in notable[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    warnings.warn(
        f"Skipped {len(skipped)} of {total} entries in {where} (all listed in `.skipped`): "
        f"{shown}{more}",
        stacklevel=3,
    )


def as_variable(images):
    """A uint8 host-memory variable holding `images` (a variable is returned as it is)."""
    if isinstance(images, tf.Variable):
        return images
    with tf.device("/CPU:0"):
        # A variable, not a constant: tf.data would copy a captured constant into its graph each
        # time an iterator starts (seconds for a few hundred MiB); a variable is passed by handle.
        # Made from a tensor, it takes that tensor's memory without copying it.
        return tf.Variable(
            tf.convert_to_tensor(images, tf.uint8), trainable=False, name="tltk_images"
        )


def _encode(labels, class_names, label_mode):
    """One head's labels as the datasets yield them, for `label_mode`."""
    if label_mode == "int":
        return labels.astype(np.int32)
    if label_mode == "categorical":
        return np.eye(len(class_names), dtype=np.float32)[labels.astype(np.int64)]
    if label_mode in ("multi_hot", "regression"):
        return labels.astype(np.float32)
    raise ValueError(f"`label_mode` must be one of {LABEL_MODES}. Received: {label_mode!r}")


def _batches(pixels, labels, indices, batch_size, *, shuffle, seed):
    def finish(batch, images):
        return tf.cast(images, tf.float32), tf.nest.map_structure(
            lambda t: tf.gather(t, batch), labels
        )

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shuffle:
        dataset = dataset.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    dataset = pixels.batches(dataset, batch_size).map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _count(labels, class_names, label_mode):
    if label_mode == "multi_hot":
        totals = labels.sum(axis=0).astype(int) if len(labels) else np.zeros(len(class_names), int)
    else:
        totals = np.bincount(labels.astype(np.int64), minlength=len(class_names))
    return {name: int(n) for name, n in zip(class_names, totals)}


def _warn_empty_split(split, train_labels, class_names, label_mode):
    counts = _count(train_labels, class_names, label_mode)
    shown = ", ".join(f"{name}: {count}" for name, count in list(counts.items())[:10])
    warnings.warn(
        f"The {split} split is empty: the classes have too few examples for the share asked "
        f"(training examples per class: {shown}), so `{split}` is None and no {split} metrics "
        f"will be computed. Add examples or raise `{split}_split`.",
        stacklevel=4,
    )


def _warn_missing_classes(counts, class_names):
    for split in ("validation", "test"):
        if split not in counts:
            continue
        missing = [name for name in class_names if counts[split][name] == 0]
        if missing:
            warnings.warn(
                f"No {split} examples for classes {missing}: they have too few examples for "
                f"the split; their {split} metrics will be missing.",
                stacklevel=4,
            )


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _rank(seed, key):
    # surrogateescape: a file name that is not valid UTF-8 hashes by its bytes
    key = f"{seed}\0{key}".encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "little")
