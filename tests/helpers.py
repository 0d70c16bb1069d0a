"""Shared test helpers: tiny registered backbones with BatchNorm and named groups; tiny TF Hub
modules."""

import keras
import keras_hub
import tensorflow as tf

import tltk


def tiny_bn_cnn(name, blocks, *, preprocessing="unit", initializer="glorot_uniform"):
    """Registers (or re-registers) a tiny backbone of conv-BN-ReLU blocks, one layer group each.

    `blocks` holds `(group, filters, strides, kernel_size)` tuples, bottom first.
    """

    def construct(input_shape, weights):
        inputs = keras.Input(input_shape)
        x = inputs
        for group, filters, strides, size in blocks:
            x = keras.layers.Conv2D(
                filters,
                size,
                strides=strides,
                padding="same",
                use_bias=False,
                kernel_initializer=initializer,
                name=f"{group}_conv",
            )(x)
            x = keras.layers.BatchNormalization(name=f"{group}_bn")(x)
            x = keras.layers.ReLU(name=f"{group}_relu")(x)
        return keras.Model(inputs, x, name=name)

    return tltk.register_backbone(
        tltk.BackboneSpec(
            name=name,
            family="test",
            source="tltk",
            constructor=construct,
            preprocessing=preprocessing,
            default_input_size=(32, 32),
            min_input_size=(8, 8),
            feature_dim=blocks[-1][1],
            groups=tuple((group, f"{group}_") for group, *_ in blocks),
            description=f"{len(blocks)} conv-BN-ReLU blocks, for tests",
        ),
        overwrite=True,
    )


TINY_BN_CNN = tiny_bn_cnn(
    "test_tiny_bn_cnn", (("stem", 8, 2, 3), ("mid", 16, 2, 3), ("top", 16, 2, 3))
)


class ImageFeatureVector(tf.Module):
    """Conv -> BatchNorm-like normalisation (moving statistics) -> ReLU -> mean: (batch, 8)."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(
            tf.random.stateless_normal((3, 3, 3, 8), seed=(1, 2)) * 0.5, name="conv/kernel"
        )
        self.gamma = tf.Variable(tf.ones(8), name="bn/gamma")
        self.beta = tf.Variable(tf.zeros(8), name="bn/beta")
        self.moving_mean = tf.Variable(tf.zeros(8), trainable=False, name="bn/moving_mean")
        self.moving_variance = tf.Variable(tf.ones(8), trainable=False, name="bn/moving_variance")

    @tf.function
    def __call__(self, images, training=False):
        x = tf.nn.conv2d(images, self.kernel, 1, "SAME")
        if training:
            mean, variance = tf.nn.moments(x, [0, 1, 2])
            self.moving_mean.assign(0.9 * self.moving_mean + 0.1 * mean)
            self.moving_variance.assign(0.9 * self.moving_variance + 0.1 * variance)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        x = tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, 1e-3)
        return tf.reduce_mean(tf.nn.relu(x), [1, 2])


def save_reusable(module, path, call, regularization_losses=()):
    """Saves a reusable SavedModel (TF Hub's convention: callable, with variable lists)."""
    root = tf.train.Checkpoint()
    root.module = module
    root.__call__ = call
    root.variables = list(module.variables)
    root.trainable_variables = list(module.trainable_variables)
    root.regularization_losses = list(regularization_losses)
    tf.saved_model.save(root, str(path))
    return str(path)


def image_hub_module(folder):
    """Saves an `ImageFeatureVector` as a reusable module (images in, `training` either way)."""
    module = ImageFeatureVector()
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    for training in (True, False):
        module.__call__.get_concrete_function(spec, training)
    return save_reusable(module, folder, module.__call__)


def tiny_bert_preset(folder, words, *, hidden_dim, max_sequence_length):
    """Saves a random two-layer BERT preset with the vocabulary `words` to `folder`."""
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=2,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        max_sequence_length=max_sequence_length,
    ).save_to_preset(str(folder))
    keras_hub.models.BertTokenizer(vocabulary=vocabulary).save_to_preset(str(folder))
    return str(folder)
