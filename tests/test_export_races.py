"""tltk.export under concurrency: writers never destroy what they did not write; readers see one
whole export."""

import importlib
import json
import os
import subprocess
import sys
import time

import keras
import pytest

from tests.export_race_worker import check_whole, identify, tiny_model
from tltk import atomic
from tltk.export import export, load_exported

image_adapter = importlib.import_module("tltk.export.image_adapter")
predictor_module = importlib.import_module("tltk.export.predictor")
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_race_worker.py")


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    model = tiny_model(1)
    return model, identify(model, 1, 0)


def _hooked(monkeypatch, during):
    """Runs `during()` once, while the next export is writing its SavedModel."""
    real = image_adapter.ImageAdapter.write_saved_model
    pending = [during]

    def writing(self, *args, **kwargs):
        if pending:
            pending.pop()()  # popped first: `during` may export too
        return real(self, *args, **kwargs)

    monkeypatch.setattr(image_adapter.ImageAdapter, "write_saved_model", writing)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_created_during_an_export_is_kept(tiny, tmp_path, monkeypatch, overwrite):
    model, labels = tiny
    target = tmp_path / "new"

    def user_creates_the_folder():
        target.mkdir()
        (target / "notes.txt").write_text("mine")

    _hooked(monkeypatch, user_creates_the_folder)
    with pytest.raises(ValueError, match="written by someone else.*replaced nothing"):
        export(model, target, formats=["saved_model"], labels=labels, overwrite=overwrite)
    assert os.listdir(target) == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"
    assert not [n for n in os.listdir(tmp_path) if ".tltk-tmp-" in n or ".tltk-v-" in n]


def test_two_exports_to_one_new_folder_the_second_fails(tiny, tmp_path, monkeypatch):
    model, labels = tiny
    target = tmp_path / "new"
    other = tiny_model(2)
    other_labels = identify(other, 2, 7)

    def another_export():
        return export(other, target, formats=["saved_model"], labels=other_labels)

    _hooked(monkeypatch, another_export)
    with pytest.raises(ValueError, match="overwrite=False"):
        export(model, target, formats=["saved_model"], labels=labels)
    predictor = load_exported(target)
    check_whole(predictor)
    assert predictor.class_names == other_labels  # the first export to finish is kept whole


def _previous(folder):
    return [n for n in os.listdir(folder) if ".tltk-old-" in n or ".tltk-v-" in n]


def test_a_load_reads_one_export_while_three_replace_it(tiny, tmp_path, monkeypatch):
    model, labels = tiny
    target = tmp_path / "out"
    export(model, target, formats=["saved_model"], labels=labels)
    real = predictor_module.SavedModelRunner

    def replaced_three_times_first(path):
        for round_ in (1, 2, 3):  # while the load holds the export it opened
            newer = identify(model, 1, round_)
            export(model, target, formats=["saved_model"], labels=newer, overwrite=True)
        assert len(_previous(tmp_path)) == 1  # the held one; rounds 1 and 2 were removed
        return real(path)

    monkeypatch.setattr(predictor_module, "SavedModelRunner", replaced_three_times_first)
    predictor = load_exported(target)
    assert check_whole(predictor) == "w1r0" and predictor.path == target / "saved_model"
    monkeypatch.undo()
    identify(model, 1, 0)  # the fixture's weights again
    assert check_whole(load_exported(target)) == "w1r3"
    atomic.remove_stale(target)  # the load let go of round 0
    assert not _previous(tmp_path)


def test_an_export_of_the_link_layout_loads_and_is_replaced(tiny, tmp_path):
    """`export_dir` written as a link to `.NAME.tltk-v-...` (tltk before real folders)."""
    model, labels = tiny
    export(model, tmp_path / "written", formats=["saved_model"], labels=labels)
    target, version = tmp_path / "out", tmp_path / ".out.tltk-v-123-0123abcd"
    os.rename(tmp_path / "written", version)
    target.symlink_to(version.name)
    (tmp_path / ".out.tltk-lock").touch()
    check_whole(load_exported(target))
    check_whole(load_exported(target / "saved_model"))
    newer = identify(tiny_model(2), 2, 5)
    export(tiny_model(2), target, formats=["saved_model"], labels=newer, overwrite=True)
    assert target.is_dir() and not target.is_symlink() and not _previous(tmp_path)
    assert load_exported(target).class_names == newer


@pytest.mark.slow
def test_four_writers_and_a_reader(tmp_path):
    """4 processes export to one folder and one loads it in a loop for 30 s: every load sees one
    whole export, and no user file beside it is lost."""
    out, stop = tmp_path / "out", tmp_path / "stop"
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "image.png").write_bytes(b"png")
    roles = [("writer", i) for i in range(4)] + [("loader", 0)]
    processes = [
        subprocess.Popen(
            [sys.executable, WORKER, role, str(i), str(out), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, i in roles
    ]
    try:
        deadline = time.monotonic() + 180
        while not (out.exists() and (tmp_path / "loader_ready").exists()):
            assert all(p.poll() is None for p in processes), "a worker ended early"
            assert time.monotonic() < deadline, "no export was published in 180 s"
            time.sleep(0.2)
        time.sleep(30)
        stop.touch()
        results = [p.communicate(timeout=120) for p in processes]
    finally:
        for process in processes:
            process.kill()
    for (role, i), process, (stdout, stderr) in zip(roles, processes, results):
        assert process.returncode == 0, f"{role} {i} failed:\n{stderr[-3000:]}"
    *writers, loader = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results]
    print("writers:", writers, "loader:", loader)  # shown with `pytest -s`
    assert sum(w["exports"] for w in writers) >= 8 and all(w["exports"] for w in writers)
    assert loader["loads"] >= 10 and len(loader["writers_seen"]) >= 2, loader
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "data" / "image.png").read_bytes() == b"png"
    assert out.is_dir() and not out.is_symlink()
    atomic.remove_stale(out)  # an export the loader held at the end, if any
    assert not _previous(tmp_path) and not [n for n in os.listdir(tmp_path) if "-tmp-" in n]
    check_whole(load_exported(out))
