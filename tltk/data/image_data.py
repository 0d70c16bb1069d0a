"""`ImageData`, what every `tltk.data.from_*` function returns, and `class_weights`."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tltk.heads import HeadSpec

LABEL_MODES = ("int", "categorical", "multi_hot")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, repr=False)
class ImageData:
    """Batched `tf.data` pipelines for the train, validation and test splits, and what they hold.

    Each dataset yields `(images, labels)` batches: images are float32 raw pixels, 0..255, shaped
    `(batch, height, width, 3)`; labels are int32 class indexes (`label_mode="int"`), one-hot
    float32 (`"categorical"`) or multi-hot float32 (`"multi_hot"`, multi-label data). The train
    dataset is reshuffled every epoch (deterministically for a seed); validation and test keep the
    order of `sources`.

    Attributes:
        train: tf.data.Dataset. The training batches.
        validation: tf.data.Dataset or None. The validation batches, if any.
        test: tf.data.Dataset or None. The test batches, if any.
        class_names: tuple of str. Class names; label `i` is `class_names[i]`.
        class_counts: dict. `{split: {class_name: count}}` for each split present; for multi-label
            data a count is the number of examples carrying that label.
        skipped: tuple. `(path, reason)` for every file left out (hidden, not an image, empty,
            truncated, unreadable, bad label...). Empty for arrays and TFDS.
        image_size: tuple. `(height, width)` of every image.
        label_mode: str. `"int"`, `"categorical"` or `"multi_hot"`.
        sources: dict. `{split: tuple}` where each example came from, in dataset order (train: the
            order before shuffling): file paths for folders and CSV, integer indexes into the input
            for arrays and into the TFDS split for TFDS.

    Data with labels per head (`from_arrays(x, {head: y})`, `from_csv(...,
    label_column={head: column})`) yields `(images, {head: labels})`; then `class_names` is
    `{head: names}` (no entry for a regression head), `label_mode` `{head: mode}` (a mode may be
    `"regression"`: float32 targets), `class_counts` `{split: {head: {class_name: count}}}`, and
    `num_classes` `{head: classes or tltk.HeadSpec}`, what `tltk.build_classifier` takes.

    Example:

    ```python
    data = tltk.data.from_directory("photos", image_size=(224, 224))
    print(data.summary())
    model.fit(data.train, validation_data=data.validation, class_weight=tltk.class_weights(data))
    ```
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: tuple
    class_counts: dict
    skipped: tuple
    image_size: tuple
    label_mode: str
    sources: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self):
        """int. The number of classes (labels, for multi-label data); with labels per head,
        `{head: classes or tltk.HeadSpec}` (multi-label and regression heads as specs)."""
        if not isinstance(self.label_mode, dict):
            return len(self.class_names)
        heads = {}
        for head, mode in self.label_mode.items():
            if mode == "regression":
                shape = self.train.element_spec[1][head].shape
                heads[head] = HeadSpec(shape[1] if shape.rank == 2 else 1, "regression")
            elif mode == "multi_hot":
                heads[head] = HeadSpec(len(self.class_names[head]), "multi_label")
            else:
                heads[head] = len(self.class_names[head])
        return heads

    @property
    def multi_label(self):
        """bool. Whether an example may carry several labels (`label_mode == "multi_hot"`)."""
        return self.label_mode == "multi_hot"

    def summary(self):
        """Returns a short text table: examples per class and split, and the files skipped."""
        splits = [s for s in SPLITS if s in self.class_counts]
        per_head = isinstance(self.label_mode, dict)
        tables = (
            {h: {s: self.class_counts[s][h] for s in splits} for h in self.class_names}
            if per_head
            else {None: {s: self.class_counts[s] for s in splits}}
        )
        names = self.class_names if per_head else {None: self.class_names}
        lines = []
        for head, table in tables.items():
            width = max([len(n) for n in names[head]] + [5])
            title = "class" if head is None else f"{head}:"
            lines.append(f"{title:<{width}}  " + "  ".join(f"{s:>10}" for s in splits))
            for name in names[head]:
                counts = "  ".join(f"{table[s].get(name, 0):>10}" for s in splits)
                lines.append(f"{name:<{width}}  {counts}")
        size = f"heads {self.num_classes}" if per_head else f"{self.num_classes} classes"
        lines.append(
            f"{size}, image_size={self.image_size}, "
            f"label_mode={self.label_mode!r}, {len(self.skipped)} files skipped"
        )
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped[:10]]
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more (see `.skipped`)")
        return "\n".join(lines)

    def __repr__(self):
        sizes = {split: len(sources) for split, sources in self.sources.items()}
        return (
            f"ImageData(num_classes={self.num_classes}, image_size={self.image_size}, "
            f"label_mode={self.label_mode!r}, examples={sizes}, skipped={len(self.skipped)})"
        )


def class_weights(data):
    """Per-class loss weights that balance an imbalanced training split, for `fit(class_weight=)`.

    The weight of class `i` is `n_train / (num_classes * count_i)` (scikit-learn's "balanced"), so
    a class with half the average count weighs 2 and the mean weight over examples is 1.

    Args:
        data: tltk.data.ImageData. Single-label data (Keras' `class_weight` takes the argmax of a
            multi-hot label, so it cannot weight multi-label data).

    Returns:
        A dict `{class_index: weight}` over all classes.

    Example:

    ```python
    data = tltk.data.from_directory("photos", image_size=(224, 224))
    model.fit(data.train, epochs=5, class_weight=tltk.class_weights(data))
    ```
    """
    if not isinstance(data, ImageData):
        raise ValueError(
            "`data` must be a tltk.data.ImageData (what tltk.data.from_* returns). "
            f"Received: data={type(data).__name__}"
        )
    if isinstance(data.label_mode, dict):
        raise ValueError(
            "class_weights weighs the classes of one label; this data has labels per head "
            f"{list(data.label_mode)}: put per-head sample weights in the dataset instead."
        )
    if data.multi_label:
        raise ValueError(
            "class_weights works on single-label data only: Keras' `class_weight` takes the argmax "
            "of a multi-hot label. Received: data with label_mode='multi_hot'"
        )
    counts = [data.class_counts["train"][name] for name in data.class_names]
    if min(counts) == 0:
        empty = [n for n, c in zip(data.class_names, counts) if c == 0]
        raise ValueError(
            f"Cannot weight classes with no training examples. Received: classes {empty} with 0 "
            "training examples"
        )
    total = sum(counts)
    return {i: total / (len(counts) * count) for i, count in enumerate(counts)}
