"""A user's Keras callbacks across `fine_tune`'s stages, shown as one continuous `fit` of the model.

Each stage is its own `fit` (of the head model on cached features, or of the whole model), but the
callbacks a user passes see one run: `on_train_begin` once before the first stage and
`on_train_end` once after the last, epochs numbered on from stage to stage, and always the full
model as `self.model` (so `ModelCheckpoint` saves a model that takes images, and `CSVLogger` and
`TensorBoard` write one log with every stage's epochs).
"""

from __future__ import annotations

import keras


class ContinuousRun(keras.callbacks.Callback):
    """Forwards a stage's callback calls to `callbacks`, its epochs shifted by `offset`.

    Args:
        callbacks: list of keras.callbacks.Callback. The user's callbacks; their model is set to
            `model` once.
        model: keras.Model. The full model being trained.

    Add the same instance to every stage's callbacks after calling `stage(offset)`; call `end()`
    once the last stage has finished. A callback that sets `model.stop_training` ends the stage
    that runs.
    """

    def __init__(self, callbacks, model):
        super().__init__()
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
        self.target = model
        self.offset = 0
        self.started = False
        self.last_logs = None

    def stage(self, offset):
        """Prepares for the next stage, whose first epoch is epoch `offset` of the run."""
        self.offset = offset
        self.target.stop_training = False
        return self

    def end(self):
        """Ends the run for the callbacks (`on_train_end`), if any stage ran."""
        if self.started:
            self.callbacks.on_train_end(self.last_logs)

    def set_params(self, params):
        super().set_params(params)
        self.callbacks.set_params({**params, "epochs": params.get("epochs", 0) + self.offset})

    def on_train_begin(self, logs=None):
        if not self.started:
            self.started = True
            self.callbacks.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.last_logs = logs

    def on_epoch_begin(self, epoch, logs=None):
        self.callbacks.on_epoch_begin(epoch + self.offset, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.callbacks.on_epoch_end(epoch + self.offset, logs)
        self._stop()

    def on_train_batch_begin(self, batch, logs=None):
        self.callbacks.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.callbacks.on_train_batch_end(batch, logs)
        self._stop()

    def on_test_begin(self, logs=None):
        self.callbacks.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.callbacks.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.callbacks.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.callbacks.on_test_batch_end(batch, logs)

    def _stop(self):
        """A user's callback stopped the full model: stop the model being fitted."""
        if self.target.stop_training and self.model is not None:
            self.model.stop_training = True


class HeadsAccuracy(keras.callbacks.Callback):
    """Adds `"accuracy"` and `"val_accuracy"` to each epoch's logs of a model with several heads:
    the mean of its heads' accuracies (`"<head>_accuracy"`; regression heads have none), so that
    `fine_tune`'s `monitor="val_accuracy"` and a user's callbacks see one figure for the model.

    Args:
        model: tltk.TransferModel. The model with several heads.
    """

    def __init__(self, model):
        super().__init__()
        self.names = [
            f"{head}_accuracy" for head, task in model.tasks.items() if task != "regression"
        ]

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.names:
            return
        for prefix in ("", "val_"):
            values = [logs[prefix + name] for name in self.names if prefix + name in logs]
            if values:
                logs[f"{prefix}accuracy"] = float(sum(values) / len(values))
