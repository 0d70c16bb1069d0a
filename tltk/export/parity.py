"""The parity gate: does an exported file compute what the Keras model computes?"""

from __future__ import annotations

import dataclasses

import numpy as np

# quantization -> (gated figure, threshold). Float files must match the probabilities closely;
# quantized files are judged on agreeing with Keras about the top class.
THRESHOLDS = {
    "float32": ("max_abs_diff", 1e-5),
    "float16": ("max_abs_diff", 1e-3),
    "dynamic": ("top1_agreement", 0.98),
    "int8": ("top1_agreement", 0.98),
}


class ParityError(ValueError):
    """An exported file disagrees with the Keras model beyond its tolerance.

    Attributes:
        report: ExportReport. The figures of every file, including the failing ones.
    """

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True)
class Parity:
    """How closely one exported file follows the Keras model on the same images.

    Attributes:
        quantization: str. The file's quantization; the SavedModel counts as `"float32"`.
        max_abs_diff: float. Largest |difference| of any probability.
        mean_abs_diff: float. Mean |difference| of the probabilities.
        top1_agreement: float. Fraction of images with the same top class.
        num_images: int. Images compared.
        data: str. Where they came from: `"parity_data"`, `"representative_data"` or `"random"`.
        metric: str. The gated figure, `"max_abs_diff"` or `"top1_agreement"`.
        threshold: float. Its limit (at most, for a difference; at least, for an agreement).
        passed: bool. Whether the file passes the gate.
    """

    quantization: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    num_images: int
    data: str
    metric: str
    threshold: float
    passed: bool

    def describe(self):
        """One line: the gated figure against its threshold, and the other figures."""
        op = "<=" if self.metric == "max_abs_diff" else ">="
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{verdict}: {self.metric} {getattr(self, self.metric):.3g} (needs {op} "
            f"{self.threshold:g}); max|diff| {self.max_abs_diff:.3g}, top-1 agreement "
            f"{self.top1_agreement:.2%} on {self.num_images} {self.data} images"
        )


def compare(reference, outputs, quantization, *, data):
    """Compares a file's probabilities with the Keras model's on the same images.

    Args:
        reference: numpy array. Keras probabilities, `(N, classes)`.
        outputs: numpy array. The exported file's probabilities, same shape.
        quantization: str. One of `THRESHOLDS`; picks the gated figure and its threshold.
        data: str. Where the images came from, recorded in the result.

    Returns:
        A `Parity`.

    Example:

    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> compare(p, p + 1e-6, "float32", data="parity_data").passed
    True
    """
    reference = np.asarray(reference, "float64")
    outputs = np.asarray(outputs, "float64")
    if reference.shape != outputs.shape:
        raise ValueError(
            "The exported file's output shape differs from the Keras model's. "
            f"Received: {outputs.shape} vs {reference.shape}"
        )
    difference = np.abs(reference - outputs)
    figures = {
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": float(np.mean(reference.argmax(-1) == outputs.argmax(-1))),
    }
    metric, threshold = THRESHOLDS[quantization]
    value = figures[metric]
    passed = value <= threshold if metric == "max_abs_diff" else value >= threshold
    return Parity(
        quantization=quantization,
        num_images=len(reference),
        data=data,
        metric=metric,
        threshold=threshold,
        passed=bool(passed),
        **figures,
    )
