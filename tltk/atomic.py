"""Atomic writes: every file and folder tltk writes appears whole or not at all.

A file is written beside its destination under a hidden temporary name, flushed to disk
(`fsync`), renamed over the destination, and the folder holding it is flushed too, so a reader,
a crash or a power cut sees either the whole previous file or the whole new one. A folder (an
export) is staged beside its destination, flushed file by file, and swapped into place.

`write_bytes` and `write_text` write content; `writing` serves writers that take a path
(`Figure.savefig`, `keras.Model.save`, `PIL.Image.save`). This module imports nothing from tltk,
so every layer of the package may use it.

On Linux the folder swap is one `renameat2(RENAME_EXCHANGE)` call: the destination path always
holds either the whole previous folder or the whole new one. Elsewhere, or on a file system
without it, two renames are used, with a short window in which the destination is missing (the
previous folder is then still whole beside it, under an `.old` name). Staging folders left by a
killed process are removed by the next `staged` call for the same destination.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pathlib
import shutil
import sys
import uuid

MARKER = ".tltk-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_bytes(path, data):
    """Writes `data` to `path` atomically (beside, fsync, rename, fsync the folder).

    Args:
        path: str or Path. The file to write; its folder must exist.
        data: bytes. The content.

    Returns:
        The `pathlib.Path` written.

    Example:

    >>> import pathlib, tempfile
    >>> path = write_bytes(pathlib.Path(tempfile.mkdtemp()) / "a.bin", b"\\x00\\x01")
    >>> path.read_bytes()
    b'\\x00\\x01'
    """
    with writing(path) as partial, open(partial, "wb") as file:
        file.write(data)
    return pathlib.Path(path)


def write_text(path, text, *, encoding="utf-8"):
    """Writes `text` to `path` atomically, as `write_bytes` does.

    Args:
        path: str or Path. The file to write; its folder must exist.
        text: str. The content.
        encoding: str. Text encoding. Defaults to `"utf-8"`.

    Returns:
        The `pathlib.Path` written.

    Example:

    >>> import pathlib, tempfile
    >>> write_text(pathlib.Path(tempfile.mkdtemp()) / "labels.txt", "cat\\ndog").read_text()
    'cat\\ndog'
    """
    return write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def writing(path):
    """Yields a temporary path beside `path`; once the block ends, it becomes `path` atomically.

    The temporary name is hidden (it starts with a dot) and keeps the destination's suffix, so
    writers that infer the format from it (`savefig`, `keras.Model.save`, Pillow) still work.
    When the block ends normally, the file is fsynced, renamed over `path` and the folder
    fsynced. When it raises, the temporary file is removed and `path` is left as it was.

    Args:
        path: str or Path. The file to write; its folder must exist.

    Yields:
        A `pathlib.Path` to write to.

    Example:

    ```python
    with writing("runs/model.keras") as partial:
        model.save(partial)
    ```
    """
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.name}{MARKER}partial-{_token()}{path.suffix}")
    try:
        yield partial
        _fsync(partial)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder):
    """Flushes a folder's entries (new names, renames) to disk; a no-op where unsupported."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows: folders cannot be opened for fsync
        return
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def staged(destination):
    """Yields a new empty folder beside `destination`; on error it is removed, the target untouched.

    Args:
        destination: str or Path. The folder that `swap_into_place` will replace.

    Yields:
        The staging folder, a `pathlib.Path`.

    Example:

    ```python
    with staged(path) as folder:
        (folder / "labels.txt").write_text("cat")
        swap_into_place(folder, path)
    ```
    """
    destination = pathlib.Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(destination)
    folder = _sibling(destination, "tmp")
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def swap_into_place(folder, destination):
    """Flushes `folder` to disk and moves it to `destination`, in one step where the OS allows.

    Args:
        folder: str or Path. A folder from `staged`.
        destination: str or Path. Where it goes; a previous folder there is replaced.
    """
    folder, destination = pathlib.Path(folder), pathlib.Path(destination)
    _fsync_tree(folder)
    if not destination.exists():
        os.rename(folder, destination)
    elif _exchange(folder, destination):
        shutil.rmtree(folder)  # now holds the previous folder
    else:
        old = _sibling(destination, "old")
        os.rename(destination, old)
        os.rename(folder, destination)
        shutil.rmtree(old)
    fsync_folder(destination.parent)


def remove_stale(destination):
    """Removes staging folders of `destination` whose writing process no longer runs."""
    destination = pathlib.Path(destination)
    prefix = f".{destination.name}{MARKER}"
    if not destination.parent.is_dir():
        return
    for candidate in destination.parent.iterdir():
        if not candidate.name.startswith(prefix) or not candidate.is_dir():
            continue
        pid = candidate.name[len(prefix) :].split("-")[1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _token():
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _sibling(destination, kind):
    return destination.parent / f".{destination.name}{MARKER}{kind}-{_token()}"


def _fsync(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(folder):
    for root, _, names in os.walk(folder, topdown=False):
        for name in names:
            _fsync(os.path.join(root, name))
        fsync_folder(root)


def _exchange(a, b):
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"Cannot swap {a} into {b}: {os.strerror(code)}")


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
