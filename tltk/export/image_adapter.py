"""The image adapter of `tltk.export`: raw pixels in, every quantization, metadata for MediaPipe.

The export driver (`tltk.export.exporter`) does the steps every modality shares; this adapter
supplies what is particular to image classifiers: the checks on the model and on the calibration
images, the SavedModel signature on raw pixels, the TFLite conversion at each quantization with
the metadata MediaPipe Tasks reads, the parity images, and the record's fields.
"""

from __future__ import annotations

import numpy as np

from tltk import atomic
from tltk.export.heads import output_heads
from tltk.export.images import sample_images
from tltk.export.parity import RANDOM
from tltk.export.runtime import TFLiteRunner
from tltk.export.saved_model import check_classifier, check_image_input, write_saved_model
from tltk.export.tflite import check_quantization, convert
from tltk.lora import merged_copy
from tltk.precision import float32_copy, reduced_dtype
from tltk.transfer_model import TransferModel

REPRESENTATIVE_IMAGES = 300
PARITY_IMAGES = 500
RANDOM_IMAGES = 32


class ImageAdapter:
    """What `tltk.export` does differently for an image classifier.

    Args:
        model: keras.Model. A classifier with one fixed-size image input taking raw pixels and one
            `(batch, classes)` output, or a `tltk.TransferModel` with several heads (a dict
            output); a `tltk.TransferModel` also names its backbone and preprocessing in the
            record.

    Attributes:
        heads: tuple or None. The `tltk.export.heads.OutputHead`s of a model with several heads;
            `None` for one output.
        num_classes: int or None. The output width (`None` with several heads).
        activation: str or None. The last layer's activation (`"linear"`: a softmax is added);
            `None` with several heads (each head's is in `heads`).
        precision: str or None. `"float16"` or `"bfloat16"` when the model computes in it (a
            mixed policy): the files are written from `tltk.precision.float32_copy(model)`.
        model: keras.Model. What the files are written from: the model, with any LoRA update
            merged into its kernels (`tltk.lora.merged_copy`: the graph of a plain model), in
            float32.

    Example:

    ```python
    adapter = ImageAdapter(model)
    inputs, source = adapter.prepare(("float32",), None, test_images)
    ```
    """

    def __init__(self, model):
        self.heads = output_heads(model)
        if self.heads is None:
            self.input_shape, self.num_classes, self.activation = check_classifier(model)
        else:
            self.input_shape, self.num_classes, self.activation = (
                check_image_input(model),
                None,
                None,
            )
        self.precision = reduced_dtype(model)
        self.model = float32_copy(merged_copy(model))
        self.representative = None

    def check_quantization(self, quantization):
        """Returns the quantization names as a tuple; every kind is allowed for images."""
        return check_quantization(quantization)

    def prepare(self, quantizations, representative_data, parity_data):
        """Reads the calibration images and returns the parity inputs and their source.

        Args:
            quantizations: tuple. The TFLite files to write (empty without `"tflite"`).
            representative_data: see `tltk.export`. Up to 300 images are drawn for int8.
            parity_data: see `tltk.export`. Up to 500 images are drawn.

        Returns:
            `(images, source)`: float32 `(N, H, W, C)` raw pixels, and `"parity_data"`,
            `"representative_data"` or `"random"` (32 random-pixel images, a numeric check).
        """
        if representative_data is not None:
            self.representative = sample_images(
                representative_data,
                self.input_shape,
                limit=REPRESENTATIVE_IMAGES,
                name="representative_data",
            )
        if "int8" in quantizations and self.representative is None:
            raise ValueError(
                "int8 quantization needs `representative_data`: a few hundred of your training "
                "images, to calibrate activation ranges. Received: representative_data=None"
            )
        if parity_data is not None:
            images = sample_images(
                parity_data, self.input_shape, limit=PARITY_IMAGES, name="parity_data"
            )
            return images, "parity_data"
        if self.representative is not None:
            return self.representative, "representative_data"
        rng = np.random.default_rng(0)
        return rng.uniform(0, 255, (RANDOM_IMAGES, *self.input_shape)).astype("float32"), RANDOM

    def write_saved_model(self, path, class_names):
        """Writes the SavedModel: `image` (float32 raw pixels) -> `probabilities` (or one output
        per head)."""
        return write_saved_model(self.model, path, class_names=class_names)

    def write_tflite(self, saved_model, folder, quantizations, class_names):
        """Writes `model_<quantization>.tflite` per quantization, with metadata and labels.

        Yields:
            `(quantization, path)` for each file, once it is written.
        """
        from tltk.export.metadata import add_metadata  # imports mediapipe: only when needed

        if self.heads is None:
            outputs = f"{self.num_classes} classes"
        else:
            outputs = "heads " + ", ".join(f"{h.name} ({h.task}, {h.units})" for h in self.heads)
        description = (
            f"Image classifier exported by tltk ({self._backbone_name() or self.model.name}, "
            f"{outputs}); takes raw pixels 0..255."
        )
        for quantization in quantizations:
            content = convert(saved_model, quantization, representative_images=self.representative)
            content = add_metadata(
                content,
                class_names,
                name=self.model.name,
                description=description,
                heads=self.heads,
            )
            path = atomic.write_bytes(folder / f"model_{quantization}.tflite", content)
            yield quantization, path

    def tflite_runner(self, path):
        """A runner of a TFLite file on raw-pixel images."""
        return TFLiteRunner(path)

    def record_fields(self):
        """The record's image entries: backbone, preprocessing, input size and channels."""
        height, width, channels = self.input_shape
        colour = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels} channels")
        return {
            "backbone": self._backbone_name(),
            "preprocessing": self._preprocessing_mode(),
            "input_size": [height, width],
            "channels": channels,
            "input": f"raw pixels 0..255, {colour}, float32 (uint8 for int8 TFLite)",
        }

    def _backbone_name(self):
        """The backbone's registry name (or layer name); `None` for a plain Keras model."""
        if not isinstance(self.model, TransferModel):
            return None
        return self.model.backbone_name or self.model.backbone.name

    def _preprocessing_mode(self):
        """The in-graph preprocessing mode (`"tf"`, `"caffe"`...); `None` when there is none."""
        layer = self.model.preprocessing if isinstance(self.model, TransferModel) else None
        if layer is None:
            return None
        return layer.get_config().get("mode", type(layer).__name__)
