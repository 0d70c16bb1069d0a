"""Packs a TFLite model object back into a flatbuffer, storing repeated zero-point vectors once.

A per-channel quantized tensor carries one int64 zero point per channel; for int8 weights they are
all 0. The converter writes a separate vector for each tensor: about 12% of an int8 MobileNetV2.
Flatbuffer tables may point at the same vector, so each distinct zero-point vector is written once;
the runtime reads the same values. Only int64 vectors are shared: in a TFLite model those are
the zero points, never weights, whose addresses delegates may use as cache keys.
"""

from __future__ import annotations

import flatbuffers
import numpy as np

MODEL_IDENTIFIER = b"TFL3"


class _SharingBuilder(flatbuffers.Builder):
    def __init__(self):
        super().__init__(0)
        self._shared = {}

    def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
        if x.dtype != np.int64:
            return super().CreateNumpyVector(x)
        key = (len(x), x.tobytes())
        if key not in self._shared:
            self._shared[key] = super().CreateNumpyVector(x)
        return self._shared[key]


def pack_model(model):
    """Returns a `ModelT` (the TFLite schema's object API) as flatbuffer bytes.

    Args:
        model: `schema_py_generated.ModelT`. The model to write.

    Returns:
        `bytes`, with the `TFL3` file identifier.

    Example:

    ```python
    model = schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAsModel(content, 0))
    content = pack_model(model)
    ```
    """
    builder = _SharingBuilder()
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    return bytes(builder.Output())
