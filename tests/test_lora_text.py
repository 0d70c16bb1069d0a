"""LoRA on a text classifier: recorded in the config, merged on export, restored on reload."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk import lora
from tests.helpers import tiny_bert_preset

TEXTS = ["the cat sat on the mat", "the phone app needs new code", "a dog ran fast", ""]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A LoRA text classifier on a tiny BERT, its adapters moved off zero as training would."""
    words = {w for text in TEXTS for w in text.split()}
    folder = tmp_path_factory.mktemp("presets") / "Tiny_BERT"
    folder = tiny_bert_preset(folder, words, hidden_dim=16, max_sequence_length=32)
    keras.utils.set_random_seed(0)
    model = tltk.build_text_classifier(folder, 3, sequence_length=16, lora_rank=2, lora_alpha=4)
    for layer in lora.lora_layers(model):
        b = layer.lora_kernel_b
        b.assign(np.random.default_rng(0).normal(0, 0.5, b.shape).astype("float32"))
    return folder, model


def test_lora_rank_and_alpha_are_in_the_config(adapted):
    _, model = adapted
    assert (model.lora_rank, model.lora_alpha) == (2, 4)
    config = model.get_config()
    assert (config["lora_rank"], config["lora_alpha"]) == (2, 4)
    assert {(layer.lora_rank, layer.lora_alpha) for layer in lora.lora_layers(model)} == {(2, 4)}
    with pytest.raises(ValueError, match="`lora_alpha` .* needs `lora_rank`"):
        tltk.build_text_classifier(adapted[0], 3, lora_alpha=4)


def test_export_writes_merged_kernels_that_match_keras(adapted, tmp_path):
    _, model = adapted
    expected = model.predict(tf.constant(TEXTS), verbose=0)
    (saved,) = tltk.export(model, tmp_path / "lora", formats=("saved_model",)).files
    assert saved.parity.passed
    loaded = tf.saved_model.load(str(saved.path))
    # The merged kernels only: without the merge the SavedModel keeps the factors as variables.
    assert loaded.variables and not [v.name for v in loaded.variables if "lora" in v.name]
    served = loaded.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"]
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)


@pytest.mark.slow  # a new process imports TensorFlow and keras-hub: over 10 s on 2 cores
def test_reload_in_a_new_process_keeps_lora(adapted, tmp_path):
    _, model = adapted
    model.save(tmp_path / "lora.keras")
    np.save(tmp_path / "p.npy", model.predict(tf.constant(TEXTS), verbose=0))
    script = textwrap.dedent(
        f"""
        import keras, numpy as np, tensorflow as tf, tltk
        from tltk import lora
        folder, texts = {str(tmp_path)!r}, tf.constant({TEXTS!r})
        plain = keras.models.load_model(folder + "/lora.keras")
        model = tltk.load_model(folder + "/lora.keras")
        for m in (plain, model):
            np.testing.assert_allclose(m.predict(texts, verbose=0), np.load(folder + "/p.npy"),
                                       atol=1e-5)
            assert (m.lora_rank, m.lora_alpha) == (2, 4)
        assert not lora.lora_layers(plain)  # keras-hub's layer configs do not carry LoRA
        layers = lora.lora_layers(model)
        assert len(layers) == 4 and {{(l.lora_rank, l.lora_alpha) for l in layers}} == {{(2, 4)}}
        trained = {{w.path.rsplit("/", 1)[-1] for w in model.backbone.trainable_weights}}
        print(sorted(trained))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "['lora_kernel_a', 'lora_kernel_b']"
