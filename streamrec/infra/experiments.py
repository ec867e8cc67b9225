"""Online experiments in Redis: the definitions (the toggle) and the counters the worker folds.

Layout, all under the topic prefix P so tests and tenants never share it:

- ``P experiments`` — hash: experiment name → its definition as JSON (validated by the API,
  ``api.experiments.definitions``); ``P experiments:version`` — a counter bumped on every
  change, which every API process polls (a GET every ``EXPERIMENT_POLL_SECONDS``), so a
  change reaches all of them within a second without a restart or a subscription to lose;
- ``P exp:counts:<experiment>`` — hash of counters, field ``<variant>|<what>``, written only
  by :data:`_FOLD` (the worker, or backfill); ``what`` is one of :data:`COUNTS`;
- ``P exp:req:<request_id>`` — what an experiment's request served (its variant, the team of
  each item, the clicks so far): the impression–click join of the experiment counters;
- ``P exp:user:<user_id>`` — items recommended to the user in an experiment, for conversions;
- ``P exp:acts:<user_id>`` — while experiments run, the user's latest interaction time per
  item not yet a conversion: a list folded after the interaction converts on it, so a
  conversion does not depend on which of the worker's agents read its event first;
- ``P exp:done:<event_id>`` — events already folded: a redelivered event changes nothing.

Every fold of one event is one Lua script call, so a counter never sees half an event.
The join keys expire after ``JOIN_TTL_SECONDS`` (the join's attribution window and grace,
``streams.joins``); a click more than an hour after its list is not attributed, as there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

# How often an API process re-reads the version counter: changes apply within this.
EXPERIMENT_POLL_SECONDS = 0.25
# The join state of a request (and the done-marks) lives this long: the attribution
# window of ``streams.joins`` (1 h) plus its grace (10 min), in wall-clock time.
JOIN_TTL_SECONDS = 4200
ATTRIBUTION_WINDOW_MS = 3600 * 1000
CLOCK_SKEW_MS = 60 * 1000
# The counters per variant. An A/B ``impression`` is one served list and a ``click`` a list
# with at least one attributed click (each list one Bernoulli trial, what the two-proportion
# test needs); ``item_clicks`` counts every attributed click; ``conversions`` the later
# interactions of a user with an item an experiment recommended them (once per user and
# item). Interleaving: ``item_impressions``/``item_clicks`` per team, and per request the
# team with more clicks ``wins`` (``ties`` under the name ``=``).
COUNTS = ("impressions", "clicks", "item_impressions", "item_clicks", "conversions", "wins")
TIE = "="

# ARGV: prefix, kind, event_id, ttl, then per kind:
#   served: request_id, experiment, mode, variant, user_id, served_ms, n, item1, team1, ...
#   click: request_id, item_id, click_ms
#   interaction: user_id, item_id, event_ms
# Returns the counters it moved, flat: experiment, variant, what, delta, ...
_FOLD = """
local prefix, kind, event_id, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if not redis.call('SET', prefix .. 'exp:done:' .. event_id, 1, 'NX', 'EX', ttl) then
  return {}
end
local moved = {}
local function count(experiment, variant, what, delta)
  redis.call('HINCRBY', prefix .. 'exp:counts:' .. experiment, variant .. '|' .. what, delta)
  table.insert(moved, experiment)
  table.insert(moved, variant)
  table.insert(moved, what)
  table.insert(moved, delta)
end
local function winner(req)
  local teams = redis.call('HGET', req, '_teams')
  local a, b = string.match(teams, '([^\\t]+)\\t([^\\t]+)')
  local na = tonumber(redis.call('HGET', req, 'n:' .. a) or '0')
  local nb = tonumber(redis.call('HGET', req, 'n:' .. b) or '0')
  if na > nb then return a elseif nb > na then return b elseif na > 0 then return '=' end
  return nil
end
local function click(req, item, at)
  local team = redis.call('HGET', req, 'i:' .. item)
  if not team then return end
  local served = tonumber(redis.call('HGET', req, '_t'))
  if at < served - SKEW_MS or at > served + WINDOW_MS then
    return
  end
  if redis.call('HSETNX', req, 'c:' .. item, 1) == 0 then return end
  local experiment = redis.call('HGET', req, '_experiment')
  local variant = redis.call('HGET', req, '_variant')
  count(experiment, team, 'item_clicks', 1)
  if redis.call('HGET', req, '_mode') == 'interleave' then
    local before = winner(req)
    redis.call('HINCRBY', req, 'n:' .. team, 1)
    local after = winner(req)
    if before ~= after then
      if before then count(experiment, before, 'wins', -1) end
      count(experiment, after, 'wins', 1)
    end
  elseif redis.call('HSETNX', req, '_clicked', 1) == 1 then
    count(experiment, variant, 'clicks', 1)
  end
end
if kind == 'served' then
  local request_id, experiment, mode, variant, user_id = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  local served_ms, n = tonumber(ARGV[10]), tonumber(ARGV[11])
  local req = prefix .. 'exp:req:' .. request_id
  if redis.call('HEXISTS', req, '_variant') == 1 then return moved end
  redis.call('HSET', req, '_experiment', experiment, '_mode', mode, '_variant', variant,
    '_t', served_ms)
  local user = prefix .. 'exp:user:' .. user_id
  local acts = prefix .. 'exp:acts:' .. user_id
  local teams = {}
  for i = 0, n - 1 do
    local item, team = ARGV[12 + 2 * i], ARGV[13 + 2 * i]
    redis.call('HSET', req, 'i:' .. item, team)
    -- the user's interaction with the item, folded before this list, at or after it
    local acted = tonumber(redis.call('HGET', acts, item) or '-1')
    if acted >= served_ms then
      redis.call('HDEL', acts, item)
      count(experiment, team, 'conversions', 1)
    else
      redis.call('HSET', user, item, experiment .. '\\t' .. team .. '\\t' .. served_ms)
    end
    count(experiment, team, 'item_impressions', 1)
    -- an explored item of an interleaved list belongs to no team
    if teams[team] == nil and team ~= variant then teams[team] = true; table.insert(teams, team) end
  end
  if mode == 'interleave' then
    table.sort(teams)
    redis.call('HSET', req, '_teams', (teams[1] or '') .. '\\t' .. (teams[2] or teams[1] or ''))
  end
  count(experiment, variant, 'impressions', 1)
  redis.call('EXPIRE', req, ttl)
  redis.call('EXPIRE', user, ttl)
  local pending = prefix .. 'exp:pending:' .. request_id
  for _, entry in ipairs(redis.call('LRANGE', pending, 0, -1)) do
    local item, at = string.match(entry, '^(.*)\\t(%d+)$')
    click(req, item, tonumber(at))
  end
  redis.call('DEL', pending)
elseif kind == 'click' then
  local request_id, item, at = ARGV[5], ARGV[6], tonumber(ARGV[7])
  local req = prefix .. 'exp:req:' .. request_id
  if redis.call('HEXISTS', req, '_variant') == 1 then
    click(req, item, at)
  else
    -- its list is not folded yet (the topics are read independently): wait for it
    local pending = prefix .. 'exp:pending:' .. request_id
    redis.call('RPUSH', pending, item .. '\\t' .. at)
    redis.call('EXPIRE', pending, ttl)
  end
elseif kind == 'interaction' then
  local user_id, item, at = ARGV[5], ARGV[6], tonumber(ARGV[7])
  local user = prefix .. 'exp:user:' .. user_id
  local seen = redis.call('HGET', user, item)
  local converted = false
  if seen then
    local experiment, team, served = string.match(seen, '^(.*)\\t(.*)\\t(%d+)$')
    if at >= tonumber(served) then
      redis.call('HDEL', user, item)
      count(experiment, team, 'conversions', 1)
      converted = true
    end
  end
  -- While experiments run, remember the user's latest interaction with the item: a list
  -- folded after it (the agents read the topics independently) converts on it.
  if not converted and redis.call('HLEN', prefix .. 'experiments') > 0 then
    local acts = prefix .. 'exp:acts:' .. user_id
    local before = tonumber(redis.call('HGET', acts, item) or '-1')
    if at > before then redis.call('HSET', acts, item, at) end
    redis.call('EXPIRE', acts, ttl)
  end
end
return moved
""".replace("SKEW_MS", str(CLOCK_SKEW_MS)).replace("WINDOW_MS", str(ATTRIBUTION_WINDOW_MS))


def definitions_key(prefix: str) -> str:
    return f"{prefix}experiments"


def version_key(prefix: str) -> str:
    return f"{prefix}experiments:version"


def counts_key(prefix: str, experiment: str) -> str:
    return f"{prefix}exp:counts:{experiment}"


Counts = dict[str, dict[str, int]]  # variant -> what -> count
Moved = list[tuple[str, str, str, int]]  # (experiment, variant, what, delta)


def parse_counts(raw: Mapping[Any, Any]) -> Counts:
    """``{variant: {what: n}}`` from the counters hash."""
    counts: Counts = {}
    for field, value in raw.items():
        text = field.decode() if isinstance(field, bytes) else str(field)
        variant, _, what = text.rpartition("|")
        counts.setdefault(variant, {})[what] = int(value)
    return counts


class ExperimentStore(Protocol):
    """Where the definitions live: Redis in a deployment, a dict in unit tests."""

    def version(self) -> int: ...
    def load(self) -> dict[str, dict[str, Any]]: ...
    def save(self, name: str, definition: dict[str, Any], fresh: bool = False) -> None: ...
    def delete(self, name: str) -> bool: ...
    def counts(self, name: str) -> Counts: ...


class MemoryExperimentStore:
    """The definitions in a dict, and counters a test sets; one process only."""

    def __init__(self) -> None:
        self._definitions: dict[str, dict[str, Any]] = {}
        self._version = 0
        self.counters: dict[str, Counts] = {}

    def version(self) -> int:
        return self._version

    def load(self) -> dict[str, dict[str, Any]]:
        return {name: dict(d) for name, d in self._definitions.items()}

    def save(self, name: str, definition: dict[str, Any], fresh: bool = False) -> None:
        self._definitions[name] = dict(definition)
        if fresh:
            self.counters.pop(name, None)
        self._version += 1

    def delete(self, name: str) -> bool:
        self._version += 1
        return self._definitions.pop(name, None) is not None

    def counts(self, name: str) -> Counts:
        return {v: dict(c) for v, c in self.counters.get(name, {}).items()}


class RedisExperimentStore:
    """The definitions and the counters in Redis; blocking (redis-py), callers use a thread."""

    def __init__(self, redis_url: str, topic_prefix: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._prefix = topic_prefix

    def version(self) -> int:
        return int(cast(bytes | None, self._client.get(version_key(self._prefix))) or 0)

    def load(self) -> dict[str, dict[str, Any]]:
        raw = cast(dict[bytes, bytes], self._client.hgetall(definitions_key(self._prefix)))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def save(self, name: str, definition: dict[str, Any], fresh: bool = False) -> None:
        """Store a definition; ``fresh`` (a new experiment, not a change of one) starts
        its counters from zero, so a name used again never inherits an old test's numbers."""
        with self._client.pipeline(transaction=True) as pipe:
            if fresh:
                pipe.delete(counts_key(self._prefix, name))
            pipe.hset(definitions_key(self._prefix), name, json.dumps(definition))
            pipe.incr(version_key(self._prefix))
            pipe.execute()

    def delete(self, name: str) -> bool:
        with self._client.pipeline(transaction=True) as pipe:
            pipe.hdel(definitions_key(self._prefix), name)
            pipe.incr(version_key(self._prefix))
            removed, _ = pipe.execute()
        return bool(removed)

    def counts(self, name: str) -> Counts:
        raw = cast(dict[bytes, bytes], self._client.hgetall(counts_key(self._prefix, name)))
        return parse_counts(raw)

    def close(self) -> None:
        self._client.close()


class RedisExperimentFold:
    """The worker's side: fold served lists, clicks and interactions into the counters.

    Each call is one script per event; the events are sent in one pipeline per batch.
    Returns the counters moved, for the worker's Prometheus metrics.
    """

    def __init__(self, redis_url: str, topic_prefix: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._prefix = topic_prefix
        self._fold = self._client.register_script(_FOLD)

    def fold(self, calls: Sequence[Sequence[Any]]) -> Moved:
        """``calls``: each the script's ARGV after the prefix (``fold_args`` builds them)."""
        if not calls:
            return []
        pipe = self._client.pipeline(transaction=False)
        for args in calls:
            self._fold(keys=[], args=[self._prefix, *args], client=pipe)
        moved: Moved = []
        for result in pipe.execute():
            flat = [x.decode() if isinstance(x, bytes) else x for x in result]
            for at in range(0, len(flat), 4):
                experiment, variant, what, delta = flat[at : at + 4]
                moved.append((str(experiment), str(variant), str(what), int(delta)))
        return moved

    def wipe(self) -> int:
        """Delete the counters and their join state (``exp:*``), never the definitions:
        what a rebuild from the log starts from. Returns the keys deleted."""
        deleted = 0
        keys: list[bytes] = []
        for key in self._client.scan_iter(match=f"{self._prefix}exp:*", count=1000):
            keys.append(key)
            if len(keys) >= 1000:
                deleted += cast(int, self._client.unlink(*keys))
                keys = []
        if keys:
            deleted += cast(int, self._client.unlink(*keys))
        return deleted

    def close(self) -> None:
        self._client.close()
