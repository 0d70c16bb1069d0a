"""The `tltk` command line, run as a user would, through click's runner."""

import re

import pytest
from click.testing import CliRunner

from tltk.cli import main

COMMANDS = ["demo", "train", "evaluate", "predict", "export", "backbones", "doctor"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert re.search(rf"Example: tltk {command}\b", result.output)


def test_backbones_lists_the_registry():
    result = CliRunner().invoke(main, ["backbones", "--source", "keras_applications"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 40
    assert any(
        line.startswith("mobilenet_v2 ") and "224x224" in line and "1280" in line for line in lines
    )


def test_doctor_reports_each_check():
    result = CliRunner().invoke(main, ["doctor"])
    assert "[ok] tensorflow:" in result.output
    assert "[ok] keras backend: tensorflow" in result.output
    assert "demo weights" in result.output
    assert result.exit_code in (0, 1)
    assert (result.exit_code == 1) == ("[!!]" in result.output)


def test_errors_are_one_line_without_traceback(tmp_path):
    (tmp_path / "a").mkdir()
    result = CliRunner().invoke(
        main,
        ["train", str(tmp_path), "--backbone", "mobilenet_v22", "--out", str(tmp_path / "run")],
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert re.fullmatch(
        r"Error: Unknown backbone 'mobilenet_v22'\. Closest names: .*\n", result.output
    )


def test_train_predict_evaluate_export_end_to_end(tmp_path):
    import shutil

    import tltk

    digits = tltk.datasets.digits(tmp_path / "digits")
    small = tmp_path / "small"
    for label in ("0", "1", "7"):
        (small / label).mkdir(parents=True)
        for png in sorted((digits / label).glob("*.png"))[:120]:
            shutil.copy(png, small / label / png.name)
    (small / "7" / "broken.png").write_bytes(b"not a png")
    run = tmp_path / "run"
    runner = CliRunner()
    # No --weights: a registered backbone trains from its own default weights ("tltk" here).
    result = runner.invoke(
        main,
        [
            "train",
            str(small),
            "--backbone",
            "tltk_glyphnet",
            "--out",
            str(run),
            "--head-epochs",
            "30",
            "--learning-rate",
            "0.003",
            "--epochs",
            "1",
            "--quantize",
            "int8",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "held-out accuracy" in result.output
        and "tflite int8" in result.output
        and "Skipped 1 unreadable file" in result.output
    )
    tflite = run / "export" / "model_int8.tflite"
    assert (
        tflite.exists()
        and (run / "model.keras").exists()
        and (run / "report" / "report.json").exists()
    )

    unseen_sevens = sorted((digits / "7").glob("*.png"))[-10:]  # not among the 120 trained on
    predicted = runner.invoke(main, ["predict", str(tflite), *map(str, unseen_sevens)])
    assert predicted.exit_code == 0, predicted.output
    top = [line.split(": ")[1].split()[0] for line in predicted.output.strip().splitlines()]
    assert len(top) == 10 and top.count("7") >= 8
    missing = runner.invoke(main, ["predict", str(tflite), str(tmp_path / "nope.png")])
    assert (
        missing.exit_code != 0
        and f"No such image file or folder: {tmp_path / 'nope.png'}" in missing.output
    )

    evaluated = runner.invoke(
        main, ["evaluate", str(tflite), str(small), "--out", str(tmp_path / "eval")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    accuracy = float(re.search(r"accuracy: ([0-9.]+)", evaluated.output).group(1))
    assert accuracy > 0.9  # three well-separated digits

    exported = runner.invoke(
        main,
        [
            "export",
            str(run / "model.keras"),
            str(tmp_path / "exp"),
            "--quantize",
            "float16",
            "--data",
            str(small),
        ],
    )
    assert exported.exit_code == 0, exported.output
    assert "model_float16.tflite" in exported.output and "passed" in exported.output
    again = runner.invoke(main, ["export", str(run / "model.keras"), str(tmp_path / "exp")])
    assert again.exit_code == 1 and "overwrite" in again.output.lower()
