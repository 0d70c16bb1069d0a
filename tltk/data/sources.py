"""Where a dataset's pixels come from each epoch: memory, the image files, or a disk cache.

Each source turns a dataset of example rows (already shuffled, for the train split) into batches
of `(rows, uint8 pixels)`, in the rows' order. The three give the same pixels in the same order,
so `cache=` changes where pixels come from and what memory holds, never what a model sees.
"""

from __future__ import annotations

import os
import weakref

import numpy as np
import tensorflow as tf

from tltk.data import decode, images


class MemoryPixels:
    """Rows of one uint8 variable in host memory (`cache="memory"`).

    Args:
        variable: tf.Variable. `(rows, height, width, channels)` uint8 pixels.
        image_size: tuple or None. With a size, each batch is converted to RGB and resized to it
            after the gather (arrays streamed with `cache=None`); `None` takes rows as they are.
        crop_to_aspect_ratio: bool. As in `tltk.data.decode.resize`.
    """

    def __init__(self, variable, image_size=None, crop_to_aspect_ratio=False):
        self.variable = variable
        self.num_rows = int(variable.shape[0])
        self.image_size = image_size
        self.crop_to_aspect_ratio = crop_to_aspect_ratio

    def batches(self, rows, batch_size):
        def gather(batch):
            pixels = tf.gather(self.variable, batch)
            if self.image_size is not None:
                pixels = decode.resize(
                    decode.to_rgb(pixels), self.image_size, self.crop_to_aspect_ratio
                )
            return batch, pixels

        return rows.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)


class FilePixels:
    """Image files decoded again every epoch, in parallel, in order (`cache=None`).

    Args:
        paths: list of str. The files; row `i` is `paths[i]`.
        checked: tltk.data.images.Checked. How `check_files` decoded each good file.
        image_size: tuple. `(height, width)`.
        crop_to_aspect_ratio: bool. As in `tltk.data.load_image`.
    """

    def __init__(self, paths, checked, image_size, crop_to_aspect_ratio=False):
        self.num_rows = len(paths)
        self.plans = sorted(set(checked.plans.values()), key=str) or [images.PILLOW]
        plan_ids = np.zeros(len(paths), np.int32)
        orientations = np.ones(len(paths), np.int32)
        for index in checked.kept:
            plan_ids[index] = self.plans.index(checked.plans[index])
            orientations[index] = checked.orientations[index]
        with tf.device("/CPU:0"):
            self._paths = tf.constant([os.fsencode(p) for p in paths], tf.string)
            self._plan_ids = tf.constant(plan_ids)
            self._orientations = tf.constant(orientations)
        self.image_size = image_size
        self.crop_to_aspect_ratio = crop_to_aspect_ratio

    def batches(self, rows, batch_size):
        def decode_row(row):
            pixels = images.decode_planned(
                tf.gather(self._paths, row),
                tf.gather(self._plan_ids, row),
                tf.gather(self._orientations, row),
                self.plans,
                self.image_size,
                self.crop_to_aspect_ratio,
            )
            return row, pixels

        rows = rows.map(decode_row, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return rows.batch(batch_size)


class DiskPixels:
    """Rows of a raw pixel file of a disk cache, read with `os.preadv` (`cache=<folder>`).

    The file holds `(count, height, width, 3)` uint8 pixels, row after row. Reads go through the
    operating system's page cache, which is not the process's memory: resident memory stays flat
    however large the file.

    Args:
        path: str or Path. The pixel file.
        file_rows: int array. For each example row, its row in the file (-1: not in it).
        image_size: tuple. `(height, width)`.
    """

    def __init__(self, path, file_rows, image_size):
        self.path = str(path)
        self.file_rows = np.asarray(file_rows, np.int64)
        self.num_rows = len(self.file_rows)
        self.image_size = tuple(image_size)
        self._row_bytes = image_size[0] * image_size[1] * 3
        self._descriptor = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._descriptor)

    def read(self, rows):
        """`(len(rows), height, width, 3)` uint8 pixels of example `rows`, from the file."""
        out = np.empty((len(rows), *self.image_size, 3), np.uint8)
        for target, row in zip(out, self.file_rows[rows]):
            got = os.preadv(self._descriptor, [target], int(row) * self._row_bytes)
            if got != self._row_bytes or row < 0:
                raise OSError(
                    f"The disk cache file {self.path} is shorter than its manifest says (row "
                    f"{row}): it changed while in use. Delete its folder and load the data again."
                )
        return out

    def batches(self, rows, batch_size):
        def read(batch):
            pixels = tf.numpy_function(self.read, [batch], tf.uint8, stateful=False)
            pixels.set_shape([None, *self.image_size, 3])
            return batch, pixels

        return rows.batch(batch_size).map(read, num_parallel_calls=tf.data.AUTOTUNE)
