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
