"""Docs that cannot drift: every docstring example in the package is checked.

- `>>>` examples run as doctests, one test per module.
- Fenced ```python examples (which may download weights or train for minutes) are compiled, and
  every `tltk.<name>` they use must exist, with the keyword arguments they pass accepted by its
  signature: a renamed function or argument fails here.
"""

import ast
import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

import tltk

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(tltk.__path__, prefix="tltk.") if not info.ispkg
) + ["tltk"]
FENCED = re.compile(r"```python\n(.*?)```", re.S)


def _docstrings(module):
    for _, obj in inspect.getmembers(module):
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        yield obj.__doc__ or ""
        if inspect.isclass(obj):
            for _, member in inspect.getmembers(obj):
                if getattr(member, "__qualname__", "").startswith(obj.__name__ + "."):
                    yield member.__doc__ or ""
    yield module.__doc__ or ""


def _fenced_blocks(module):
    for doc in _docstrings(module):
        for block in FENCED.findall(inspect.cleandoc(doc) if doc else ""):
            yield block


def _resolve(node):
    """The tltk object a `tltk.a.b` expression names, or None for other expressions."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not (isinstance(node, ast.Name) and node.id == "tltk"):
        return None
    obj, path = tltk, "tltk"
    for part in reversed(parts):
        path += "." + part
        if not hasattr(obj, part):
            raise AssertionError(f"{path} does not exist")
        obj = getattr(obj, part)
    return obj


def _check_block(block):
    tree = ast.parse(block)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _resolve(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = _resolve(node.func)
            if target is None or not callable(target):
                continue
            try:
                parameters = inspect.signature(target).parameters
            except (TypeError, ValueError):
                continue
            if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                continue
            for keyword in node.keywords:
                if keyword.arg is not None and keyword.arg not in parameters:
                    raise AssertionError(
                        f"{ast.unparse(node.func)}() has no argument {keyword.arg!r}"
                    )


@pytest.mark.parametrize("name", MODULES)
def test_doctest_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs=dict(vars(module))):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"


@pytest.mark.parametrize("name", MODULES)
def test_fenced_examples_name_what_exists(name):
    module = importlib.import_module(name)
    for block in _fenced_blocks(module):
        try:
            _check_block(block)
        except (SyntaxError, AssertionError) as error:
            raise AssertionError(f"{name}: {error} in the example:\n{block}") from None


def test_the_checker_catches_drift():
    _check_block("tltk.fine_tune(model, train, val, head_epochs=2)")
    for stale in ("tltk.decayed_multipliers(model, 0.3)", "tltk.fine_tune(m, t, v, epoch=2)"):
        with pytest.raises(AssertionError):
            _check_block(stale)
