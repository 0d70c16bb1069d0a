"""fine_tune under tf.distribute: MirroredStrategy over 2 logical CPUs (one process) and
MultiWorkerMirroredStrategy over 2 worker processes on loopback, run in subprocesses
(`bench/bench_distribute.py --worker`): devices and clusters are fixed when TensorFlow starts."""

import json
import signal
import subprocess
import time

import pytest

from bench.bench_distribute import start
from tltk.distribute import check_tf_config, is_chief, strategy_named

QUICK = ["--samples", "200", "--head-epochs", "2", "--epochs", "1"]


def _finish(processes, timeout=300):
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_model_built_in_a_mirrored_strategy_scope_trains_evaluates_and_exports(tmp_path):
    out, result = tmp_path / "out", tmp_path / "result.json"
    _finish(start("mirrored", [out], [result], QUICK))
    row = json.loads(result.read_text())
    assert row["chief"] and row["epochs_per_stage"] == [2, 1]
    assert row["test_accuracy"] > 0.5 and row["evaluate_accuracy"] > 0.5
    assert all(passed for _, passed in row["parity"].values())
    assert "export/model_float32.tflite" in _files(out)


@pytest.mark.slow  # about a minute on 2 cores: CI's slow step runs it
def test_multi_worker_fine_tune_agrees_on_both_workers_and_only_the_chief_writes(tmp_path):
    outs = [tmp_path / "chief", tmp_path / "other"]  # one folder each: what each one writes
    results = [tmp_path / "0.json", tmp_path / "1.json"]
    _finish(start("multi_worker", outs, results, QUICK))
    chief, other = (json.loads(r.read_text()) for r in results)
    assert chief["chief"] and not other["chief"]
    assert chief["test_accuracy"] == other["test_accuracy"] > 0.5  # the same weights
    assert chief["epochs_per_stage"] == other["epochs_per_stage"] == [2, 1]
    assert all(passed for _, passed in chief["parity"].values()) and "parity" not in other
    assert "checkpoints/run_state.json" in _files(outs[0])
    assert not outs[1].exists()


@pytest.mark.slow
def test_killing_a_worker_and_restarting_both_resumes_from_the_checkpoint(tmp_path):
    out = tmp_path / "out"  # shared, as on a shared disk
    results = [tmp_path / "0.json", tmp_path / "1.json"]
    args = ["--samples", "300", "--head-epochs", "3", "--epochs", "30"]
    processes = start("multi_worker", [out, out], results, args)
    state = out / "checkpoints" / "run_state.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until the fine-tuning stage has saved epochs
        if state.is_file() and len(json.loads(state.read_text())["histories"][1]) >= 2:
            break
        time.sleep(0.5)
    processes[1].send_signal(signal.SIGKILL)  # the other worker dies mid-run
    processes[1].wait()
    try:  # the chief's collectives fail or hang without it
        processes[0].wait(timeout=60)
    except subprocess.TimeoutExpired:
        processes[0].kill()
        processes[0].wait()
    saved = [len(h) for h in json.loads(state.read_text())["histories"]]
    _finish(start("multi_worker", [out, out], results, args))
    chief, other = (json.loads(r.read_text()) for r in results)
    assert chief["resumed_epochs"] == other["resumed_epochs"] == saved
    assert saved[0] == 3 and saved[1] >= 2
    assert chief["test_accuracy"] == other["test_accuracy"]


def test_is_chief_on_one_device():
    import tensorflow as tf

    assert is_chief(tf.distribute.get_strategy())


@pytest.mark.parametrize(
    "text, why",
    [
        (None, "is not set"),
        ("{not json", "must be JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', "must be JSON"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "index"),
    ],
)
def test_a_missing_or_malformed_tf_config_is_refused_clearly(text, why):
    with pytest.raises(ValueError, match="TF_CONFIG") as error:
        check_tf_config(text)
    assert why in str(error.value)


def test_an_unknown_strategy_name_is_refused():
    with pytest.raises(ValueError, match="mirrored"):
        strategy_named("tpu")


def test_tltk_train_distribute_multi_worker_without_tf_config_says_how_to_set_it(
    tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from tltk.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--distribute", "multi_worker"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "TF_CONFIG" in result.output and "is not set" in result.output
    assert not (tmp_path / "run").exists()
