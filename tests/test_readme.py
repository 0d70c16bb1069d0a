"""The README's Python blocks run as written, and CI runs the README's test command."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert any(re.search(r"pip install .*&& tltk demo$", c) for c in commands)
    test_command = next(c for c in commands if c.startswith('pip install -e ".[test]"'))
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^pip install -e \"\\.\\[test\\]\"' README.md" in ci


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "readme"})


@pytest.mark.slow
def test_readme_command_line_section_runs_line_by_line(tmp_path, monkeypatch):
    """The README's command-line block, run as written (offline: the demo backbone's digits)."""
    import shlex

    from click.testing import CliRunner

    from tltk.cli import main

    section = README.split("## Command line", 1)[1]
    block = re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        assert words[0] == "tltk", line
        result = CliRunner().invoke(main, words[1:])
        allowed = (0, 1) if words[1] == "doctor" else (0,)  # doctor exits 1 on a problem found
        assert result.exit_code in allowed, f"{line}\n{result.output}"
    assert (tmp_path / "runs" / "digits" / "run.json").is_file()
    assert (tmp_path / "preds.csv").read_text().startswith("input,prediction,probability,error,")
    assert (tmp_path / "exports" / "digits" / "model_float16.tflite").is_file()
