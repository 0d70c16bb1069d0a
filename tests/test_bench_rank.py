"""The pieces of `bench/rank_zoo.py` and `bench/bench_rank.py` that decide their figures."""

import json

import numpy as np
import pytest

from bench import bench_rank, rank_zoo


@pytest.mark.parametrize(
    "draw, classes",
    [
        (lambda n, s: rank_zoo.shape_images(rank_zoo.SOURCE_SHAPES, n, s), 8),
        (rank_zoo.texture_images, 8),
        (rank_zoo.colour_images, rank_zoo.HUE_BINS),
    ],
)
def test_sources_are_seeded_rgb_images_with_labels_in_range(draw, classes):
    images, labels = draw(24, 0)
    again, _ = draw(24, 0)
    other, _ = draw(24, 1)
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, other)
    assert labels.min() >= 0 and labels.max() < classes
    assert images.std() > 10  # not blank


def test_colours_are_coloured_and_the_grey_sources_are_grey():
    colours, _ = rank_zoo.colour_images(16, 0)
    shapes, _ = rank_zoo.shape_images(rank_zoo.SOURCE_SHAPES, 16, 0)
    assert np.abs(colours[..., 0].astype(int) - colours[..., 2]).mean() > 20
    np.testing.assert_array_equal(shapes[..., 0], shapes[..., 2])


def test_shape_target_holds_no_source_shape_and_splits_per_class():
    assert not set(rank_zoo.TARGET_SHAPES) & set(rank_zoo.SOURCE_SHAPES)
    task = rank_zoo.shapes_task(pool=4, test=3)
    assert task.class_names == rank_zoo.TARGET_SHAPES
    assert np.bincount(task.pool_y).tolist() == [4] * 6
    assert np.bincount(task.test_y).tolist() == [3] * 6
    assert task.pool_x.shape[1:] == (32, 32, 3)


def test_zoo_reuses_cached_members_and_refuses_bad_sizes(tmp_path):
    folder = tmp_path / f"v{rank_zoo.VERSION}-256x3"
    folder.mkdir()
    for name in rank_zoo.MEMBERS:
        (folder / f"{name}.json").write_text(json.dumps({"cached": name}))
    found, members = rank_zoo.build_zoo(tmp_path, samples=256, epochs=3)
    assert found == folder and members["shapes"] == {"cached": "shapes"}
    with pytest.raises(ValueError, match="epochs=2"):
        rank_zoo.build_zoo(tmp_path, samples=256, epochs=2)


def _truth(means):
    return {name: {"mean": mean} for name, mean in means.items()}


def test_judge_scores_order_top_and_distance_from_best():
    truth = _truth({"a": 90.0, "b": 80.0, "c": 70.0, "d": 60.0})
    same = {"logme": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}}
    judged = bench_rank.judge(same, truth)["logme"]
    assert judged == {"tau": 1.0, "top": "a", "points_below_best": 0.0}
    reversed_ = {"logme": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}}
    judged = bench_rank.judge(reversed_, truth)["logme"]
    assert judged["tau"] == -1.0 and judged["top"] == "d" and judged["points_below_best"] == -30.0
    assert bench_rank.judge({"leep": {"a": 1.0}}, truth)["leep"]["tau"] is None


def test_goals_pass_and_miss_at_their_thresholds():
    def target(tau, below):
        return {"logme": {"tau": tau, "top": "a", "points_below_best": below}}

    per_target = {"t1": target(0.7, 0.0), "t2": target(0.5, -1.0), "t3": target(0.6, -1.5)}
    goals = bench_rank.goals(per_target, rank_seconds=2.0, fine_tune_seconds=200.0)
    assert goals["logme_weighted_tau"]["mean"] == 0.6
    assert goals["logme_weighted_tau"]["result"] == "PASS"
    assert goals["logme_top_within_1_point"]["targets"] == 2
    assert goals["logme_top_within_1_point"]["result"] == "PASS"  # 2 of 3 needed
    assert goals["ranking_speedup"]["result"] == "PASS"
    per_target["t2"] = target(0.4, -1.01)
    goals = bench_rank.goals(per_target, rank_seconds=2.0, fine_tune_seconds=199.0)
    assert {g["result"] for g in goals.values()} == {"MISS"}
