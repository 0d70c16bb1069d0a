"""Export: SavedModel and TFLite files that take raw pixels, checked against the Keras model.

`export` writes the files atomically and runs the parity gate; `load_exported` turns any of them
(or a `.keras` file) into a predictor of class names and probabilities.
"""

from tltk.export.exporter import export
from tltk.export.parity import ParityError
from tltk.export.predictor import Predictor, load_exported
from tltk.export.report import ExportedFile, ExportReport

__all__ = ["ExportReport", "ExportedFile", "ParityError", "Predictor", "export", "load_exported"]
