"""Every item each user has interacted with, so the API never recommends it again.

``user_recent`` keeps only the latest ``recent_items_max`` items, the right size for the
behaviour sequence a ranking model attends over but not a memory of what the user already
has: a heavy reader's older books came back as recommendations. This is that memory, a
Redis set per user (``<topic prefix>seen:<user id>``), written by the worker in the same
batch that folds the events and by backfill. Adding to a set is idempotent, so redelivered
and replayed events change nothing, and a wiped Redis is restored by backfill like the
features are. It is an exclusion list, not a feature: nothing is trained on it.

Every action counts (view, click, cart, purchase, rate), as in the evaluation protocol,
which masks every training item of a user.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

# SADD to each of KEYS; ARGV holds, per key in order, its member count and then members.
# Members go 1,000 at a time: unpack is limited by Lua's stack (a backfill batch can hold
# thousands of one user's items).
_ADD_ALL = """
local at = 1
for index = 1, #KEYS do
  local last = at + tonumber(ARGV[at])
  local first = at + 1
  while first <= last do
    local upto = math.min(first + 999, last)
    redis.call('SADD', KEYS[index], unpack(ARGV, first, upto))
    first = upto + 1
  end
  at = last + 1
end
return #KEYS
"""


def seen_key(topic_prefix: str, user_id: str) -> str:
    return f"{topic_prefix}seen:{user_id}"


class SeenWriter(Protocol):
    def add(self, items_by_user: Mapping[str, Collection[str]]) -> None: ...


class RedisSeenItems:
    """Reads and writes the sets; blocking (redis-py), so callers use a thread."""

    def __init__(self, redis_url: str, topic_prefix: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._prefix = topic_prefix
        self._add_all = self._client.register_script(_ADD_ALL)

    def add(self, items_by_user: Mapping[str, Collection[str]]) -> None:
        """One script call for the whole batch: a pipeline costs a command per user."""
        keys: list[str] = []
        args: list[Any] = []
        for user_id, items in items_by_user.items():
            if items:
                keys.append(seen_key(self._prefix, user_id))
                args.append(len(items))
                args.extend(items)
        if keys:
            self._add_all(keys=keys, args=args)

    def read(self, user_id: str) -> frozenset[str]:
        members = self._client.smembers(seen_key(self._prefix, user_id))
        return frozenset(member.decode() for member in members)  # type: ignore[union-attr]


class InMemorySeenItems:
    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {}

    def add(self, items_by_user: Mapping[str, Collection[str]]) -> None:
        for user_id, items in items_by_user.items():
            self.sets.setdefault(user_id, set()).update(items)

    def read(self, user_id: str) -> frozenset[str]:
        return frozenset(self.sets.get(user_id, ()))
