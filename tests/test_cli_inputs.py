"""The command line on bad model files and bad flags: a clear one-line error, nothing run."""

import io
import zipfile

import keras
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tltk.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A TFLite file named .keras (with labels appended, as tltk writes them), a truncated
    .keras archive, a file of other bytes named .keras, and a folder to pass as data."""
    base = tmp_path_factory.mktemp("cli_inputs")
    softmax = tf.function(tf.nn.softmax, input_signature=[tf.TensorSpec([1, 3], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [softmax.get_concrete_function()], softmax
    )
    labels = io.BytesIO()
    with zipfile.ZipFile(labels, "w") as archive:
        archive.writestr("labels.txt", "a\nb\nc\n")
    (base / "renamed.keras").write_bytes(converter.convert() + labels.getvalue())
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(base / "whole.keras")
    data = (base / "whole.keras").read_bytes()
    (base / "truncated.keras").write_bytes(data[: len(data) // 2])
    (base / "text.keras").write_bytes(b"not a model\n" * 10)
    (base / "data" / "a").mkdir(parents=True)
    return base


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("renamed.keras", "is a TFLite file, not a Keras model. Name it with the .tflite suffix"),
        ("truncated.keras", "is not a readable Keras .keras model: the file is corrupt, cut short"),
        ("text.keras", "is not a readable Keras .keras model"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "export"])
def test_bad_model_files_are_named(files, name, says, command):
    path = files / name
    other = str(files / "data" / "a") if command == "predict" else str(files / "out")
    result = CliRunner().invoke(main, [command, str(path), other])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {path} {says}")
    assert "Traceback" not in result.output and "KeyError" not in result.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["train", "DATA", "--out", "OUT", "--batch-size", "0"], "--batch-size"),
        (["train", "DATA", "--out", "OUT", "--learning-rate", "nan"], "--learning-rate"),
        (["train", "DATA", "--out", "OUT", "--learning-rate", "inf"], "--learning-rate"),
        (["train", "DATA", "--out", "OUT", "--fine-tune-lr", "-1e-3"], "--fine-tune-lr"),
        (["train", "DATA", "--out", "OUT", "--fine-tune-lr", "-inf"], "--fine-tune-lr"),
        (["evaluate", "MODEL", "DATA", "--batch-size", "-2"], "--batch-size"),
        (["predict", "MODEL", "x.png", "--top", "0"], "--top"),
    ],
)
def test_bad_numbers_are_refused_by_flag_name(files, tmp_path, args, flag):
    model = files / "whole.keras"
    paths = {"DATA": str(files / "data"), "OUT": str(tmp_path / "run"), "MODEL": str(model)}
    result = CliRunner().invoke(main, [paths.get(a, a) for a in args])
    assert result.exit_code == 2, result.output  # a usage error: the command never ran
    assert f"Invalid value for '{flag}'" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("inside", ["run", ".", "a/run"])
def test_train_refuses_a_run_folder_inside_its_data(files, inside):
    data = files / "data"
    out = data / inside
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert f"The run folder {out} is inside the data folder {data}" in result.output
    assert "--out" in result.output and not (data / "run").exists()
    assert sorted(p.name for p in data.iterdir()) == ["a"]
