"""tltk.evaluate: metrics against hand-computed values, and the files it writes."""

import json

import numpy as np
import pytest

from tltk.evaluate import evaluate


class FixedModel:
    """A predictor that returns given probabilities, to check the metrics exactly."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, "float32")

    def predict(self, images):
        assert len(images) == len(self.probs)
        return self.probs


PROBS = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.35, 0.25, 0.4]]
LABELS = np.array([0, 1, 1, 2, 0])  # predictions: 0, 1, 0, 2, 2 -> 3 of 5 right


def test_single_label_metrics_and_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3)).astype("float32")
    history = {
        "loss": [1.0, 0.5],
        "val_loss": [1.1, 0.7],
        "accuracy": [0.5, 0.8],
        "val_accuracy": [0.4, 0.6],
    }
    report = evaluate(
        FixedModel(PROBS),
        (images, LABELS),
        class_names=["a", "b", "c"],
        out_dir=tmp_path,
        history=history,
        top_k=(2,),
    )
    assert report.accuracy == pytest.approx(0.6)
    assert report.top_k_accuracy == {2: pytest.approx(1.0)}
    assert report.confusion_matrix == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert report.per_class["b"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    for key in ("report", "confusion_matrix", "misclassified", "training_curves"):
        assert (tmp_path / report.files[key].split("/")[-1]).stat().st_size > 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["accuracy"] == pytest.approx(0.6) and saved["class_names"] == ["a", "b", "c"]
    assert "accuracy: 0.6000" in report.summary()


def test_multi_label_f1_and_map():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], "float32")
    probs = [[0.9, 0.2], [0.1, 0.8], [0.7, 0.3], [0.2, 0.1]]
    report = evaluate(FixedModel(probs), (np.zeros((4, 2, 2, 3)), labels), class_names=["x", "y"])
    assert report.multi_label and report.accuracy == pytest.approx(0.75)
    assert report.per_class["y"]["recall"] == pytest.approx(0.5)
    assert report.mean_average_precision == pytest.approx(1.0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="`class_names` has 2 names but the model has 3 outputs"):
        evaluate(FixedModel(PROBS), (np.zeros((5, 2, 2, 3)), LABELS), class_names=["a", "b"])
    with pytest.raises(ValueError, match="no examples"):
        evaluate(FixedModel(PROBS), (np.zeros((0, 2, 2, 3)), np.zeros((0,))))
