"""The one way the benchmarks (and the demo backbone's pretraining script) write their JSON records."""

from __future__ import annotations

import json
import os
import pathlib


def write_record(path, record):
    """Writes `record` as indented JSON to `path`, atomically.

    The file is written beside `path` and renamed into place, so a killed run never leaves half a
    record; values JSON cannot hold are written as their `str`.

    Example: `write_record(REPO / "bench" / "results" / "demo.json", {"seconds": 45.1})`
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path
