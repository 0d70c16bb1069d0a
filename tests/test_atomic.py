"""tltk.atomic: files and folders appear whole or not at all, flushed to disk, for every writer."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from tltk import atomic
from tltk.run_state import RunState

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def fsynced(monkeypatch):
    """Records the path of every descriptor passed to `os.fsync` (then really fsyncs it)."""
    paths = []
    real = os.fsync

    def recording(descriptor):
        paths.append(pathlib.Path(os.readlink(f"/proc/self/fd/{descriptor}")))
        real(descriptor)

    if not pathlib.Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name a file descriptor")
    monkeypatch.setattr(os, "fsync", recording)
    return paths


def test_write_fsyncs_the_file_then_its_folder(tmp_path, fsynced):
    path = atomic.write_text(tmp_path / "labels.txt", "cat\ndog")
    assert path.read_text() == "cat\ndog"
    assert len(fsynced) == 2
    written, folder = fsynced
    assert written.parent == tmp_path and written.name.startswith(".labels.txt.tltk-partial-")
    assert folder == tmp_path
    assert os.listdir(tmp_path) == ["labels.txt"]


def test_writing_keeps_the_suffix_for_writers_that_take_a_path(tmp_path):
    with atomic.writing(tmp_path / "model.keras") as partial:
        assert partial.parent == tmp_path and partial.name.startswith(".")
        assert partial.suffix == ".keras"
        partial.write_bytes(b"zip")
    assert (tmp_path / "model.keras").read_bytes() == b"zip"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    path = atomic.write_bytes(tmp_path / "state.json", b'{"epoch": 1}')
    with pytest.raises(RuntimeError, match="disk"):
        with atomic.writing(path) as partial:
            partial.write_bytes(b'{"epo')  # half written when the writer fails
            raise RuntimeError("disk full")
    assert path.read_bytes() == b'{"epoch": 1}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_failed_fsync_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = atomic.write_text(tmp_path / "report.json", "{}")

    def failing(descriptor):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output"):
        atomic.write_text(path, '{"accuracy": 0.9}')
    assert path.read_text() == "{}"
    assert os.listdir(tmp_path) == ["report.json"]


def test_a_writer_that_writes_nothing_fails_and_keeps_the_file(tmp_path):
    path = atomic.write_text(tmp_path / "plot.png", "old")
    with pytest.raises(FileNotFoundError), atomic.writing(path):
        pass
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["plot.png"]


def _publish(target, content, **kwargs):
    with atomic.staged(target) as folder:
        (folder / "labels.txt").write_text(content)
        atomic.publish(folder, target, **kwargs)


def _is_labelled(path):
    return (path / "labels.txt").is_file()


def _previous(parent):
    """Previous versions kept beside a destination: swapped out, or of the link layout."""
    return sorted(n for n in os.listdir(parent) if re.search(r"\.tltk-(old|v)-", n))


def _contents(parent):
    return sorted((parent / n / "labels.txt").read_text() for n in _previous(parent))


@pytest.fixture(params=["rename flags", "plain renames"])
def renames(request, monkeypatch):
    """Publishes with renameat2 flags, then as on a filesystem without them (EINVAL)."""
    if request.param == "plain renames":
        monkeypatch.setattr(atomic, "_rename", lambda *args: False)
    return request.param


def test_publish_fsyncs_every_file_and_folder(tmp_path, fsynced, renames):
    target = tmp_path / "export"
    for content in ("first", "second"):
        with atomic.staged(target) as folder:
            (folder / "nested").mkdir()
            (folder / "nested" / "model.bin").write_text(content)
            (folder / "labels.txt").write_text(content)
            fsynced.clear()
            atomic.publish(folder, target, replaceable=_is_labelled)
        names = [p.name for p in fsynced]
        assert {"model.bin", "labels.txt", "nested", folder.name} <= set(names)
        assert fsynced[-1] == tmp_path  # the parent, after the rename
        assert (target / "nested" / "model.bin").read_text() == content
        assert target.is_dir() and not target.is_symlink()  # a real folder: `cp -r` copies it
    # the first export, swapped out, was removed: no reader held it
    assert sorted(os.listdir(tmp_path)) == [f".export{atomic.MARKER}lock", "export"]


def test_failure_while_staging_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "export"
    _publish(target, "v1")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(RuntimeError), atomic.staged(target) as folder:
        (folder / "labels.txt").write_text("v2")
        raise RuntimeError("converter crashed")
    assert (target / "labels.txt").read_text() == "v1"
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("replaceable", [None, _is_labelled])
def test_publish_never_replaces_what_appeared_meanwhile(tmp_path, replaceable, renames):
    target = tmp_path / "export"
    with atomic.staged(target) as folder:
        (folder / "labels.txt").write_text("tltk")
        target.mkdir()  # a user (or another writer) takes the name while tltk stages
        (target / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match="may not be replaced"):
            atomic.publish(folder, target, replaceable=replaceable)
    assert os.listdir(target) == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"
    assert not _previous(tmp_path) and not [n for n in os.listdir(tmp_path) if "-tmp-" in n]


def test_a_folder_appearing_after_the_check_is_kept(tmp_path, monkeypatch):
    """RENAME_NOREPLACE: a folder made between the check and the rename (even an empty one) is
    not replaced; plain `os.rename` would replace an empty one."""
    target = tmp_path / "export"
    real = atomic._rename

    def user_first(source, destination, how):
        destination.mkdir(exist_ok=True)
        return real(source, destination, how)

    monkeypatch.setattr(atomic, "_rename", user_first)
    with pytest.raises(FileExistsError, match="may not be replaced"):
        _publish(target, "tltk")
    assert target.is_dir() and not os.listdir(target)


def test_publish_replaces_an_empty_folder_or_an_export(tmp_path, renames):
    empty, export = tmp_path / "empty", tmp_path / "export"
    empty.mkdir()
    _publish(empty, "new", replaceable=lambda p: True)
    assert (empty / "labels.txt").read_text() == "new" and not empty.is_symlink()
    export.mkdir()  # written before tltk published by renames: no lock file
    (export / "labels.txt").write_text("old")
    _publish(export, "new", replaceable=_is_labelled)
    assert (export / "labels.txt").read_text() == "new" and not export.is_symlink()
    assert not _previous(tmp_path)


def test_a_reader_keeps_the_version_it_opened(tmp_path, renames):
    target = tmp_path / "export"
    _publish(target, "v1")
    with atomic.reading(target / "labels.txt") as held:
        assert held.parts[:4] == ("/", "proc", "self", "fd")
        for content in ("v2", "v3", "v4"):
            _publish(target, content, replaceable=_is_labelled)
        assert held.read_text() == "v1" and (target / "labels.txt").read_text() == "v4"
        assert _contents(tmp_path) == ["v1"]  # held; v2 and v3 were removed at once
        atomic.remove_stale(target)
        assert _contents(tmp_path) == ["v1"]
    atomic.remove_stale(target)  # the reader let go
    assert not _previous(tmp_path)
    with atomic.reading(tmp_path / "elsewhere.txt") as plain:
        assert plain == tmp_path / "elsewhere.txt"  # not in a published folder: as it is


def test_a_reader_through_a_link_of_its_own_is_held(tmp_path):
    target = tmp_path / "export"
    _publish(target, "v1")
    (tmp_path / "shortcut").symlink_to(target)
    with atomic.reading(tmp_path / "shortcut" / "labels.txt") as held:
        _publish(target, "v2", replaceable=_is_labelled)
        assert held.read_text() == "v1"


def test_a_swap_between_open_and_lock_is_read_from_the_new_export(tmp_path, monkeypatch):
    target = tmp_path / "export"
    _publish(target, "v1")
    real, pending = atomic.fcntl.flock, ["swap"]

    def swapping(descriptor, operation):
        if pending and operation == atomic.fcntl.LOCK_SH:
            pending.pop()
            _publish(target, "v2", replaceable=_is_labelled)  # removes v1: nobody holds it
        return real(descriptor, operation)

    monkeypatch.setattr(atomic.fcntl, "flock", swapping)
    with atomic.reading(target) as held:
        assert not pending and (held / "labels.txt").read_text() == "v2"


def test_the_link_layout_is_read_and_replaced(tmp_path):
    """Exports written when `export_dir` was a link to a `.NAME.tltk-v-...` folder."""
    target = tmp_path / "export"
    version = tmp_path / f".export{atomic.MARKER}v-123-0123abcd"
    version.mkdir()
    (version / "labels.txt").write_text("linked")
    older = tmp_path / f".export{atomic.MARKER}v-123-4567cdef"
    older.mkdir()
    target.symlink_to(version.name)
    (tmp_path / f".export{atomic.MARKER}lock").touch()
    atomic.remove_stale(target)
    assert _previous(tmp_path) == [version.name]  # the linked version is current: kept
    with atomic.reading(target) as held:
        _publish(target, "real", replaceable=_is_labelled)
        assert (held / "labels.txt").read_text() == "linked"
        assert _previous(tmp_path) == [version.name]  # held
    assert target.is_dir() and not target.is_symlink()
    assert (target / "labels.txt").read_text() == "real"
    atomic.remove_stale(target)
    assert not _previous(tmp_path)


def test_stale_staging_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = dead.stdout.strip()
    stale = tmp_path / f".export{atomic.MARKER}tmp-{pid}-0123abcd"
    alive = tmp_path / f".export{atomic.MARKER}tmp-{os.getpid()}-0123abcd"
    version = tmp_path / f".export{atomic.MARKER}v-{pid}-0123abcd"  # published by a dead writer
    for folder in (stale, alive, version):
        folder.mkdir()
    atomic.remove_stale(tmp_path / "export")
    assert not stale.exists() and alive.exists() and version.exists()


def test_run_state_writes_through_the_helper(tmp_path, fsynced):
    state = RunState({"lr": 1e-3}, 1, "max", directory=tmp_path)
    state.best_weights = [np.ones(3, "float32")]
    state.save(weights=True)
    assert sorted(os.listdir(tmp_path)) == ["best.weights.npz", "run_state.json"]
    assert [p.name[:20] for p in fsynced if p != tmp_path] == [
        ".best.weights.npz.tl",
        ".run_state.json.tltk",
    ]
    resumed = RunState.resume({"lr": 1e-3}, 1, "max", directory=tmp_path)
    np.testing.assert_array_equal(resumed.best_weights[0], np.ones(3))


# A direct write or rename that bypasses tltk.atomic (docstring examples excepted). `os.fdopen`
# wraps a descriptor that is already open (the CLI's stderr), so it creates no file.
_DIRECT_WRITE = re.compile(
    r"os\.replace\(|os\.rename\(|\.write_text\(|\.write_bytes\(|(?<!fd)open\([^)]*[\"'][wa]b?[\"']"
)


def test_every_writer_in_the_package_uses_the_helper():
    offenders = []
    for path in sorted((REPO / "tltk").rglob("*.py")):
        if path.name == "atomic.py" and path.parent.name == "tltk":
            continue
        code = _without_docstrings(path.read_text(encoding="utf-8"))
        for number, line in enumerate(code.splitlines(), 1):
            if _DIRECT_WRITE.search(line) and "atomic." not in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "write through tltk.atomic instead:\n" + "\n".join(offenders)


def _without_docstrings(source):
    """The source with triple-quoted strings blanked, line numbers kept."""
    return re.sub(r'"""[\s\S]*?"""', lambda m: "\n" * m.group(0).count("\n"), source)
