from __future__ import annotations

import numpy as np
import pytest

from tests.unit.training.helpers import T0, events
from training.data.split import SplitConfig, restrict_target, time_split


def _ten_day_log():
    # One event per day: days 0-7 train, day 8 validation, day 9 test.
    return events(
        [
            (0, "u1", "a"),
            (1, "u1", "b"),
            (2, "u2", "a"),
            (3, "u2", "c"),
            (4, "u3", "a"),
            (5, "u3", "b"),
            (6, "u1", "c"),
            (7, "u2", "b"),
            (8, "u3", "c"),  # validation: new to u3, a candidate
            (9, "u1", "a"),  # test: u1 already had a in training -> not relevant
        ]
    )


def test_boundaries_are_event_time_quantiles() -> None:
    split = time_split(_ten_day_log())
    day = 86_400_000
    assert split.train_end_ms == T0 + 8 * day
    assert split.validation_end_ms == T0 + 9 * day
    assert len(split.train_user) == 8
    assert (split.train_time < split.train_end_ms).all()
    assert split.validation.n_events == 1
    assert split.test.n_events == 1


def test_equal_times_never_straddle_a_boundary() -> None:
    rows = [(day, f"u{day}", "a") for day in range(8)] + [(8, "x", "a"), (8, "y", "b")]
    rows += [(8, "z", "c"), (9, "w", "a")]
    split = time_split(events(rows), SplitConfig(0.8, 0.1))
    # 12 events: the 80% quantile (event 9) and the 90% one (event 10) both fall on day 8,
    # so no day-8 event is training and the validation period is empty, not split.
    assert split.train_end_ms == split.validation_end_ms == T0 + 8 * 86_400_000
    assert len(split.train_user) == 8
    assert split.validation.n_events == 0
    assert split.test.n_events == 4


def test_training_item_is_masked_and_never_relevant() -> None:
    split = time_split(_ten_day_log())
    u1, a = split.user_index["u1"], split.item_index["a"]
    assert split.train_matrix[u1, a] == 1
    # u1's only test item is a training item: u1 is skipped, the pair is counted as seen.
    assert len(split.test.users) == 0
    assert split.test.n_seen_in_training == 1
    assert split.test.n_skipped_users == 1
    # u3's validation item c is relevant and not in u3's training row.
    u3, c = split.user_index["u3"], split.item_index["c"]
    assert split.validation.users.tolist() == [u3]
    assert split.validation.relevant[0, c] == 1
    assert split.train_matrix[u3, c] == 0


def test_later_items_are_not_candidates_and_later_events_do_not_leak() -> None:
    log = events(
        [
            (0, "u1", "a"),
            (1, "u2", "a"),
            (2, "u1", "b"),
            (3, "u2", "b"),
            (4, "u3", "a"),
            (5, "u1", "c"),
            (6, "u3", "b"),
            (7, "u2", "c"),
            (8, "u4", "a"),  # new user in validation
            (9, "u1", "z"),  # z never seen in training: not a candidate
        ]
    )
    split = time_split(log)
    assert "z" not in split.item_index
    assert "u4" not in split.user_ids[: split.n_train_users]
    assert split.test.n_not_candidate == 1
    assert len(split.test.users) == 0
    # The new user is evaluated, with an index after every training user and no mask.
    u4 = split.user_index["u4"]
    assert u4 >= split.n_train_users
    assert split.validation.users.tolist() == [u4]
    assert split.train_matrix[u4].nnz == 0
    # Every training entry comes from an event before the cutoff.
    train = log[log["event_time"] < split.train_end_ms]
    expected = {
        (split.user_index[u], split.item_index[i])
        for u, i in zip(train.user_id, train.item_id, strict=True)
    }
    rows, cols = split.train_matrix.nonzero()
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected


def test_items_are_indexed_by_training_popularity() -> None:
    log = events(
        [(0, "u1", "b"), (1, "u2", "b"), (2, "u3", "b"), (3, "u1", "a"), (4, "u1", "a")]
        + [(5, "u2", "c"), (6, "u3", "c"), (7, "u1", "d"), (8, "u9", "a"), (9, "u9", "b")]
    )
    split = time_split(log)
    # b: 3 users; c: 2 users; a: 1 user (twice), d: 1 user -> a before d by id.
    assert split.item_ids.tolist() == ["b", "c", "a", "d"]
    assert split.item_popularity.tolist() == [3, 2, 1, 1]
    assert split.user_activity[split.user_index["u1"]] == 4


def test_restrict_target_keeps_chosen_users() -> None:
    rows = [(d, f"u{d % 3}", f"i{d % 4}") for d in range(8)]
    log = events(rows + [(8, "u0", "i1"), (9, "u1", "i0"), (9, "u2", "i3")])
    split = time_split(log, SplitConfig(0.8, 0.0))
    assert len(split.test.users) == 2  # u1's test item is a training item
    kept = restrict_target(split.test, np.arange(len(split.test.users)) == 0)
    assert kept.users.tolist() == split.test.users[:1].tolist()
    assert kept.relevant.shape[0] == 1
    assert (kept.relevant.toarray() == split.test.relevant[:1].toarray()).all()


@pytest.mark.parametrize("train, validation", [(0.0, 0.1), (1.0, 0.0), (0.8, 0.2), (0.8, -0.1)])
def test_bad_fractions_are_refused(train: float, validation: float) -> None:
    with pytest.raises(ValueError):
        SplitConfig(train, validation)


def test_a_period_evaluates_a_seeded_sample_of_at_most_max_users() -> None:
    rows = [(d % 8, f"u{d}", f"i{d % 5}") for d in range(40)]  # training: 40 users
    later = [(9, f"u{d}", f"i{(d + 1) % 5}") for d in range(40)]  # test: each a new item
    log = events(rows + later)
    whole = time_split(log, SplitConfig(0.5, 0.0))
    assert len(whole.test.users) == 40 and whole.test.n_sampled_out == 0
    sampled = time_split(log, SplitConfig(0.5, 0.0, max_evaluated_users=15))
    assert len(sampled.test.users) == 15 and sampled.test.n_sampled_out == 25
    assert set(sampled.test.users) < set(whole.test.users)
    assert (np.diff(sampled.test.users) > 0).all()  # still ascending
    rows_of = np.searchsorted(whole.test.users, sampled.test.users)
    assert (sampled.test.relevant.toarray() == whole.test.relevant[rows_of].toarray()).all()
    again = time_split(log, SplitConfig(0.5, 0.0, max_evaluated_users=15))
    assert again.test.users.tolist() == sampled.test.users.tolist()  # the same sample
    with pytest.raises(ValueError, match="max_evaluated_users"):
        SplitConfig(0.5, 0.0, max_evaluated_users=0)
