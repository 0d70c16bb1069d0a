"""A user's run end to end through the command line: a folder of PNG images -> `tltk train` (the
split sizes printed, a run folder with run.json and a model card) -> `tltk predict` with class
names -> `tltk evaluate RUN` on the held-out split -> `tltk export`; runs never replaced silently;
a folder predicted to CSV/JSON past a truncated file; `--help` without TensorFlow."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

import tltk
from tltk.cli import main

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("0", "1", "7")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`photos/`: 40 digit PNGs per class and one broken file; `unseen/`: 5 other sevens and a
    truncated PNG."""
    base = tmp_path_factory.mktemp("user_run")
    digits = tltk.datasets.digits(base / "digits")
    photos, unseen = base / "photos", base / "unseen"
    for label in CLASSES:
        (photos / label).mkdir(parents=True)
        for png in sorted((digits / label).glob("*.png"))[:40]:
            shutil.copy(png, photos / label / png.name)
    (photos / "7" / "broken.png").write_bytes(b"not a png")
    unseen.mkdir()
    for png in sorted((digits / "7").glob("*.png"))[-5:]:
        shutil.copy(png, unseen / png.name)
    whole = (unseen / png.name).read_bytes()
    (unseen / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return base, photos, unseen


def _train(photos, out, *extra):
    args = ["train", str(photos), "--backbone", "tltk_glyphnet", "--out", str(out)]
    args += ["--head-epochs", "12", "--learning-rate", "0.003", "--epochs", "1", "--quiet"]
    return CliRunner().invoke(main, args + list(extra))


@pytest.fixture(scope="module")
def run(folders):
    base, photos, _ = folders
    result = _train(photos, base / "runs" / "digits", "--test-split", "0.25", "--seed", "3")
    assert result.exit_code == 0, result.output
    return base / "runs" / "digits", result.output


def test_train_prints_the_splits_first_and_lists_skipped_files(run, folders):
    out, output = run
    before_training = output.split("Fine-tuning stages")[0]
    assert "Data: 3 classes; images per split: train " in before_training
    assert ", test 30." in before_training  # 25% of 40 per class
    broken = folders[1] / "7" / "broken.png"
    assert f"  {broken}: " in before_training
    # The tiny test set is named in one clean line (no UserWarning, no source line).
    warning = next(line for line in output.splitlines() if line.startswith("Warning: "))
    assert "test split holds only 30 images" in warning and "--test-split" in warning
    assert "UserWarning" not in output and "warnings.warn" not in output
    assert "and 1 more" not in output
    report = json.loads((out / "report" / "report.json").read_text())
    assert [path for path, _ in report["skipped"]] == [str(broken)]


def test_run_folder_records_the_run(run, folders):
    out, _ = run
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["backbone"] == "tltk_glyphnet"
    assert record["settings"]["test_split"] == 0.25 and record["settings"]["seed"] == 3
    data = record["data"]
    assert data["class_names"] == list(CLASSES) and data["held_out_split"] == "test"
    assert sum(data["sizes"].values()) == 120 and data["sizes"]["test"] == 30
    test_files = [f for files in data["files"]["test"].values() for f in files]
    assert len(test_files) == 30 and all((folders[1] / f).is_file() for f in test_files)
    assert not set(test_files) & {f for fs in data["files"]["train"].values() for f in fs}
    training = record["training"]
    epochs = [row["epoch"] for row in training["history"]]
    assert epochs == list(range(1, len(epochs) + 1))  # one count across the stages
    assert [s["first_epoch"] for s in training["stages"]] == [1, 13]
    assert record["metrics"]["num_examples"] == 30
    assert {f["path"] for f in record["export"]["files"]} >= {"export/model_float32.tflite"}
    card = (out / "README.md").read_text()
    assert "tltk_glyphnet" in card and "| 7 |" in card and f"tltk evaluate {out.name}" in card
    probe = training["probe"]  # the head stage's linear probe; the card says which weights won
    final = probe["kept"] and training["best_stage"] == 1  # not beaten by a later stage
    assert probe["stage"] == 1 and (training["best_epoch"] is None) == final
    kept = f"the weights kept are the linear probe's (L2 logistic regression, C={probe['C']:.3g})"
    assert (kept in card) == final
    assert (f"the weights kept are those of epoch {training['best_epoch']} " in card) != final
    assert tltk.load_model(out / "model.keras").class_names == list(CLASSES)


def test_predict_evaluate_export_a_run_by_name(run, folders, tmp_path):
    out, _ = run
    photos, unseen = folders[1], folders[2]
    runner = CliRunner()
    predicted = runner.invoke(main, ["predict", str(out), str(next(unseen.glob("1*.png")))])
    assert predicted.exit_code == 0, predicted.output
    assert predicted.output.split(": ")[1].split()[0] in CLASSES  # a class name, not an index

    evaluated = runner.invoke(main, ["evaluate", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"Evaluating on the held-out test split (30 images) of {out}" in evaluated.output
    assert "examples: 30" in evaluated.output and "Warning" not in evaluated.output

    on_training = runner.invoke(main, ["evaluate", str(out / "model.keras"), str(photos)])
    assert on_training.exit_code == 0, on_training.output
    assert "Warning: 90 of the 120 images evaluated" in on_training.output
    assert f"tltk evaluate {out}" in on_training.output

    exported = runner.invoke(main, ["export", str(out), str(tmp_path / "exp")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "exp" / "labels.txt").read_text().split() == list(CLASSES)  # the model's
    again = runner.invoke(main, ["export", str(out), str(tmp_path / "exp")])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "overwrite=True" not in again.output

    checked = runner.invoke(
        main, ["export", str(out), str(tmp_path / "exp2"), "--data", str(photos)]
    )
    assert checked.exit_code == 0, checked.output  # the folder's classes are the model's
    others = tmp_path / "others"
    shutil.copytree(photos / "0", others / "zero")
    shutil.copytree(photos / "1", others / "one")
    refused = runner.invoke(
        main, ["export", str(out), str(tmp_path / "exp3"), "--data", str(others)]
    )
    assert (
        refused.exit_code == 1 and "pass --data a folder with the model's classes" in refused.output
    )


def test_a_second_train_into_the_run_folder_is_refused(run, folders):
    out, _ = run
    before = (out / "run.json").read_bytes()
    result = _train(folders[1], out)
    assert result.exit_code == 1, result.output
    assert "already holds a run" in result.output and "--overwrite" in result.output
    assert "overwrite=True" not in result.output and "Data:" not in result.output
    assert (out / "run.json").read_bytes() == before


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_predict_a_folder_to_a_file_past_a_truncated_image(run, folders, tmp_path, suffix):
    out, unseen = run[0], folders[2]
    target = tmp_path / f"preds{suffix}"
    result = CliRunner().invoke(main, ["predict", str(out), str(unseen), "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert "Skipped 1 unreadable file(s):" in result.output
    assert f"  {unseen / 'truncated.png'}: " in result.output
    if suffix == ".csv":
        rows = list(csv.DictReader(target.open()))
        assert [r["input"] for r in rows if r["error"]] == [str(unseen / "truncated.png")]
        good = [r for r in rows if not r["error"]]
        assert len(good) == 5 and all(r["prediction"] in CLASSES for r in good)
        assert abs(sum(float(good[0][c]) for c in CLASSES) - 1) < 1e-4
    else:
        record = json.loads(target.read_text())
        assert len(record["predictions"]) == 5
        assert [s["input"] for s in record["skipped"]] == [str(unseen / "truncated.png")]


def test_class_names_for_a_model_without_them(folders, tmp_path):
    photos = folders[1]
    model = tltk.build_classifier("tltk_glyphnet", 3, input_shape=(32, 32, 3))
    model.save(tmp_path / "bare.keras")
    runner = CliRunner()
    refused = runner.invoke(main, ["evaluate", str(tmp_path / "bare.keras"), str(photos)])
    assert refused.exit_code == 1
    assert "predicts ['0', '1', '2']" in refused.output and "--class-names" in refused.output
    named = runner.invoke(
        main,
        ["evaluate", str(tmp_path / "bare.keras"), str(photos), "--class-names", "0,1,7"],
    )
    assert named.exit_code == 0, named.output
    (tmp_path / "names.txt").write_text("zero\none\nseven\n")
    predicted = runner.invoke(
        main,
        ["predict", str(tmp_path / "bare.keras"), str(next((photos / "7").glob("0*.png")))]
        + ["--class-names", str(tmp_path / "names.txt"), "--top", "3"],
    )
    assert predicted.exit_code == 0, predicted.output
    assert set(predicted.output.split(": ")[1].split()[::2]) == {"zero", "one", "seven"}
    wrong = runner.invoke(
        main, ["predict", str(tmp_path / "bare.keras"), str(photos), "--class-names", "a,b"]
    )
    assert wrong.exit_code == 1 and "--class-names gives 2 names" in wrong.output


def test_a_run_that_fails_halfway_keeps_the_earlier_run_and_resumes(folders, monkeypatch):
    base, photos, _ = folders
    out = base / "runs" / "halfway"
    settings = dict(backbone="tltk_glyphnet", head_epochs=2, epochs=1, verbose=0)
    tltk.train_from_directory(photos, out, **settings)
    before = (out / "run.json").read_bytes()

    def failing_export(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tltk.workflow.export", failing_export)
    with pytest.raises(RuntimeError, match="disk full"):
        tltk.train_from_directory(photos, out, overwrite=True, **settings)
    assert (out / "run.json").read_bytes() == before  # the earlier run, whole
    checkpoints = out.parent / ".halfway.tltk-checkpoints"
    assert checkpoints.is_dir()
    assert not [p for p in out.parent.iterdir() if "tltk-tmp" in p.name]
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="already holds a run.*overwrite=True"):
        tltk.train_from_directory(photos, out, resume=True, **settings)
    os.rename(out, out.with_name("moved"))  # the earlier run moved away: the checkpoints stay
    with pytest.raises(FileExistsError, match="stopped halfway.*resume=True.*overwrite=True"):
        tltk.train_from_directory(photos, out, **settings)
    with pytest.warns(UserWarning, match="finished run"):  # nothing left to train
        tltk.train_from_directory(photos, out, resume=True, **settings)
    assert (out / "run.json").read_bytes() != before and not checkpoints.exists()


BLOCK_TENSORFLOW = textwrap.dedent(
    """
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras"):
                raise ImportError(f"{name} is blocked by the test")

    sys.meta_path.insert(0, Blocked())
    """
)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--help"], "Commands:"),
        (["train", "--help"], "--class-weight"),
        (["predict", "--help"], "--output"),
        (["--version"], f"tltk {tltk.__version__}"),
    ],
)
def test_help_and_version_without_tensorflow(tmp_path, args, says):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    blocked = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True
    )
    assert "blocked by the test" in blocked.stderr  # the hook works
    result = subprocess.run(
        [sys.executable, "-m", "tltk", *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert says in result.stdout and result.stderr == ""


def test_no_tensorflow_log_lines_unless_verbose(run, folders):
    """Predicting with a TFLite file (TensorFlow's start-up lines, LiteRT's delegate line) prints
    nothing on stderr; with --verbose those lines are there."""
    tflite, image = run[0] / "export" / "model_float32.tflite", folders[1] / "7" / "broken.png"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    args = [sys.executable, "-m", "tltk", "predict", str(tflite), str(image.parent)]
    quiet = subprocess.run(args, env=env, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.count(": 7 ") >= 30 and f"  {image}: " in quiet.stdout
    assert quiet.stderr == ""
    loud = subprocess.run(args[:3] + ["--verbose"] + args[3:], env=env, capture_output=True)
    assert loud.returncode == 0 and loud.stderr.strip()
