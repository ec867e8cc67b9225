"""Tiny hand-made event logs for the protocol tests."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

DAY_MS = 86_400_000
# 2020-01-01 UTC: inside the event contract's time range.
T0 = 1_577_836_800_000


def events(rows: Sequence[tuple[float, str, str]]) -> pd.DataFrame:
    """A log from (day, user, item) rows; day may be fractional."""
    return pd.DataFrame(
        {
            "event_time": [T0 + int(day * DAY_MS) for day, _, _ in rows],
            "user_id": [user for _, user, _ in rows],
            "item_id": [item for _, _, item in rows],
        }
    )


def planted_groups(users_per_group: int = 10, items_per_group: int = 6) -> pd.DataFrame:
    """Two taste groups with disjoint items, every item equally popular.

    Each user holds out two of their group's items: the first goes to the validation
    period, the second to the test period; the rest are training (days 0-19).
    """
    train, validation, test = [], [], []
    for group in range(2):
        items = [f"g{group}i{i}" for i in range(items_per_group)]
        for member in range(users_per_group):
            user = f"g{group}u{member}"
            held_val = items[member % items_per_group]
            held_test = items[(member + 1) % items_per_group]
            for n, item in enumerate(i for i in items if i not in (held_val, held_test)):
                train.append((member + n * 0.1 + group * 10, user, item))
            validation.append((30 + member * 0.01 + group * 0.001, user, held_val))
            test.append((40 + member * 0.01 + group * 0.001, user, held_test))
    return events(train + validation + test)
