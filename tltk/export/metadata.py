"""Embeds TFLite metadata (input normalization, a labels file) so MediaPipe Tasks can run a file.

MediaPipe 1.2.2 ships its metadata writer, but `metadata_writers.image_classifier` does not import:
`metadata.py` needs `mediapipe.tasks.cc...._pywrap_metadata_version`, missing from the wheel, only
to fill `min_parser_version`. tltk reuses what does import, `metadata_info` (the tensor metadata
records), `writer_utils` (tensor names and types) and the generated flatbuffer schemas, and writes
the rest here: the metadata buffer, its `min_parser_version`, and packing both into the model
(the populator: a `TFLITE_METADATA` buffer in the model, the labels as a zip appended to it). The
model is repacked by `tltk.export.flatbuffer.pack_model`, which stores repeated zero points once.

A model with several heads gets one output tensor entry per head, in the model's head order,
named by the head: the converter orders output tensors by their signature key, so the outputs
are first put in head order and each output tensor renamed after its head (the signature keeps
mapping each head to its tensor). A classification or multi-label head carries its labels file
`labels_<head>.txt`; a regression head only its name and description.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
from mediapipe.tasks.metadata import schema_py_generated as schema_fb
from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, writer_utils

from tltk.export.flatbuffer import pack_model
from tltk.export.heads import labels_file
from tltk.export.saved_model import LABELS_FILE

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
# The lowest metadata parser that reads every field written here. Fields added after 1.0.0 are
# listed in mediapipe/tasks/cc/metadata/metadata_version.cc (vocabulary and ScaNN files, subgraph
# process units, tensor groups, tokenizers, audio, file versions, custom metadata); tltk writes
# none of them: normalization options, image/feature properties and a TENSOR_AXIS_LABELS file
# all belong to 1.0.0.
MIN_PARSER_VERSION = "1.0.0"


def add_metadata(
    model_content, class_names, *, name, description, heads=None, norm_mean=0.0, norm_std=1.0
):
    """Returns `model_content` with image classifier metadata and its labels file(s) embedded.

    Args:
        model_content: bytes. A TFLite flatbuffer with one image input and one output of class
            probabilities, or one output per head (named by its signature) with `heads`.
        class_names: list or dict. One label per output class, in order; with `heads`,
            `{head: labels}` for each classification or multi-label head.
        name: str. Model name recorded in the metadata.
        description: str. One-line description recorded in the metadata.
        heads: tuple or None. The model's `tltk.export.heads.OutputHead`s, for a model with
            several heads. Defaults to `None` (one output).
        norm_mean: float. Input normalization mean: MediaPipe feeds `(pixel - mean) / std` to a
            float input. Defaults to `0.0`, as tltk models take raw 0..255 pixels.
        norm_std: float. Input normalization standard deviation. Defaults to `1.0`.

    Returns:
        The new model as `bytes`; it is also a zip archive holding `labels.txt` (or
        `labels_<head>.txt` per labelled head).

    Example:

    ```python
    content = add_metadata(content, ["cat", "dog"], name="pets", description="Cat or dog.")
    ```
    """
    model_content = bytes(model_content)
    subgraph = writer_utils.get_subgraph(model_content)
    expected = 1 if heads is None else len(heads)
    if subgraph.InputsLength() != 1 or subgraph.OutputsLength() != expected:
        raise ValueError(
            f"Image classifier metadata needs a model with one input and {expected} output(s). "
            f"Received: {subgraph.InputsLength()} input(s), {subgraph.OutputsLength()} output(s)"
        )
    if heads is None:
        outputs = [_scores_md("probability", "Probabilities of the labels respectively.")]
        files = {LABELS_FILE: class_names}
    else:
        model_content = _outputs_in_head_order(model_content, [head.name for head in heads])
        outputs = [_head_md(head) for head in heads]
        files = {labels_file(head): class_names[head] for head in class_names}
    buffer = _metadata_buffer(model_content, outputs, name, description, norm_mean, norm_std)
    model_content = _with_metadata_buffer(model_content, buffer)
    return _with_associated_files(
        model_content, {file: "\n".join(names).encode("utf-8") for file, names in files.items()}
    )


def _scores_md(name, description, label_file=LABELS_FILE):
    return lambda tensor_type: metadata_info.ClassificationTensorMd(
        name=name,
        description=description,
        label_files=[metadata_info.LabelFileMd(label_file)],
        tensor_type=tensor_type,
    )


def _head_md(head):
    if head.labelled:
        kind = "Probabilities" if head.task == "classification" else "Sigmoid scores"
        return _scores_md(
            head.name, f"{kind} of the labels of head {head.name}.", labels_file(head.name)
        )
    description = f"Regression values of head {head.name} ({head.units} per image)."
    return lambda tensor_type: metadata_info.TensorMd(name=head.name, description=description)


def _outputs_in_head_order(model_content, names):
    """The model with its outputs ordered as `names` and each output tensor named by its head,
    found through the signature's output names (the converter sorts outputs by them)."""
    model = schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAsModel(model_content, 0))
    signatures = model.signatureDefs or []
    outputs = signatures[0].outputs or [] if len(signatures) == 1 else []
    by_name = {m.name.decode("utf-8"): m.tensorIndex for m in outputs}
    if sorted(by_name) != sorted(names):
        raise ValueError(
            f"Expected one TFLite signature with outputs {names}. Received: {len(signatures)} "
            f"signature(s), outputs {sorted(by_name)}"
        )
    subgraph = model.subgraphs[signatures[0].subgraphIndex]
    subgraph.outputs = [by_name[name] for name in names]
    for name in names:
        subgraph.tensors[by_name[name]].name = name
    return pack_model(model)


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


def _metadata_buffer(model_content, outputs, name, description, norm_mean, norm_std):
    """The metadata: `outputs` holds one `tensor type -> TensorMd` per output tensor, in order."""
    (input_name,) = writer_utils.get_input_tensor_names(model_content)
    (input_type,) = writer_utils.get_input_tensor_types(model_content)
    output_names = writer_utils.get_output_tensor_names(model_content)
    output_types = writer_utils.get_output_tensor_types(model_content)
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
    input_md = image_md.create_metadata()
    input_md.name = input_md.name or input_name
    output_mds = []
    for output, output_name, output_type in zip(outputs, output_names, output_types):
        output_md = output(output_type).create_metadata()
        output_md.name = output_md.name or output_name
        output_mds.append(output_md)
    subgraph = metadata_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [input_md]
    subgraph.outputTensorMetadata = output_mds
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
