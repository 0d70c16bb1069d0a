"""Benchmark: `tltk.data.from_directory` against `keras.utils.image_dataset_from_directory`.

Writes a folder of small JPEGs (once; kept for later runs), then times, for each loader, the set-up
(tltk: listing plus the up-front check that decodes and resizes every file; Keras: listing) and
each epoch over the train and validation splits, with no model, in wall-clock and in process CPU
seconds (all threads; the steadier figure on a shared machine). Each measurement is repeated and
the median kept; the loaders alternate so that neither always runs on a warmer machine.

Usage:
    python bench/bench_data.py [--count 5000] [--image-size 160] [--repeats 3]

Prints the figures and writes them to bench/results/data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import tltk.data  # noqa: E402
from bench.record import write_record  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "data.json"


def write_folder(folder, count, classes, source_size, seed=0):
    """Writes `count` JPEGs of `source_size` (w, h) into `classes` class folders, once."""
    folder = pathlib.Path(folder)
    width, height = source_size
    marker = folder.with_name(f"{folder.name}.complete_{count}_{classes}_{width}x{height}")
    if marker.exists():
        return folder
    rng = np.random.default_rng(seed)
    for i in range(count):
        class_dir = folder / f"class_{i % classes:02d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(source_size, Image.BICUBIC)
        noise = rng.integers(-12, 13, (source_size[1], source_size[0], 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(class_dir / f"img_{i:05d}.jpg", quality=90)
    marker.touch()  # beside the folder, not in it: tltk would report it as a hidden file
    return folder


def iterate(datasets):
    """Runs one epoch over each dataset; returns the number of images seen."""
    seen = 0
    for dataset in datasets:
        for images, _ in dataset:
            seen += int(images.shape[0])
    return seen


def run_keras(folder, image_size, batch_size, epochs):
    clock = _Clock()
    train, validation = keras.utils.image_dataset_from_directory(
        folder,
        image_size=image_size,
        batch_size=batch_size,
        seed=0,
        validation_split=0.2,
        subset="both",
        verbose=False,
    )
    return clock.lap(), _epochs([train, validation], epochs)


def run_tltk(folder, image_size, batch_size, epochs):
    clock = _Clock()
    data = tltk.data.from_directory(
        folder, image_size=image_size, batch_size=batch_size, validation_split=0.2, seed=0
    )
    return clock.lap(), _epochs([data.train, data.validation], epochs)


class _Clock:
    """Wall-clock and process CPU seconds (all threads) since the last lap."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self):
        wall, cpu = time.perf_counter(), time.process_time()
        lap = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return lap


def _resident_mib():
    """This process's resident memory now (Linux), in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _epochs(datasets, epochs):
    laps, seen, clock = [], 0, _Clock()
    for _ in range(epochs):
        seen = iterate(datasets)
        laps.append(clock.lap())
    return laps, seen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/tltk_bench_jpegs")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--source-size", default="240x180", help="JPEG width x height")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args(argv)
    source_size = tuple(int(v) for v in args.source_size.split("x"))
    image_size = (args.image_size, args.image_size)

    start = time.perf_counter()
    folder = write_folder(args.folder, args.count, args.classes, source_size)
    print(
        f"folder {folder}: {args.count} JPEGs of {source_size[0]}x{source_size[1]} "
        f"(ready in {time.perf_counter() - start:.1f} s)"
    )
    iterate([tf.data.Dataset.range(1).map(lambda i: (tf.zeros([1]), i))])  # start TF once
    before = _resident_mib()
    data = tltk.data.from_directory(folder, image_size=image_size, batch_size=args.batch_size)
    iterate([data.train, data.validation])
    growth = _resident_mib() - before  # decoded images, plus one epoch's buffers
    del data

    runs = {"keras": [], "tltk": []}
    for repeat in range(args.repeats):
        order = ("keras", "tltk") if repeat % 2 == 0 else ("tltk", "keras")
        for name in order:
            loader = run_keras if name == "keras" else run_tltk
            setup, (epochs, seen) = loader(folder, image_size, args.batch_size, args.epochs)
            assert seen == args.count, (name, seen)
            runs[name].append({"setup": setup, "epochs": epochs})
            print(
                f"  {name:5s} repeat {repeat}: set-up {setup[0]:.2f} s (cpu {setup[1]:.2f}), "
                "epochs " + ", ".join(f"{w:.2f} s (cpu {c:.2f})" for w, c in epochs)
            )

    def median(name, clock, key, first_epoch=None):
        if key == "setup":
            values = [r["setup"][clock] for r in runs[name]]
        elif first_epoch:
            values = [r["epochs"][0][clock] for r in runs[name]]
        else:
            values = [lap[clock] for r in runs[name] for lap in r["epochs"][1:]]
        return round(statistics.median(values), 3)

    figures = {
        "images": args.count,
        "source_size_wh": list(source_size),
        "image_size": list(image_size),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "machine": platform.platform(),
    }
    for clock, suffix in ((0, "s"), (1, "cpu_s")):
        keras_setup = median("keras", clock, "setup")
        keras_first = median("keras", clock, "epochs", first_epoch=True)
        keras_later = median("keras", clock, "epochs")
        tltk_check = median("tltk", clock, "setup")
        tltk_first = median("tltk", clock, "epochs", first_epoch=True)
        tltk_later = median("tltk", clock, "epochs")
        figures.update(
            {
                f"keras_setup_{suffix}": keras_setup,
                f"keras_first_epoch_{suffix}": keras_first,
                f"keras_later_epoch_{suffix}": keras_later,
                f"tltk_check_{suffix}": tltk_check,
                f"tltk_first_epoch_{suffix}": tltk_first,
                f"tltk_later_epoch_{suffix}": tltk_later,
                f"ratio_check_plus_first_epoch_vs_keras_first_epoch_{suffix}": round(
                    (tltk_check + tltk_first) / keras_first, 3
                ),
                f"ratio_later_epoch_vs_keras_{suffix}": round(tltk_later / keras_later, 3),
            }
        )
    memory = args.count * image_size[0] * image_size[1] * 3
    figures["decoded_images_mib"] = round(memory / 2**20, 1)
    figures["tltk_resident_growth_mib"] = round(growth, 1)
    figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["runs"] = runs
    print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=2))
    print(f"wrote {write_record(args.results, figures)}")


if __name__ == "__main__":
    main()
