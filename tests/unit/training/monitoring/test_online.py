"""Online NDCG@10 and Hit@10: each user's next new item ranked in the last list served."""

from __future__ import annotations

import math

import pytest

from training.monitoring.online import OnlineQuality, score_rank, version_label

LIST = [f"i{r}" for r in range(1, 21)]  # i1 at rank 1 ... i20 at rank 20


def test_score_of_a_rank() -> None:
    assert score_rank(1) == (1.0, 1.0)
    assert score_rank(3) == pytest.approx((1 / math.log2(4), 1.0))
    assert score_rank(10)[1] == 1.0
    assert score_rank(11) == (0.0, 0.0)
    assert score_rank(None) == (0.0, 0.0)


def test_the_last_list_before_the_interaction_scores_it() -> None:
    quality = OnlineQuality(window=10)
    quality.served("u", "cascade-a+recall:popularity", LIST, received_ms=1000)
    scored = quality.interaction("u", "i3", received_ms=2000)
    assert scored is not None and scored.rank == 3 and scored.model_version == "cascade-a"
    assert scored.ndcg == pytest.approx(0.5)
    quality.served("u", "cascade-a", list(reversed(LIST)), received_ms=3000)
    again = quality.interaction("u", "i20", received_ms=4000)
    assert again is not None and again.rank == 1
    ndcg, hit = quality.windows["cascade-a"].means()
    assert ndcg == pytest.approx(0.75) and hit == 1.0


def test_only_new_items_after_a_recent_list_count() -> None:
    quality = OnlineQuality(window=10, max_list_age_ms=60_000)
    assert quality.interaction("u", "i1", received_ms=500) is None  # no list yet
    quality.served("u", "v", LIST, received_ms=1000)
    assert quality.interaction("u", "i1", received_ms=2000) is None  # not new to u
    missed = quality.interaction("u", "x", received_ms=3000)
    assert missed is not None and missed.rank is None and missed.ndcg == 0.0
    assert quality.interaction("u", "i2", received_ms=1000 + 60_001) is None  # list too old
    assert quality.interaction("other", "i2", received_ms=2000) is None  # not u's list
    assert quality.windows["v"].scored == 1


def test_the_window_keeps_the_newest_scores_and_memory_is_bounded() -> None:
    quality = OnlineQuality(window=2, max_users=3)
    for n, user in enumerate(["a", "b", "c", "d"]):
        quality.served(user, "v", LIST, received_ms=n)
        quality.interaction(user, "i1" if n < 2 else "i11", received_ms=n + 1)
    window = quality.windows["v"]
    assert window.full and window.scored == 4
    assert window.means() == (0.0, 0.0)
    assert len(quality._lists) == 3 and "a" not in quality._lists  # noqa: SLF001


def test_version_label_drops_fallback_suffixes() -> None:
    assert version_label("cascade-lightgcn.v2-din.v2-ranknet.v2+rank:recall") == (
        "cascade-lightgcn.v2-din.v2-ranknet.v2"
    )
    assert version_label("heuristic-cooc-v1") == "heuristic-cooc-v1"
