"""Locust scenarios against a running API (the mission's staging load test).

    .venv/bin/locust -f bench/locustfile.py --headless --host http://127.0.0.1:8000 \
        -u 50 -r 10 -t 60s --csv out/browsing BrowsingUser

or all four at once through ``bench/load_test.py``. One user class per scenario:

* ``BrowsingUser``: a returning user reads a list, then clicks one of its items (with the
  list's ``request_id``, so the click joins its impression) now and then;
* ``HighLoadUser``: lists as fast as the API answers, no think time;
* ``SwitchingUser``: every request is another user (the online store's reads miss the
  per-user cache, if any, and cold users get the popular list);
* ``ErraticTimeUser``: events with out-of-order, old and slightly future ``event_time``s,
  which the API must take (202) or refuse with a reason (422), never fail on (5xx).

User and item ids are those of MovieLens-100K (``STREAMREC_LOAD_USERS`` and
``STREAMREC_LOAD_ITEMS`` set how many; ids run from 1).
"""

from __future__ import annotations

import os
import random
import time

from locust import HttpUser, between, constant, task


def _ids(variable: str, default: int) -> int:
    return int(os.environ.get(variable, default))


USERS = _ids("STREAMREC_LOAD_USERS", 943)
ITEMS = _ids("STREAMREC_LOAD_ITEMS", 1682)


def _user() -> str:
    return str(random.randint(1, USERS))


class BrowsingUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.user_id = _user()

    @task
    def browse(self) -> None:
        with self.client.get(
            "/recommend",
            params={"user_id": self.user_id, "k": 10},
            name="/recommend",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            body = response.json()
        if body["items"] and random.random() < 0.3:
            item = random.choice(body["items"])
            self.client.post(
                "/events",
                json={
                    "user_id": self.user_id,
                    "item_id": str(item["item_id"]),
                    "action": "click",
                    "request_id": body["request_id"],
                },
                name="/events click",
            )


class HighLoadUser(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.user_id = _user()

    @task
    def recommend(self) -> None:
        self.client.get("/recommend", params={"user_id": self.user_id, "k": 10}, name="/recommend")


class SwitchingUser(HttpUser):
    wait_time = constant(0.05)

    @task(4)
    def another_user(self) -> None:
        self.client.get("/recommend", params={"user_id": _user(), "k": 10}, name="/recommend")

    @task(1)
    def a_new_user(self) -> None:
        user = f"load-{random.getrandbits(40):x}"
        self.client.get("/recommend", params={"user_id": user, "k": 10}, name="/recommend new")


class ErraticTimeUser(HttpUser):
    wait_time = between(0.05, 0.2)

    @task
    def event(self) -> None:
        now_ms = int(time.time() * 1000)
        skew_ms = random.choice(
            [
                -random.randint(0, 3_600_000),  # up to an hour late
                -random.randint(0, 400 * 86_400_000),  # up to a year and more late
                random.randint(0, 60_000),  # a client clock up to a minute ahead
                0,
            ]
        )
        with self.client.post(
            "/events",
            json={
                "user_id": _user(),
                "item_id": str(random.randint(1, ITEMS)),
                "action": random.choice(["view", "click", "rate"]),
                "event_time": now_ms + skew_ms,
            },
            name="/events erratic time",
            catch_response=True,
        ) as response:
            # A refusal with a reason is correct behaviour; a server error is not.
            if response.status_code in (202, 422):
                response.success()
            else:
                response.failure(f"status {response.status_code}")
