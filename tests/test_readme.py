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
