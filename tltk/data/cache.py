"""`cache=`: where the decoded pixels of `tltk.data.from_*` live between epochs.

- `"memory"`: decoded once and held in RAM, `height * width * 3` bytes per image.
- a folder (str or Path): decoded once into a disk cache there (one raw file of the resized
  pixels, row after row, and a manifest), then read from disk every epoch, through the operating
  system's page cache: the process's memory stays flat. The cache is keyed on the file list, each
  file's size and modification time, `image_size` and `crop_to_aspect_ratio`, so a later run over
  unchanged files reuses it without opening a single image (the files it skipped are remembered
  too), and a changed source builds a new one (the stale one beside it is removed). It is
  written into a hidden folder and renamed into place when whole (`tltk.atomic`): a run killed
  while building leaves nothing that a later run trusts.
- `None`: decoded again every epoch, in parallel, in order; the up-front check decodes each file
  once and drops the pixels.
- `"auto"` (the default): `"memory"` when the decoded pixels take at most `AUTO_MEMORY_BUDGET`
  (1 GiB: 7,100 images at 224x224), else a disk cache in `default_folder()`.

Every mode gives the same pixels in the same order (for a seed): only memory and speed differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil

import numpy as np

from tltk import atomic
from tltk.data import pipeline
from tltk.data.images import check_files, load_images
from tltk.data.sources import DiskPixels, FilePixels

logger = logging.getLogger("tltk.data")

AUTO_MEMORY_BUDGET = 2**30  # bytes of decoded pixels that `cache="auto"` keeps in memory
_FORMAT = 1  # the disk cache's layout; a new layout never reads an old one
PIXELS, _MANIFEST = "pixels.u8", "manifest.json"


def default_folder():
    """Where `cache="auto"` puts disk caches: `$TLTK_DATA_CACHE`, else `~/.cache/tltk/data`.

    `~/.cache` is `$XDG_CACHE_HOME` when that is set. Each source gets its own subfolder.
    """
    if os.environ.get("TLTK_DATA_CACHE"):
        return pathlib.Path(os.environ["TLTK_DATA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "tltk" / "data"


def resolve(cache, count, image_size, *, where, disk=True):
    """`"memory"`, `None` or a folder (`pathlib.Path`) for a `cache=` argument; checks it.

    Args:
        cache: the user's `cache=` argument.
        count: int. How many images there are at most.
        image_size: tuple. `(height, width)` they are decoded at.
        where: str or Path or None. The source's own folder: a cache folder inside it is refused.
        disk: bool. What `"auto"` picks above the budget: a disk cache (`True`) or `None`.
    """
    if isinstance(cache, str) and cache in ("auto", "memory"):
        if cache == "memory":
            return cache
        size = count * image_size[0] * image_size[1] * 3
        if size <= AUTO_MEMORY_BUDGET:
            return "memory"
        chosen = default_folder() if disk else None
        logger.info(
            "cache='auto': %d images take %.1f GiB decoded, over the %.1f GiB budget: using %s.",
            count,
            size / 2**30,
            AUTO_MEMORY_BUDGET / 2**30,
            f"a disk cache in {chosen}" if disk else "cache=None",
        )
        return chosen
    if cache is None:
        return None
    if not isinstance(cache, (str, os.PathLike)) or not str(cache):
        raise ValueError(
            '`cache` must be "auto", "memory", None, or a folder path for a disk cache. '
            f"Received: cache={cache!r}"
        )
    folder = pathlib.Path(cache).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"`cache` must be a folder, not a file. Received: cache={str(cache)!r}")
    if where is not None:
        source = os.path.realpath(where)
        if os.path.join(os.path.realpath(folder), "").startswith(os.path.join(source, "")):
            raise ValueError(
                f"`cache` must be outside the data it caches ({where}): it would be read as "
                f"data. Received: cache={str(cache)!r}"
            )
    return folder


def load_files(paths, image_size, *, crop_to_aspect_ratio, num_workers, cache, where):
    """Checks and decodes image files as `cache` says.

    Args:
        paths: list of str. The candidate files.
        image_size: tuple. `(height, width)`.
        crop_to_aspect_ratio: bool. As in `tltk.data.load_image`.
        num_workers: int or None. Threads for headers and Pillow.
        cache: `"auto"`, `"memory"`, None or a folder (see the module docstring).
        where: Path. The source (data folder or CSV file): names the cache; no cache inside it.

    Returns:
        A tuple `(pixels, kept, skipped)`: what `pipeline.assemble` takes as images (row `i` is
        `paths[i]`), the indexes of the files that decode, and `(path, reason)` for the others.
    """
    folder = pathlib.Path(where)
    inside = folder if folder.is_dir() else None
    mode = resolve(cache, len(paths), image_size, where=inside)
    options = {"crop_to_aspect_ratio": crop_to_aspect_ratio, "num_workers": num_workers}
    if mode == "memory":
        pipeline.check_memory(len(paths), image_size, where)
        return load_images(paths, image_size, **options)
    if mode is None:
        checked = check_files(paths, image_size, **options)
        pixels = FilePixels(paths, checked, image_size, crop_to_aspect_ratio)
        return pixels, checked.kept, checked.skipped
    digest = key(image_size, crop_to_aspect_ratio)
    for path in paths:
        digest.update(os.fsencode(path) + b"\0" + _stat(path))

    def build(write):
        checked = check_files(paths, image_size, consume=lambda _, pixels: write(pixels), **options)
        return {"kept": checked.kept, "skipped": checked.skipped}

    source = os.path.realpath(where)
    name = f"{os.path.basename(source)}-{short_hash(source)}"
    target, manifest = disk_cache(mode, name, digest, image_size, build)
    file_rows = np.full(len(paths), -1, np.int64)
    file_rows[manifest["kept"]] = np.arange(len(manifest["kept"]))
    pixels = DiskPixels(target / PIXELS, file_rows, image_size)
    return pixels, manifest["kept"], [tuple(entry) for entry in manifest["skipped"]]


def disk_cache(folder, name, digest, image_size, build):
    """Opens the disk cache `folder/<name>-<digest>`, or builds it first; returns its manifest.

    Args:
        folder: Path. The cache folder.
        name: str. Names the source: a new cache removes the others of the same name (stale).
        digest: hashlib object. The hash of everything the pixels depend on.
        image_size: tuple. `(height, width)`.
        build: callable. `build(write)` passes every row's pixels, in order, to `write` (any
            number of rows at a time, uint8 `(n, height, width, 3)`) and returns a dict of what
            else to keep in the manifest (JSON).

    Returns:
        A tuple `(target, manifest)`: the cache's folder (holding `pixels.u8`) and its manifest.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    target = pathlib.Path(folder) / f"{safe[-60:]}-{digest.hexdigest()}"
    manifest = _open(target, image_size)
    if manifest is not None:
        logger.info("Reusing the disk cache %s.", target)
        return target, manifest
    rows = 0
    with atomic.staged(target) as stage:
        with atomic.writing(stage / PIXELS) as partial, open(partial, "wb") as out:

            def write(pixels):
                nonlocal rows
                rows += len(pixels)
                out.write(np.ascontiguousarray(pixels, np.uint8).data)

            manifest = {"format": _FORMAT, **build(write)}
        manifest["rows"] = rows
        atomic.write_text(stage / _MANIFEST, json.dumps(manifest))
        try:
            atomic.publish(stage, target, replaceable=lambda p: _open(p, image_size) is None)
        except FileExistsError:
            pass  # another run published the same cache meanwhile: the same pixels
    logger.info("Built the disk cache %s (%d images).", target, rows)
    _remove_stale(target)
    return target, manifest


def key(image_size, crop_to_aspect_ratio):
    """A hash to key a disk cache on, holding the layout, `image_size` and the crop mode."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps([_FORMAT, list(image_size), bool(crop_to_aspect_ratio)]).encode())
    return digest


def short_hash(text):
    """8 hex digits naming `text` (a path) in a cache folder's name."""
    return hashlib.blake2b(os.fsencode(text), digest_size=4).hexdigest()


def tree_stat(folder):
    """The names, sizes and modification times of every file under `folder`, as bytes to hash."""
    entries = []
    for root, _, names in os.walk(folder):
        entries += [os.path.join(root, name) for name in names]
    return b"".join(os.fsencode(path) + b"\0" + _stat(path) for path in sorted(entries))


def _stat(path):
    try:
        info = os.stat(path)
    except OSError as error:
        return f"{type(error).__name__}\0".encode()
    return f"{info.st_size}:{info.st_mtime_ns}\0".encode()


def _open(target, image_size):
    """The manifest of a whole cache at `target`, or None when there is none or it is damaged."""
    try:
        manifest = json.loads((target / _MANIFEST).read_text())
        size = os.path.getsize(target / PIXELS)
    except (OSError, ValueError):
        return None
    if manifest.get("format") != _FORMAT or size != manifest.get("rows", -1) * (
        image_size[0] * image_size[1] * 3
    ):
        logger.warning("The disk cache %s is damaged; building it again.", target)
        return None
    return manifest


def _remove_stale(target):
    """Removes the other caches of `target`'s source, with their lock and staging leftovers."""
    prefix = target.name.rsplit("-", 1)[0] + "-"
    for entry in target.parent.iterdir():
        name = entry.name.lstrip(".").split(atomic.MARKER)[0]
        if not name.startswith(prefix) or name == target.name:
            continue
        stale = target.parent / name
        atomic.remove_stale(stale)  # staging folders of runs that no longer run
        shutil.rmtree(stale, ignore_errors=True)
        if entry.name == f".{name}{atomic.MARKER}lock":
            entry.unlink(missing_ok=True)
