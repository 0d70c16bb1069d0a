"""Writes a folder beside its destination and swaps it into place, so no reader sees half of it.

On Linux the swap is one `renameat2(RENAME_EXCHANGE)` call: the destination path always holds
either the whole previous folder or the whole new one. Elsewhere, or on a file system without it,
two renames are used, with a short window in which the destination is missing (the previous
folder is then still whole beside it, under the `.old` name). Staging folders left by a killed
process are removed by the next export to the same destination.
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


def check_destination(export_dir, *, overwrite, record_name):
    """Checks that `export_dir` may be written, and returns it as an absolute `Path`.

    An existing folder is replaced only with `overwrite=True`, and only when it is empty or holds
    a tltk export (`record_name`), so a mistyped path never wipes an unrelated folder.

    Example:

    ```python
    path = check_destination("exports/pets", overwrite=False, record_name="export.json")
    ```
    """
    path = pathlib.Path(export_dir).expanduser().absolute()
    if not path.exists():
        return path
    if not path.is_dir():
        raise ValueError(
            f"`export_dir` exists and is not a folder. Received: export_dir={str(path)!r}"
        )
    if not overwrite:
        raise ValueError(
            f"`export_dir` already exists; pass overwrite=True to replace it. "
            f"Received: export_dir={str(path)!r}"
        )
    if any(path.iterdir()) and not (path / record_name).is_file():
        raise ValueError(
            f"`export_dir` is not a tltk export (no {record_name}), so tltk will not replace it, "
            f"even with overwrite=True. Received: export_dir={str(path)!r}"
        )
    return path


@contextlib.contextmanager
def staged(export_dir):
    """Yields a new empty folder beside `export_dir`; on error it is removed, the target untouched.

    Example:

    ```python
    with staged(path) as folder:
        (folder / "labels.txt").write_text("cat")
        swap_into_place(folder, path)
    ```
    """
    export_dir = pathlib.Path(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(export_dir)
    folder = _sibling(export_dir, "tmp")
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def swap_into_place(folder, export_dir):
    """Moves `folder` to `export_dir`, replacing what is there in one step where the OS allows."""
    folder, export_dir = pathlib.Path(folder), pathlib.Path(export_dir)
    if not export_dir.exists():
        os.rename(folder, export_dir)
        return
    if _exchange(folder, export_dir):
        shutil.rmtree(folder)  # now holds the previous export
        return
    old = _sibling(export_dir, "old")
    os.rename(export_dir, old)
    os.rename(folder, export_dir)
    shutil.rmtree(old)


def remove_stale(export_dir):
    """Removes staging folders of `export_dir` whose writing process no longer runs."""
    export_dir = pathlib.Path(export_dir)
    prefix = f".{export_dir.name}{MARKER}"
    if not export_dir.parent.is_dir():
        return
    for candidate in export_dir.parent.iterdir():
        if not candidate.name.startswith(prefix) or not candidate.is_dir():
            continue
        pid = candidate.name[len(prefix) :].split("-")[1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _sibling(export_dir, kind):
    suffix = f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return export_dir.parent / f".{export_dir.name}{MARKER}{suffix}"


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
