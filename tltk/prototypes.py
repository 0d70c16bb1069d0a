"""Few-shot classifiers with no gradient step: class prototypes as a cosine-similarity head.

`build_prototype_classifier` averages the L2-normalised pooled features of a handful of
labelled examples per class (the prototypes of Snell et al., NeurIPS 2017, compared by cosine
similarity as in the "Baseline++" classifier of Chen et al., ICLR 2019) and puts them into a
plain Keras head: `UnitNormalization` of the features, then a bias-free softmax `Dense` whose
kernel is the normalised prototypes times a scale. The result is an ordinary tltk model:
`evaluate`, `export` and `fine_tune` (which starts from the prototypes) work on it unchanged.
"""

from __future__ import annotations

import keras
import numpy as np

from tltk import freezing
from tltk.argcheck import real
from tltk.builders import DEFAULT_WEIGHTS, build_classifier
from tltk.features import labelled_examples, pooled_features
from tltk.heads import OUTPUT_NAME
from tltk.transfer_model import TransferModel

# Softmax over `SCALE * cosine`: the argmax does not depend on it; 10 spreads cosines of a few
# tenths apart into confident but not saturated probabilities (Baseline++ learns a similar one).
SCALE = 10.0
NORMALIZE_NAME = "head_normalize"


def build_prototype_classifier(
    backbone,
    support,
    *,
    weights=DEFAULT_WEIGHTS,
    input_shape=None,
    class_names=None,
    scale=SCALE,
    batch_size=64,
    name=None,
):
    """A classifier from a few labelled examples per class, with no training.

    Args:
        backbone: str, `tltk.BackboneSpec` or `keras.Model`. As `tltk.build_classifier` takes it.
        support: `(images, labels)` arrays (any image size: resized to the model's input), a
            `tf.data.Dataset` of `(images, labels)` batches, or a `tltk.data.ImageData`. Every
            class needs at least one example; labels are class indexes `0..n-1` (or one-hot).
        weights: str or None. The backbone's weights, as `build_classifier` takes them.
            Defaults to its pretrained weights.
        input_shape: tuple or None. As `build_classifier`. Defaults to the backbone's size.
        class_names: list of str or None. One per class. Defaults to the `ImageData`'s names.
        scale: float. Softmax temperature: probabilities are `softmax(scale * cosine)`.
            Defaults to `10.0`.
        batch_size: int. Images per forward pass. Defaults to `64`.
        name: str or None. Model name. Defaults to `"<backbone>_prototypes"`.

    Returns:
        A `tltk.TransferModel` (backbone frozen) whose head holds the prototypes.

    Example:

    >>> import numpy as np, tltk
    >>> images = np.random.default_rng(0).integers(0, 255, (6, 20, 20, 3), dtype="uint8")
    >>> model = tltk.build_prototype_classifier("tltk_glyphnet", (images, [0, 0, 1, 1, 2, 2]))
    >>> model.output_shape, [layer.name for layer in model.heads["predictions"]]
    ((None, 3), ['head_normalize', 'predictions'])
    """
    x, labels, num_classes = labelled_examples(support, argument="support")
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(
            f"`support` has no example of class(es) {missing}: every class needs at least one."
        )
    if class_names is None and hasattr(support, "class_names"):
        class_names = list(support.class_names)
    scale = real("scale", scale, "(0, inf)")
    base = build_classifier(backbone, num_classes, weights=weights, input_shape=input_shape)
    features = _normalized(pooled_features(base, x, batch_size))
    prototypes = np.stack([features[labels == k].mean(axis=0) for k in range(num_classes)])
    prototypes = _normalized(prototypes)

    pooled = base.features.output
    normalize = keras.layers.UnitNormalization(name=NORMALIZE_NAME)
    dense = keras.layers.Dense(
        num_classes, activation="softmax", use_bias=False, name=OUTPUT_NAME, dtype="float32"
    )
    outputs = dense(normalize(pooled))
    dense.set_weights([(scale * prototypes.T).astype("float32")])
    config = base.get_config()
    structure = {key: config[key] for key in TransferModel.STRUCTURE if key != "heads"}
    structure.update(
        heads={OUTPUT_NAME: (NORMALIZE_NAME, OUTPUT_NAME)},
        groups=[tuple(group) for group in config["groups"]],
        class_names=class_names,
    )
    model = TransferModel(
        base.inputs,
        outputs,
        name=name or f"{base.backbone.name}_prototypes",
        dtype_policy=config["dtype_policy"],
        **structure,
    )
    return freezing.freeze(model)


def _normalized(vectors):
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
