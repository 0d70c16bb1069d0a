"""The text adapter of `tltk.export`: a SavedModel taking strings, a TFLite file taking token ids.

The tokenizer has no TFLite kernels, so the TFLite file starts after it; the tokenizer's config and
vocabulary are written beside it. The export driver (`tltk.export.exporter`) does the steps every
modality shares; `export_text` is `tltk.export` for text classifiers, kept by name.
"""

from __future__ import annotations

import shutil

import keras
import numpy as np
import tensorflow as tf

from tltk import atomic
from tltk.backbones import keras_hub as kh
from tltk.export.runtime import NUM_THREADS, median_ms
from tltk.export.saved_model import (
    OUTPUT_KEY,
    SIGNATURE_KEY,
    last_activation,
    serving_outputs,
    write_archive,
)
from tltk.export.tflite import check_quantization, convert
from tltk.lora import merged_copy
from tltk.precision import float32_copy, reduced_dtype
from tltk.text import INPUT_NAME, is_text_model
from tltk.transfer_model import TransferModel, as_transfer_model

TEXT_FORMATS = ("saved_model", "tflite")
TFLITE_FILE = "model_tokens_float32.tflite"
TOKENIZER_DIR = "tokenizer"
PARITY_TEXTS = 500
# Used by the parity gate when no `parity_data` is given.
SAMPLE_TEXTS = (
    "The match ended in a draw after extra time.",
    "My phone battery drains faster since the update.",
    "Add the garlic and let the sauce simmer for ten minutes.",
    "Heavy rain is expected across the north tonight.",
    "The doctor said to rest and drink plenty of water.",
    "Shares fell sharply after the earnings report.",
    "",
    "ok",
)


def export_text(
    model,
    export_dir,
    *,
    formats=TEXT_FORMATS,
    labels=None,
    parity_data=None,
    parity="raise",
    overwrite=False,
):
    """Exports a text classifier: `tltk.export` for a model that takes strings.

    - `saved_model/`: `serving_default` maps `text` (string, `(batch,)`) to
      `{"probabilities": (batch, classes)}`, tokenizer inside. Loading it needs TensorFlow Text
      (`import tensorflow_text`) for keras-hub encoders, whose tokenizers use its ops.
    - `model_tokens_float32.tflite` (keras-hub encoders only): TFLite has no builtin kernels for
      the tokenizer's string ops (and phone runtimes no Flex delegate), so, as with keras-hub's
      own LiteRT export, the file takes the tokenizer's outputs: int32 `token_ids`,
      `padding_mask` (1 for real tokens) and, for BERT-like encoders, `segment_ids`, each
      `(1, sequence_length)`. `tokenizer/` holds the vocabulary; `export.json` the tokenizer
      config. A TF Hub text module tokenizes inside its SavedModel and gets no TFLite file.

    Every file passes the float32 parity gate of `tltk.export` on `parity_data` (or a few
    built-in sentences), and everything is written beside `export_dir`, then moved into place.
    Text files are float32 only: `tltk.export` refuses other quantizations for a text model.

    Args:
        model: keras.Model. A model from `tltk.build_text_classifier`.
        export_dir: str or Path. Folder to write.
        formats: tuple. Any of `"saved_model"`, `"tflite"`. Defaults to both.
        labels: list. Class names in output order. Defaults to `"0"`, `"1"`, ...
        parity_data: list of str. Held-out texts for the parity gate; up to 500 are used.
            Defaults to `None` (8 built-in sentences).
        parity: str. `"raise"` (a failing file raises `tltk.export.ParityError`, nothing is
            written) or `"warn"`. Defaults to `"raise"`.
        overwrite: bool. Replace an existing export at `export_dir`. Defaults to `False`.

    Returns:
        A `tltk.export.ExportReport`.

    Example:

    ```python
    report = tltk.export_text(model, "exports/topics", labels=class_names, parity_data=test_texts)
    serve = tf.saved_model.load("exports/topics/saved_model").signatures["serving_default"]
    serve(text=tf.constant(["a new phone"]))["probabilities"]
    ```
    """
    from tltk.export.exporter import export  # the driver imports this adapter

    if not is_text_model(model):
        raise ValueError(
            "`model` must take a batch of strings, as tltk.build_text_classifier makes. Received: "
            f"inputs {[tuple(t.shape) for t in getattr(model, 'inputs', [])]}"
        )
    return export(
        model,
        export_dir,
        formats=formats,
        labels=labels,
        parity_data=parity_data,
        parity=parity,
        overwrite=overwrite,
    )


class TextAdapter:
    """What `tltk.export` does differently for a text classifier (strings in, float32 only).

    Args:
        model: keras.Model. A model taking a `(batch,)` string tensor with one
            `(batch, classes)` output; the TFLite file needs a `tltk.TransferModel` with a
            keras-hub tokenizer.

    Attributes:
        num_classes: int. The output width.
        activation: str. The last layer's activation (`"linear"`: a softmax is added).
        precision: str or None. `"float16"` or `"bfloat16"` when the model computes in it (a
            mixed policy): the files are written from `tltk.precision.float32_copy(model)`.
        model: keras.Model. What the files are written from: the model with any LoRA update
            merged into its kernels (`tltk.lora.merged_copy`), in float32.
    """

    def __init__(self, model):
        self.precision = reduced_dtype(model)
        self.model = float32_copy(merged_copy(model))  # LoRA merged, as for images
        output_shape = tuple(model.outputs[0].shape)
        if len(model.outputs) != 1 or len(output_shape) != 2 or output_shape[1] is None:
            raise ValueError(
                "`model` must have one output of one score per class, shape (batch, classes). "
                f"Received: output shape(s) {[tuple(t.shape) for t in model.outputs]}"
            )
        self.num_classes = int(output_shape[1])
        self.activation = last_activation(model)
        self.tokenizer_config = None
        self._token_model = None

    def check_quantization(self, quantization):
        """Returns `("float32",)`; refuses every other quantization."""
        if check_quantization(quantization) != ("float32",):
            raise self._refusal(f"quantization={quantization!r}")
        return ("float32",)

    def prepare(self, quantizations, representative_data, parity_data):
        """Checks the data and that a TFLite file can be made; returns `(texts, source)`."""
        if representative_data is not None:
            raise self._refusal(f"representative_data={type(representative_data).__name__}")
        texts, source = _parity_texts(parity_data)
        if quantizations:
            self._token_model = _token_model(self.model)
        return texts, source

    def write_saved_model(self, path, class_names):
        """Writes the SavedModel: `text` (strings) -> `probabilities`, tokenizer inside."""
        model, activation = self.model, self.activation
        spec = tf.TensorSpec((None,), tf.string, name=INPUT_NAME)
        return write_archive(
            model,
            path,
            lambda text: serving_outputs(model(text, training=False), activation),
            [spec],
            class_names=class_names,
        )

    def write_tflite(self, saved_model, folder, quantizations, class_names):
        """Writes the token-id TFLite file and the tokenizer's vocabulary.

        Yields:
            `("float32", path)` once the file is written (nothing without quantizations).
        """
        if not quantizations:
            return
        token_model, activation = self._token_model, self.activation
        keys = list(token_model.input)
        specs = [tf.TensorSpec((1, token_model.input[k].shape[1]), tf.int32, name=k) for k in keys]

        def serve(*tensors):
            outputs = token_model(dict(zip(keys, tensors)), training=False)
            return serving_outputs(outputs, activation)

        staging = write_archive(token_model, folder / "tokens_saved_model", serve, specs)
        path = atomic.write_bytes(folder / TFLITE_FILE, convert(staging, "float32"))
        shutil.rmtree(staging)
        tokenizer = _preprocessing(self.model).preprocessor.tokenizer
        (folder / TOKENIZER_DIR).mkdir()
        tokenizer.save_assets(str(folder / TOKENIZER_DIR))
        self.tokenizer_config = keras.saving.serialize_keras_object(tokenizer)
        yield "float32", path

    def tflite_runner(self, path):
        """A runner of the token-id TFLite file on texts, tokenized by the model's tokenizer."""
        return TokenRunner(path, _preprocessing(self.model))

    def record_fields(self):
        """The record's text entries: backbone, input and tokenizer config."""
        encoder = _encoder(self.model)
        return {
            "backbone": None if encoder is None else self.model.backbone_name or encoder.name,
            "input": "text: UTF-8 strings (SavedModel); token ids from the tokenizer (TFLite)",
            "tokenizer": self.tokenizer_config,
        }

    def _refusal(self, received):
        return ValueError(
            f"{self.model.name!r} is a text classifier: its TFLite file is float32 and takes "
            f"token ids, so it has no quantized variants or calibration data. Received: {received}"
        )


class TokenRunner:
    """Probabilities from the token-id TFLite file, on texts tokenized by `preprocessing`.

    Args:
        path: str or Path. The `.tflite` file.
        preprocessing: keras.Layer. The model's keras-hub tokenizer layer.
    """

    def __init__(self, path, preprocessing):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=NUM_THREADS)
        self._run = self._interpreter.get_signature_runner(SIGNATURE_KEY)
        self._preprocessing = preprocessing

    def __call__(self, texts):
        tokens = self._preprocessing(tf.constant(texts))
        rows = []
        for i in range(len(texts)):
            feed = {k: np.asarray(v[i : i + 1]).astype("int32") for k, v in tokens.items()}
            rows.append(self._run(**feed)[OUTPUT_KEY][0])
        return np.stack(rows)

    def latency_ms(self, sample, *, runs, warmup=3):
        """Median milliseconds to tokenize and classify one text, over `runs` calls."""
        return median_ms(lambda: self([sample]), runs, warmup)


def _preprocessing(model):
    """The model's keras-hub tokenizer layer; `None` when the encoder tokenizes inside (TF Hub)
    or the model is a plain Keras model."""
    if not isinstance(model, TransferModel):
        return None
    layer = model.preprocessing
    return layer if isinstance(layer, kh.TextPreprocessing) else None


def _encoder(model):
    """The model's text encoder (its backbone); `None` for a plain Keras model."""
    return model.backbone if isinstance(model, TransferModel) else None


def _token_model(model):
    """The model after its tokenizer: token ids (int32) -> outputs. Raises for TF Hub modules."""
    model = as_transfer_model(model)
    preprocessing = _preprocessing(model)
    if preprocessing is None:
        raise ValueError(
            f"TFLite export of {model.name!r} is not possible: its encoder "
            f"{_encoder(model).name!r} (a TF Hub module) tokenizes inside its SavedModel with "
            "TensorFlow string ops, which TFLite has no builtin kernels for (and phone runtimes no "
            "Flex delegate). Export formats=('saved_model',), or use a keras-hub encoder, whose "
            "TFLite file takes token ids. Received: formats with 'tflite'"
        )
    length = preprocessing.sequence_length
    inputs = {
        key: keras.Input((length,), dtype="int32", name=key) for key in preprocessing.output_dtypes
    }
    tokens = {
        key: keras.ops.cast(inputs[key], dtype)
        for key, dtype in preprocessing.output_dtypes.items()
    }
    x = model.features(_encoder(model)(tokens), mask=tokens["padding_mask"])
    (head,) = model.heads.values()
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_tokens")


def _parity_texts(parity_data):
    if parity_data is None:
        return list(SAMPLE_TEXTS), "sample"
    texts = [parity_data] if isinstance(parity_data, str) else list(parity_data)[:PARITY_TEXTS]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"`parity_data` must be a non-empty list of strings. Received: {parity_data!r}"[:300]
        )
    return texts, "parity_data"
