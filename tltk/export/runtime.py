"""Runs a Keras model, a SavedModel or a TFLite file on raw pixels and returns probabilities."""

from __future__ import annotations

import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from tltk.export.saved_model import (
    INPUT_KEY,
    OUTPUT_KEY,
    PROBABILITY_ACTIVATIONS,
    SIGNATURE_KEY,
    check_classifier,
)

NUM_THREADS = 2
BATCH_SIZE = 64


class KerasRunner:
    """Probabilities from a Keras classifier (softmax added to a logits output, as export does).

    Args:
        model: keras.Model. A classifier accepted by `tltk.export.saved_model.check_classifier`.

    Example:

    ```python
    probabilities = KerasRunner(model)(images)   # images: float32 (N, H, W, C), 0..255
    ```
    """

    def __init__(self, model):
        self.model = model
        self.input_shape, self.num_classes, activation = check_classifier(model)
        self._add_softmax = activation not in PROBABILITY_ACTIVATIONS

    def __call__(self, images):
        outputs = []
        for start in range(0, len(images), BATCH_SIZE):
            batch = self.model(images[start : start + BATCH_SIZE], training=False)
            batch = keras.ops.convert_to_numpy(batch).astype("float32")
            outputs.append(_softmax(batch) if self._add_softmax else batch)
        return np.concatenate(outputs)


class SavedModelRunner:
    """Probabilities from the `serving_default` signature of a tltk SavedModel.

    Args:
        path: str or Path. The SavedModel folder.

    Example:

    ```python
    probabilities = SavedModelRunner("export/saved_model")(images)
    ```
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        loaded = tf.saved_model.load(str(self.path))
        if SIGNATURE_KEY not in loaded.signatures:
            raise ValueError(
                f"The SavedModel at {self.path} has no {SIGNATURE_KEY!r} signature. "
                f"Received signatures: {sorted(loaded.signatures)}"
            )
        self._loaded = loaded  # keeps the variables the signature reads alive
        self._serve = loaded.signatures[SIGNATURE_KEY]
        spec = self._serve.structured_input_signature[1][INPUT_KEY]
        self.input_shape = tuple(spec.shape[1:])

    def __call__(self, images):
        outputs = [
            self._serve(**{INPUT_KEY: tf.constant(images[start : start + BATCH_SIZE])})[OUTPUT_KEY]
            for start in range(0, len(images), BATCH_SIZE)
        ]
        return np.concatenate([output.numpy() for output in outputs])

    def latency_ms(self, image, *, runs, warmup=3):
        """Median milliseconds of one single-image call, over `runs` calls after `warmup`."""
        batch = {INPUT_KEY: tf.constant(image[None])}
        return _median_ms(lambda: self._serve(**batch)[OUTPUT_KEY].numpy(), runs, warmup)


class TFLiteRunner:
    """Probabilities from a TFLite classifier, run by the LiteRT interpreter one image at a time.

    Quantized inputs are quantized with the file's own scale and zero point (raw pixels for tltk's
    int8 files), and quantized outputs dequantized, so every file returns float probabilities.

    Args:
        path: str or Path. The `.tflite` file.
        num_threads: int. Interpreter threads. Defaults to `2`.

    Example:

    ```python
    runner = TFLiteRunner("export/model_int8.tflite")
    probabilities = runner(images)
    runner.latency_ms(images[0], runs=50)
    ```
    """

    def __init__(self, path, *, num_threads=NUM_THREADS):
        from ai_edge_litert.interpreter import Interpreter

        self.path = pathlib.Path(path)
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"Cannot load the TFLite file {self.path}: {error}") from error
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])
        self.input_dtype = np.dtype(self._input["dtype"])

    def __call__(self, images):
        return np.stack([self._run(image) for image in images])

    def latency_ms(self, image, *, runs, warmup=3):
        """Median milliseconds of `invoke()` on one image, over `runs` calls after `warmup`."""
        self._interpreter.set_tensor(self._input["index"], self._quantize(image[None]))
        return _median_ms(self._interpreter.invoke, runs, warmup)

    def _run(self, image):
        self._interpreter.set_tensor(self._input["index"], self._quantize(image[None]))
        self._interpreter.invoke()
        output = self._interpreter.get_tensor(self._output["index"])[0]
        scale, zero_point = self._output["quantization"]
        if scale:
            return (output.astype("float32") - zero_point) * scale
        return output.astype("float32")

    def _quantize(self, batch):
        scale, zero_point = self._input["quantization"]
        if scale:
            info = np.iinfo(self.input_dtype)
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
        return batch.astype(self.input_dtype)


def _median_ms(call, runs, warmup):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
