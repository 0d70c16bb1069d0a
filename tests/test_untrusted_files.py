"""Untrusted model files run no code: a `.keras` file naming a hostile TF Hub module, opened
through every entry point, loads nothing and says how to opt in; a trusted module still loads."""

import hashlib
import json
import os
import socket
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import tltk
from tests.helpers import TINY_BN_CNN, image_hub_module
from tltk.backbones import hub_module
from tltk.cli import main
from tltk.doctor import run_checks

OPT_IN = "Refused to load the TF Hub module"
URL = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"


class _Marker(tf.saved_model.experimental.TrackableResource):
    """A resource whose initializer, run by `tf.saved_model.load`, writes `<marker>.load`."""

    def __init__(self, marker):
        super().__init__()
        self._marker = marker

    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")

    def _initialize(self):
        tf.io.write_file(self._marker + ".load", "the module's graph ran at load time")


class _Hostile(tf.Module):
    """A working feature-vector module that also writes a file at load and at every call."""

    def __init__(self, marker):
        super().__init__()
        self.kernel = tf.Variable(tf.ones((3, 4)), name="kernel")
        self.resource = _Marker(marker)
        self.marker = marker

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        tf.io.write_file(self.marker + ".call", "the module's graph ran at call time")
        return tf.matmul(tf.reduce_mean(images, [1, 2]), self.kernel)


def _png_tree(root, classes=("a", "b"), per_class=6):
    for label in classes:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((8, 8, 3), 20 * i + (120 if label == "b" else 0), "uint8")
            (root / label / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def _with_handle(source, target, old, new):
    """Copies the `.keras` file `source` to `target` with its HubLayer's handle `old` -> `new`."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for name in archive.namelist():
            data = archive.read(name)
            if name == "config.json":
                data = data.decode().replace(json.dumps(old), json.dumps(new)).encode()
            out.writestr(name, data)
    return target


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A tltk model on the hostile module, saved; the markers of building it removed."""
    base = tmp_path_factory.mktemp("hostile")
    markers = base / "markers"
    markers.mkdir()
    module = base / "module"
    tf.saved_model.save(_Hostile(str(markers / "pwned")), str(module))
    model = tltk.build_classifier("hub:" + str(module), 2, input_shape=(8, 8, 3))
    model.save(base / "hostile.keras")
    for marker in markers.iterdir():
        marker.unlink()
    return {"base": base, "module": str(module), "markers": markers}


@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    """A tltk model on a harmless module (one a user trusts), saved, and its outputs."""
    base = tmp_path_factory.mktemp("trusted")
    module = image_hub_module(base / "module")
    model = tltk.build_classifier("hub:" + module, 2, input_shape=(8, 8, 3))
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    model.save(base / "model.keras")
    return base / "model.keras", module, pixels, model.predict(pixels, verbose=0)


def _refused(markers, action):
    """Runs `action`, which must fail with the opt-in error and write no marker."""
    with pytest.raises(ValueError, match=OPT_IN) as raised:
        action()
    message = str(raised.value)
    assert "--trust-hub-handle" in message and "trusted_hub_handles" in message
    assert "safe_mode=False" in message and "enable_unsafe_deserialization" in message
    assert list(markers.iterdir()) == []


def test_every_handle_form_is_refused_in_safe_mode(hostile, tmp_path, monkeypatch):
    source, module, markers = (
        hostile["base"] / "hostile.keras",
        hostile["module"],
        hostile["markers"],
    )
    _refused(markers, lambda: keras.models.load_model(source))  # Keras' own default

    monkeypatch.chdir(hostile["base"])  # a handle relative to the current folder
    relative = _with_handle(source, tmp_path / "relative.keras", module, "module")
    _refused(markers, lambda: keras.models.load_model(relative))

    # A URL, resolved from the TF Hub cache (offline), where the hostile module was planted.
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    os.symlink(module, tmp_path / "cache" / hashlib.sha1(URL.encode()).hexdigest())
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    url = _with_handle(source, tmp_path / "url.keras", module, URL)
    _refused(markers, lambda: keras.models.load_model(url))


def _no_network(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "network disabled by the test")


def test_tltk_entry_points_refuse_the_hostile_file(hostile, tmp_path):
    source, markers = hostile["base"] / "hostile.keras", hostile["markers"]
    _refused(markers, lambda: tltk.load_model(source))
    _refused(markers, lambda: tltk.load_exported(source))
    _refused(
        markers,
        lambda: tltk.build_classifier(TINY_BN_CNN.name, 2, weights=str(source)),
    )

    data = _png_tree(tmp_path / "data")
    runner = CliRunner()
    commands = {
        "predict": ["predict", str(source), str(data / "a" / "0.png")],
        "evaluate": ["evaluate", str(source), str(data)],
        "export": ["export", str(source), str(tmp_path / "export")],
        "train": ["train", str(data), "--out", str(tmp_path / "run")]
        + ["--backbone", TINY_BN_CNN.name, "--weights", str(source), "--quiet"],
    }
    for command, args in commands.items():
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (command, result.output)
        assert OPT_IN in result.output and "--trust-hub-handle" in result.output, command
        assert "Traceback" not in result.output
        assert list(markers.iterdir()) == [], command
    assert not (tmp_path / "export").exists()


def test_a_trusted_hub_model_still_loads(trusted, tmp_path):
    path, module, pixels, expected = trusted
    with pytest.raises(ValueError, match=OPT_IN):
        tltk.load_model(path)
    for spelling in (module, module + os.sep, os.path.relpath(module)):  # same real folder
        model = tltk.load_model(path, trusted_hub_handles=[spelling])
        np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-6)
    with tltk.trust_hub_handles(module):
        _, probabilities = tltk.load_exported(path).predict(pixels)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    with pytest.raises(ValueError, match=OPT_IN):  # the trust ended with the block
        tltk.load_exported(path)
    model = keras.models.load_model(path, safe_mode=False)  # Keras' own opt-in
    np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-6)

    png = _png_tree(tmp_path / "data", classes=("a",), per_class=1) / "a" / "0.png"
    result = CliRunner().invoke(
        main, ["predict", str(path), str(png), "--trust-hub-handle", module]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{png}: ")


def test_bad_trusted_handles_are_rejected():
    with pytest.raises(ValueError, match="non-empty strings.*Received: handles=\\[''\\]"):
        with tltk.trust_hub_handles([""]):
            pass


def test_hub_cache_defaults_to_a_per_user_folder(trusted, tmp_path, monkeypatch):
    """With TFHUB_CACHE_DIR unset, handles resolve in Keras' per-user folder, not /tmp."""
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "tfhub_modules"
    cache.mkdir(parents=True)
    planted = cache / hashlib.sha1(URL.encode()).hexdigest()
    os.symlink(trusted[1], planted)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    assert hub_module.hub_cache_dir() == str(cache)
    assert hub_module.resolve_handle(URL) == str(planted)
    assert os.environ["TFHUB_CACHE_DIR"] == str(cache)  # what tensorflow_hub was told


def _hub_cache_check():
    (check,) = [c for c in run_checks() if c.name.startswith("TF Hub cache")]
    return check


def test_doctor_warns_about_a_shared_hub_cache(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    for folder in (shared, shared / "not_yet"):  # planted in, or created first by someone else
        monkeypatch.setenv("TFHUB_CACHE_DIR", str(folder))
        check = _hub_cache_check()
        assert not check.ok and "writable by every user" in check.detail
        assert "Set TFHUB_CACHE_DIR to a folder only you can write" in check.fix
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(private))
    assert _hub_cache_check().ok
    monkeypatch.delenv("TFHUB_CACHE_DIR")
    monkeypatch.setenv("KERAS_HOME", str(private))
    check = _hub_cache_check()
    assert check.ok and check.detail == str(private / "tfhub_modules")
