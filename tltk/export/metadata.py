"""Embeds TFLite metadata (input normalization, a labels file) so MediaPipe Tasks can run a file.

MediaPipe 1.2.2 ships its metadata writer, but `metadata_writers.image_classifier` does not import:
`metadata.py` needs `mediapipe.tasks.cc...._pywrap_metadata_version`, missing from the wheel, only
to fill `min_parser_version`. tltk reuses what does import, `metadata_info` (the tensor metadata
records), `writer_utils` (tensor names and types) and the generated flatbuffer schemas, and writes
the rest here: the metadata buffer, its `min_parser_version`, and packing both into the model
(the populator: a `TFLITE_METADATA` buffer in the model, the labels as a zip appended to it). The
model is repacked by `tltk.export.flatbuffer.pack_model`, which stores repeated zero points once.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
from mediapipe.tasks.metadata import schema_py_generated as schema_fb
from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, writer_utils

from tltk.export.flatbuffer import pack_model
from tltk.export.saved_model import LABELS_FILE

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
# The lowest metadata parser that reads every field written here. Fields added after 1.0.0 are
# listed in mediapipe/tasks/cc/metadata/metadata_version.cc (vocabulary and ScaNN files, subgraph
# process units, tensor groups, tokenizers, audio, file versions, custom metadata); tltk writes
# none of them: normalization options, image/feature properties and a TENSOR_AXIS_LABELS file
# all belong to 1.0.0.
MIN_PARSER_VERSION = "1.0.0"


def add_metadata(model_content, class_names, *, name, description, norm_mean=0.0, norm_std=1.0):
    """Returns `model_content` with image classifier metadata and its labels file embedded.

    Args:
        model_content: bytes. A TFLite flatbuffer with one image input and one output of class
            probabilities.
        class_names: list. One label per output class, in order.
        name: str. Model name recorded in the metadata.
        description: str. One-line description recorded in the metadata.
        norm_mean: float. Input normalization mean: MediaPipe feeds `(pixel - mean) / std` to a
            float input. Defaults to `0.0`, as tltk models take raw 0..255 pixels.
        norm_std: float. Input normalization standard deviation. Defaults to `1.0`.

    Returns:
        The new model as `bytes`; it is also a zip archive holding `labels.txt`.

    Example:

    ```python
    content = add_metadata(content, ["cat", "dog"], name="pets", description="Cat or dog.")
    ```
    """
    model_content = bytes(model_content)
    subgraph = writer_utils.get_subgraph(model_content)
    if subgraph.InputsLength() != 1 or subgraph.OutputsLength() != 1:
        raise ValueError(
            "Image classifier metadata needs a model with one input and one output. Received: "
            f"{subgraph.InputsLength()} input(s), {subgraph.OutputsLength()} output(s)"
        )
    labels = "\n".join(class_names).encode("utf-8")
    buffer = _metadata_buffer(model_content, name, description, norm_mean, norm_std)
    model_content = _with_metadata_buffer(model_content, buffer)
    return _with_associated_files(model_content, {LABELS_FILE: labels})


def read_metadata(model_content):
    """Returns the embedded metadata as a `ModelMetadataT`, or `None` when there is none.

    Example:

    ```python
    read_metadata(open("model.tflite", "rb").read()).minParserVersion   # b"1.0.0"
    ```
    """
    model = schema_fb.Model.GetRootAsModel(model_content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode("utf-8") == METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            root = metadata_fb.ModelMetadata.GetRootAsModelMetadata(data, 0)
            return metadata_fb.ModelMetadataT.InitFromObj(root)
    return None


def read_associated_file(model_content, file_name):
    """Returns the bytes of a file packed into a TFLite model, or `None` when it holds none."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_content)) as archive:
            return archive.read(file_name) if file_name in archive.namelist() else None
    except zipfile.BadZipFile:
        return None


def _metadata_buffer(model_content, name, description, norm_mean, norm_std):
    (input_name,) = writer_utils.get_input_tensor_names(model_content)
    (output_name,) = writer_utils.get_output_tensor_names(model_content)
    (input_type,) = writer_utils.get_input_tensor_types(model_content)
    (output_type,) = writer_utils.get_output_tensor_types(model_content)
    subgraph = writer_utils.get_subgraph(model_content)
    channels = subgraph.Tensors(subgraph.Inputs(0)).ShapeAsNumpy()[-1]
    grayscale = channels == 1
    image_md = metadata_info.InputImageTensorMd(
        name="image",
        description=f"Input image, raw {'grayscale' if grayscale else 'RGB'} pixels 0..255.",
        norm_mean=[float(norm_mean)],
        norm_std=[float(norm_std)],
        color_space_type=metadata_fb.ColorSpaceType.GRAYSCALE
        if grayscale
        else metadata_fb.ColorSpaceType.RGB,
        tensor_type=input_type,
    )
    scores_md = metadata_info.ClassificationTensorMd(
        name="probability",
        description="Probabilities of the labels respectively.",
        label_files=[metadata_info.LabelFileMd(LABELS_FILE)],
        tensor_type=output_type,
    )
    input_md, output_md = image_md.create_metadata(), scores_md.create_metadata()
    input_md.name = input_md.name or input_name
    output_md.name = output_md.name or output_name
    subgraph = metadata_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [input_md]
    subgraph.outputTensorMetadata = [output_md]
    model_md = metadata_info.GeneralMd(name=name, description=description).create_metadata()
    model_md.subgraphMetadata = [subgraph]
    model_md.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(model_md.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _with_metadata_buffer(model_content, metadata_buffer):
    model = schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAsModel(model_content, 0))
    buffer = schema_fb.BufferT()
    buffer.data = metadata_buffer
    model.buffers = model.buffers or []
    model.metadata = model.metadata or []
    existing = [m for m in model.metadata if m.name.decode("utf-8") == METADATA_NAME]
    if existing:
        model.buffers[existing[0].buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = schema_fb.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    return pack_model(model)


def _with_associated_files(model_content, files):
    # A TFLite file may carry a zip archive after the flatbuffer: the runtime reads the flatbuffer
    # from the start, MediaPipe reads the zip's central directory from the end.
    stream = io.BytesIO()
    stream.write(model_content)
    with zipfile.ZipFile(stream, "a") as archive:
        for file_name, content in files.items():
            archive.writestr(file_name, content)
    return stream.getvalue()
