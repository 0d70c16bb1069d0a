"""What `tltk.export` returns: the files written, their sizes, parity figures and latency."""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class ExportedFile:
    """One exported model file.

    Attributes:
        path: Path. Where the file (or SavedModel folder) is, after the export.
        format: str. `"saved_model"` or `"tflite"`.
        quantization: str. `"float32"`, `"float16"`, `"dynamic"` or `"int8"`.
        size_bytes: int. Size on disk (a SavedModel: all its files).
        latency_ms: float. Median CPU milliseconds for one image.
        parity: Parity, HeadsParity or None. Agreement with the Keras model (per head for a model
            with several heads); `None` when the gate did not run.
    """

    path: pathlib.Path
    format: str
    quantization: str
    size_bytes: int
    latency_ms: float
    parity: object = None

    @property
    def passed(self):
        """Whether the file passed the parity gate (`None` when the gate did not run)."""
        return None if self.parity is None else self.parity.passed

    def to_dict(self):
        """The record as plain JSON types."""
        return {
            "path": str(self.path),
            "format": self.format,
            "quantization": self.quantization,
            "size_bytes": self.size_bytes,
            "latency_ms": round(self.latency_ms, 4),
            "parity": None if self.parity is None else dataclasses.asdict(self.parity),
        }


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """The result of `tltk.export`.

    Attributes:
        export_dir: Path. The export folder.
        files: tuple. One `ExportedFile` per SavedModel / TFLite file.
        labels_path: Path or dict. The `labels.txt` file; with several heads
            `{head: Path}` of each labelled head's `labels_<head>.txt`.
        record_path: Path. The JSON record (`export.json`).
        written: bool. Whether the files were moved into `export_dir` (`False` when the parity
            gate failed with `parity="raise"`: the figures are kept, the files are not).

    Example:

    ```python
    report = tltk.export(model, "exports/pets", representative_data=train_ds)
    print(report)                      # a table: size, parity, latency per file
    report.file("tflite", "int8").size_bytes
    ```
    """

    export_dir: pathlib.Path
    files: tuple
    labels_path: object
    record_path: pathlib.Path
    written: bool = True

    @property
    def passed(self):
        """`False` if any file failed the parity gate, else `True` (also when it did not run)."""
        return all(f.passed is not False for f in self.files)

    @property
    def failed(self):
        """The files that failed the parity gate."""
        return tuple(f for f in self.files if f.passed is False)

    def file(self, format, quantization="float32"):
        """Returns the `ExportedFile` of one format and quantization."""
        for exported in self.files:
            if exported.format == format and exported.quantization == quantization:
                return exported
        raise ValueError(
            f"This export has no {format} file at {quantization}. Received: "
            f"format={format!r}, quantization={quantization!r}"
        )

    def to_dict(self):
        """The report as plain JSON types."""
        return {
            "export_dir": str(self.export_dir),
            "written": self.written,
            "passed": self.passed,
            "files": [f.to_dict() for f in self.files],
        }

    def __str__(self):
        rows = [("file", "size", "latency", "parity")]
        for f in self.files:
            parity = "not checked" if f.parity is None else f.parity.describe()
            name = f.path.name + ("/" if f.format == "saved_model" else "")
            rows.append((name, _size(f.size_bytes), f"{f.latency_ms:.2f} ms", parity))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"Export to {self.export_dir}" + ("" if self.written else " (NOT written)")]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
        return "\n".join(lines)


def _size(num_bytes):
    if num_bytes < 1024:
        return f"{num_bytes} B"
    if num_bytes < 1024**2:
        return f"{num_bytes / 1024:.1f} KB"
    return f"{num_bytes / 1024**2:.1f} MB"
