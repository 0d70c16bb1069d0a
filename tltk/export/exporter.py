"""`tltk.export`: SavedModel and TFLite files, checked against Keras, written atomically."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np

from tltk.export import atomic
from tltk.export.images import sample_images
from tltk.export.parity import ParityError, compare
from tltk.export.record import RECORD_FILE, describe_model, write_record
from tltk.export.report import ExportedFile, ExportReport
from tltk.export.runtime import KerasRunner, SavedModelRunner, TFLiteRunner
from tltk.export.saved_model import LABELS_FILE, check_classifier, write_labels, write_saved_model
from tltk.export.text import export_text
from tltk.export.tflite import check_quantization, convert
from tltk.text import is_text_model

FORMATS = ("saved_model", "tflite")
PARITY_MODES = ("raise", "warn")
SAVED_MODEL_DIR = "saved_model"
REPRESENTATIVE_IMAGES = 300
PARITY_IMAGES = 500
RANDOM_IMAGES = 32
LATENCY_RUNS = 20


def export(
    model,
    export_dir,
    *,
    formats=FORMATS,
    quantization="float32",
    representative_data=None,
    labels=None,
    parity_data=None,
    parity="raise",
    overwrite=False,
):
    """Exports a classifier as a SavedModel and TFLite files, each checked against Keras.

    Every file takes raw pixels (0..255) and returns probabilities, with the model's
    preprocessing inside. The folder gets:

    - `saved_model/`: a `serving_default` signature, `image` (float32, `(batch, H, W, C)`) ->
      `{"probabilities": (batch, classes)}`; it loads with `tf.saved_model.load` and with
      `keras.layers.TFSMLayer(path, call_endpoint="serving_default")`.
    - `model_<quantization>.tflite`, one per quantization, converted from that SavedModel with
      TFLite builtin ops only, carrying TFLite metadata (input normalization: mean 0, std 1; the
      labels file), so MediaPipe Tasks' `ImageClassifier` runs it and returns class names.
      `"int8"` is full integer: uint8 raw-pixel input, uint8 probabilities (scale 1/256).
    - `labels.txt` and `export.json` (backbone, input size, class names, preprocessing,
      quantization, parity figures, tltk / TensorFlow / Keras versions).

    The parity gate runs Keras and every file on the same images: float32 files (and the
    SavedModel) must match the probabilities within 1e-5, float16 within 1e-3; dynamic and int8
    files must agree on the top class for at least 98% of images. The images are `parity_data`
    (held out, preferably), else `representative_data`; with neither, float files are checked on
    32 random-pixel images (a numeric check), and a dynamic file cannot be judged: `parity="raise"`
    refuses up front, `"warn"` warns and leaves it unchecked.

    Everything is written to a folder beside `export_dir` and renamed into place: a failure, a
    failed gate with `parity="raise"`, or a killed process leaves any previous export whole.

    Args:
        model: keras.Model. A classifier with one fixed-size image input taking raw pixels and one
            `(batch, classes)` output (softmax, sigmoid, or logits: a softmax is then added).
        export_dir: str or Path. Folder to write.
        formats: tuple. Any of `"saved_model"`, `"tflite"`. Defaults to both.
        quantization: str or list. `"float32"`, `"float16"`, `"dynamic"`, `"int8"`, or a list of
            them (one `.tflite` each). Defaults to `"float32"`.
        representative_data: `tf.data.Dataset` (of images or `(images, labels)`, batched or not),
            numpy array or list of image paths. Training images for int8 calibration; 300 are
            drawn from the first 1,200. Required for `"int8"`. Defaults to `None`.
        labels: list. Class names in output order. Defaults to `"0"`, `"1"`, ...
        parity_data: same types as `representative_data`. Held-out images for the parity gate;
            up to 500 are used. Defaults to `None` (use `representative_data`).
        parity: str. `"raise"`: a failing file raises `tltk.export.ParityError` (with the report)
            and nothing is written; `"warn"`: the export is kept and a warning names the file.
            Defaults to `"raise"`.
        overwrite: bool. Replace an existing export at `export_dir`. Defaults to `False`.

    Returns:
        An `ExportReport`: paths, sizes, parity figures and single-image CPU latency per file.

    Example:

    ```python
    import numpy as np, tltk
    model = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    images = np.random.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    report = tltk.export(model, "/tmp/tltk_export", quantization=["float32", "int8"],
                         representative_data=images, labels=["a", "b", "c"], overwrite=True)
    print(report)
    predictor = tltk.load_exported("/tmp/tltk_export/model_int8.tflite")
    names, probabilities = predictor.predict(images[:4])
    ```
    """
    if is_text_model(model):  # text models take strings: their own path, float32 only
        if quantization not in ("float32", ["float32"], ("float32",)) or representative_data is not None:
            raise ValueError(
                f"{model.name!r} is a text classifier: its TFLite file is float32 and takes token ids, "
                "so it has no quantized variants or calibration data. Received: "
                f"quantization={quantization!r}, representative_data={type(representative_data).__name__}"
            )
        return export_text(model, export_dir, formats=formats, labels=labels, parity_data=parity_data, parity=parity, overwrite=overwrite)
    input_shape, num_classes, activation = check_classifier(model)
    formats = _check_formats(formats)
    quantizations = check_quantization(quantization) if "tflite" in formats else ()
    if parity not in PARITY_MODES:
        raise ValueError(f"`parity` must be one of {PARITY_MODES}. Received: parity={parity!r}")
    class_names = _check_labels(labels, num_classes)
    export_dir = atomic.check_destination(export_dir, overwrite=overwrite, record_name=RECORD_FILE)
    representative = None
    if representative_data is not None:
        representative = sample_images(
            representative_data,
            input_shape,
            limit=REPRESENTATIVE_IMAGES,
            name="representative_data",
        )
    if "int8" in quantizations and representative is None:
        raise ValueError(
            "int8 quantization needs `representative_data`: a few hundred of your training "
            "images, to calibrate activation ranges. Received: representative_data=None"
        )
    images, source = _parity_images(parity_data, representative, input_shape)
    if source == "random" and "dynamic" in quantizations and parity == "raise":
        raise ValueError(
            "The parity gate of a 'dynamic' file compares top-1 classes, which needs real images: "
            "pass `parity_data` (held-out images) or `representative_data`, or parity='warn' to "
            "export it unchecked. Received: parity_data=None, representative_data=None"
        )
    reference = KerasRunner(model)(images)
    names = describe_model(model)
    description = (
        f"Image classifier exported by tltk ({names['backbone'] or model.name}, "
        f"{num_classes} classes); takes raw pixels 0..255."
    )

    def check(runner, quantization):
        if source == "random" and quantization == "dynamic":
            return None
        return compare(reference, runner(images), quantization, data=source)

    if quantizations:
        from tltk.export.metadata import add_metadata  # imports mediapipe: only when needed

    with atomic.staged(export_dir) as folder:
        files = []
        saved_model = write_saved_model(model, folder / SAVED_MODEL_DIR, class_names=class_names)
        if "saved_model" in formats:
            runner = SavedModelRunner(saved_model)
            files.append(
                ExportedFile(
                    path=export_dir / SAVED_MODEL_DIR,
                    format="saved_model",
                    quantization="float32",
                    size_bytes=_folder_size(saved_model),
                    latency_ms=runner.latency_ms(images[0], runs=LATENCY_RUNS),
                    parity=check(runner, "float32"),
                )
            )
        for name in quantizations:
            content = convert(saved_model, name, representative_images=representative)
            content = add_metadata(content, class_names, name=model.name, description=description)
            path = folder / f"model_{name}.tflite"
            path.write_bytes(content)
            runner = TFLiteRunner(path)
            files.append(
                ExportedFile(
                    path=export_dir / path.name,
                    format="tflite",
                    quantization=name,
                    size_bytes=len(content),
                    latency_ms=runner.latency_ms(images[0], runs=LATENCY_RUNS),
                    parity=check(runner, name),
                )
            )
        if "saved_model" not in formats:
            shutil.rmtree(saved_model)
        write_labels(folder / LABELS_FILE, class_names)
        report = ExportReport(
            export_dir=export_dir,
            files=tuple(files),
            labels_path=export_dir / LABELS_FILE,
            record_path=export_dir / RECORD_FILE,
        )
        write_record(
            folder / RECORD_FILE,
            model,
            input_shape=input_shape,
            class_names=class_names,
            output_activation=activation,
            report=report,
        )
        _gate(report, parity)
        atomic.swap_into_place(folder, export_dir)
    return report


def _gate(report, parity):
    unchecked = [f.path.name for f in report.files if f.parity is None]
    if unchecked:
        warnings.warn(
            f"Parity gate not run for {', '.join(unchecked)}: no parity_data or "
            "representative_data to compare top-1 classes on.",
            stacklevel=3,
        )
    if not report.failed:
        return
    lines = "\n".join(f"  {f.path.name}: {f.parity.describe()}" for f in report.failed)
    if parity == "raise":
        raise ParityError(
            f"Exported file(s) disagree with the Keras model; nothing was written to "
            f"{report.export_dir} (any previous export is untouched). Pass parity='warn' to keep "
            f"them anyway.\n{lines}",
            _unwritten(report),
        )
    warnings.warn(f"Exported file(s) disagree with the Keras model:\n{lines}", stacklevel=3)


def _unwritten(report):
    return ExportReport(
        export_dir=report.export_dir,
        files=report.files,
        labels_path=report.labels_path,
        record_path=report.record_path,
        written=False,
    )


def _parity_images(parity_data, representative, input_shape):
    if parity_data is not None:
        images = sample_images(parity_data, input_shape, limit=PARITY_IMAGES, name="parity_data")
        return images, "parity_data"
    if representative is not None:
        return representative, "representative_data"
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (RANDOM_IMAGES, *input_shape)).astype("float32"), "random"


def _check_formats(formats):
    names = (formats,) if isinstance(formats, str) else tuple(formats or ())
    if not names or any(f not in FORMATS for f in names) or len(set(names)) != len(names):
        raise ValueError(
            f"`formats` must be a non-empty list of distinct names from {FORMATS}. "
            f"Received: formats={formats!r}"
        )
    return names


def _check_labels(labels, num_classes):
    if labels is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"`labels` must be a list of class names. Received: labels={labels!r}")
    labels = list(labels)
    if len(labels) != num_classes:
        raise ValueError(
            f"`labels` must name each of the model's {num_classes} classes. "
            f"Received: {len(labels)} labels"
        )
    bad = [x for x in labels if not x.strip() or "\n" in x or "\r" in x]
    if bad or len(set(labels)) != len(labels):
        raise ValueError(
            "`labels` must be distinct, non-empty names without line breaks. "
            f"Received: labels={labels!r}"
        )
    return labels


def _folder_size(folder):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    )
