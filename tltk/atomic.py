"""Atomic writes: every file and folder tltk writes appears whole or not at all.

A file is written beside its destination under a hidden temporary name, flushed to disk
(`fsync`), renamed over the destination, and the folder holding it is flushed too, so a reader,
a crash or a power cut sees either the whole previous file or the whole new one. A folder (an
export) is staged beside its destination, flushed file by file, and swapped into place.

`write_bytes` and `write_text` write content; `writing` serves writers that take a path
(`Figure.savefig`, `keras.Model.save`, `PIL.Image.save`). This module imports nothing from tltk,
so every layer of the package may use it.

A folder is published as a version: `publish` renames the staged folder to a hidden version
folder beside the destination (`.NAME.tltk-v-...`) and makes the destination a symbolic link to
it, switched with one `os.replace`. Every documented path (`out/model.tflite`) stays reachable
through the link, and a reader that resolves the link once (`reading`, `os.path.realpath`) reads
one whole version, however often it is replaced meanwhile. Writers of one destination take turns
under a lock file beside it (`.NAME.tltk-lock`, `fcntl.flock`); a publish re-checks the
destination under that lock and replaces only what the caller accepts, so nothing created
meanwhile is lost. Versions older than the previous one are removed, except one a reader holds.
Staging folders left by a killed process are removed by the next `staged` call for the same
destination. Locks and links need a POSIX system (Linux, macOS).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pathlib
import re
import shutil
import sys
import uuid

try:
    import fcntl
except ImportError:  # Windows: `publish` and `reading` then refuse with a clear error
    fcntl = None

MARKER = ".tltk-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# A published version folder: `.NAME.tltk-v-PID-TOKEN` (see `_sibling`).
_REFUSED = "exists and may not be replaced; nothing was changed"
_VERSION = re.compile(r"\..+" + re.escape(MARKER) + r"v-\d+-[0-9a-f]{8}")


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
        destination: str or Path. The folder that `publish` will replace.

    Yields:
        The staging folder, a `pathlib.Path`.

    Example:

    ```python
    with staged(path) as folder:
        (folder / "labels.txt").write_text("cat")
        publish(folder, path)
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


def publish(folder, destination, *, replaceable=None):
    """Flushes `folder` to disk and makes it the current version of `destination`.

    Under the destination's lock, `folder` becomes a hidden version folder beside `destination`,
    and `destination` a relative symbolic link to it, created or switched in one step. What is
    at `destination` is checked at that moment: nothing there is always fine; a link or folder is
    replaced only when `replaceable(destination)` is true (an empty folder is removed with
    `os.rmdir`, which removes nothing else; a folder from before versions becomes the previous
    version); anything else raises `FileExistsError` and leaves both untouched (`folder` too).
    Then versions older than the previous one are removed, unless a reader holds them.

    Args:
        folder: str or Path. A folder from `staged`.
        destination: str or Path. Where it goes.
        replaceable: callable or None. Takes the existing `destination` and says whether it may be
            replaced; `None` replaces nothing. Defaults to `None`.

    Returns:
        The version folder, a `pathlib.Path`.

    Raises:
        FileExistsError: `destination` exists and may not be replaced.

    Example:

    ```python
    with staged("exports/pets") as folder:
        (folder / "labels.txt").write_text("cat")
        publish(folder, "exports/pets", replaceable=lambda p: (p / "labels.txt").is_file())
    ```
    """
    folder, destination = pathlib.Path(folder), pathlib.Path(destination)
    _fsync_tree(folder)
    with _locked(_sibling_name(destination, "lock"), exclusive=True, create=True):
        exists = os.path.lexists(destination)
        if exists and (replaceable is None or not replaceable(destination)):
            raise FileExistsError(errno.EEXIST, _REFUSED, str(destination))
        version = _sibling(destination, "v")
        os.rename(folder, version)
        try:
            previous = _link(version, destination) if exists else None
            if not exists:
                os.symlink(version.name, destination)  # fails if anything appeared meanwhile
        except OSError as error:
            os.rename(version, folder)  # back to staging, which `staged` removes
            if error.errno in (errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY, errno.ENOTDIR):
                raise FileExistsError(errno.EEXIST, _REFUSED, str(destination)) from error
            raise
        fsync_folder(destination.parent)
        _remove_versions(destination, keep={version.name, previous})
    return version


@contextlib.contextmanager
def reading(path):
    """Yields `path` resolved to the version it names now, which no writer removes until the end.

    A path inside a published folder (`out`, `out/saved_model`, `out/model.tflite`) is resolved
    through the link to its version folder, held with a shared lock; other paths are yielded as
    they are. Reading every file of a SavedModel under one `reading` block reads one export.

    Args:
        path: str or Path. A file or folder.

    Yields:
        A `pathlib.Path`: the resolved path, or `path` itself when it is not in a version.

    Example:

    ```python
    with reading("exports/pets/saved_model") as resolved:
        loaded = tf.saved_model.load(str(resolved))
    ```
    """
    path = pathlib.Path(path)
    real = pathlib.Path(os.path.realpath(path))
    while True:
        version = next((p for p in (real, *real.parents) if _VERSION.fullmatch(p.name)), None)
        if version is None:
            yield path
            return
        held = _hold(version)
        if held is not None:
            try:
                yield real
            finally:
                os.close(held)
            return
        again = pathlib.Path(os.path.realpath(path))
        if again == real:  # the link names a removed version: let the caller's open fail
            yield real
            return
        real = again  # removed before we held it; a newer version is there now


def remove_stale(destination):
    """Removes staging folders of `destination` whose writing process no longer runs."""
    destination = pathlib.Path(destination)
    prefix = f".{destination.name}{MARKER}tmp-"
    if not destination.parent.is_dir():
        return
    for candidate in destination.parent.iterdir():
        if not candidate.name.startswith(prefix) or not candidate.is_dir():
            continue
        pid = candidate.name[len(prefix) :].split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _link(version, destination):
    """Points the existing `destination` at `version`; returns the previous version's name."""
    if destination.is_symlink():
        previous = os.readlink(destination)
        link = _sibling(destination, "link")
        os.symlink(version.name, link)
        try:
            os.replace(link, destination)  # fails on a folder that replaced the link meanwhile
        except OSError:
            os.unlink(link)
            raise
        return previous
    if not any(destination.iterdir()):
        os.rmdir(destination)  # removes an empty folder only
        os.symlink(version.name, destination)
        return None
    # A folder written before versions: it becomes the previous version.
    previous = _sibling(destination, "v")
    link = _sibling(destination, "link")
    os.symlink(version.name, link)
    if _exchange(link, destination):
        os.rename(link, previous)  # `link` now names the former folder
    else:
        os.rename(destination, previous)
        os.rename(link, destination)
    return previous.name


def _remove_versions(destination, keep):
    prefix = f".{destination.name}{MARKER}v-"
    for candidate in destination.parent.iterdir():
        if not candidate.name.startswith(prefix) or candidate.name in keep:
            continue
        with contextlib.suppress(BlockingIOError), _locked(candidate, exclusive=True, wait=False):
            shutil.rmtree(candidate)  # no reader holds it


def _hold(version):
    """A descriptor holding a shared lock on `version`, or None when it was removed."""
    try:
        descriptor = os.open(version, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits while a writer removes it
    try:
        if os.path.samestat(os.fstat(descriptor), os.stat(version)):
            return descriptor
    except FileNotFoundError:
        pass
    os.close(descriptor)
    return None


@contextlib.contextmanager
def _locked(path, *, exclusive, wait=True, create=False):
    """Holds an `flock` on a folder, or on a lock file (`create`s it); yields the descriptor."""
    if fcntl is None:
        raise OSError(errno.ENOSYS, "tltk exports need POSIX file locks (Linux, macOS)", path)
    flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY | os.O_DIRECTORY
    descriptor = os.open(path, flags, 0o644)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        fcntl.flock(descriptor, mode if wait else mode | fcntl.LOCK_NB)
        yield descriptor
    finally:
        os.close(descriptor)


def _token():
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _sibling(destination, kind):
    return _sibling_name(destination, f"{kind}-{_token()}")


def _sibling_name(destination, suffix):
    return destination.parent / f".{destination.name}{MARKER}{suffix}"


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
