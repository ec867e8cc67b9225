"""Artificial users for online experiments (issue 16 §3): known preferences, real API.

Each simulated user has a true click probability for every item, so the CTR any list
would get is known. A user asks the API for a list (``GET /recommend``), looks down it
with a position bias (the chance of examining rank r is ``1 / r ** position_decay``),
clicks an examined item with its true probability (times the user's activity, when
users differ), and sends each click through the API
(``POST /events`` with the ``request_id`` and rank), which writes the Click and the
Interaction to the log like a real client. Nothing reaches the counters but the log.

The preferences: an item's attractiveness is ``liked`` for the items a user population
clearly prefers (the ``liked_share`` most popular of the prepared log, so a popularity
list is better than a random one) and ``other`` for the rest. ``run_until`` keeps adding
users and reads the experiment table until its test names a leader at p < 0.05.

Scenarios: ``users`` may repeat ids (a returning user keeps their variant: the
assignment is sticky), ``concurrency`` sends several users at once (high load), and
``event_time_jitter_ms`` dates clicks off the wall clock by up to that much (erratic
client clocks; within the join's bounds they are still attributed).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Preferences:
    """True click probabilities: ``liked`` for ``liked_items``, ``other`` elsewhere."""

    liked_items: frozenset[str]
    liked: float = 0.35
    other: float = 0.05
    position_decay: float = 0.7
    # Users differ in how much they click at all: each user's probabilities are multiplied
    # by their activity, Beta(alpha, beta) * scale drawn once per user id (capped at 1
    # per click). None: every user alike. Real users differ a lot; this is what makes
    # comparing variants within one user (interleaving) pay off.
    activity: tuple[float, float, float] | None = None

    def attractiveness(self, item_id: str) -> float:
        return self.liked if item_id in self.liked_items else self.other

    def user_activity(self, user_id: str) -> float:
        if self.activity is None:
            return 1.0
        alpha, beta, scale = self.activity
        return random.Random(f"activity:{user_id}").betavariate(alpha, beta) * scale

    def click_probability(self, user_id: str, item_id: str, rank: int) -> float:
        chance = self.examine(rank) * self.attractiveness(item_id)
        return min(1.0, chance * self.user_activity(user_id))

    def examine(self, rank: int) -> float:
        return 1.0 / rank**self.position_decay

    def expected_clicks(self, items: Sequence[str]) -> float:
        """The true expected clicks of a list: what any estimate is judged against."""
        return sum(
            self.examine(rank) * self.attractiveness(item)
            for rank, item in enumerate(items, start=1)
        )

    @classmethod
    def from_popularity(
        cls, counts: dict[str, int], liked_share: float = 0.2, **options: Any
    ) -> Preferences:
        ranked = sorted(counts, key=lambda item: (-counts[item], item))
        top = max(1, int(len(ranked) * liked_share))
        return cls(frozenset(ranked[:top]), **options)


class NotFolded(TimeoutError):
    """The worker did not fold what the simulator sent within the wait."""


@dataclass
class SimulatedUsers:
    """Sends users through the API and reads the experiment table.

    What was sent is tallied per experiment *as the API answered*: a list counts for the
    experiment its answer names (``experiment``), and so do the clicks on it. A process
    that has not read a new experiment yet serves its list outside it (within
    ``EXPERIMENT_POLL_SECONDS``); that list, and its clicks, never reach the experiment's
    counters, so expecting them there would wait forever. :meth:`start` makes every
    process read the experiment before the first user.
    """

    clients: Sequence[httpx.Client]  # one per API process; users alternate between them
    preferences: Preferences
    admin_headers: dict[str, str]
    k: int = 10
    seed: int = 0
    concurrency: int = 1
    event_time_jitter_ms: int = 0
    sent: int = 0
    clicks: int = 0
    # per experiment named by the answers ("" outside any): lists served and clicks sent
    lists_in: Counter[str] = field(default_factory=Counter)
    clicks_in: Counter[str] = field(default_factory=Counter)
    # per user, the variants their answers named (sticky assignment: one per experiment)
    variants_of: dict[str, set[str]] = field(default_factory=dict)
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def start(self, experiment: str) -> None:
        """Have every API process read ``experiment`` (its table route reads the store)."""
        for client in self.clients:
            response = client.get(f"/admin/experiments/{experiment}", headers=self.admin_headers)
            response.raise_for_status()

    def visit(self, user_id: str) -> int:
        """One user: a list, the clicks; returns the number of clicks."""
        with self._lock:
            client = self.clients[self.sent % len(self.clients)]
            self.sent += 1
        answer = client.get("/recommend", params={"user_id": user_id, "k": self.k})
        answer.raise_for_status()
        body = answer.json()
        clicked = 0
        for item in body["items"]:
            rank = int(item["rank"])
            chance = self.preferences.click_probability(user_id, item["item_id"], rank)
            with self._lock:
                draw = self._rng.random()
            if draw < chance:
                event: dict[str, Any] = {
                    "user_id": user_id,
                    "item_id": item["item_id"],
                    "action": "click",
                    "request_id": body["request_id"],
                    "rank": rank,
                }
                if self.event_time_jitter_ms:
                    with self._lock:
                        jitter = self._rng.randint(-self.event_time_jitter_ms, 0)
                    event["event_time"] = int(time.time() * 1000) + jitter
                client.post("/events", json=event).raise_for_status()
                clicked += 1
        with self._lock:
            self.clicks += clicked
            self.lists_in[body.get("experiment") or ""] += 1
            self.clicks_in[body.get("experiment") or ""] += clicked
            self.variants_of.setdefault(user_id, set()).add(str(body.get("variant")))
        return clicked

    def visit_all(self, user_ids: Sequence[str]) -> None:
        if self.concurrency <= 1:
            for user_id in user_ids:
                self.visit(user_id)
            return
        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(self.visit, user_ids))

    def table(self, experiment: str) -> dict[str, Any]:
        response = self.clients[0].get(
            f"/admin/experiments/{experiment}", headers=self.admin_headers
        )
        response.raise_for_status()
        return dict(response.json())

    def run_until(
        self,
        experiment: str,
        *,
        step: int,
        max_users: int,
        prefix: str = "sim",
        alpha: float = 0.05,
    ) -> tuple[int, dict[str, Any]]:
        """Add ``step`` new users at a time until the table's p-value is below ``alpha``;
        each look waits until the worker has folded every list and click sent in the
        experiment. Returns the users it took and the last table (the users are
        ``max_users`` when it never did).

        Looking after every step inflates the chance of a false verdict (optional
        stopping); the test uses it to compare how many users each mode needs, on
        variants that do differ, not to decide a real experiment."""
        self.start(experiment)
        users = 0
        table: dict[str, Any] = {}
        while users < max_users:
            self.visit_all([f"{prefix}-{experiment}-{users + i}" for i in range(step)])
            users += step
            table = self.wait_folded(experiment)
            p_value = table.get("p_value")
            if p_value is not None and p_value < alpha:
                return users, table
        return users, table

    def wait_folded(self, experiment: str, timeout: float = 30.0) -> dict[str, Any]:
        """The table once it counts every list served in ``experiment`` and every click
        on them; :class:`NotFolded` if the worker has not folded them by ``timeout``."""
        lists, clicks = self.lists_in[experiment], self.clicks_in[experiment]
        deadline = time.monotonic() + timeout
        while True:
            table = self.table(experiment)
            if table["lists"] >= lists and table["item_clicks"] >= clicks:
                return table
            if time.monotonic() > deadline:
                raise NotFolded(
                    f"{experiment}: after {timeout:.0f}s the table counts {table['lists']} of "
                    f"{lists} lists and {table['item_clicks']} of {clicks} clicks sent"
                )
            time.sleep(0.05)
