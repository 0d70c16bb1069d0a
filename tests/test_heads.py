"""Several heads on one backbone: building, data per head, `fine_tune`, `evaluate`."""

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import tltk
from tltk.datasets import digit_image


@pytest.fixture(scope="module")
def digits():
    """300 scikit-learn digits as 32x32 RGB, their digit, parity and ink (a regression target)."""
    bunch = load_digits()
    counts, y = bunch.images[:300], bunch.target[:300]
    x = np.stack([digit_image(c) for c in counts])
    ink = (counts.mean(axis=(1, 2)) / 16).astype("float32")
    return x, {"digit": y, "parity": np.where(y % 2, "odd", "even"), "ink": ink}


@pytest.fixture(scope="module")
def trained(digits):
    """The demo backbone with three heads, fine-tuned briefly (parity weighs 0)."""
    x, y = digits
    data = tltk.data.from_arrays(x, y, batch_size=32, validation_split=0.3)
    model = tltk.build_classifier("tltk_glyphnet", data.num_classes, class_names=data.class_names)
    result = tltk.fine_tune(
        model,
        data.train,
        data.validation,
        head_epochs=4,
        epochs=2,
        learning_rate=3e-3,
        loss_weights={"parity": 0.0},
        verbose=0,
    )
    return data, model, result


def test_build_outputs_a_dict_named_by_head_and_reloads(tmp_path):
    model = tltk.build_classifier(
        "tltk_glyphnet",
        {
            "species": 5,
            "tags": tltk.HeadSpec(3, "multi_label"),
            "size": tltk.HeadSpec(2, "regression"),
        },
        hidden_units=8,
        class_names={"species": list("abcde")},
    )
    out = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert {k: v.shape for k, v in out.items()} == {
        "species": (2, 5),
        "tags": (2, 3),
        "size": (2, 2),
    }
    np.testing.assert_allclose(out["species"].sum(1), 1.0, rtol=1e-5)
    assert ((out["tags"] > 0) & (out["tags"] < 1)).all()
    assert [layer.name for layer in model.heads["tags"]] == [
        "tags_dropout_0",
        "tags_dense_0",
        "tags_dropout",
        "tags",
    ]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.tasks == {
        "species": "classification",
        "tags": "multi_label",
        "size": "regression",
    }
    assert loaded.class_names == {"species": list("abcde")}
    np.testing.assert_allclose(
        loaded.predict(np.zeros((2, 32, 32, 3)), verbose=0)["size"], out["size"], rtol=1e-5
    )


@pytest.mark.parametrize(
    "num_classes, kwargs, message",
    [
        ({"1st": 3}, {}, "letters, digits and underscores"),
        ({"pool": 3}, {}, "already uses"),
        ({"a": 1}, {}, "integer >= 2"),
        ({"a": "x"}, {}, "class count or a tltk.HeadSpec"),
        ({"a": 3}, {"multi_label": True}, "tltk.HeadSpec"),
        (
            {"a": 3, "size": tltk.HeadSpec(1, "regression")},
            {"class_names": {"size": ["big"]}},
            "take no `class_names`",
        ),
    ],
)
def test_build_refuses_bad_heads(num_classes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tltk.build_classifier("tltk_glyphnet", num_classes, weights=None, **kwargs)


def test_from_arrays_yields_labels_per_head(digits):
    x, y = digits
    data = tltk.data.from_arrays(x, y, batch_size=16, validation_split=0.3)
    images, labels = next(iter(data.validation))
    assert set(labels) == {"digit", "parity", "ink"}
    assert labels["ink"].dtype == "float32" and labels["digit"].dtype == "int32"
    assert data.class_names == {"digit": tuple("0123456789"), "parity": ("even", "odd")}
    assert data.num_classes == {"digit": 10, "parity": 2, "ink": tltk.HeadSpec(1, "regression")}
    assert set(data.class_counts["validation"]["digit"].values()) <= {9, 10}  # by digit
    assert "parity:" in data.summary()
    # The labels stay with their images: a validation image's parity is its digit's.
    names = np.asarray(data.class_names["parity"])[labels["parity"].numpy()]
    assert (names == np.where(labels["digit"].numpy() % 2, "odd", "even")).all()
    with pytest.raises(ValueError, match="Head 'digit'"):
        tltk.data.from_arrays(x, {**y, "digit": y["digit"][:10]})


def test_from_csv_reads_one_column_per_head(tmp_path):
    rows = ["file,colour,shape"]
    for i in range(12):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'red' if i % 2 else 'blue'},{'round' if i % 3 else 'square'}")
    rows.append("12.png,red,")  # no shape: skipped, named
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="empty label of head"):
        data = tltk.data.from_csv(
            tmp_path / "labels.csv",
            image_size=(8, 8),
            label_column={"colour": "colour", "shape": "shape"},
            validation_split=0.25,
        )
    assert data.class_names == {"colour": ("blue", "red"), "shape": ("round", "square")}
    assert len(data.sources["train"]) + len(data.sources["validation"]) == 12
    labels = np.concatenate([b[1]["shape"] for b in data.validation])
    files = [int(path.rsplit("/", 1)[1][:-4]) for path in data.sources["validation"]]
    assert [("round", "square")[k] for k in labels] == [
        "round" if i % 3 else "square" for i in files
    ]


def test_fine_tune_trains_every_head_and_monitors_their_mean(trained):
    data, model, result = trained
    for history in result.histories:
        mean = (np.asarray(history["val_digit_accuracy"]) + history["val_parity_accuracy"]) / 2
        np.testing.assert_allclose(history["val_accuracy"], mean, rtol=1e-6)
        # parity weighs 0: the loss is digit's plus ink's (its own is about 0.7)
        total = np.asarray(history["val_digit_loss"]) + history["val_ink_loss"]
        np.testing.assert_allclose(history["val_loss"], total, rtol=2e-2)  # batch means
    assert result.monitor == "val_accuracy"
    logs = model.evaluate(data.validation, return_dict=True, verbose=0)
    assert logs["digit_accuracy"] > 0.6  # 10 classes: chance is 0.1


def test_evaluate_reports_per_head(trained, tmp_path):
    data, model, _ = trained
    report = tltk.evaluate(model, data, out_dir=tmp_path)
    assert set(report.heads) == {"digit", "parity", "ink"}
    assert report.heads["digit"].class_names == list("0123456789")
    x = np.concatenate([b[0] for b in data.validation])
    ink = np.concatenate([b[1]["ink"] for b in data.validation])
    predicted = model.predict(x, verbose=0)["ink"][:, 0]
    assert report.heads["ink"].mae == pytest.approx(np.abs(predicted - ink).mean(), rel=1e-4)
    assert (tmp_path / "confusion_matrix_parity.png").is_file()
    assert "[ink]" in report.summary() and (tmp_path / "report.json").is_file()


def test_fine_tune_explains_what_several_heads_do_not_take(trained):
    data, model, _ = trained
    one_head = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    cases = [
        (model, dict(class_weight={0: 2.0}), "loss_weights"),
        (model, dict(loss_weights={"colour": 1.0}), "does not have"),
        (one_head, dict(loss_weights={"a": 1.0}), "several heads"),
    ]
    for target, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            tltk.fine_tune(target, data.train, data.validation, epochs=0, verbose=0, **kwargs)
    single = data.train.map(lambda x, y: (x, y["digit"]))
    replay = tltk.Replay(single, one_head)
    with pytest.raises(ValueError, match="beside one target head"):
        tltk.fine_tune(model, data.train, data.validation, epochs=0, replay=replay, verbose=0)
    with pytest.raises(ValueError, match="missing"):
        tltk.fine_tune(model, single, single, epochs=0, head_epochs=1, verbose=0)


def test_find_lr_sums_the_heads_losses(trained):
    data, model, _ = trained
    before = [w.copy() for w in model.get_weights()]
    result = tltk.find_lr(model, data.train, min_lr=1e-5, max_lr=1e-1, steps=12)
    assert len(result.raw_losses) >= 2 and np.isfinite(result.raw_losses[0])
    assert result.raw_losses[0] > 1.0  # digit (~2.3 untrained, less now) + parity + ink
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_class_weights_refuses_labels_per_head(trained):
    with pytest.raises(ValueError, match="labels per head"):
        tltk.class_weights(trained[0])


def test_evaluate_an_exported_file_as_the_model(trained, tmp_path):
    data, model, _ = trained
    x = np.concatenate([b[0] for b in data.validation])
    tltk.export(model, tmp_path / "export", formats=("tflite",), parity_data=x)
    exported = tltk.evaluate(tltk.load_exported(tmp_path / "export" / "model_float32.tflite"), data)
    keras_report = tltk.evaluate(model, data)
    for head in ("digit", "parity"):
        assert exported.heads[head].accuracy == keras_report.heads[head].accuracy
    assert exported.heads["ink"].mae == pytest.approx(keras_report.heads["ink"].mae, rel=1e-4)
