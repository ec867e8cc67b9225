"""Feast's Redis online layout, written for a whole batch in one round trip.

Feast's Redis store writes a batch in two round trips with one command per row each way:
an ``HMGET`` of every row's stored timestamp, a comparison in Python, then an ``HSET`` of
the rows that are newer. For the worker, whose batches touch about one user and one item
per event, that per-row client work was the largest single cost of an event (py-spy and
the worker's stage timers, `bench/worker_throughput.py`).

``RedisRowWriter`` keeps Feast's layout and Feast's rule and moves the comparison to the
server: one ``EVALSHA`` per batch whose script, for each row in order, reads the stored
timestamp, writes the row's hash fields only if the row is strictly newer, and sets the
key's TTL when one is configured. Keys and field names come from Feast's own helpers
(``_redis_key``, ``_mmh3``, the versioned view name), values are Feast's protobufs, and
the row timestamp is Feast's ``Timestamp`` protobuf, so Feast reads these rows exactly as
rows it wrote; `tests/integration/test_worker.py` compares the stored bytes with
``FeatureStore.push``'s. The script runs atomically, so unlike the two-step write no
other writer can slip in between a row's comparison and its write.

Only plain Redis (not Redis Cluster, whose keys of one script must share a slot) uses
this; ``supports`` says whether a store's configuration does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from feast import RepoConfig
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import RedisType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

# KEYS: the rows' Redis keys, in order. ARGV[1]: the view's timestamp field; ARGV[2]: the
# number of feature fields n; ARGV[3]: TTL seconds (0: none); ARGV[4 .. 3+n]: the feature
# field names; then per row: timestamp seconds, nanos, the Timestamp protobuf, n values.
# A stored timestamp is a google.protobuf.Timestamp: field 1 (seconds) and field 2
# (nanos), both varints; it is decoded here to compare (seconds, nanos) as Feast does.
_SCRIPT = """
local function stored_time(bytes)
  local seconds, nanos, at, size = 0, 0, 1, #bytes
  while at <= size do
    local tag = string.byte(bytes, at)
    at = at + 1
    local value, scale = 0, 1
    while true do
      local byte = string.byte(bytes, at)
      at = at + 1
      value = value + (byte % 128) * scale
      if byte < 128 then break end
      scale = scale * 128
    end
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds, nanos
end

local ts_field, fields, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local at, written = 4 + fields, 0
for row = 1, #KEYS do
  local key = KEYS[row]
  local seconds, nanos = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local newer = true
  local previous = redis.call('HGET', key, ts_field)
  if previous then
    local stored_seconds, stored_nanos = stored_time(previous)
    newer = seconds > stored_seconds or (seconds == stored_seconds and nanos > stored_nanos)
  end
  if newer then
    local args = {ts_field, ARGV[at + 2]}
    for field = 1, fields do
      args[#args + 1] = ARGV[3 + field]
      args[#args + 1] = ARGV[at + 2 + field]
    end
    redis.call('HSET', key, unpack(args))
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    written = written + 1
  end
  at = at + 3 + fields
end
return written
"""


# Remembered serialised entity keys; about 100 bytes each.
_MAX_CACHED_KEYS = 500_000


def supports(config: RepoConfig) -> bool:
    """Whether the store's online store is a Redis that ``RedisRowWriter`` can write."""
    online = config.online_store
    redis_type = getattr(online, "redis_type", None)
    return getattr(online, "type", None) == "redis" and redis_type != RedisType.redis_cluster


class RedisRowWriter:
    """Writes rows of feature views to Feast's Redis online store, one script per batch."""

    def __init__(self, config: RepoConfig, client: Any) -> None:
        if not supports(config):
            raise ValueError("RedisRowWriter writes only a plain Redis online store")
        self._config = config
        self._ttl = int(getattr(config.online_store, "key_ttl_seconds", None) or 0)
        self._script = client.register_script(_SCRIPT)
        # Entity keys recur batch after batch (the same users and items); serialising one
        # is most of a row's client cost, so the bytes are remembered.
        self._keys: dict[tuple[Any, ...], bytes] = {}
        self._fields: dict[tuple[str, tuple[str, ...]], list[bytes]] = {}

    def _redis_key(self, ids: tuple[Any, ...], entity: Callable[[], EntityKeyProto]) -> bytes:
        key = self._keys.get(ids)
        if key is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            key = _redis_key(
                self._config.project,
                entity(),
                entity_key_serialization_version=self._config.entity_key_serialization_version,
            )
            self._keys[ids] = key
        return key

    def _field_names(self, view_name: str, features: tuple[str, ...]) -> list[bytes]:
        names = self._fields.get((view_name, features))
        if names is None:
            names = [_mmh3(f"{view_name}:{feature}") for feature in features]
            self._fields[(view_name, features)] = names
        return names

    def write(
        self,
        view_name: str,
        ids: Sequence[tuple[Any, ...]],
        entity: Callable[[int], EntityKeyProto],
        features: Sequence[str],
        values: Sequence[Sequence[ValueProto]],
        times_ms: Sequence[int],
    ) -> int:
        """Write the rows unless the stored row is as new; returns the rows written.

        Row r is the entity ``ids[r]`` (its join-key values, with the join-key names
        first so that views of different entities never share a cached key), whose
        ``EntityKeyProto`` ``entity(r)`` builds when the key is not cached, with feature
        values ``values[r]`` in the order of ``features``, at ``times_ms[r]``.
        ``view_name`` is the name Feast keys the view by (its versioned name).
        """
        if not ids:
            return 0
        redis_keys = [
            self._redis_key(row_ids, functools.partial(entity, row))
            for row, row_ids in enumerate(ids)
        ]
        args: list[Any] = [f"_ts:{view_name}", len(features), self._ttl]
        args.extend(self._field_names(view_name, tuple(features)))
        for row_values, ms in zip(values, times_ms, strict=True):
            seconds, millis = divmod(int(ms), 1000)
            nanos = millis * 1_000_000
            stamp = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
            args.extend((seconds, nanos, stamp))
            args.extend(value.SerializeToString() for value in row_values)
        return int(self._script(keys=redis_keys, args=args))


class RedisRowReader:
    """Reads one entity's row of one feature view in Feast's layout, as commands a caller
    can put in the same pipeline as others (one round trip for a request's reads).

    ``FeatureStore.get_online_features`` costs a request milliseconds of Python around one
    ``HMGET`` (registry look-ups, entity-key protos, a response object turned into a
    dict) and blocks, so the API ran it in a thread. This builds the same ``HMGET`` from
    Feast's own helpers (the key of ``_redis_key``, the fields of ``_mmh3``) and decodes
    the stored protobufs with Feast's own conversion; the reader's contract tests read
    the worker's rows through both and get the same values.
    """

    def __init__(
        self, config: RepoConfig, view_name: str, join_key: str, features: Sequence[str]
    ) -> None:
        if not supports(config):
            raise ValueError("RedisRowReader reads only a plain Redis online store")
        self._config = config
        self._join_key = join_key
        self.features = tuple(features)
        # Feature fields, then the row's timestamp (present iff the row exists).
        self.fields = [_mmh3(f"{view_name}:{feature}") for feature in self.features]
        self.fields.append(f"_ts:{view_name}".encode())
        # A key is a protobuf serialisation per id, remembered as the writer does: every
        # item is read again at each refresh, a user at each request.
        self._keys: dict[str, bytes] = {}

    def key(self, entity_id: str) -> bytes:
        key = self._keys.get(entity_id)
        if key is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            key = self._keys[entity_id] = self._key(entity_id)
        return key

    def _key(self, entity_id: str) -> bytes:
        entity = EntityKeyProto(
            join_keys=[self._join_key], entity_values=[ValueProto(string_val=entity_id)]
        )
        return _redis_key(
            self._config.project,
            entity,
            entity_key_serialization_version=self._config.entity_key_serialization_version,
        )

    def decode(self, values: Sequence[bytes | None]) -> dict[str, Any] | None:
        """The row from an ``HMGET`` of ``fields``: feature name to value (None where the
        row lacks the feature), or None when there is no row."""
        from feast.type_map import feast_value_type_to_python_type

        if values[-1] is None:
            return None
        row: dict[str, Any] = {}
        for feature, raw in zip(self.features, values, strict=False):
            row[feature] = (
                None if raw is None else feast_value_type_to_python_type(ValueProto.FromString(raw))
            )
        return row
