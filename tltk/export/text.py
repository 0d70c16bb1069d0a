"""`export_text`: a text classifier as a SavedModel taking strings and a TFLite file taking token ids.

The tokenizer has no TFLite kernels, so the TFLite file starts after it; the tokenizer's config and
vocabulary are written beside it. `tltk.export` hands text models here.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from tltk import freezing
from tltk.backbones import keras_hub as kh
from tltk.export import atomic
from tltk.export.parity import ParityError, compare
from tltk.export.record import RECORD_FILE
from tltk.export.report import ExportedFile, ExportReport
from tltk.export.saved_model import (
    EXTRA_ASSETS,
    LABELS_FILE,
    OUTPUT_KEY,
    PROBABILITY_ACTIVATIONS,
    SIGNATURE_KEY,
    last_activation,
    write_labels,
)
from tltk.export.tflite import convert
from tltk.heads import POOL_NAME
from tltk.text import INPUT_NAME, PREPROCESSING_NAME, is_text_model

SAVED_MODEL_DIR = "saved_model"
TEXT_FORMATS = ("saved_model", "tflite")
TFLITE_FILE = "model_tokens_float32.tflite"
TOKENIZER_DIR = "tokenizer"
# Used by the parity gate when no `parity_data` is given.
_SAMPLE_TEXTS = (
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
    """Exports a text classifier as a SavedModel taking strings, and a TFLite file taking token ids.

    - `saved_model/`: `serving_default` maps `text` (string, `(batch,)`) to
      `{"probabilities": (batch, classes)}`, tokenizer inside. Loading it needs TensorFlow Text
      (`import tensorflow_text`) for keras-hub encoders, whose tokenizers use its ops.
    - `model_tokens_float32.tflite` (keras-hub encoders only): TFLite has no builtin kernels for
      the tokenizer's string ops (and phone runtimes no Flex delegate), so, as with keras-hub's
      own LiteRT export, the file takes the tokenizer's outputs: int32 `token_ids`,
      `padding_mask` (1 for real tokens) and, for BERT-like encoders, `segment_ids`, each
      `(1, sequence_length)`. `tokenizer/` holds the vocabulary; `export.json` the tokenizer
      config. A TF Hub text module tokenizes inside its SavedModel and gets no TFLite file.

    Every file is checked against Keras on `parity_data` (or a few built-in sentences) within
    1e-5, and everything is written beside `export_dir`, then moved into place.

    Args:
        model: keras.Model. A model from `tltk.build_text_classifier`.
        export_dir: str or Path. Folder to write.
        formats: tuple. Any of `"saved_model"`, `"tflite"`. Defaults to both.
        labels: list. Class names in output order. Defaults to `"0"`, `"1"`, ...
        parity_data: list of str. Held-out texts for the parity gate. Defaults to `None`.
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
    if not is_text_model(model):
        raise ValueError(
            "`model` must take a batch of strings, as tltk.build_text_classifier makes. Received: "
            f"inputs {[tuple(t.shape) for t in getattr(model, 'inputs', [])]}"
        )
    names = _check_formats(formats)
    if parity not in ("raise", "warn"):
        raise ValueError(f"`parity` must be 'raise' or 'warn'. Received: parity={parity!r}")
    num_classes = int(model.outputs[0].shape[-1])
    class_names = _check_labels(labels, num_classes)
    texts, source = _parity_texts(parity_data)
    token_model = _token_model(model) if "tflite" in names else None
    export_dir = atomic.check_destination(export_dir, overwrite=overwrite, record_name=RECORD_FILE)
    reference = _probabilities(model, model(tf.constant(texts), training=False))
    files, tokenizer_config = [], None
    with atomic.staged(export_dir) as folder:
        saved = folder / SAVED_MODEL_DIR
        _write_saved_model(model, saved, class_names)
        if "saved_model" in names:
            serve = tf.saved_model.load(str(saved)).signatures[SIGNATURE_KEY]
            run = lambda batch: serve(text=tf.constant(batch))[OUTPUT_KEY].numpy()  # noqa: E731
            parity_result = compare(reference, run(texts), "float32", data=source)
            files.append(
                _exported(export_dir / SAVED_MODEL_DIR, "saved_model", _size(saved), run, parity_result)
            )
        if token_model is not None:
            tflite = folder / TFLITE_FILE
            tokenizer_config = _write_tflite(model, token_model, folder, tflite)
            run = _tflite_runner(model, tflite)
            parity_result = compare(reference, run(texts), "float32", data=source)
            files.append(
                _exported(export_dir / TFLITE_FILE, "tflite", tflite.stat().st_size, run, parity_result)
            )
        if "saved_model" not in names:
            shutil.rmtree(saved)
        write_labels(folder / LABELS_FILE, class_names)
        report = ExportReport(export_dir, tuple(files), export_dir / LABELS_FILE, export_dir / RECORD_FILE)
        _write_record(folder / RECORD_FILE, model, class_names, report, tokenizer_config)
        failed = "\n".join(f"  {f.path.name}: {f.parity.describe()}" for f in report.failed)
        if failed and parity == "raise":
            raise ParityError(
                f"Exported file(s) disagree with the Keras model; nothing was written.\n{failed}",
                dataclasses.replace(report, written=False),
            )
        if failed:
            warnings.warn(f"Exported file(s) disagree with the Keras model:\n{failed}", stacklevel=2)
        atomic.swap_into_place(folder, export_dir)
    return report


def _check_formats(formats):
    names = (formats,) if isinstance(formats, str) else tuple(formats or ())
    if not names or any(f not in TEXT_FORMATS for f in names) or len(set(names)) != len(names):
        raise ValueError(
            f"`formats` must be distinct names from {TEXT_FORMATS}. Received: formats={formats!r}"
        )
    return names


def _check_labels(labels, num_classes):
    if labels is None:
        return [str(i) for i in range(num_classes)]
    labels = [labels] if isinstance(labels, str) else list(labels)
    if (
        len(labels) != num_classes
        or len(set(labels)) != num_classes
        or not all(isinstance(x, str) and x.strip() and "\n" not in x for x in labels)
    ):
        raise ValueError(
            f"`labels` must be {num_classes} distinct, non-empty class names. Received: labels={labels!r}"
        )
    return labels


def _parity_texts(parity_data):
    if parity_data is None:
        return list(_SAMPLE_TEXTS), "sample"
    texts = [parity_data] if isinstance(parity_data, str) else list(parity_data)[:500]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"`parity_data` must be a non-empty list of strings. Received: {parity_data!r}"[:300]
        )
    return texts, "parity_data"


def _outputs_are_probabilities(model):
    return last_activation(model) in PROBABILITY_ACTIVATIONS


def _probabilities(model, outputs):
    """Keras outputs as probabilities; logits get a softmax, as in the exported files."""
    outputs = np.asarray(outputs, "float32")
    return outputs if _outputs_are_probabilities(model) else tf.nn.softmax(outputs).numpy()


def _serving_fn(model):
    finish = (lambda x: x) if _outputs_are_probabilities(model) else tf.nn.softmax
    return lambda outputs: {OUTPUT_KEY: finish(tf.cast(outputs, tf.float32))}


def _write_saved_model(model, path, class_names):
    finish = _serving_fn(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE_KEY,
        lambda text: finish(model(text, training=False)),
        input_signature=[tf.TensorSpec((None,), tf.string, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)
    (path / EXTRA_ASSETS).mkdir(exist_ok=True)
    write_labels(path / EXTRA_ASSETS / LABELS_FILE, class_names)


def _token_model(model):
    """The model after its tokenizer: token ids (int32) -> outputs. Raises for TF Hub text modules."""
    names = [layer.name for layer in model.layers]
    if PREPROCESSING_NAME not in names or not isinstance(
        model.get_layer(PREPROCESSING_NAME), kh.TextPreprocessing
    ):
        backbone, _ = freezing.find_backbone(model)
        raise ValueError(
            f"TFLite export of {model.name!r} is not possible: its encoder {backbone.name!r} (a TF Hub "
            "module) tokenizes inside its SavedModel with TensorFlow string ops, which TFLite has no "
            "builtin kernels for (and phone runtimes no Flex delegate). Export formats=('saved_model',), "
            "or use a keras-hub encoder, whose TFLite file takes token ids. Received: formats with 'tflite'"
        )
    preprocessing = model.get_layer(PREPROCESSING_NAME)
    length = preprocessing.sequence_length
    inputs = {key: keras.Input((length,), dtype="int32", name=key) for key in preprocessing.output_dtypes}
    tokens = {key: keras.ops.cast(inputs[key], dtype) for key, dtype in preprocessing.output_dtypes.items()}
    encoder, _ = freezing.find_backbone(model)
    x = keras.layers.GlobalAveragePooling1D(name=POOL_NAME)(encoder(tokens), mask=tokens["padding_mask"])
    for layer in model.layers[names.index(POOL_NAME) + 1 :]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_tokens")


def _write_tflite(model, token_model, folder, path):
    """Writes the token-id TFLite file and the tokenizer vocabulary; returns the tokenizer config."""
    finish = _serving_fn(model)
    keys = list(token_model.input)
    archive = keras.export.ExportArchive()
    archive.track(token_model)
    archive.add_endpoint(
        SIGNATURE_KEY,
        lambda *tensors: finish(token_model(dict(zip(keys, tensors)), training=False)),
        input_signature=[tf.TensorSpec((1, token_model.input[k].shape[1]), tf.int32, name=k) for k in keys],
    )
    staging = folder / "tokens_saved_model"
    archive.write_out(str(staging), verbose=False)
    path.write_bytes(convert(staging, "float32"))
    shutil.rmtree(staging)
    tokenizer = model.get_layer(PREPROCESSING_NAME).preprocessor.tokenizer
    (folder / TOKENIZER_DIR).mkdir()
    tokenizer.save_assets(str(folder / TOKENIZER_DIR))
    return keras.saving.serialize_keras_object(tokenizer)


def _tflite_runner(model, path):
    """Texts -> probabilities through the TFLite file, tokenized by the model's own tokenizer."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE_KEY)
    preprocessing = model.get_layer(PREPROCESSING_NAME)

    def run(texts):
        tokens = preprocessing(tf.constant(texts))
        rows = []
        for i in range(len(texts)):
            feed = {k: np.asarray(v[i : i + 1]).astype("int32") for k, v in tokens.items()}
            rows.append(runner(**feed)[OUTPUT_KEY][0])
        return np.stack(rows)

    return run


def _exported(path, kind, size, run, parity_result):
    """An `ExportedFile`, with the median latency of one sentence over 10 runs."""
    run(_SAMPLE_TEXTS[:1])
    times = []
    for _ in range(10):
        start = time.perf_counter()
        run(_SAMPLE_TEXTS[:1])
        times.append(time.perf_counter() - start)
    return ExportedFile(path, kind, "float32", int(size), float(np.median(times) * 1000), parity_result)


def _size(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_record(path, model, class_names, report, tokenizer_config):
    from tltk import __version__

    backbone, _ = freezing.find_backbone(model)
    record = {
        "model_name": model.name,
        "backbone": backbone.name,
        "input": "text: a batch of UTF-8 strings (SavedModel); token ids (TFLite, see tokenizer)",
        "class_names": class_names,
        "num_classes": len(class_names),
        "output": "probabilities",
        "files": [{**f.to_dict(), "path": f.path.name} for f in report.files],
        "tokenizer": tokenizer_config,
        "parity_passed": report.passed,
        "versions": {"tltk": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
