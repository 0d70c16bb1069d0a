"""Runs a Keras model, a SavedModel or a TFLite file on raw pixels (or texts): probabilities out.

A runner of a model with several heads (its `heads`: the head names, in the model's order)
returns `{head: (N, units) array}`: probabilities, multi-label scores or regression values.
"""

from __future__ import annotations

import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from tltk.export.heads import head_outputs, output_heads, read_heads
from tltk.export.saved_model import (
    EXTRA_ASSETS,
    INPUT_KEY,
    OUTPUT_KEY,
    PROBABILITY_ACTIVATIONS,
    SIGNATURE_KEY,
    check_classifier,
    check_image_input,
    last_activation,
)
from tltk.text import INPUT_NAME as TEXT_KEY
from tltk.text import is_text_model

NUM_THREADS = 2
BATCH_SIZE = 64


class KerasRunner:
    """Probabilities from a Keras classifier (softmax added to a logits output, as export does).

    Args:
        model: keras.Model. An image classifier accepted by
            `tltk.export.saved_model.check_classifier`, or a text classifier from
            `tltk.build_text_classifier` (then `takes_text` is True and calls take strings).

    Example:

    ```python
    probabilities = KerasRunner(model)(images)   # images: float32 (N, H, W, C), 0..255
    ```
    """

    def __init__(self, model):
        self.model = model
        self.takes_text = is_text_model(model)
        self.model_heads = None if self.takes_text else output_heads(model)
        self.heads = None if self.model_heads is None else tuple(h.name for h in self.model_heads)
        if self.takes_text:
            self.input_shape, self.num_classes = (), int(model.outputs[0].shape[-1])
            activation = last_activation(model)
        elif self.model_heads is not None:
            self.input_shape, activation = check_image_input(model), None
        else:
            self.input_shape, self.num_classes, activation = check_classifier(model)
        self._add_softmax = activation not in PROBABILITY_ACTIVATIONS

    def __call__(self, inputs):
        outputs = []
        for start in range(0, len(inputs), BATCH_SIZE):
            batch = inputs[start : start + BATCH_SIZE]
            batch = self.model(tf.constant(batch) if self.takes_text else batch, training=False)
            if self.model_heads is not None:
                outputs.append(
                    {k: v.numpy() for k, v in head_outputs(batch, self.model_heads).items()}
                )
                continue
            batch = keras.ops.convert_to_numpy(batch).astype("float32")
            outputs.append(_softmax(batch) if self._add_softmax else batch)
        return _concatenate(outputs)


class SavedModelRunner:
    """Probabilities from the `serving_default` signature of a tltk SavedModel.

    A text classifier's SavedModel (its signature takes strings) sets `takes_text`; calls then take
    a list of strings. Its tokenizer's ops come from TensorFlow Text, imported here when installed.

    Args:
        path: str or Path. The SavedModel folder.

    Example:

    ```python
    probabilities = SavedModelRunner("export/saved_model")(images)
    ```
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        try:
            import tensorflow_text  # noqa: F401  (registers the ops keras-hub tokenizers use)
        except ImportError:
            pass
        loaded = tf.saved_model.load(str(self.path))
        if SIGNATURE_KEY not in loaded.signatures:
            raise ValueError(
                f"The SavedModel at {self.path} has no {SIGNATURE_KEY!r} signature. "
                f"Received signatures: {sorted(loaded.signatures)}"
            )
        self._loaded = loaded  # keeps the variables the signature reads alive
        self._serve = loaded.signatures[SIGNATURE_KEY]
        inputs = self._serve.structured_input_signature[1]
        self.takes_text = TEXT_KEY in inputs and inputs[TEXT_KEY].dtype == tf.string
        self._key = TEXT_KEY if self.takes_text else INPUT_KEY
        if self._key not in inputs:
            raise ValueError(
                f"The SavedModel at {self.path} is not a tltk export: its {SIGNATURE_KEY!r} "
                f"signature takes {sorted(inputs)}, not {INPUT_KEY!r} or {TEXT_KEY!r}."
            )
        self.input_shape = tuple(inputs[self._key].shape[1:])
        heads = read_heads(self.path / EXTRA_ASSETS)
        self.heads = None if heads is None else tuple(head.name for head in heads)

    def __call__(self, inputs):
        outputs = []
        for start in range(0, len(inputs), BATCH_SIZE):
            result = self._serve(**{self._key: tf.constant(inputs[start : start + BATCH_SIZE])})
            if self.heads is None:
                outputs.append(result[OUTPUT_KEY].numpy())
            else:
                outputs.append({head: result[head].numpy() for head in self.heads})
        return _concatenate(outputs)

    def latency_ms(self, sample, *, runs, warmup=3):
        """Median milliseconds of a call on one input (an image, or a text), over `runs` calls."""
        batch = {self._key: tf.constant([sample])}
        return median_ms(lambda: [t.numpy() for t in self._serve(**batch).values()], runs, warmup)


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
        details = self._interpreter.get_input_details()
        if len(details) != 1:
            raise ValueError(
                f"{self.path} takes {len(details)} inputs "
                f"({', '.join(d['name'] for d in details)}), "
                "not one image: a text classifier's TFLite file takes token ids from its tokenizer "
                "(see the `tokenizer` entry of export.json); load the export's SavedModel to "
                "predict from strings."
            )
        self._input = details[0]
        self._outputs = self._interpreter.get_output_details()
        self.heads = _signature_heads(self._interpreter, self._outputs)
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])
        self.input_dtype = np.dtype(self._input["dtype"])

    def __call__(self, images):
        rows = [self._run(image) for image in images]
        if self.heads is None:
            return np.stack([row[0] for row in rows])
        return {head: np.stack([row[i] for row in rows]) for i, head in enumerate(self.heads)}

    def latency_ms(self, image, *, runs, warmup=3):
        """Median milliseconds of `invoke()` on one image, over `runs` calls after `warmup`."""
        self._interpreter.set_tensor(self._input["index"], self._quantize(image[None]))
        return median_ms(self._interpreter.invoke, runs, warmup)

    def _run(self, image):
        """The outputs for one image, each dequantized with its own scale and zero point."""
        self._interpreter.set_tensor(self._input["index"], self._quantize(image[None]))
        self._interpreter.invoke()
        outputs = []
        for detail in self._outputs:
            output = self._interpreter.get_tensor(detail["index"])[0].astype("float32")
            scale, zero_point = detail["quantization"]
            outputs.append((output - zero_point) * scale if scale else output)
        return outputs

    def _quantize(self, batch):
        scale, zero_point = self._input["quantization"]
        if scale:
            info = np.iinfo(self.input_dtype)
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
        return batch.astype(self.input_dtype)


def median_ms(call, runs, warmup):
    """Median milliseconds of `call()` over `runs` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _signature_heads(interpreter, outputs):
    """The head names of a file with several outputs, in output order (its signature names each
    output); `None` for a file with one output."""
    if len(outputs) == 1:
        return None
    names = {}
    if len(interpreter.get_signature_list()) == 1:
        details = interpreter.get_signature_runner().get_output_details()
        names = {detail["index"]: name for name, detail in details.items()}
    return tuple(names.get(detail["index"], detail["name"]) for detail in outputs)


def _concatenate(batches):
    if isinstance(batches[0], dict):
        return {head: np.concatenate([batch[head] for batch in batches]) for head in batches[0]}
    return np.concatenate(batches)


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
