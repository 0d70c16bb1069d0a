"""Times TFLite files on this machine with LiteRT alone: numpy and ai-edge-litert, no TensorFlow.

Latency depends on the processor more than on anything tltk does (int8 kernels pay on CPUs with
8-bit dot-product instructions: ARM's dotprod, x86's AVX-VNNI or AVX512-VNNI), so the files that
`bench/bench_export.py --keep DIR` writes can be copied to the machine that will run them and
timed there with this script. Method (shared with bench_export): one image of random values in
the file's input type, `invoke()` only, `rounds` rounds of `runs` calls interleaved across files,
each after 3 warm-up calls; the figure is the median of the round medians.

Usage:

    python bench/tflite_latency.py model_float32.tflite model_int8.tflite --threads 2 1
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import numpy as np


def cpu_flags():
    """The processor's name and its 8-bit dot-product flags, from /proc/cpuinfo (Linux)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor(), "dot_product_flags": None}
    fields = dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and line.count(":") == 1
    )
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
    return {
        "model": fields.get("model name", platform.processor()),
        "dot_product_flags": sorted(f for f in wanted if f in flags),
    }


class Timer:
    """One TFLite file loaded in a LiteRT interpreter, fed one random image."""

    def __init__(self, path, num_threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        dtype = np.dtype(detail["dtype"])
        rng = np.random.default_rng(0)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            image = rng.integers(info.min, info.max, detail["shape"], endpoint=True)
        else:
            image = rng.uniform(0, 255, detail["shape"])
        self.interpreter.set_tensor(detail["index"], image.astype(dtype))

    def median_ms(self, runs, warmup=3):
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000.0)


def latencies(files, num_threads, *, rounds=5, runs=50):
    """`{name: [median ms of each round]}` for `{name: path}`, rounds interleaved across files."""
    timers = {name: Timer(path, num_threads) for name, path in files.items()}
    medians = {name: [] for name in files}
    for _ in range(rounds):
        for name, timer in timers.items():
            medians[name].append(timer.median_ms(runs))
    return medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=pathlib.Path, help=".tflite files to time")
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    files = {f.name: f for f in args.files}
    cpu = cpu_flags()
    print(f"{cpu['model']}, {os.cpu_count()} cores, flags {cpu['dot_product_flags']}")
    first = next(iter(files))
    record = {"cpu": cpu, "cpu_count": os.cpu_count(), "machine": platform.platform(), "files": {}}
    for threads in args.threads:
        medians = latencies(files, threads, rounds=args.rounds, runs=args.runs)
        base = float(np.median(medians[first]))
        for name, values in medians.items():
            ms = float(np.median(values))
            print(f"  {threads} thread(s) {name:24} {ms:8.2f} ms  {ms / base:6.3f}x {first}")
            entry = record["files"].setdefault(name, {})
            entry[f"latency_ms_{threads}_threads"] = round(ms, 3)
            entry[f"latency_vs_{first}_{threads}_threads"] = round(ms / base, 4)
            entry[f"round_medians_ms_{threads}_threads"] = [round(v, 3) for v in values]
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
