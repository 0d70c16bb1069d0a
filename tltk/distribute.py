"""Training under `tf.distribute`: the model's scope, the chief, and a multi-worker training loop.

A tltk model built inside `strategy.scope()` keeps that strategy (`model.distribute_strategy`), and
`tltk.fine_tune` creates every optimizer, metric and head model in it. Keras' own `fit` trains
under `MirroredStrategy` (the GPUs of one machine) and on one device; under
`MultiWorkerMirroredStrategy` Keras 3.15's `fit` fails on the first batch ("Attempt to convert a
value (PerReplica:{...}) to a Tensor", keras-team/keras#20585, tensorflow#72388; reproduced by
`bench/repro_multiworker_fit.py`), so `fit` here runs tltk's own step there: `strategy.run` over
`strategy.experimental_distribute_dataset` (sharded by data), the loss averaged over the global
batch, the optimizer applied in replica context, the metrics computed on the gathered batch.

Only the chief writes to the user's folders; another worker writes its checkpoints to a temporary
folder (removed afterwards) and reads the chief's to resume, as Keras' multi-worker guide does.

On a Colab TPU, build and train inside a `TPUStrategy` scope (the README's "Many devices" has the
notebook cell; not run here, where there is no TPU):

```python
resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
tf.config.experimental_connect_to_cluster(resolver)
tf.tpu.experimental.initialize_tpu_system(resolver)
with tf.distribute.TPUStrategy(resolver).scope():
    model = tltk.build_classifier("mobilenet_v2", data.num_classes)
tltk.fine_tune(model, data.train, data.validation)
```
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

STRATEGIES = ("mirrored", "multi_worker")


def scope(model):
    """The scope of the strategy `model` was built under (a no-op scope for one device).

    Example:

    >>> import tltk
    >>> model = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    >>> with scope(model):
    ...     optimizer = keras.optimizers.Adam()
    """
    return model.distribute_strategy.scope()


def is_distributed(strategy):
    """Whether `strategy` is a `tf.distribute` strategy (one device or more), not the default.

    Example:

    >>> is_distributed(tf.distribute.get_strategy())
    False
    """
    return tf.distribute.has_strategy() or strategy is not tf.distribute.get_strategy()


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy`, where `fit` runs tltk's own step."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """Whether this process writes the run's files: one device or one worker, the task `chief`,
    or worker 0 of a cluster without a chief.

    Example:

    >>> is_chief(tf.distribute.get_strategy())
    True
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    jobs = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs


@contextlib.contextmanager
def write_folder(folder, model):
    """Yields where this process writes what belongs in `folder`: `folder` itself on the chief,
    else a temporary folder, removed on exit."""
    if folder is None or is_chief(model.distribute_strategy):
        yield folder
        return
    temporary = tempfile.mkdtemp(prefix="tltk-worker-")
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that restores from `backup_dir` and writes to `write_dir`
    (a non-chief worker's temporary folder).

    Args:
        backup_dir: str. The folder of the chief's backups, read at the start of training.
        write_dir: str. Where this worker writes its own backups.
    """

    def __init__(self, backup_dir, write_dir):
        super().__init__(write_dir)
        self.read_from = keras.callbacks.BackupAndRestore(backup_dir)

    def on_train_begin(self, logs=None):
        self.read_from.set_model(self.model)
        self.read_from._load_model()


def backup_and_restore(folder, write_folder):
    """Keras' `BackupAndRestore` into `folder`, or one that reads `folder` and writes elsewhere."""
    if folder == write_folder:
        return keras.callbacks.BackupAndRestore(folder)
    return BackupAndRestore(folder, write_folder)


def agree(model, value):
    """`value` (a float) as the replicas' mean: one number that every worker uses alike."""
    strategy = model.distribute_strategy
    if not is_multi_worker(strategy):
        return value
    value = tf.constant(value, tf.float64)
    mean = tf.function(lambda: strategy.reduce("MEAN", strategy.run(tf.identity, (value,)), None))
    return float(mean())


def strategy_named(name):
    """The strategy of `tltk train --distribute NAME`: `"mirrored"` (every GPU of this machine,
    or its CPU) or `"multi_worker"` (the cluster in the `TF_CONFIG` environment variable).

    Create it first thing in the program, before TensorFlow runs anything.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name != "multi_worker":
        raise ValueError(f"`distribute` must be one of {STRATEGIES}. Received: {name!r}")
    check_tf_config(os.environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_tf_config(text):
    """Raises a `ValueError` unless `text` is a `TF_CONFIG` naming workers and this task.

    Example:

    >>> check_tf_config('{"cluster": {"worker": ["127.0.0.1:2222"]}, '
    ...                 '"task": {"type": "worker", "index": 0}}')
    """
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
        '"task": {"type": "worker", "index": 0}}\' on the first machine (index 1 on the second)'
    )
    if not text:
        raise ValueError(
            "Multi-worker training reads the cluster from the TF_CONFIG environment variable, "
            f"which is not set: set it on every worker, {example}."
        )
    try:
        config = json.loads(text)
        jobs = config["cluster"]
        task = config["task"]
        members = jobs[task["type"]]
        index = task["index"]
        valid = isinstance(index, int) and 0 <= index < len(members) and "worker" in jobs
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ValueError(
            "TF_CONFIG must be JSON with a 'cluster' of 'worker' addresses and this process's "
            f"'task' (its 'type' and 'index' among them), {example}. Received: TF_CONFIG={text!r}"
        )


def fit(
    model,
    train,
    validation=None,
    *,
    epochs,
    callbacks=(),
    class_weight=None,
    steps_per_epoch=None,
    verbose=1,
):
    """Trains a compiled `model` as `model.fit` would, under any strategy it was built in.

    Keras' `fit` where it works (one device, `MirroredStrategy`); under
    `MultiWorkerMirroredStrategy`, tltk's own step over the data sharded across the workers: each
    global batch (as `train` yields it) split among the replicas, the loss averaged over it
    (`tf.nn.compute_average_loss`), the gradients summed by the optimizer in replica context,
    the metrics computed on the gathered batch. Every worker must pass the same batches in the
    same order (a shuffle with a seed).

    Args:
        model: keras.Model. Compiled inside its strategy's scope.
        train: tf.data.Dataset. Batches of `(inputs, labels[, sample_weights])`.
        validation: tf.data.Dataset or None. Batches like `train`. Defaults to `None`.
        epochs: int. Epochs to train (from `model`'s initial epoch, as `BackupAndRestore` sets).
        callbacks: sequence of keras.callbacks.Callback. Defaults to `()`.
        class_weight: dict. `{class index: weight}`. Defaults to `None`.
        steps_per_epoch: int or None. Batches per epoch of a repeated `train`. Defaults to `None`.
        verbose: int. 0 silent, 1 a progress bar, 2 one line per epoch. Defaults to `1`.

    Returns:
        The `keras.callbacks.History` of the run.
    """
    if not is_multi_worker(model.distribute_strategy):
        return model.fit(
            train,
            validation_data=validation,
            epochs=epochs,
            class_weight=class_weight,
            callbacks=list(callbacks),
            steps_per_epoch=steps_per_epoch,
            shuffle=False,
            verbose=verbose,
        )
    with model.distribute_strategy.scope():  # as Keras' fit: callbacks may load weights
        return _Loop(model, class_weight).fit(
            train, validation, epochs, list(callbacks), steps_per_epoch, verbose
        )


class _Loop:
    """tltk's training loop under a `MultiWorkerMirroredStrategy`."""

    def __init__(self, model, class_weight):
        from tltk.feature_cache import loss_object  # which imports this module

        self.model = model
        self.strategy = model.distribute_strategy
        self.loss = loss_object(model.loss)
        self.class_weight = class_weight
        with self.strategy.scope():
            self.metrics = [
                keras.metrics.get(m)
                if isinstance(m, str)
                else m.__class__.from_config(m.get_config())
                for m in _compiled_metrics(model)
            ]
            self.mean_loss = keras.metrics.Mean(name="loss")

    def fit(self, train, validation, epochs, callbacks, steps_per_epoch, verbose):
        model = self.model
        iterator = None
        if steps_per_epoch is not None:
            iterator = iter(self._distribute(train))
        steps = steps_per_epoch or int(train.cardinality())
        callbacks = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=steps if steps > 0 else None,
            model=model,
        )
        model.stop_training = False
        callbacks.on_train_begin()
        logs = {}
        for epoch in range(model._initial_epoch or 0, epochs):  # set by BackupAndRestore
            callbacks.on_epoch_begin(epoch)
            self._reset()
            batches = iterator if iterator is not None else iter(self._distribute(train))
            for step in range(steps) if iterator is not None else iter(int, 1):
                batch = next(batches, None)
                if batch is None:
                    break
                callbacks.on_train_batch_begin(step)
                self._update(*self._train_step(batch))
                callbacks.on_train_batch_end(step, self._logs())
                if model.stop_training:
                    break
            logs = self._logs()
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(validation).items()})
            callbacks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        model._initial_epoch = None
        callbacks.on_train_end(logs)
        return model.history

    def evaluate(self, dataset):
        """The loss and metrics over `dataset` (every worker's share), as floats by name."""
        self._reset()
        for batch in self._distribute(dataset):
            self._update(*self._test_step(batch))
        return self._logs()

    def _distribute(self, dataset):
        if self.class_weight is not None:
            dataset = dataset.map(_class_weighting(self.class_weight))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    @tf.function
    def _train_step(self, batch):
        model, optimizer = self.model, self.model.optimizer

        def step(x, y, *weights):
            with tf.GradientTape() as tape:
                predictions = model(x, training=True)
                value, total, count = self._loss(y, predictions, weights)
                if model.losses:
                    value += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled = optimizer.scale_loss(value)
            variables = model.trainable_variables
            optimizer.apply(tape.gradient(scaled, variables), variables)
            return total, count, y, predictions

        return self._gather(self.strategy.run(step, args=batch))

    @tf.function
    def _test_step(self, batch):
        def step(x, y, *weights):
            predictions = self.model(x, training=False)
            _, total, count = self._loss(y, predictions, weights)
            return total, count, y, predictions

        return self._gather(self.strategy.run(step, args=batch))

    def _loss(self, y, predictions, weights):
        """This replica's share of the batch loss (averaged over the global batch), its
        weighted sum and its count of examples."""
        per_example = self.loss.call(y, predictions)
        if weights:
            per_example = per_example * tf.cast(weights[0], per_example.dtype)
        count = tf.cast(tf.shape(y)[0], tf.float32)
        context = tf.distribute.get_replica_context()
        global_batch = context.all_reduce("SUM", count)
        total = tf.reduce_sum(tf.cast(per_example, tf.float32))
        return tf.math.divide_no_nan(total, global_batch), total, count

    def _gather(self, outputs):
        total, count, y, predictions = outputs
        strategy = self.strategy
        return (
            strategy.reduce("SUM", total, axis=None),
            strategy.reduce("SUM", count, axis=None),
            strategy.gather(y, axis=0),
            strategy.gather(predictions, axis=0),
        )

    def _update(self, total, count, y, predictions):
        self.mean_loss.update_state(total / tf.maximum(count, 1.0), sample_weight=count)
        for metric in self.metrics:
            metric.update_state(y, predictions)

    def _reset(self):
        for metric in (self.mean_loss, *self.metrics):
            metric.reset_state()

    def _logs(self):
        return {m.name: float(m.result()) for m in (self.mean_loss, *self.metrics)}


def _compiled_metrics(model):
    """The metrics `model` was compiled with (`compile(metrics=[...])`)."""
    metrics = model._compile_config.config.get("metrics") if model._compile_config else None
    return [m for m in (metrics or []) if m is not None]


def _class_weighting(class_weight):
    """A dataset map adding class weights as sample weights (as `fit(class_weight=)` does)."""
    table = tf.constant([class_weight.get(c, 1.0) for c in range(max(class_weight) + 1)])

    def weigh(x, y, *rest):
        labels = tf.argmax(y, -1) if y.shape.rank > 1 and y.shape[-1] > 1 else tf.reshape(y, [-1])
        return x, y, tf.gather(table, tf.cast(labels, tf.int32))

    return weigh
