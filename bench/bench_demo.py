"""Times `tltk demo` as a user runs it and records its held-out accuracy.

The issue's targets: under 10 minutes on 2 CPU cores, and at least 97% held-out accuracy.

    python bench/bench_demo.py            # writes bench/results/demo.json
"""

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import write_record  # noqa: E402


def main():
    out = pathlib.Path(tempfile.mkdtemp(prefix="tltk_demo_bench_"))
    command = [sys.executable, "-m", "tltk.cli", "demo", "--out", str(out), "--quiet"]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(
            f"tltk demo failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
        )
    report = json.loads((out / "run" / "report" / "report.json").read_text())
    record = json.loads((out / "run" / "export" / "export.json").read_text())
    result = {
        "command": "tltk demo --quiet",
        "seconds": round(seconds, 1),
        "held_out_accuracy": report["accuracy"],
        "held_out_images": report["num_examples"],
        "exports": record.get("files", record),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
    }
    print(completed.stdout[-3000:])
    print(
        f"tltk demo: {seconds:.0f} s, held-out accuracy {report['accuracy']:.4f} "
        f"on {report['num_examples']} images"
    )
    write_record(ROOT / "bench" / "results" / "demo.json", result)


if __name__ == "__main__":
    main()
