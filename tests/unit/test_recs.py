"""The pure parts of the recommendations: ranking, embeddings on a tiny planted dataset, cold start,
the user's embedding, and the watch history's merge (docs/recommendations.md)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from processors.recs.embeddings import (VideoTraits, Watch, cold_start_vector, fallback_vector, learn_video_embeddings,
                                        side_vectors, user_embedding)
from processors.recs.history import completion, finished, merged, recent
from producers.reels import Weights, rank

WEIGHTS = Weights(heat=0.3, match=1.0, explore=0.1)


def no_explore() -> float:
    return 0.0


# -- ranking -------------------------------------------------------------------------------------

def test_the_score_is_the_weighted_sum_of_normalized_heat_match_and_exploration() -> None:
    ranked = rank({"a": 0.5, "b": -0.2}, {"a": 2.0, "c": 8.0}, WEIGHTS, 10, lambda: 0.5)
    by_id = {item.video_id: item for item in ranked}
    assert by_id["a"].heat == pytest.approx(0.25) and by_id["c"].heat == pytest.approx(1.0)
    assert by_id["b"].heat == 0.0 and by_id["c"].match == 0.0  # no heat, no match: 0
    assert by_id["a"].score == pytest.approx(0.3 * 0.25 + 1.0 * 0.5 + 0.1 * 0.5)
    assert [item.video_id for item in ranked] == ["a", "c", "b"]  # 0.625, 0.35, -0.1


def test_the_match_outranks_heat_with_the_default_weights_and_heat_decides_without_history() -> None:
    matches = {"liked": 0.9, "other": 0.0}
    heat = {"liked": 1.0, "other": 10.0}
    assert rank(matches, heat, WEIGHTS, 2, no_explore)[0].video_id == "liked"
    assert [item.video_id for item in rank({}, heat, WEIGHTS, 2, no_explore)] == ["other", "liked"]


def test_excluded_and_ineligible_videos_never_appear_and_the_limit_holds() -> None:
    matches = {f"v{i}": i / 10 for i in range(10)}
    ranked = rank(matches, {"hot": 5.0}, WEIGHTS, 3, no_explore, eligible=lambda v: v != "v9", excluded={"v8", "hot"})
    assert [item.video_id for item in ranked] == ["v7", "v6", "v5"]


def test_exploration_is_bounded_by_its_weight_and_reshuffles_only_close_scores() -> None:
    matches = {"far": 0.9, "near-1": 0.30, "near-2": 0.29}
    rng = random.Random(7)
    orders = set()
    for _ in range(200):
        ranked = rank(matches, {}, WEIGHTS, 3, rng.random)
        assert all(0 <= item.explore < 1 for item in ranked)
        assert all(item.score - item.match <= WEIGHTS.explore for item in ranked)
        assert ranked[0].video_id == "far"  # 0.6 ahead: exploration (at most 0.1) cannot move it
        orders.add(tuple(item.video_id for item in ranked))
    assert len(orders) == 2  # the two close ones trade places


def test_ties_are_broken_by_video_id() -> None:
    assert [i.video_id for i in rank({"b": 0.5, "a": 0.5}, {}, WEIGHTS, 2, no_explore)] == ["a", "b"]


# -- embeddings ----------------------------------------------------------------------------------

def planted(users_per_taste: int = 6) -> tuple[list[Watch], dict[str, str]]:
    """Two tastes of four videos; each user finishes three of their taste, drops one of the other."""
    taste = {f"{t}{i}": t for t in "ab" for i in range(4)}
    watches = []
    for t, other in (("a", "b"), ("b", "a")):
        for u in range(users_per_taste):
            user = f"user-{t}-{u}"
            mine = [f"{t}{(u + k) % 4}" for k in range(3)]
            watches += [Watch(user, video, 0.95, k) for k, video in enumerate(mine)]
            watches.append(Watch(user, f"{other}{u % 4}", 0.2, 10))
    return watches, taste


def test_videos_watched_together_get_close_embeddings() -> None:
    watches, taste = planted()
    vectors = learn_video_embeddings(watches, 4)
    assert set(vectors) == set(taste)
    for v in vectors.values():
        assert v.shape == (4,) and v.dtype == np.float32 and np.linalg.norm(v) == pytest.approx(1, abs=1e-5)
    same = [float(vectors[x] @ vectors[y]) for x, y in itertools.combinations(vectors, 2) if taste[x] == taste[y]]
    across = [float(vectors[x] @ vectors[y]) for x, y in itertools.combinations(vectors, 2) if taste[x] != taste[y]]
    assert min(same) > max(across)


def test_training_is_deterministic_and_ignores_zero_completion_and_pads_a_low_rank() -> None:
    watches, _ = planted()
    first = learn_video_embeddings(watches, 16)  # rank 8 at most: padded with zeros
    again = learn_video_embeddings(list(reversed(watches)) + [Watch("x", "never", 0.0, 1)], 16)
    assert "never" not in again and set(first) == set(again)
    for video in first:
        assert first[video].shape == (16,)
        assert float(first[video] @ again[video]) == pytest.approx(1.0, abs=1e-4)
    assert learn_video_embeddings([], 8) == {}


def test_the_user_embedding_is_the_completion_weighted_mean_and_ranks_their_taste_first() -> None:
    watches, taste = planted()
    vectors = learn_video_embeddings(watches, 4)
    me = user_embedding([("a0", 1.0), ("a1", 0.9), ("b0", 0.1)], vectors)
    assert me is not None
    expected = vectors["a0"] * 1.0 + vectors["a1"] * 0.9 + vectors["b0"] * 0.1
    assert np.allclose(me, expected / np.linalg.norm(expected), atol=1e-5)
    unseen = {v: float(vectors[v] @ me) for v in taste if v not in ("a0", "a1", "b0")}
    assert min(s for v, s in unseen.items() if taste[v] == "a") > max(s for v, s in unseen.items() if taste[v] == "b")
    assert user_embedding([("unknown", 1.0), ("a0", 0.0)], vectors) is None


def test_a_new_video_starts_from_its_tags_and_uploader() -> None:
    watches, taste = planted()
    vectors = learn_video_embeddings(watches, 4)
    traits = {v: VideoTraits((f"taste-{t}",), f"uploader-{t}") for v, t in taste.items()}
    sides = side_vectors(vectors, traits)
    new = cold_start_vector("new", VideoTraits(("TASTE-A", "unknown"), "someone-else"), sides, 4)
    assert np.linalg.norm(new) == pytest.approx(1, abs=1e-5)
    assert all(float(new @ vectors[f"a{i}"]) > float(new @ vectors[f"b{i}"]) for i in range(4))
    by_uploader = cold_start_vector("new-2", VideoTraits((), "uploader-b"), sides, 4)
    assert all(float(by_uploader @ vectors[f"b{i}"]) > float(by_uploader @ vectors[f"a{i}"]) for i in range(4))
    nothing = cold_start_vector("new-3", VideoTraits(("nothing",), None), sides, 4)
    assert np.array_equal(nothing, fallback_vector("new-3", 4))  # fixed: the same on every training
    assert not np.array_equal(fallback_vector("new-3", 4), fallback_vector("new-4", 4))


# -- the watch history ---------------------------------------------------------------------------

def test_the_history_merge_is_idempotent_and_order_free() -> None:
    updates = [("v1", 0.3, 10), ("v2", 0.95, 20), ("v1", 0.8, 5), ("v1", 0.5, 30)]
    once = merged({}, updates, 10)
    assert once == {"v1": (0.8, 30), "v2": (0.95, 20)}
    assert merged(once, updates, 10) == once  # read twice
    assert merged(merged({}, updates[2:], 10), updates[:2], 10) == once  # another order
    assert finished(once) == ["v2"] and recent(once, 1) == [("v1", 0.8)]


def test_the_history_keeps_the_latest_videos_and_finished_means_ninety_percent() -> None:
    history = merged({}, [(f"v{i}", 0.9 if i % 2 else 0.89, i) for i in range(10)], 4)
    assert set(history) == {"v6", "v7", "v8", "v9"}
    assert finished(history) == ["v7", "v9"]
    assert completion(900, 1000) == 0.9 and completion(5000, 1000) == 1.0 and completion(10, 0) is None
