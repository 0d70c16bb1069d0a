"""MixUp and CutMix, as a transform of the training dataset (they mix labels, not only pixels)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tltk.data.image_data import ImageData

METHODS = ("mixup", "cutmix")


def mix_batches(data, method="mixup", *, num_classes=None, alpha=None, seed=None):
    """Mixes the images and labels of each batch, with MixUp or CutMix (Keras' layers).

    MixUp blends pairs of images and their labels; CutMix pastes a patch of one image into another
    and weights the labels by area. Both change the labels, so they belong in the data pipeline,
    not in the model (where `tltk.augmentation` layers go); apply them to the training data only.
    Labels come out as float32 soft rows: train with `categorical_crossentropy` (or
    `binary_crossentropy` for multi-label data), not the sparse loss.

    Args:
        data: tf.data.Dataset or tltk.data.ImageData. Batched `(images, labels)`; for
            `ImageData`, its `train` dataset is used.
        method: str. `"mixup"` or `"cutmix"`. Defaults to `"mixup"`.
        num_classes: int or None. Needed to one-hot int labels. Defaults to `data.num_classes`
            for `ImageData`, else `None` (labels must already be one-hot or multi-hot).
        alpha: float or None. MixUp's Beta `alpha`, or CutMix's `factor`. Defaults to `0.2` for
            MixUp and `1.0` for CutMix (Keras' defaults).
        seed: int or None. Seed of the mixing. Defaults to `None`.

    Returns:
        A tf.data.Dataset of `(images float32, labels float32)` batches, mixed anew every epoch.

    Example:

    ```python
    data = tltk.data.from_directory("photos", image_size=(224, 224))
    train = tltk.data.mix_batches(data, "cutmix")
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, validation_data=data.validation.map(
        lambda x, y: (x, tf.one_hot(y, data.num_classes))))
    ```
    """
    if isinstance(data, ImageData):
        num_classes = data.num_classes if num_classes is None else num_classes
        dataset = data.train
    elif isinstance(data, tf.data.Dataset):
        dataset = data
    else:
        raise ValueError(
            "`data` must be a tf.data.Dataset or a tltk.data.ImageData. "
            f"Received: data={type(data).__name__}"
        )
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0
    ):
        raise ValueError(f"`alpha` must be a positive number. Received: alpha={alpha!r}")
    label_spec = dataset.element_spec[1]
    if label_spec.dtype.is_integer and label_spec.shape.rank == 1 and not num_classes:
        raise ValueError(
            "Integer labels need `num_classes` to be one-hot encoded before mixing. "
            f"Received: num_classes={num_classes!r}"
        )
    if method == "mixup":
        layer = keras.layers.MixUp(alpha=0.2 if alpha is None else alpha, seed=seed)
    else:
        layer = keras.layers.CutMix(factor=1.0 if alpha is None else alpha, seed=seed)

    def mix(images, labels):
        if labels.dtype.is_integer:
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        mixed = layer({"images": images, "labels": tf.cast(labels, tf.float32)}, training=True)
        return mixed["images"], mixed["labels"]

    return dataset.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
