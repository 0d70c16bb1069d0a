"""TF Hub modules as Keras 3 layers, offline: the tests build small SavedModels of both styles."""

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tests.helpers import image_hub_module, save_reusable
from tltk.backbones import hub
from tltk.backbones.hub import HubLayer
from tltk.export import export, load_exported
from tltk.export.text import export_text
from tltk.text import build_text_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["good", "great", "lovely", "bad", "awful", "poor", "movie", "food", "the", "was"]


class _SignatureOnly(tf.Module):
    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(
            tf.random.stateless_normal((3, 6), seed=(3, 4)), name="dense/kernel"
        )

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def serve(self, images):
        return {
            "default": tf.matmul(tf.reduce_mean(images, [1, 2]), self.kernel),
            "feature_map": images,
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="images"),
            tf.TensorSpec([], tf.float32, name="scale"),
        ]
    )
    def scaled(self, images, scale):
        """Two outputs, no "default": `output_key` or `signature_outputs_as_dict` must choose."""
        features = tf.matmul(tf.reduce_mean(images, [1, 2]), self.kernel) * scale
        return {"features": features, "sum": tf.reduce_sum(features, 1, keepdims=True)}


class _Scaled(tf.Module):
    """A reusable module with an extra keyword argument (`scale`) and an L2 regularization loss."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((3, 4), seed=(7, 8)), name="kernel")

    @tf.function
    def __call__(self, images, training=False, scale=1.0):
        return tf.matmul(tf.reduce_mean(images, [1, 2]), self.kernel) * scale

    @tf.function(input_signature=[])
    def l2(self):
        return 0.01 * tf.reduce_sum(tf.square(self.kernel))


class _TextEmbedding(tf.Module):
    """Lower-case, split on spaces, look words up in a vocabulary file (an asset), average."""

    def __init__(self, vocabulary_file):
        super().__init__()
        initializer = tf.lookup.TextFileInitializer(
            vocabulary_file,
            tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticVocabularyTable(initializer, num_oov_buckets=1)
        self.embeddings = tf.Variable(
            tf.random.stateless_normal((len(WORDS) + 1, 8), seed=(5, 6)), name="embeddings"
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, sentences):
        ids = self.table.lookup(tf.strings.split(tf.strings.lower(sentences)))
        vectors = tf.nn.embedding_lookup(self.embeddings, ids.flat_values)
        sums = tf.math.unsorted_segment_sum(vectors, ids.value_rowids(), tf.shape(sentences)[0])
        return tf.math.divide_no_nan(sums, tf.cast(ids.row_lengths(), tf.float32)[:, None])


def _no_network(*args, **kwargs):
    raise socket.gaierror(
        socket.EAI_NONAME, "Name or service not known (network disabled by the test)"
    )


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    base = tmp_path_factory.mktemp("hub_modules")
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    signature = _SignatureOnly()
    tf.saved_model.save(
        signature,
        str(base / "signature"),
        signatures={
            "default": signature.serve,
            "image_feature_vector": signature.serve,
            "scaled": signature.scaled,
        },
    )
    scaled = _Scaled()
    for training in (True, False):
        scaled.__call__.get_concrete_function(spec, training, tf.TensorSpec([], tf.float32))
    vocabulary = base / "vocabulary.txt"
    vocabulary.write_text("\n".join(WORDS))
    text = _TextEmbedding(str(vocabulary))
    (base / "NotASavedModel").mkdir()
    return {
        "image": image_hub_module(base / "Image_Module"),
        "signature": str(base / "signature"),
        "text": save_reusable(text, base / "text", text.__call__),
        "empty": str(base / "NotASavedModel"),
        "scaled": save_reusable(scaled, base / "scaled", scaled.__call__, [scaled.l2]),
        "bad_losses": save_reusable(scaled, base / "bad", scaled.__call__, [tf.Variable(1.0)]),
    }


def _images(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    labels = (images[..., 0].mean((1, 2)) > images[..., 1].mean((1, 2))).astype("int32")
    return images, labels


def _weights(layer):
    return {w.name: w.numpy().copy() for w in layer.weights}


def test_reusable_module_fine_tunes_only_its_trainable_variables(modules):
    model = tltk.build_classifier("hub:" + modules["image"], 2, input_shape=(16, 16, 3))
    name = hub.adhoc_name(modules["image"])
    layer = model.get_layer(name)
    assert isinstance(layer, HubLayer) and layer.handle == modules["image"]  # case kept
    assert name == name.lower() and tltk.get_backbone(name).source == "tfhub"
    groups = tltk.layer_groups(model)
    assert [g.name for g in groups] == ["backbone", "head"] and groups[0].trainable_params == 0

    tltk.unfreeze(model, "all")
    trainable = {w.name for w in layer.trainable_weights}
    assert trainable == {"conv_kernel", "bn_gamma", "bn_beta"}
    assert tltk.layer_groups(model)[0].trainable_params == 3 * 3 * 3 * 8 + 16
    before = _weights(layer)
    images, labels = _images()
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    history = model.fit(images, labels, epochs=3, batch_size=8, verbose=0)
    after = _weights(layer)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(before["conv_kernel"], after["conv_kernel"])
    # BatchNorm policy: statistics stay fixed (module run in inference mode) by default.
    np.testing.assert_array_equal(before["bn_moving_mean"], after["bn_moving_mean"])


def test_train_bn_passes_training_to_the_module(modules):
    images, labels = _images(8)
    for train_bn, trainable, changes in ((True, True, True), (True, False, False)):
        layer = HubLayer(modules["image"], train_bn=train_bn, trainable=trainable)
        inputs = keras.Input((16, 16, 3))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(layer(inputs)))
        model.compile("sgd", "sparse_categorical_crossentropy")
        before = _weights(layer)["bn_moving_mean"]
        model.fit(images / 255.0, labels, epochs=1, batch_size=8, verbose=0)
        assert np.allclose(before, _weights(layer)["bn_moving_mean"]) != changes


class SubclassedClassifier(keras.Model):
    def __init__(self, handle):
        super().__init__()
        self.features = HubLayer(handle, trainable=True)
        self.classify = keras.layers.Dense(2, activation="softmax")

    def call(self, images):
        return self.classify(self.features(images / 255.0))


def test_layer_trains_inside_a_subclassed_model(modules):
    model = SubclassedClassifier(modules["image"])
    images, labels = _images(16)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    before = _weights(model.features)["conv_kernel"]
    model.fit(images, labels, epochs=2, batch_size=8, verbose=0)
    assert not np.allclose(before, _weights(model.features)["conv_kernel"])
    assert (
        len(model.trainable_weights) == 3 + 2
    )  # the module's kernel, gamma, beta; the Dense layer


def test_signature_only_module_and_output_key(modules):
    model = tltk.build_classifier("hub:" + modules["signature"], 3, input_shape=(8, 8, 3))
    layer = model.get_layer(hub.adhoc_name(modules["signature"]))
    assert layer.output.shape == (None, 6)
    tltk.unfreeze(model, "all")
    assert [w.name for w in layer.trainable_weights] == ["dense_kernel"]
    probabilities = model.predict(_images(4, 8)[0], verbose=0)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)

    named = HubLayer(modules["signature"], signature="image_feature_vector", output_key="default")
    assert named(np.zeros((2, 8, 8, 3), "float32")).shape == (2, 6)
    with pytest.raises(ValueError, match="must return a feature vector.*Received: output shape"):
        HubLayer(modules["signature"], output_key="feature_map")(keras.Input((8, 8, 3)))
    with pytest.raises(ValueError, match="no signature 'serving'.*image_feature_vector"):
        HubLayer(modules["signature"], signature="serving")
    with pytest.raises(
        ValueError, match="keys \\['default', 'feature_map'\\].*output_key='logits'"
    ):
        HubLayer(modules["signature"], output_key="logits")(keras.Input((8, 8, 3)))


def _unit_images(n=4, size=8):
    return _images(n, size)[0] / 255.0


def test_arguments_are_forwarded_to_every_call(modules):
    images = _unit_images()
    plain = HubLayer(modules["scaled"])(images)
    tripled = HubLayer(modules["scaled"], arguments={"scale": 3.0})
    np.testing.assert_allclose(tripled(images), 3 * plain, rtol=1e-5)
    assert tripled.arguments == {"scale": 3.0} and tripled.get_config()["arguments"] == {
        "scale": 3.0
    }
    # A signature's other inputs come from `arguments`: "scaled" is "default" times `scale`.
    doubled = HubLayer(
        modules["signature"], signature="scaled", arguments={"scale": 2.0}, output_key="features"
    )
    np.testing.assert_allclose(
        doubled(images), 2 * HubLayer(modules["signature"])(images), rtol=1e-5
    )

    for arguments, match in (
        (
            "scale=3",
            "`arguments` must be a dict of keyword arguments.*Received: arguments='scale=3'",
        ),
        ({"colour": 1}, "no argument \\['colour'\\].*`arguments` may name \\['scale'\\]"),
        ({"training": True}, "`arguments` may not set 'training'"),
    ):
        with pytest.raises(ValueError, match=match):
            HubLayer(modules["scaled"], arguments=arguments)
    with pytest.raises(ValueError, match="inputs \\['images', 'scale'\\].*`arguments` must give"):
        HubLayer(modules["signature"], signature="scaled", output_key="features")
    with pytest.raises(ValueError, match="`arguments` must be JSON-serializable"):
        HubLayer(modules["scaled"], arguments={"scale": tf.constant(2.0)}).get_config()


def test_regularization_losses_count_only_while_trainable(modules):
    layer = HubLayer(modules["scaled"], trainable=True)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    (kernel,) = layer.trainable_weights
    l2 = 0.01 * np.sum(np.square(kernel.numpy()))
    assert len(model.losses) == 1 and np.isclose(float(model.losses[0]), l2, rtol=1e-6)
    with tf.GradientTape() as tape:
        total = tf.add_n(model.losses)
    np.testing.assert_allclose(tape.gradient(total, kernel), 0.02 * kernel.numpy(), rtol=1e-5)

    # The value a train step minimises: at learning rate 0 the weights stay, so fit's loss is the
    # data loss plus the module's regularization loss, and only the data loss once frozen.
    images, targets = _unit_images(8), np.zeros((8, 1), "float32")
    for trainable, extra in ((True, l2), (False, 0.0)):
        layer.trainable = trainable
        model.compile(keras.optimizers.SGD(0.0), "mse")
        loss = model.fit(images, targets, batch_size=8, verbose=0).history["loss"][0]
        data_loss = np.mean(np.square(model.predict(images, verbose=0)))
        assert np.isclose(loss, data_loss + extra, rtol=1e-5), (trainable, loss, data_loss, extra)
    assert model.losses == [] and HubLayer(modules["scaled"]).losses == []
    assert HubLayer(modules["signature"], trainable=True).losses == []  # signatures have none
    with pytest.raises(ValueError, match="`regularization_losses` that are not all callables"):
        HubLayer(modules["bad_losses"])


def test_output_key_and_signature_select_outputs(modules):
    images = _unit_images()

    def scaled(**kwargs):
        return HubLayer(
            modules["signature"], signature="scaled", arguments={"scale": 1.0}, **kwargs
        )

    features = scaled(output_key="features")(images)
    sums = scaled(output_key="sum")(images)
    assert features.shape == (4, 6) and sums.shape == (4, 1)
    np.testing.assert_allclose(sums, np.sum(features, 1, keepdims=True), rtol=1e-5)
    both = scaled(signature_outputs_as_dict=True)(images)
    assert sorted(both) == ["features", "sum"]
    np.testing.assert_allclose(both["features"], features)

    # Bad values fail when the layer is made, naming the argument and what would do.
    with pytest.raises(ValueError, match="keys \\['features', 'sum'\\].*Received: output_key=None"):
        scaled()
    with pytest.raises(ValueError, match="keys \\['features', 'sum'\\].*output_key='logits'"):
        scaled(output_key="logits")
    with pytest.raises(ValueError, match="either `output_key` or `signature_outputs_as_dict"):
        scaled(output_key="sum", signature_outputs_as_dict=True)
    with pytest.raises(ValueError, match="returns a single tensor.*output_key='features'"):
        HubLayer(modules["scaled"], output_key="features")
    with pytest.raises(
        ValueError, match="`signature_outputs_as_dict` applies only when a signature"
    ):
        HubLayer(modules["scaled"], signature_outputs_as_dict=True)
    with pytest.raises(ValueError, match="no signature 'scaled'.*Received: signature='scaled'"):
        HubLayer(modules["scaled"], signature="scaled", output_key="features")


def test_keras_layer_arguments_survive_a_keras_file(modules, tmp_path):
    inputs = keras.Input((8, 8, 3))
    layers = [
        HubLayer(modules["scaled"], arguments={"scale": 3.0}, trainable=True),
        HubLayer(
            modules["signature"], signature="scaled", arguments={"scale": 2.0}, output_key="sum"
        ),
        HubLayer(
            modules["signature"],
            signature="scaled",
            arguments={"scale": 0.5},
            signature_outputs_as_dict=True,
        ),
    ]
    features = [layers[0](inputs), layers[1](inputs), layers[2](inputs)["features"]]
    outputs = keras.layers.Dense(2)(keras.layers.Concatenate()(features))
    model = keras.Model(inputs, outputs)
    images = _unit_images(8)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(images, np.ones((8, 2)), epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "model.keras")

    trusted = [modules["scaled"], modules["signature"]]  # safe mode loads only trusted modules
    loaded = tltk.load_model(tmp_path / "model.keras", trusted_hub_handles=trusted)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    reloaded = [layer for layer in loaded.layers if isinstance(layer, HubLayer)]
    assert [layer.get_config() for layer in reloaded] == [layer.get_config() for layer in layers]
    assert reloaded[0].arguments == {"scale": 3.0} and reloaded[1].output_key == "sum"
    assert len(loaded.losses) == 1  # the trained kernel's L2, restored
    np.testing.assert_allclose(float(loaded.losses[0]), float(model.losses[0]), rtol=1e-6)


TEXTS = [
    "good movie",
    "great food",
    "lovely movie",
    "bad movie",
    "awful food",
    "poor food",
    "the food was good",
    "the movie was awful",
]
TEXT_LABELS = np.array([1, 1, 1, 0, 0, 0, 1, 0])


@pytest.fixture(scope="module")
def saved(modules, tmp_path_factory):
    """Fine-tunes an image and a text classifier on TF Hub modules; saves them as .keras files."""
    folder = tmp_path_factory.mktemp("saved")
    image_model = tltk.build_classifier(
        "hub:" + modules["image"], 2, input_shape=(16, 16, 3), dropout=0.0
    )
    tltk.unfreeze(image_model, "all")
    images, labels = _images()
    image_model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    image_model.fit(images, labels, epochs=2, batch_size=8, verbose=0)
    image_model.save(folder / "image.keras")
    np.save(folder / "image.npy", image_model.predict(images, verbose=0))

    text_model = build_text_classifier(modules["text"], 2, dropout=0.0)
    tltk.unfreeze(text_model, "all")
    data = tf.data.Dataset.from_tensor_slices((TEXTS, TEXT_LABELS)).batch(4)
    text_model.compile(
        keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = text_model.fit(data, epochs=15, verbose=0)
    text_model.save(folder / "text.keras")
    np.save(folder / "text.npy", text_model.predict(tf.constant(TEXTS), verbose=0))
    np.save(folder / "text_accuracy.npy", history.history["accuracy"])
    keras.backend.clear_session()
    return folder


def test_image_model_reloads_and_exports(modules, saved, tmp_path):
    model = tltk.load_model(saved / "image.keras", trusted_hub_handles=modules["image"])
    images, _ = _images()
    np.testing.assert_allclose(
        model.predict(images, verbose=0), np.load(saved / "image.npy"), atol=1e-6
    )
    report = export(
        model,
        tmp_path / "export",
        quantization=["float32", "int8"],
        representative_data=images,
        labels=["red", "green"],
    )
    assert report.passed and report.file("tflite", "int8").parity.top1_agreement >= 0.98
    names, probabilities = load_exported(tmp_path / "export" / "model_float32.tflite").predict(
        images
    )
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-5)
    assert set(names) <= {"red", "green"}


def test_text_embedding_module_learns_reloads_and_exports(modules, saved, tmp_path):
    assert np.load(saved / "text_accuracy.npy")[-1] == 1.0
    model = tltk.load_model(saved / "text.keras", trusted_hub_handles=modules["text"])
    assert [layer.name for layer in model.layers] == [
        "text",
        hub.adhoc_name(modules["text"]),
        "predictions",
    ]
    expected = np.load(saved / "text.npy")
    np.testing.assert_allclose(model.predict(tf.constant(TEXTS), verbose=0), expected, atol=1e-6)
    with pytest.raises(ValueError, match="TFLite export .* not possible.*string ops"):
        export_text(model, tmp_path / "text_export")
    report = export_text(
        model, tmp_path / "text_export", formats=("saved_model",), parity_data=TEXTS
    )
    assert report.passed and not (tmp_path / "text_export" / "model_tokens_float32.tflite").exists()
    serve = tf.saved_model.load(str(tmp_path / "text_export" / "saved_model")).signatures[
        "serving_default"
    ]
    np.testing.assert_allclose(serve(text=tf.constant(TEXTS))["probabilities"], expected, atol=1e-6)


def test_models_reload_in_safe_mode_in_a_fresh_process(modules, saved):
    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {REPO!r})
        import keras, numpy as np, tensorflow as tf, tltk, tltk.backbones.hub
        with tltk.trust_hub_handles({[modules["image"], modules["text"]]!r}):  # safe mode
            image = keras.models.load_model({str(saved / "image.keras")!r}, safe_mode=True)
            text = keras.models.load_model({str(saved / "text.keras")!r}, safe_mode=True)
        x = np.random.default_rng(0).uniform(0, 255, (24, 16, 16, 3)).astype("float32")
        print(np.abs(image.predict(x, verbose=0) - np.load({str(saved / "image.npy")!r})).max())
        print([g.name for g in tltk.layer_groups(image)])
        texts = {TEXTS!r}
        expected = np.load({str(saved / "text.npy")!r})
        print(np.abs(text.predict(tf.constant(texts), verbose=0) - expected).max())
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    image_diff, groups, text_diff = out.stdout.strip().splitlines()[-3:]
    assert float(image_diff) < 1e-6 and float(text_diff) < 1e-6
    assert groups == "['backbone', 'head']"


def test_url_handle_is_read_from_the_tfhub_cache(modules, tmp_path, monkeypatch):
    """The real handle path, offline: tensorflow_hub finds the module in TFHUB_CACHE_DIR."""
    handle = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    cached = tmp_path / hashlib.sha1(handle.encode("utf8")).hexdigest()
    os.symlink(modules["image"], cached)
    assert tltk.get_backbone("hub:" + handle).name == "hub_mobilenet_v2_100_224"
    model = tltk.build_classifier("hub_mobilenet_v2_100_224", 2, input_shape=(32, 32, 3))
    layer = model.get_layer("hub_mobilenet_v2_100_224")
    assert layer.handle == handle and model.get_layer("preprocessing").mode == "unit"
    assert model.predict(np.zeros((1, 32, 32, 3)), verbose=0).shape == (1, 2)


def test_registry_entries_are_real_tfhub_handles():
    table = [
        n for n in tltk.list_backbones(source="tfhub") if tltk.get_backbone(n).aliases
    ]  # not "hub:<path>" ones
    image = [n for n in table if not hub.is_text_backbone(tltk.get_backbone(n))]
    text = [n for n in table if hub.is_text_backbone(tltk.get_backbone(n))]
    assert {
        "hub_mobilenet_v2_100_224",
        "hub_mobilenet_v3_large_100_224",
        "hub_efficientnet_v2_b0",
        "hub_bit_s_r50x1",
        "hub_inception_v3",
    } <= set(image)
    assert {"hub_nnlm_en_dim50", "hub_universal_sentence_encoder"} <= set(text)
    for name in image + text:
        spec = tltk.get_backbone(name)
        (alias,) = spec.aliases
        assert (
            alias.startswith("hub:https://tfhub.dev/google/") and tltk.get_backbone(alias) is spec
        )
        assert spec.feature_dim > 0
        if name in image:
            assert spec.preprocessing == "unit" and min(spec.default_input_size) >= 224
    assert tltk.get_backbone("hub_inception_v3").default_input_size == (299, 299)


def test_bad_handles_and_modules_fail_clearly(modules, tmp_path):
    with pytest.raises(ValueError, match="'/no/such/module' is no URL and no existing folder"):
        tltk.build_classifier("hub:/no/such/module", 2, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="NotASavedModel'.*not a SavedModel folder"):
        HubLayer(modules["empty"])
    with pytest.raises(
        ValueError, match="text embedding that takes strings.*build_text_classifier"
    ):
        tltk.build_classifier("hub_nnlm_en_dim50", 2, input_shape=(32, 32, 3), weights="pretrained")
    with pytest.raises(ValueError, match="image feature vector"):
        build_text_classifier("hub_mobilenet_v2_100_224", 2)
    with pytest.raises(ValueError, match="weights come with it.*weights=None"):
        tltk.build_classifier("hub:" + modules["image"], 2, input_shape=(16, 16, 3), weights=None)
    with pytest.raises(ValueError, match="does not accept this input"):
        tltk.build_classifier("hub:" + modules["text"], 2, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="`lora_rank` applies to keras-hub"):
        build_text_classifier("hub:" + modules["text"], 2, lora_rank=4)


def test_unreachable_handle_fails_fast(tmp_path, monkeypatch):
    """A server that accepts the connection and never answers: the download gives up in seconds."""
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    held = []  # the accepted connection stays open, unanswered
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    handle = f"http://127.0.0.1:{server.getsockname()[1]}/models/feature_vector/1"
    start = time.monotonic()
    with pytest.raises(
        ValueError, match=f"Could not fetch TF Hub handle '{handle}'.*(timed out|TimeoutError)"
    ):
        hub.resolve_handle(handle, timeout=1)
    assert time.monotonic() - start < 30
    server.close()
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)  # offline, even where the network is up
    with pytest.raises(
        ValueError, match="Could not fetch TF Hub handle 'https://tfhub.dev/google/nope/1'"
    ):
        hub.resolve_handle("https://tfhub.dev/google/nope/1", timeout=5)


def test_adhoc_names_are_valid_layer_names():
    for handle in (
        "https://tfhub.dev/Google/Some-Model/feature_vector/5",
        "/tmp/My Module",
        "x" * 300,
    ):
        name = hub.adhoc_name(handle)
        assert name.startswith("hub_") and len(name) <= 90 and ":" not in name and "/" not in name
        keras.layers.Dense(1, name=name)  # a valid Keras name
    assert hub.adhoc_name("/tmp/a") != hub.adhoc_name("/tmp/b")
