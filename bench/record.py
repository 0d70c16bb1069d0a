"""The one way the benchmarks (and the demo backbone's pretraining script) write JSON records."""

from __future__ import annotations

import json
import pathlib

from tltk import atomic


def write_record(path, record):
    """Writes `record` as indented JSON to `path`, atomically.

    The file is written with `tltk.atomic` (beside `path`, fsynced, renamed into place), so a killed
    run never leaves half a record; values JSON cannot hold are written as their `str`.

    Example: `write_record(REPO / "bench" / "results" / "demo.json", {"seconds": 45.1})`
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, json.dumps(record, indent=2, default=str) + "\n")
