"""Image data for tltk: folders, TFDS, arrays and CSV files -> fast, checked `tf.data` pipelines.

Every source returns a `tltk.data.ImageData` holding batched train / validation / test datasets of
raw float32 pixels (0..255) and labels, the class names and counts, and the files it skipped.
Their `cache=` argument holds the decoded pixels in memory, in a disk cache, or nowhere (decoded
every epoch), for data of any size: see `tltk.data.cache`.
"""

from tltk.data.arrays import from_arrays
from tltk.data.csv_source import from_csv
from tltk.data.folders import from_directory
from tltk.data.image_data import ImageData, class_weights
from tltk.data.images import SUPPORTED_EXTENSIONS, ImageFileError, load_image
from tltk.data.mixing import mix_batches
from tltk.data.tfds_source import from_tfds

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageData",
    "ImageFileError",
    "class_weights",
    "from_arrays",
    "from_csv",
    "from_directory",
    "from_tfds",
    "load_image",
    "mix_batches",
]
