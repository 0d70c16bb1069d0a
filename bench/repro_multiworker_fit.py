"""Keras 3's own `model.fit` under MultiWorkerMirroredStrategy, 2 workers on loopback: it fails.

On TensorFlow 2.21 / Keras 3.15.1 both workers fail on the first batch with "Attempt to convert a
value (PerReplica:{...}) ... to a Tensor" (keras-team/keras#20585, tensorflow#72388), while the
same model trains under MirroredStrategy. This is why `tltk.distribute.fit` runs its own step
under a multi-worker strategy.

Usage:

    python bench/repro_multiworker_fit.py   # starts both workers, each with its own TF_CONFIG
"""

import json
import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ports = [free_port(), free_port()]
    processes = []
    for index in range(2):
        config = {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(config)}
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "worker"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for index, process in enumerate(processes):
        output, _ = process.communicate(timeout=300)
        tail = "\n".join(output.splitlines()[-6:])
        print(f"--- worker {index} rc={process.returncode}\n{tail}")


def worker():
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
        )
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.rand(64, 4).astype("float32")
    y = np.random.randint(0, 2, 64)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
    print("fit OK", tf.__version__, keras.__version__)


if __name__ == "__main__":
    worker() if sys.argv[1:] == ["worker"] else main()
