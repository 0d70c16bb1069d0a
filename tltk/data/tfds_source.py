"""`from_tfds`: a TensorFlow Datasets image classification dataset -> `ImageData`."""

from __future__ import annotations

import difflib
import json

import numpy as np
import tensorflow as tf

from tltk.data import cache as cache_module
from tltk.data import decode, labels, pipeline
from tltk.data.image_data import SPLITS
from tltk.data.images import check_image_size
from tltk.data.sources import DiskPixels

_VALIDATION_NAMES = ("validation", "valid", "val")
# One short request before a download: TFDS itself retries an unreachable host for 3.4 minutes.
_PROBE_URL = "https://storage.googleapis.com"
_PROBE_TIMEOUT_S = 5


def from_tfds(
    name,
    *,
    split=None,
    image_size,
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    label_mode=None,
    image_key="image",
    label_key="label",
    data_dir=None,
    download=True,
    crop_to_aspect_ratio=False,
    cache="auto",
):
    """Loads a TFDS image classification dataset (downloading it as `tfds.load` does, if needed).

    `label_key` may be a `ClassLabel` (single-label) or a `Sequence(ClassLabel)` (multi-label,
    e.g. VOC's `"labels"`, turned into multi-hot rows). Images are converted to RGB and resized as
    files are, and held in memory (`height * width * 3` bytes each) or in a disk cache, as `cache`
    says.

    A dataset not yet in `data_dir` is downloaded, after one short check (5 s at most) that the
    network answers; offline, an error says so at once and how to use a copy made elsewhere. An
    unknown `name` raises an error suggesting the closest TFDS names.

    Args:
        name: str. The TFDS name, e.g. `"tf_flowers"` or `"mnist:3.0.1"`.
        split: str, tuple or None. `None` takes the dataset's `"train"`, `"validation"` (or
            `"valid"`, `"val"`) and `"test"` splits; a str names the train split only; a tuple
            names `(train, validation, test)`, `None` entries allowed. A validation or test
            split that is not named is carved out of train by `validation_split`/`test_split`.
            Slicing works (`"train[:50%]"`). Defaults to `None`.
        image_size: tuple. `(height, width)` the images are resized to, or an int for a square.
        batch_size: int. Batch size. Defaults to `32`.
        validation_split: float. Share of train carved out for validation when there is no
            validation split, in [0, 1). Defaults to `0.2`.
        test_split: float. Share of train carved out for test when there is no test split, in
            [0, 1). Defaults to `0.0`.
        seed: int. Seed of the carving and of the per-epoch shuffle. Defaults to `0`.
        label_mode: str or None. `"int"` or `"categorical"` for single-label data, `"multi_hot"`
            for multi-label data. Defaults to `None`: `"int"` or `"multi_hot"`.
        image_key: str. The image feature. Defaults to `"image"`.
        label_key: str. The label feature. Defaults to `"label"`.
        data_dir: str or None. Where TFDS keeps its data. Defaults to TFDS' default
            (`~/tensorflow_datasets`).
        download: bool. Download the dataset when `data_dir` lacks it; with `False`, only a
            prepared copy is read and the network is never touched. Defaults to `True`.
        crop_to_aspect_ratio: bool. Center crop to the target aspect ratio before resizing.
            Defaults to `False`.
        cache: str, Path or None. `"memory"`, a folder for a disk cache (keyed on the dataset,
            its splits and its files in `data_dir`; a later run reads no TFDS file), or `"auto"`:
            memory up to 1 GiB of pixels, else a disk cache in `~/.cache/tltk/data` (see
            `tltk.data.cache`). `None` is refused: TFDS reads in sequence, so it cannot decode
            in each epoch's shuffled order. Defaults to `"auto"`.

    Returns:
        A `tltk.data.ImageData`; `sources` holds indexes into each TFDS split.

    Example:

    ```python
    data = tltk.data.from_tfds("tf_flowers", image_size=(224, 224))  # train only: 20% carved
    data = tltk.data.from_tfds("mnist", image_size=32, split=("train", None, "test"))
    ```
    """
    import tensorflow_datasets as tfds  # imported here: it is slow to import and often unused

    image_size = check_image_size(image_size)
    pipeline.check_split_args(
        batch_size=batch_size, validation_split=validation_split, test_split=test_split, seed=seed
    )
    builder = _builder(tfds, name, data_dir)
    if not builder.is_prepared():
        _check_can_download(name, builder.data_dir, download)
    class_names, multi_label = _label_feature(builder.info.features, name, image_key, label_key)
    label_mode = pipeline.resolve_label_mode(label_mode, multi_label)
    names = _split_names(split, list(builder.info.splits.keys()))

    reads = {role: split_name for role, split_name in names.items() if split_name is not None}
    counts = [_count(builder.info, split_name) for split_name in reads.values()]
    where = f"{name} {'+'.join(reads.values())}"
    mode = cache_module.resolve(cache, sum(c or 0 for c in counts), image_size, where=None)
    if mode is None:
        raise ValueError(
            "from_tfds cannot decode every epoch (cache=None): TFDS reads its files in sequence, "
            "not in the order of a per-epoch shuffle. Pass a folder for a disk cache, or "
            f'"memory". Received: cache=None for {name}'
        )

    def pairs(split_name):
        dataset = tfds.load(
            name, split=split_name, data_dir=data_dir, download=download, shuffle_files=False
        )
        return dataset.map(
            lambda example: (
                example[image_key],
                _encode(example[label_key], len(class_names), multi_label),
            )
        )

    if mode == "memory":
        pipeline.check_memory(sum(c or 0 for c in counts), image_size, where)
        images, encoded, sizes = [], [], {}
        for role, split_name in reads.items():
            pixels, split_labels = decode.resize_all(
                pairs(split_name), image_size, crop_to_aspect_ratio
            )
            images.append(pixels)
            encoded.append(split_labels)
            sizes[role] = len(split_labels)
        with tf.device("/CPU:0"):
            images = tf.concat(images, axis=0) if len(images) > 1 else images[0]
    else:
        digest = cache_module.key(image_size, crop_to_aspect_ratio)
        source = [builder.info.full_name, reads, image_key, label_key, len(class_names)]
        digest.update(json.dumps(source).encode() + cache_module.tree_stat(builder.data_dir))

        def build(write):
            encoded, sizes = [], {}
            for role, split_name in reads.items():
                sizes[role] = 0
                for batch, extra in decode.resize_each(
                    pairs(split_name), image_size, crop_to_aspect_ratio
                ):
                    write(batch)
                    encoded += extra.tolist()
                    sizes[role] += len(batch)
            return {"labels": encoded, "sizes": sizes}

        source = str(builder.data_dir)
        cache_name = f"tfds-{name.split(':')[0]}-{cache_module.short_hash(source)}"
        target, manifest = cache_module.disk_cache(mode, cache_name, digest, image_size, build)
        images = DiskPixels(target / cache_module.PIXELS, np.arange(manifest["rows"]), image_size)
        encoded, sizes = [np.asarray(manifest["labels"])], manifest["sizes"]
    parts, sources, offset = {}, [], 0
    for role in reads:
        sources += list(range(sizes[role]))
        parts[role] = np.arange(offset, offset + sizes[role])
        offset += sizes[role]
    encoded = np.concatenate(encoded)
    train = parts["train"]
    labels.check_counts(encoded[train], class_names, multi_label, f"{name} {names['train']}")

    carve = {
        role: 0.0 if names[role] else share
        for role, share in (("validation", validation_split), ("test", test_split))
    }
    carved = pipeline.stratified_split(
        [str(i) for i in range(len(train))],
        labels.strata(encoded[train], multi_label),
        validation_split=carve["validation"],
        test_split=carve["test"],
        seed=seed,
    )
    splits = {"train": train[carved["train"]]}
    for role in ("validation", "test"):
        if names[role]:
            splits[role] = parts[role]
        else:
            splits[role] = None if carved[role] is None else train[carved[role]]
    return pipeline.assemble(
        images,
        encoded,
        class_names=class_names,
        label_mode=label_mode,
        splits=splits,
        sources=sources,
        batch_size=batch_size,
        seed=seed,
        image_size=image_size,
        skipped=[],
    )


def _builder(tfds, name, data_dir):
    """`tfds.builder(name)`; an unknown name raises naming the closest names, not all 1,000."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a TFDS dataset name. Received: name={name!r}")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        names = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(base, names, n=5, cutoff=0.5)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"Unknown TFDS dataset {base!r}.{hint} All names: "
            f"https://www.tensorflow.org/datasets/catalog. Received: name={name!r}"
        ) from None


def _check_can_download(name, folder, download):
    """Raises, at once, when a dataset missing from `folder` cannot be downloaded."""
    copy = (
        f"Download it where there is a network (`tfds.builder({name!r}).download_and_prepare()`),"
        " copy its data folder (by default ~/tensorflow_datasets) here, and pass that folder as "
        "`data_dir=` with `download=False`."
    )
    if not download:
        raise ValueError(
            f"The TFDS dataset {name!r} is not prepared in {folder}, and `download=False`. {copy}"
        )
    import requests  # a dependency of tensorflow_datasets

    try:
        requests.head(_PROBE_URL, timeout=_PROBE_TIMEOUT_S)
    except requests.RequestException as error:
        raise ValueError(
            f"Cannot download the TFDS dataset {name!r}: this machine looks offline (it could not "
            f"reach {_PROBE_URL} in {_PROBE_TIMEOUT_S} s: {type(error).__name__}), and the "
            f"dataset is not in {folder}. {copy}"
        ) from None


def _label_feature(features, name, image_key, label_key):
    """`(class_names, multi_label)` of the label feature; raises naming a wrong key."""
    import tensorflow_datasets as tfds

    keys = sorted(features.keys())
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        raise ValueError(
            f"`image_key` must name an Image feature of {name}; its features are {keys}. "
            f"Received: image_key={image_key!r}"
        )
    try:
        feature = features[label_key]
    except KeyError:  # a FeaturesDict has no .get()
        feature = None
    if isinstance(feature, tfds.features.ClassLabel):
        return list(feature.names), False
    if isinstance(feature, tfds.features.Sequence) and isinstance(
        feature.feature, tfds.features.ClassLabel
    ):
        return list(feature.feature.names), True
    raise ValueError(
        f"`label_key` must name a ClassLabel (or a Sequence of ClassLabel) feature of {name}; its "
        f"features are {keys}. Received: label_key={label_key!r}"
    )


def _split_names(split, available):
    """`{role: TFDS split name or None}` for train, validation and test."""
    if split is None:
        if available and "train" not in available:
            raise ValueError(
                f"The dataset has no 'train' split; name one with `split=`. Its splits are "
                f"{available}. Received: split=None"
            )
        validation = next((s for s in _VALIDATION_NAMES if s in available), None)
        return {
            "train": "train",
            "validation": validation,
            "test": "test" if "test" in available else None,
        }
    if isinstance(split, str):
        split = (split,)
    split = tuple(split)
    if (
        not 1 <= len(split) <= 3
        or not split[0]
        or not all(s is None or isinstance(s, str) for s in split)
    ):
        raise ValueError(
            "`split` must be None, a split name, or a (train, validation, test) tuple whose "
            f"first entry is a split name. Received: split={split!r}"
        )
    split = split + (None,) * (3 - len(split))
    return dict(zip(SPLITS, split))


def _count(info, split_name):
    """The number of examples of a plain split name, or None when TFDS does not know it."""
    try:
        return int(info.splits[split_name].num_examples) or None
    except (KeyError, ValueError, TypeError):
        return None


def _encode(label, num_classes, multi_label):
    if not multi_label:
        return tf.cast(label, tf.int64)
    one_hot = tf.one_hot(tf.cast(label, tf.int32), num_classes, dtype=tf.float32)
    return tf.minimum(tf.reduce_sum(one_hot, axis=0), 1.0)
