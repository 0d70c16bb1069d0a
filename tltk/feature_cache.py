"""Cached-feature head training: run the frozen backbone once, then train the head on its features.

While the backbone is frozen, every epoch of `model.fit` recomputes the same backbone outputs. A
`FeatureCache` computes them once (in inference mode), and trains a small model made of the
model's own head layers, so the trained head weights are the full model's. With an augmentation
layer, it caches a fixed number of augmented views of the training set and cycles through them,
one view per epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib

import keras
import numpy as np
import tensorflow as tf

from tltk import distribute
from tltk.argcheck import integer
from tltk.objectives import check_class_weight, check_labels
from tltk.transfer_model import TransferModel

PIXELS_PER_BATCH = 256 * 32 * 32  # images per extraction batch times their height and width


@dataclasses.dataclass
class KnownFeatures:
    """Backbone features computed before (by `tltk.rank_backbones`), for a `FeatureCache` to use
    instead of running the backbone again on the same images.

    Attributes:
        extractor: str. `extractor_digest` of the model that computed them; they are used only
            for a model with the same digest (same architecture up to the cut, same weights).
        vectors: dict. `{image_digest: feature vector}`.
    """

    extractor: str
    vectors: dict


def extractor_digest(model):
    """A digest of `model`'s layers and weights up to its cached cut (see `cut_layer`)."""
    cut = model.features or model.backbone
    names = [layer.name for layer in model.layers]
    digest = hashlib.sha256()
    for layer in model.layers[: names.index(cut.name) + 1]:
        digest.update(f"{layer.name}:{type(layer).__name__};".encode())
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def image_digests(images):
    """One digest per image of a batch, of its pixels as float32 (as the model receives them)."""
    images = np.asarray(images, dtype="float32")
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def cut_layer(model, *, frozen=False):
    """The last layer whose output is cached: `model.features` (the pooling), else the backbone.

    Returns None when the model is not a `tltk.TransferModel` whose graph is the linear
    `... -> backbone -> [features] -> head` chain `tltk.build_classifier` makes, or when anything
    before the cut would train (with `frozen`: once `tltk.freeze` has frozen the backbone).
    """
    if not isinstance(model, TransferModel) or len(model.heads) != 1:
        return None
    cut = model.features or model.backbone
    names = [layer.name for layer in model.layers]
    after = model.layers[names.index(cut.name) + 1 :]
    (head,) = model.heads.values()
    if [layer.name for layer in after] != [layer.name for layer in head]:
        return None
    before = model.layers[: names.index(cut.name) + 1]
    if any(layer.trainable_weights for layer in before if not (frozen and layer is model.backbone)):
        return None
    return cut


class FeatureCache:
    """Backbone features of a train and a validation dataset, and a head model to train on them.

    Args:
        model: keras.Model. A tltk model with a frozen backbone (see `cut_layer`).
        train: tf.data.Dataset. Batches of `(images, labels)` or `(images, labels, sample_weights)`.
        validation: tf.data.Dataset or None. Batches like `train`. Defaults to `None`.
        views: int. Augmented views of `train` to cache when the model has an augmentation
            layer (each epoch uses the next view); ignored without one. Defaults to `4`.
        known: KnownFeatures or None. Features of some of the images computed before: a batch
            whose images all have one is not run through the backbone again (the augmented
            views are always computed). Defaults to `None`.

    Attributes:
        head: keras.Model. Features -> predictions, made of `model`'s own head layers (shared
            weights: training it, with `fit`, trains `model`).
        train: list of tuples. Per cached view, `(features, labels[, sample_weights])` arrays.
        validation: tuple or None. The validation set's `(features, labels[, sample_weights])`.
        batch_size: int. The batch size of `train` (training and validation batches).
        steps_per_epoch: int. Batches in one view of the training set.

    Example:

    ```python
    cache = FeatureCache(model, data.train, data.validation)
    accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    history = cache.fit(10, optimizer=keras.optimizers.Adam(),
                        loss="sparse_categorical_crossentropy", metrics=[accuracy])
    # model's head is now trained
    ```
    """

    def __init__(self, model, train, validation=None, *, views=4, known=None):
        cut = cut_layer(model)
        if cut is None:
            raise ValueError(
                f"Model {model.name!r} cannot train on cached features: it needs a frozen backbone "
                "followed only by the head layers, as tltk.build_classifier makes."
            )
        views = integer("views", views, minimum=1)
        augmentation = model.augmentation
        start = augmentation.output if augmentation is not None else model.inputs[0]
        extractor = keras.Model(start, cut.output, name=f"{model.name}_features")
        with model.distribute_strategy.scope():  # the head trains under the model's strategy
            self.head = _head_model(model, cut)
        self.batch_size = _batch_size(train)

        image_spec = train.element_spec[0]
        shape = image_spec.shape
        shape = tf.TensorShape([None]).concatenate(shape[1:]) if shape.rank else shape
        signature = [tf.TensorSpec(shape, image_spec.dtype)]  # one trace for every batch size
        plain = tf.function(
            lambda images: extractor(images, training=False), input_signature=signature
        )
        augmented = tf.function(
            lambda images: extractor(augmentation(images, training=True), training=False),
            input_signature=signature,
        )
        vectors = _known_vectors(model, known)
        count = views if augmentation is not None else 1
        self.train = [
            _extract(augmented, train)
            if augmentation is not None
            else _extract(plain, train, vectors)
            for _ in range(count)
        ]
        self.steps_per_epoch = -(-len(self.train[0][0]) // self.batch_size)
        self.validation = None if validation is None else _extract(plain, validation, vectors)
        check_labels(self.train[0][1], model, "`train`")
        if self.validation is not None:
            check_labels(self.validation[1], model, "`validation`")
        self._model = model

    def fit(
        self,
        epochs,
        *,
        optimizer,
        loss,
        metrics=(),
        callbacks=(),
        class_weight=None,
        verbose=1,
    ):
        """Trains `head` on the cached features, the next view each epoch; returns the History.

        What `head.compile(...)` then `head.fit(...)` would do (the same updates and logs: a test
        checks it), without their fixed costs, which outweigh the training of a small head: the
        features stay in memory, an epoch (reshuffled, in batches of `batch_size`) and its
        validation pass are one call of one function traced once, and the callbacks are called
        per epoch (batch hooks once per epoch, as `fit` with `steps_per_execution` does).

        Args:
            epochs: int. Epochs to train.
            optimizer: keras.optimizers.Optimizer. A fresh optimizer.
            loss: str, function or keras.losses.Loss. As for `compile`.
            metrics: sequence of keras.metrics.Metric. Logged by name, with `"val_"` versions.
                Defaults to `()`.
            callbacks: sequence. Keras callbacks; they see `head`. Defaults to `()`.
            class_weight: dict. `{class: weight}`, as `tltk.fine_tune` takes it (class indexes,
                or names once the model's `class_names` are set). Defaults to `None`.
            verbose: int. 0 silent, 1 a progress bar, 2 one line per epoch. Defaults to `1`.

        Returns:
            The `keras.callbacks.History` of the run (`val_` entries with a validation set).
        """
        head = self.head
        epochs = integer("epochs", epochs)
        class_weight = check_class_weight(class_weight, self._model)
        if not all(isinstance(m, keras.metrics.Metric) for m in metrics):
            raise ValueError(
                f"`metrics` must be keras.metrics.Metric objects. Received: metrics={metrics!r}"
            )
        with head.distribute_strategy.scope():
            head.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))  # for callbacks
        if distribute.is_distributed(head.distribute_strategy):
            return self._fit_distributed(epochs, callbacks, class_weight, verbose)
        loss = loss_object(loss)
        if not optimizer.built:  # its variables must exist before tracing
            optimizer.build(head.trainable_variables)
        tracked = [keras.metrics.Mean(name="loss"), *metrics]
        views = [_tensors(arrays, class_weight) for arrays in self.train]
        validation = None if self.validation is None else _tensors(self.validation, None)
        # One plain graph (no AutoGraph, no Keras train_step): tracing is most of the cost here.
        run_epoch = tf.function(
            lambda train, val: self._epoch(train, val, optimizer, loss, tracked), autograph=False
        )
        callbacks = keras.callbacks.CallbackList(
            list(callbacks),
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=self.steps_per_epoch,
            model=head,
        )
        head.stop_training = False
        callbacks.on_train_begin()
        logs = None
        for epoch in range(head._initial_epoch or 0, epochs):  # set by BackupAndRestore
            callbacks.on_epoch_begin(epoch)
            callbacks.on_train_batch_begin(0)
            train_logs, val_logs = run_epoch(views[epoch % len(views)], validation)
            logs = _numbers(train_logs)
            callbacks.on_train_batch_end(self.steps_per_epoch - 1, logs)
            logs.update({f"val_{k}": v for k, v in _numbers(val_logs).items()})
            callbacks.on_epoch_end(epoch, logs)
            if head.stop_training:
                break
        optimizer.finalize_variable_values(head.trainable_weights)
        callbacks.on_train_end(logs)
        return head.history

    def _fit_distributed(self, epochs, callbacks, class_weight, verbose):
        """`fit` under a `tf.distribute` strategy: `tltk.distribute.fit` of the compiled head on
        datasets of the features, one view per epoch, shuffled alike on every worker (a fixed
        seed)."""
        views = [_tensors(arrays, class_weight) for arrays in self.train]
        train = None
        for view in views:
            part = tf.data.Dataset.from_tensor_slices(view).shuffle(len(view[0]), seed=len(views))
            train = (
                part.batch(self.batch_size)
                if train is None
                else train.concatenate(part.batch(self.batch_size))
            )
        validation = None
        if self.validation is not None:
            validation = tf.data.Dataset.from_tensor_slices(_tensors(self.validation, None))
            validation = validation.batch(self.batch_size)
        return distribute.fit(
            self.head,
            train.repeat(),
            validation,
            epochs=epochs,
            callbacks=callbacks,
            steps_per_epoch=self.steps_per_epoch,
            verbose=verbose,
        )

    def _epoch(self, train, validation, optimizer, loss, tracked):
        """One epoch on `train`, then a pass over `validation` (or None): their logs."""
        head, size = self.head, self.batch_size

        def losses(batch, training):
            x, y, *weights = batch
            predictions = head(x, training=training)
            value = loss(y, predictions, sample_weight=weights[0] if weights else None)
            if head.losses:  # regularization, as Keras' compute_loss adds it
                value = value + tf.add_n(head.losses)
            return value, predictions

        def update(batch, value, predictions):
            x, y, *_ = batch
            tracked[0].update_state(value, sample_weight=tf.shape(x)[0])
            for metric in tracked[1:]:  # unweighted, as `compile(metrics=...)`
                metric.update_state(y, predictions)

        def results():
            return {m.name: m.result() for m in tracked}

        def train_step(index):
            rows = order[index * size : (index + 1) * size]
            batch = tuple(tf.gather(t, rows) for t in train)
            with tf.GradientTape() as tape:
                value, predictions = losses(batch, training=True)
                scaled = optimizer.scale_loss(value)
            variables = head.trainable_variables
            optimizer.apply(tape.gradient(scaled, variables), variables)
            update(batch, value, predictions)
            return (index + 1,)

        def test_step(start):
            batch = tuple(t[start : start + size] for t in validation)
            update(batch, *losses(batch, training=False))
            return (start + size,)

        for metric in tracked:
            metric.reset_state()
        order = tf.random.shuffle(tf.range(tf.shape(train[0])[0]))
        tf.while_loop(lambda index: index < self.steps_per_epoch, train_step, (tf.constant(0),))
        train_logs = results()
        if validation is None:
            return train_logs, {}
        for metric in tracked:
            metric.reset_state()
        count = tf.shape(validation[0])[0]
        tf.while_loop(lambda start: start < count, test_step, (tf.constant(0),))
        return train_logs, results()


def loss_object(loss):  # also tltk.distribute's
    """`loss` as a `keras.losses.Loss`: reduction and sample weights as `compile` applies them."""
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if not callable(loss):
        raise ValueError(f"`loss` must be a Keras loss, its name or a function. Received: {loss!r}")
    return _FunctionLoss(loss)


class _FunctionLoss(keras.losses.Loss):
    """A loss function `f(y_true, y_pred)` reduced like a Keras loss."""

    def __init__(self, fn, **kwargs):
        super().__init__(name=kwargs.pop("name", getattr(fn, "__name__", "loss")), **kwargs)
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _tensors(arrays, class_weight):
    """`(features, labels[, sample_weights])` as tensors, with class weights as sample weights."""
    if class_weight is None:
        return tuple(tf.constant(a) for a in arrays)
    if len(arrays) > 2:
        raise ValueError(
            "`class_weight` cannot be combined with sample weights in the dataset; "
            "fold the class weights into the sample weights."
        )
    labels = arrays[1]
    if labels.ndim > 1 and labels.shape[-1] > 1:
        labels = labels.argmax(-1)
    labels = np.round(labels.reshape(len(labels))).astype("int64")
    weights = np.array([class_weight[int(c)] for c in labels], keras.config.floatx())
    return tuple(tf.constant(a) for a in (*arrays, weights))


def _numbers(logs):
    return {k: float(v) for k, v in logs.items()}


def _head_model(model, cut):
    inputs = keras.Input(cut.output.shape[1:], name="features")
    x = inputs
    names = [layer.name for layer in model.layers]
    for layer in model.layers[names.index(cut.name) + 1 :]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def _batch_size(dataset):
    images = next(iter(dataset))[0]
    return int(images.shape[0])


def _known_vectors(model, known):
    if known is None:
        return None
    if not isinstance(known, KnownFeatures):
        raise ValueError(
            "`known` (fine_tune's `cache_features`) must be True, False or the KnownFeatures "
            f"that Ranking.known_features returns. Received: {type(known).__name__}"
        )
    if known.extractor != extractor_digest(model):
        raise ValueError(
            f"These known features were computed by another backbone (or other weights) than "
            f"model {model.name!r}'s: pass those of `ranking.known_features(name)` for the "
            "candidate this model is (`ranking.model(name)`), or cache_features=True."
        )
    return known.vectors


def _extract(extract, dataset, known=None):
    """Runs `extract` over `dataset`; returns `(features, labels[, sample_weights])` arrays.

    Batches of small images are merged up to `PIXELS_PER_BATCH`: on 2 CPU cores, GlyphNet at
    32x32 extracts 1,797 digits 30% faster in batches of 256 than of 32, while MobileNetV2 at
    96x96 is 45% slower in batches of 256 (so larger images keep the dataset's batches).
    """
    images = dataset.element_spec[0].shape
    pixels = images[1] * images[2] if images.rank == 4 and None not in images[1:3] else 0
    rows = PIXELS_PER_BATCH // pixels if pixels else 0
    parts, pending = [], []
    for batch in dataset.prefetch(tf.data.AUTOTUNE):
        pending.append([np.asarray(t) for t in batch])
        if sum(len(b[0]) for b in pending) >= rows:
            parts.append(_run(extract, pending, known))
            pending = []
    if pending:
        parts.append(_run(extract, pending, known))
    if not parts:
        raise ValueError("Received an empty dataset: there is nothing to compute features of.")
    return tuple(np.concatenate(p) for p in zip(*parts))


def _run(extract, batches, known=None):
    """`(features, labels[, sample_weights])` of some batches, their images in one call (or
    from `known` vectors, when it has every image's)."""
    values = [np.concatenate(v) for v in zip(*batches)]
    if known:
        found = [known.get(digest) for digest in image_digests(values[0])]
        if all(vector is not None for vector in found):
            return (np.stack(found).astype(keras.config.floatx()), *values[1:])
    return (extract(values[0]).numpy(), *values[1:])
