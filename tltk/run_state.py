"""The state of a staged training run: per-epoch logs, the best weights, and where it stopped.

`fine_tune` keeps one `RunState`; with a checkpoint folder it is written after every epoch (the
best weights when they improve), so a killed run resumes after its last finished stage, and inside
the unfinished stage from Keras' `BackupAndRestore`.
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings

import keras
import numpy as np

from tltk import atomic

STATE_FILE = "run_state.json"
BEST_WEIGHTS_FILE = "best.weights.npz"


class RunState:
    """What a staged run has done so far.

    Args:
        fingerprint: dict. The run's settings and data (JSON-serializable); a checkpoint made
            with another fingerprint is refused, naming what differs.
        num_stages: int. Number of stages in the run.
        mode: str. `"max"` if a larger monitored value is better, `"min"` otherwise.
        directory: str, Path or None. Checkpoint folder. Defaults to `None` (kept in memory only).
        write_directory: str, Path or None. Where the state is written, if not `directory` (a
            non-chief worker's temporary folder: it resumes from the chief's). Defaults to
            `directory`.
    """

    def __init__(self, fingerprint, num_stages, mode, directory=None, write_directory=None):
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from the file
        self.histories = [[] for _ in range(num_stages)]
        self.diverged = []  # [stage, epoch] of each stage stopped by a non-finite loss
        self.mode = mode
        self.completed = 0
        self.best_value = None
        self.best_loss = None  # validation loss at the best epoch: breaks ties of the monitor
        self.best_stage = None
        self.best_epoch = None
        self.best_weights = None
        self.plan = None  # the stages as run, their rates chosen (`Stage.as_dict()` each)
        self.probe = None  # the linear probe's record (see `FineTuneResult.probe`)
        self.directory = pathlib.Path(directory) if directory is not None else None
        write_directory = directory if write_directory is None else write_directory
        self.write_directory = pathlib.Path(write_directory) if directory is not None else None

    @classmethod
    def resume(cls, fingerprint, num_stages, mode, directory=None, write_directory=None):
        """Loads the state saved in `directory`, or starts a new one if there is none.

        A saved run with another fingerprint raises a `ValueError` that names each difference; a
        finished one warns that its result is returned without training.
        """
        state = cls(fingerprint, num_stages, mode, directory, write_directory)
        if directory is None or not (state.directory / STATE_FILE).is_file():
            return state
        saved = json.loads((state.directory / STATE_FILE).read_text())
        differences = _differences(saved["fingerprint"], state.fingerprint)
        if differences:
            lines = "\n".join(
                f"  {key}: {old!r} (saved) -> {new!r} (now)" for key, old, new in differences
            )
            raise ValueError(
                f"`checkpoint_dir` {state.directory} holds a run with other settings, model or "
                f"data:\n{lines}\nTo resume it, call again with what it was started with; to "
                "train anew, pass a new `checkpoint_dir` (or delete this one)."
            )
        state.histories = saved["histories"]
        state.completed = saved["completed"]
        state.diverged = saved.get("diverged", [])
        state.plan = saved.get("plan")
        state.probe = saved.get("probe")
        if state.completed == num_stages:
            warnings.warn(
                f"`checkpoint_dir` {state.directory} holds a finished run with these settings: "
                "returning its result without training. Pass a new `checkpoint_dir` to train "
                "again.",
                stacklevel=3,
            )
        state.best_value, state.best_stage, state.best_epoch, state.best_loss = saved["best"]
        weights_path = state.directory / BEST_WEIGHTS_FILE
        if weights_path.is_file():
            with np.load(weights_path) as arrays:
                state.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        return state

    def improves(self, value, loss=None):
        """Whether `value` beats the best so far (never with a non-finite value or `loss`).

        A tie goes to the lower validation `loss` when both epochs have one: on a small
        validation set accuracy saturates (every epoch 99%), and the first epoch to reach it is
        rarely the best model.
        """
        if value is None or not math.isfinite(value) or not math.isfinite(loss or 0.0):
            return False
        if self.best_value is None:
            return True
        if value == self.best_value:
            return loss is not None and self.best_loss is not None and loss < self.best_loss
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def dominates(self, value, loss):
        """Whether the best so far has at least `value` and a lower validation `loss`."""
        if self.best_value is None or self.best_loss is None or loss is None:
            return False
        at_least = self.best_value >= value if self.mode == "max" else self.best_value <= value
        return at_least and self.best_loss < loss

    def save(self, *, weights=False):
        """Writes the state (and the best weights, if `weights`) atomically; a no-op in memory."""
        if self.write_directory is None:
            return
        self.write_directory.mkdir(parents=True, exist_ok=True)
        if weights and self.best_weights is not None:
            with atomic.writing(self.write_directory / BEST_WEIGHTS_FILE) as partial:
                np.savez(partial, *self.best_weights)  # `partial` ends in .npz, as the file does
        content = json.dumps(
            {
                "fingerprint": self.fingerprint,
                "histories": self.histories,
                "completed": self.completed,
                "diverged": self.diverged,
                "plan": self.plan,
                "probe": self.probe,
                "best": [self.best_value, self.best_stage, self.best_epoch, self.best_loss],
            }
        )
        atomic.write_text(self.write_directory / STATE_FILE, content)


class BestTracker(keras.callbacks.Callback):
    """Records each epoch's logs into a `RunState` and keeps the best weights of `target`.

    A non-finite training loss (the run diverged) stops the stage, as
    `keras.callbacks.TerminateOnNaN` does; that epoch never counts as the best, and the state
    records it in `diverged`, with a warning.

    Args:
        target: keras.Model. The model whose weights are kept (the full model, even when a head
            model is being fitted on cached features).
        state: RunState. Where logs and the best weights go.
        stage: int. Index of the running stage (0-based).
        monitor: str. The logged value to compare, e.g. `"val_accuracy"`.
    """

    def __init__(self, target, state, stage, monitor):
        super().__init__()
        self.target = target
        self.state = state
        self.stage = stage
        self.monitor = monitor

    def on_epoch_begin(self, epoch, logs=None):
        del self.state.histories[self.stage][epoch:]  # a resumed stage repeats unsaved epochs

    def on_train_batch_end(self, batch, logs=None):
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"`monitor` {self.monitor!r} is not among the logged values {sorted(logs)}. "
                f"Received: monitor={self.monitor!r}"
            )
        self.state.histories[self.stage].append({k: float(v) for k, v in logs.items()})
        value = float(logs[self.monitor])
        loss = float(logs["val_loss"]) if "val_loss" in logs else None
        train_loss = float(logs.get("loss", 0.0))
        if not math.isfinite(train_loss):
            self.model.stop_training = True
            self.state.diverged.append([self.stage, epoch])
            warnings.warn(
                f"Stage {self.stage + 1} diverged at epoch {epoch}: the training loss is "
                f"{train_loss}. Stopped the stage; it goes on from the best weights so far. "
                "Lower the learning rate (`learning_rate`, `fine_tune_lr`) to avoid this.",
                stacklevel=2,
            )
        improved = math.isfinite(train_loss) and self.state.improves(value, loss)
        if improved:
            self.state.best_value, self.state.best_stage, self.state.best_epoch = (
                value,
                self.stage,
                epoch,
            )
            self.state.best_loss = loss
            self.state.best_weights = self.target.get_weights()
        self.state.save(weights=improved)


def _differences(saved, now, prefix=""):
    """`(key, saved value, value now)` for each leaf where two fingerprints differ."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return [] if saved == now else [(prefix.rstrip("."), saved, now)]
    return [
        difference
        for key in sorted(set(saved) | set(now))
        for difference in _differences(saved.get(key), now.get(key), f"{prefix}{key}.")
    ]
