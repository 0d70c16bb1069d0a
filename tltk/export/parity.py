"""The parity gate: does an exported file compute what the Keras model computes?

Each quantization has a gate of one or two figures, measured on the same inputs for Keras and the
file: the largest |difference| of any probability (at most a bound) and the fraction of inputs
with the same top class (at least a bound). The bounds come from measurements: they leave room for
what differs between CPUs (the order in which a kernel sums), and fail the file of a model whose
weights moved by 1%:

- float32: max |difference| <= 2e-4 and top-1 agreement >= 99.5%. Measured float32 files differ
  from Keras by 8.3e-6 (a MobileNetV2 trained on digits at 224x224 on an AVX2 CPU; 1.14e-5 for
  the same model on an AVX-512 CPU), 6.3e-6 / 8.8e-6 (another such MobileNetV2 on an AVX-512
  CPU, oneDNN on / off), 1.8e-6 (the demo backbone) and 3.18e-5 (a MobileNetV2 fine-tuned from
  ImageNet weights on photographs, 96x96, 12 classes), all with 100% top-1 agreement. 2e-4 is 6x
  the largest: room for the 1.4x measured between two CPUs and for deeper or more confident
  models. A file whose weights moved by 0.5% differs by 9.8e-3, 50x over the bound, and float16
  weights alone move the probabilities by 4.4e-4 or more: a file that lost precision fails.
- float16: max |difference| <= 2e-2 and top-1 agreement >= 99.5%. Float16 weights move the
  probabilities by 4.4e-4 (a small CNN), 1.26e-3 (demo backbone), 7.1e-3 and 1.3e-2 (two
  MobileNetV2s at 224x224), always with 100% top-1 agreement: like the quantized kinds, a float16
  file is judged on its top class. The bound, 1.5x the largest measured, catches what top-1
  agreement lets through: the file of a model whose weights moved by 1% or 2% differs by 3.1e-2
  or 4.2e-2 while agreeing on 99.75% or 99.5% of top classes (another model: 0.89, 10%).
- dynamic, int8: top-1 agreement >= 98%; their probabilities move by up to 0.5 on healthy files.
- A mixed-precision model (float16 or bfloat16 compute: `precision`) is exported from its float32
  copy, so its files differ from it by its own rounding, and their max |difference| bound is at
  least `MIXED_MAX_ABS_DIFF` for that precision (top-1 agreement is gated as above).
  `tltk_glyphnet` fine-tuned on the digits (`bench/bench_mixed_precision.py`, 3 seeds, 540
  held-out digits each) differs from its float32 files by 6.4e-3, 1.4e-2 and 2.1e-2
  (mixed_bfloat16) and 7.2e-4, 3.0e-4 and 1.2e-3 (mixed_float16), always with 100% top-1
  agreement. The bounds, 8e-2 and 5e-3, are about 4x the largest: room for deeper models, whose
  rounding adds up over more layers (bfloat16 keeps 8 significant bits, float16 11). At 8e-2 a
  bfloat16 model's gate no longer tells a file whose weights moved by 1% (3.1e-2, above): its
  top-1 agreement (99.5%) still fails a broken copy.

On random pixels (no real images given), top-1 agreement is not gated: noise gives near ties
whose order means nothing. Dynamic and int8 files, judged on top-1 alone, are then not judged.

A file of a model with several heads is judged head by head (`compare_heads`), each with the
bounds above, and passes when every head passes. A classification head is judged as above. A
multi-label head's sigmoid scores are bounded like probabilities; its agreement is the fraction
of (input, label) decisions at 0.5 made alike. A regression head's differences are divided by the
spread (max - min) of Keras' values of each output over the inputs, so that the same bounds hold
whatever its units; its agreement is the fraction of inputs whose every value lies within 5% of
that spread (`REGRESSION_TOLERANCE`). Measured on `tltk_glyphnet` with four heads trained on the
digits (`tests/test_export_heads.py`, 397 held-out digits), the regression head (mean brightness)
differs from Keras by 1.0e-6 of its spread in the float32 file, 4.3e-4 in the float16 file and
9.6e-3 in the dynamic one (the probabilities of the other heads: 9.5e-7, 1.1e-3, 3.2e-2). In the
int8 file, whose uint8 output covers only the range seen in calibration, it differs by up to
6.2e-2 (a value beyond that range is clipped) and agrees within 5% on 99.75% of the digits; when
the head extrapolates far beyond the calibration images (a head trained too little), agreement
drops (96.5% measured): calibrate on images spanning the targets. The multi-label head's
decisions agree on 100% (float files) and 99.66% (dynamic, int8). Weights moved by 0.5% move the
regression values by 2.6e-2 of their spread: the float16 bound, 2e-2, fails such a file. The
float bounds are those of probabilities (whose spread is at most 1): 200x and 46x the float32 and
float16 figures above; 5% of the spread is about 13 steps of an int8 output.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np

RANDOM = "random"
# A regression value "agrees" within this fraction of the spread of Keras' values; int8 outputs
# step by 1/255 of the calibrated range, and healthy files stay within a few steps.
REGRESSION_TOLERANCE = 0.05
LABEL_THRESHOLD = 0.5
AGREEMENT = {
    "classification": "top-1 agreement",
    "multi_label": "label agreement",
    "regression": f"agreement within {REGRESSION_TOLERANCE:.0%} of the spread",
}


class Gate(typing.NamedTuple):
    """The bounds a file must meet; `None` where a figure is not gated."""

    max_abs_diff: float | None
    top1_agreement: float | None


# See the module docstring for where each number comes from.
GATES = {
    "float32": Gate(max_abs_diff=2e-4, top1_agreement=0.995),
    "float16": Gate(max_abs_diff=2e-2, top1_agreement=0.995),
    "dynamic": Gate(max_abs_diff=None, top1_agreement=0.98),
    "int8": Gate(max_abs_diff=None, top1_agreement=0.98),
}
MIXED_MAX_ABS_DIFF = {"bfloat16": 8e-2, "float16": 5e-3}


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
    """How closely one exported file follows the Keras model on the same inputs.

    Attributes:
        quantization: str. The file's quantization; the SavedModel counts as `"float32"`.
        max_abs_diff: float. Largest |difference| of any probability.
        mean_abs_diff: float. Mean |difference| of the probabilities.
        top1_agreement: float. Fraction of inputs with the same top class.
        num_images: int. Inputs compared (images, or texts for a text classifier).
        data: str. Where they came from: `"parity_data"`, `"representative_data"`, `"random"`
            (random pixels) or `"sample"` (built-in sentences).
        max_abs_diff_bound: float or None. The most `max_abs_diff` may be; `None`: not gated.
        top1_agreement_bound: float or None. The least `top1_agreement` may be; `None`: not gated.
        passed: bool. Whether the file meets every bound.
        precision: str or None. `"float16"` or `"bfloat16"` when the Keras model computed in it
            (a mixed policy; its bounds are then `MIXED_MAX_ABS_DIFF`), else `None`.
    """

    quantization: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    num_images: int
    data: str
    max_abs_diff_bound: float | None
    top1_agreement_bound: float | None
    passed: bool
    precision: str | None = None

    def describe(self, task="classification"):
        """One line: each figure, against its bound where it is gated (named for `task`)."""
        verdict = "passed" if self.passed else "FAILED"
        diff = "max|diff|" + ("/spread" if task == "regression" else "")
        diff += f" {self.max_abs_diff:.3g}"
        if self.max_abs_diff_bound is not None:
            diff += f" (needs <= {self.max_abs_diff_bound:g})"
        top1 = f"{AGREEMENT[task]} {self.top1_agreement:.2%}"
        if self.top1_agreement_bound is not None:
            top1 += f" (needs >= {self.top1_agreement_bound:.1%})"
        versus = f" (vs the {self.precision} Keras model)" if self.precision else ""
        return f"{verdict}: {diff}, {top1} on {self.num_images} {self.data} inputs{versus}"


def gate(quantization, data, precision=None):
    """The `Gate` applied to a file of `quantization` checked on `data`; `None` if none applies.

    Args:
        quantization: str. One of `GATES`.
        data: str. Where the inputs come from; on `"random"` pixels top-1 agreement is not gated.
        precision: str or None. `"float16"` or `"bfloat16"` for a mixed-precision Keras model:
            the max |difference| bound is then at least `MIXED_MAX_ABS_DIFF[precision]`.
            Defaults to `None` (float32).

    Returns:
        A `Gate`, or `None` when no figure can judge the file (a dynamic or int8 file on random
        pixels).

    Example:

    >>> gate("int8", "random") is None
    True
    >>> gate("float32", "parity_data", precision="bfloat16")
    Gate(max_abs_diff=0.08, top1_agreement=0.995)
    """
    bounds = GATES[quantization]
    if precision is not None and bounds.max_abs_diff is not None:
        bounds = bounds._replace(
            max_abs_diff=max(bounds.max_abs_diff, MIXED_MAX_ABS_DIFF[precision])
        )
    if data == RANDOM:
        bounds = bounds._replace(top1_agreement=None)
    return None if bounds == (None, None) else bounds


@dataclasses.dataclass(frozen=True)
class HeadsParity:
    """How closely one file of a model with several heads follows the Keras model, per head.

    Attributes:
        heads: dict. `{head: Parity}`; a regression head's differences are relative to the
            spread of Keras' values (see the module docstring).
        tasks: dict. `{head: task}`.
        passed: bool. Whether every head passed.
    """

    heads: dict
    tasks: dict
    passed: bool

    def describe(self):
        """One line per head: `head: figures`."""
        return "; ".join(f"{h}: {p.describe(self.tasks[h])}" for h, p in self.heads.items())


def compare_heads(reference, outputs, quantization, *, data, heads, precision=None):
    """Compares a file's outputs with the Keras model's, head by head (`compare`).

    Args:
        reference: dict. Keras outputs `{head: (N, units)}`.
        outputs: dict. The file's outputs, same heads and shapes.
        quantization: str. One of `GATES`.
        data: str. Where the inputs came from (see `gate`).
        heads: tuple. The `tltk.export.heads.OutputHead`s (their tasks).
        precision: str or None. See `gate`. Defaults to `None`.

    Returns:
        A `HeadsParity`.
    """
    results = {
        head.name: compare(
            reference[head.name],
            outputs[head.name],
            quantization,
            data=data,
            precision=precision,
            task=head.task,
        )
        for head in heads
    }
    return HeadsParity(
        heads=results,
        tasks={head.name: head.task for head in heads},
        passed=all(p.passed for p in results.values()),
    )


def compare(reference, outputs, quantization, *, data, precision=None, task="classification"):
    """Compares a file's probabilities with the Keras model's on the same inputs.

    Args:
        reference: numpy array. Keras probabilities, `(N, classes)`.
        outputs: numpy array. The exported file's probabilities, same shape.
        quantization: str. One of `GATES`; picks the bounds.
        data: str. Where the inputs came from, recorded in the result (see `gate`).
        precision: str or None. The Keras model's reduced compute dtype, if any (see `gate`).
            Defaults to `None`.
        task: str. `"classification"`, `"multi_label"` (agreement: labels decided alike at 0.5)
            or `"regression"` (differences relative to the spread of `reference`; agreement:
            inputs within `REGRESSION_TOLERANCE` of it). Defaults to `"classification"`.

    Returns:
        A `Parity`.

    Example:

    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> compare(p, p + 1e-6, "float32", data="parity_data").passed
    True
    >>> compare(p, p[::-1], "float16", data="parity_data").passed
    False
    """
    reference = np.asarray(reference, "float64")
    outputs = np.asarray(outputs, "float64")
    if reference.shape != outputs.shape:
        raise ValueError(
            "The exported file's output shape differs from the Keras model's. "
            f"Received: {outputs.shape} vs {reference.shape}"
        )
    difference = np.abs(reference - outputs)
    if task == "regression":
        difference = difference / _spread(reference)
        agreement = np.mean((difference <= REGRESSION_TOLERANCE).all(-1))
    elif task == "multi_label":
        agreement = np.mean((reference >= LABEL_THRESHOLD) == (outputs >= LABEL_THRESHOLD))
    else:
        agreement = np.mean(reference.argmax(-1) == outputs.argmax(-1))
    figures = {
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": float(agreement),
    }
    bounds = gate(quantization, data, precision) or Gate(None, None)
    passed = (bounds.max_abs_diff is None or figures["max_abs_diff"] <= bounds.max_abs_diff) and (
        bounds.top1_agreement is None or figures["top1_agreement"] >= bounds.top1_agreement
    )
    return Parity(
        quantization=quantization,
        num_images=len(reference),
        data=data,
        max_abs_diff_bound=bounds.max_abs_diff,
        top1_agreement_bound=bounds.top1_agreement,
        passed=bool(passed),
        precision=precision,
        **figures,
    )


def _spread(values):
    """Max - min of each output over the inputs; an output that does not vary counts by its
    magnitude (or 1)."""
    spread = np.ptp(values, axis=0)
    fallback = np.maximum(np.abs(values).max(axis=0), 1.0)
    return np.where(spread > 0, spread, fallback)
