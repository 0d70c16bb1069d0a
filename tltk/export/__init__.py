"""Export: SavedModel and TFLite files checked against the Keras model, written atomically.

`export` (one driver, with an adapter per modality: images, texts) writes the files and runs the
parity gate; `load_exported` turns any of them (or a `.keras` file) into a predictor of class
names and probabilities.
"""

from tltk.export.exporter import export
from tltk.export.parity import ParityError
from tltk.export.predictor import Predictor, load_exported
from tltk.export.report import ExportedFile, ExportReport
from tltk.export.text import export_text

__all__ = [
    "ExportReport",
    "ExportedFile",
    "ParityError",
    "Predictor",
    "export",
    "export_text",
    "load_exported",
]
