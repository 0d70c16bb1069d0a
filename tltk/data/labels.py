"""Labels for arrays, CSV and TFDS: class names, class indexes or multi-hot rows, and strata."""

from __future__ import annotations

import warnings

import numpy as np


def check_class_names(class_names, name="class_names"):
    """Returns `class_names` as a list of distinct non-empty strings, or raises `ValueError`."""
    if isinstance(class_names, str) or not all(isinstance(c, str) and c for c in class_names):
        raise ValueError(
            f"`{name}` must be a list of non-empty strings. Received: {name}={class_names!r}"
        )
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names):
        duplicates = sorted({c for c in class_names if class_names.count(c) > 1})
        raise ValueError(f"`{name}` has duplicates: {duplicates}. Received: {name}={class_names!r}")
    return class_names


def multi_hot(label_lists, class_names):
    """`(n, num_classes)` float32 rows with 1 where a row's labels name the class."""
    column = {name: i for i, name in enumerate(class_names)}
    rows = np.zeros((len(label_lists), len(class_names)), dtype=np.float32)
    for row, labels in enumerate(label_lists):
        rows[row, [column[label] for label in labels]] = 1.0
    return rows


def strata(labels, multi_label):
    """The stratum of each example for a stratified split.

    Single-label: the class. Multi-label: the example's rarest label (the usual approximation of
    multi-label stratification), or one extra stratum for examples with no label.
    """
    labels = np.asarray(labels)
    if not multi_label:
        return labels.astype(np.int64)
    frequency = labels.sum(axis=0)
    rarity = np.where(labels > 0, frequency[None, :], np.inf)
    rarest = np.argmin(rarity, axis=1)
    return np.where(labels.any(axis=1), rarest, labels.shape[1]).astype(np.int64)


def check_counts(labels, class_names, multi_label, where):
    """Raises for fewer than 2 classes (single-label); warns, naming classes, about rare ones."""
    labels = np.asarray(labels)
    if not multi_label and len(class_names) < 2:
        raise ValueError(
            f"A classifier needs at least 2 classes; {where} has {len(class_names)}: "
            f"{list(class_names)}."
        )
    if len(labels) == 0:
        raise ValueError(f"No usable examples in {where}.")
    if multi_label:
        counts = labels.sum(axis=0).astype(int)
    else:
        counts = np.bincount(labels.astype(np.int64), minlength=len(class_names))
    rare = [f"{name!r} ({count})" for name, count in zip(class_names, counts) if count < 2]
    if rare:
        warnings.warn(
            f"Classes with fewer than 2 examples in {where}: {', '.join(rare)}. They cannot be "
            "split between training and validation; a class with none cannot be learned.",
            stacklevel=3,
        )
