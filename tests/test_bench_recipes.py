"""The pieces of `bench/bench_recipes.py` that decide its figures: splits, schedule, goals."""

import numpy as np
import pytest

from bench import bench_recipes, tasks


@pytest.fixture(scope="module")
def textures():
    return tasks.textures(pool=12, test=6)


def test_tasks_are_deterministic_and_split_per_class(textures):
    again = tasks.textures(pool=12, test=6)
    np.testing.assert_array_equal(textures.pool_x, again.pool_x)
    assert textures.pool_x.shape == (72, 32, 32, 3) and textures.pool_x.dtype == np.uint8
    assert np.bincount(textures.pool_y).tolist() == [12] * 6
    assert np.bincount(textures.test_y).tolist() == [6] * 6


def test_letters_are_the_ones_left_out_of_pretraining():
    from scripts.pretrain_demo_backbone import CLASSES, EXCLUDED

    assert set(tasks.LETTERS) <= set(EXCLUDED) and not set(tasks.LETTERS) & set(CLASSES)
    assert {c.upper() for c in EXCLUDED} == {c.upper() for c in tasks.LETTERS}


@pytest.mark.parametrize("shots", [1, 3])
def test_run_draws_disjoint_train_and_validation_per_class(textures, shots):
    run = bench_recipes.Run(textures, shots, seed=0)
    assert not set(run.train_index) & set(run.val_index)
    assert np.bincount(textures.pool_y[run.train_index]).tolist() == [shots] * 6
    assert np.bincount(textures.pool_y[run.val_index]).tolist() == [max(2, shots)] * 6
    labels = np.concatenate([y.numpy() for _, y in run.train])
    assert sorted(labels) == sorted(textures.pool_y[run.train_index])
    other = bench_recipes.Run(textures, shots, seed=1)
    assert set(other.train_index) != set(run.train_index)


def test_one_cycle_rises_to_its_peak_then_falls_to_almost_nothing():
    schedule = bench_recipes.OneCycle(1e-3, 100, pct_start=0.3, div=5.0)
    rates = [float(schedule(step)) for step in (0, 15, 30, 65, 100)]
    assert rates[0] == pytest.approx(2e-4)
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1e-3)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(1e-8, rel=0.01)


def test_goals_pass_and_miss_by_the_printed_margin():
    summary = {
        "fine_tune": {"mean": 80.0},
        "keras_head": {"mean": 80.4},
        "linear_probe": {"mean": 81.0},
        "scratch": {"mean": 66.0},
    }
    goals = bench_recipes.goals(summary, scratch_margin=15)
    assert goals["within_0.5_of_best_baseline"] == {
        "best": "linear_probe",
        "margin": -0.5,
        "result": "MISS",
    }
    assert goals["not_below_linear_probe"] == {"margin": -1.0, "result": "MISS"}
    assert goals["15_above_scratch"] == {"margin": -1.0, "result": "MISS"}
    summary["fine_tune"]["mean"] = 81.0
    goals = bench_recipes.goals(summary, scratch_margin=15)
    assert {g["result"] for g in goals.values()} == {"PASS"}
    assert "15_above_scratch" not in bench_recipes.goals(summary)
