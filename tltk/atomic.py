"""Atomic writes: every file and folder tltk writes appears whole or not at all.

A file is written beside its destination under a hidden temporary name, flushed to disk
(`fsync`), renamed over the destination, and the folder holding it is flushed too, so a reader,
a crash or a power cut sees either the whole previous file or the whole new one. A folder (an
export) is staged beside its destination, flushed file by file, and swapped into place.

`write_bytes` and `write_text` write content; `writing` serves writers that take a path
(`Figure.savefig`, `keras.Model.save`, `PIL.Image.save`). This module imports nothing from tltk,
so every layer of the package may use it.

A staged folder is published by one atomic rename under the destination's lock
(`.NAME.tltk-lock` beside it, `fcntl.flock`): `renameat2(RENAME_NOREPLACE)` when nothing is
there, `renameat2(RENAME_EXCHANGE)` (macOS: `renamex_np(RENAME_SWAP)`) to swap out an export the
caller accepts, which then waits under a hidden `.NAME.tltk-old-...` name until no reader holds it.
The destination stays a real folder, so `cp -r`, `rsync` and `tar` copy it whole. A publish
re-checks the destination under the lock and replaces only what the caller accepts, so nothing
created meanwhile is lost. A reader (`reading`) opens the folder, holds a shared lock on it and
reads through `/proc/self/fd/N`, which keeps naming that folder however often it is swapped out.
Staging folders left by a killed process, and previous versions once no reader holds them, are
removed by the next `staged` call for the same destination. Locks need a POSIX system.
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

try:
    import fcntl
except ImportError:  # Windows: `publish` refuses with a clear error, `reading` reads by name
    fcntl = None

MARKER = ".tltk-"
_AT_FDCWD = -100
# renameat2 (Linux) and renamex_np (macOS) flags: RENAME_NOREPLACE / RENAME_EXCL, RENAME_EXCHANGE /
# RENAME_SWAP.
_RENAME_FLAGS = {
    "linux": {"noreplace": 1, "exchange": 2},
    "darwin": {"noreplace": 4, "exchange": 2},
}
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_FD_FOLDER = "/proc/self/fd"
_REFUSED = "exists and may not be replaced; nothing was changed"
# Previous versions: swapped out by `publish` ("old"), or of the symbolic-link layout that tltk
# wrote before ("v": the destination was a link to `.NAME.tltk-v-PID-TOKEN`).
_PREVIOUS = ("old", "v")


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
    """Flushes `folder` to disk and renames it to `destination` in one step.

    Under the destination's lock, what is at `destination` is checked at that moment: nothing
    there is always fine (`RENAME_NOREPLACE`, so nothing that appears meanwhile is replaced); an
    existing folder or link is replaced only when `replaceable(destination)` is true: an empty
    folder is removed with `os.rmdir` (which removes nothing else), anything else is swapped out
    with `RENAME_EXCHANGE` and removed once no reader holds it; otherwise `FileExistsError`, and
    both are left untouched (`folder` too). Where the filesystem cannot exchange (some network
    and FUSE filesystems), the swap is two renames: `destination` is absent for that moment, and
    readers (`reading`) wait for it on the lock.

    Args:
        folder: str or Path. A folder from `staged`.
        destination: str or Path. Where it goes.
        replaceable: callable or None. Takes the existing `destination` and says whether it may be
            replaced; `None` replaces nothing. Defaults to `None`.

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
        if not os.path.lexists(destination):
            _place(folder, destination)
        elif replaceable is None or not replaceable(destination):
            raise FileExistsError(errno.EEXIST, _REFUSED, str(destination))
        elif _empty_folder(destination):
            # os.rmdir fails if anything was put in it meanwhile
            _refusing(destination, os.rmdir, destination)
            _place(folder, destination)
        else:
            _swap(folder, destination)
        fsync_folder(destination.parent)
        _remove_previous(destination)


@contextlib.contextmanager
def reading(path):
    """Yields a path that reads the published folder holding `path` as it is now, until the end.

    When `path` is (or is inside) a folder written by `publish`, that folder is opened and held
    with a shared lock, and the yielded path reads through the descriptor
    (`/proc/self/fd/N/...`): every file read in the block comes from one version, however often it
    is replaced meanwhile, and that version is not removed while held. Other paths are yielded as
    they are; so is `path` where `/proc/self/fd` is missing (macOS), held but read by its name.

    Args:
        path: str or Path. A file or folder.

    Yields:
        A `pathlib.Path` to read from.

    Example:

    ```python
    with reading("exports/pets/saved_model") as pinned:
        loaded = tf.saved_model.load(str(pinned))
    ```
    """
    path = pathlib.Path(path)
    found = _published_root(path)
    descriptor = _hold(found[0]) if found else None
    if descriptor is None:
        yield path
        return
    try:
        pinned = pathlib.Path(_FD_FOLDER, str(descriptor)) if os.path.isdir(_FD_FOLDER) else None
        yield pinned / found[1] if pinned else path
    finally:
        os.close(descriptor)


def remove_stale(destination):
    """Removes what writers of `destination` left behind that no reader holds.

    That is staging folders of processes that no longer run, and previous versions (swapped out
    by `publish`, or of the link layout) once their readers let go.
    """
    destination = pathlib.Path(destination)
    if not destination.parent.is_dir():
        return
    prefix = f".{destination.name}{MARKER}tmp-"
    for candidate in destination.parent.iterdir():
        pid = candidate.name[len(prefix) :].split("-")[0]
        if candidate.name.startswith(prefix) and pid.isdigit() and not _running(int(pid)):
            _remove_unheld(candidate)
    with contextlib.suppress(FileNotFoundError):  # no lock file: never published
        with _locked(_sibling_name(destination, "lock"), exclusive=True):
            _remove_previous(destination)


def _place(folder, destination):
    """Renames `folder` to the absent `destination`; refuses if anything appeared there."""
    if not _refusing(destination, _rename, folder, destination, "noreplace"):
        # No RENAME_NOREPLACE here: os.rename replaces an empty folder only (POSIX).
        _refusing(destination, os.rename, folder, destination)


def _swap(folder, destination):
    """Puts `folder` at `destination`; the former one goes to a `.NAME.tltk-old-...` name."""
    previous = _sibling(destination, "old")
    if _rename(folder, destination, "exchange"):
        os.rename(folder, previous)  # `folder` names the former destination now
        return
    os.rename(destination, previous)  # readers wait on the lock while it is absent
    _place(folder, destination)


def _refusing(destination, function, *args):
    """Calls `function`; `destination` taken meanwhile raises `FileExistsError`."""
    try:
        return function(*args)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, _REFUSED, str(destination)) from error
        raise


def _empty_folder(path):
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _remove_previous(destination):
    """Removes the previous versions of `destination` no reader holds (call under its lock)."""
    linked = os.readlink(destination) if destination.is_symlink() else None
    prefixes = tuple(f".{destination.name}{MARKER}{kind}-" for kind in _PREVIOUS)
    for candidate in destination.parent.iterdir():
        if candidate.name.startswith(prefixes) and candidate.name != linked:
            _remove_unheld(candidate)


def _remove_unheld(path):
    """Removes a link, or a folder unless a reader holds a shared lock on it."""
    if path.is_symlink():
        os.unlink(path)
        return
    with contextlib.suppress(BlockingIOError, FileNotFoundError):
        with _locked(path, exclusive=True, wait=False):
            shutil.rmtree(path)


def _published_root(path):
    """`(root, rest)`: the folder written by `publish` that holds `path`, and `path` inside it."""
    if fcntl is None:
        return None
    absolute = pathlib.Path(os.path.abspath(path))
    real = pathlib.Path(os.path.realpath(path))  # `path` reached through a link of the user's
    for full in (absolute, real):
        for root in (full, *full.parents):
            if root.name and _sibling_name(root, "lock").is_file():
                return root, full.relative_to(root)
    return None


def _hold(root):
    """A descriptor of `root` holding a shared lock, opened while `root` names it; else None."""
    waited = False
    while True:
        try:
            descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if waited:
                return None  # let the caller's open fail
            with _locked(_sibling_name(root, "lock"), exclusive=False):
                waited = True  # a writer swapping by two renames is done now
            continue
        except NotADirectoryError:
            return None
        fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits while a writer removes it
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(descriptor), os.stat(root)):
                return descriptor
        os.close(descriptor)  # swapped out between open and lock: open the new one


@contextlib.contextmanager
def _locked(path, *, exclusive, wait=True, create=False):
    """Holds an `flock` on a folder or lock file (`create`s the file); yields the descriptor."""
    if fcntl is None:
        raise OSError(errno.ENOSYS, "tltk exports need POSIX file locks (Linux, macOS)", path)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT if create else os.O_RDONLY, 0o644)
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


def _rename(source, target, how):
    """`renameat2` (Linux) or `renamex_np` (macOS) with flag `how` ("noreplace", "exchange").

    Returns False where the system or the filesystem does not support it.
    """
    system = "darwin" if sys.platform == "darwin" else sys.platform[:5]
    if system not in _RENAME_FLAGS:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, "renameat2" if system == "linux" else "renamex_np", None)
    if function is None:
        return False
    names = os.fsencode(source), os.fsencode(target)
    flag = _RENAME_FLAGS[system][how]
    args = (_AT_FDCWD, names[0], _AT_FDCWD, names[1], flag) if system == "linux" else (*names, flag)
    if function(*args) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(target))


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
