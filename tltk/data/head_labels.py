"""Labels of data for a model with several heads: one label array per head, `{head: labels}`.

`from_arrays(x, {head: y})` and `from_csv(..., label_column={head: column})` encode each head's
labels here; `pipeline.assemble` then yields `(images, {head: labels})` batches, what a model from
`tltk.build_classifier(backbone, data.num_classes)` (a dict of heads) trains on.
"""

from __future__ import annotations

import numpy as np

from tltk.data import labels as class_labels
from tltk.data import pipeline
from tltk.heads import HEAD_NAME

REGRESSION = "regression"


def assemble_heads(images, y, *, class_names, label_mode, keys, where, image_size, **split):
    """The `ImageData` of images and their labels per head (`from_arrays`, `from_csv`): each
    head's labels encoded (`encode_heads`), class counts checked, the split stratified by the
    first head with classes.

    Args:
        images: what `pipeline.assemble` takes. The decoded images.
        y: dict. `{head: labels}`, one label per example.
        class_names, label_mode: as `from_arrays` takes them.
        keys: list. A key per example for the deterministic split (index or file name).
        where: str. What the data is, for messages.
        image_size: tuple. `(height, width)`.
        **split: `batch_size`, `validation_split`, `test_split`, `seed`, and `pipeline.assemble`'s
            `sources`, `skipped` and `rows`.
    """
    from tltk.data.arrays import encode_labels

    if label_mode not in (None, "int", "categorical"):
        raise ValueError(
            "With labels per head, `label_mode` is 'int' or 'categorical' (for the "
            f"single-label heads). Received: label_mode={label_mode!r}"
        )
    encoded, names, modes = encode_heads(y, class_names, label_mode, len(keys), encode_labels)
    for head, head_names in names.items():
        multi = modes[head] == "multi_hot"
        class_labels.check_counts(encoded[head], head_names, multi, f"head {head!r} of {where}")
    splits = pipeline.stratified_split(
        keys,
        stratum(encoded, modes, class_labels.strata),
        validation_split=split.pop("validation_split"),
        test_split=split.pop("test_split"),
        seed=split["seed"],
    )
    return pipeline.assemble(
        images,
        encoded,
        class_names=names,
        label_mode=modes,
        splits=splits,
        image_size=tuple(image_size),
        **split,
    )


def encode_heads(y, class_names, label_mode, count, encode):
    """`(encoded, class_names, label_modes)`, each `{head: ...}`, from `{head: labels}`.

    A head's labels are class indexes or names (single-label: `label_mode` `"int"` or
    `"categorical"`), 2-D multi-hot 0/1 rows (`"multi_hot"`), or floats (`"regression"`: values,
    `(n,)` or `(n, k)`, kept as float32; no class names). `encode(labels, names, count)` is
    `from_arrays`' own encoder for one label array; errors name the head.
    """
    if not y:
        raise ValueError("`y` as a dict needs at least one head, e.g. {'species': labels}.")
    if class_names is not None and (not isinstance(class_names, dict) or set(class_names) - set(y)):
        raise ValueError(
            f"With labels per head, `class_names` must be a dict naming some of the heads "
            f"{list(y)}. Received: class_names={class_names!r}"
        )
    encoded, names, modes = {}, {}, {}
    for head, labels in y.items():
        if not isinstance(head, str) or not HEAD_NAME.fullmatch(head):
            raise ValueError(
                "Head names must be letters, digits and underscores, starting with a letter. "
                f"Received: {head!r}"
            )
        labels = np.asarray(labels)
        if labels.dtype.kind == "f" and not (labels.ndim == 2 and np.isin(labels, (0, 1)).all()):
            if len(labels) != count or labels.ndim not in (1, 2) or not np.isfinite(labels).all():
                raise ValueError(
                    f"The regression targets of head {head!r} must be {count} finite values, "
                    f"(n,) or (n, k). Received: shape {labels.shape}"
                )
            encoded[head], modes[head] = labels.astype(np.float32), REGRESSION
            continue
        try:
            encoded[head], names[head], multi = encode(labels, (class_names or {}).get(head), count)
        except ValueError as error:
            raise ValueError(f"Head {head!r}: {error}") from None
        modes[head] = "multi_hot" if multi else (label_mode or "int")
    return encoded, names, modes


def stratum(encoded, modes, strata):
    """The strata of a split stratified by the first labelled head (none: one stratum)."""
    for head, mode in modes.items():
        if mode != REGRESSION:
            return strata(encoded[head], mode == "multi_hot")
    return np.zeros(len(next(iter(encoded.values()))), np.int64)
