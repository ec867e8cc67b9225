"""Opening the Feast store from settings, applying the declarations in feature_repo/, and
writing push-source rows to the online store (``OnlineWriter``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import yaml
from feast import FeatureService, FeatureStore, FeatureView, RepoConfig
from feast.infra.online_stores.helpers import compute_versioned_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from streamrec.paths import FEATURE_REPO
from streamrec.settings import Settings

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def _redis_connection_string(url: str) -> str:
    """Feast's Redis form "host:port,db=N[,password=...]" from a redis:// URL."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    db = parsed.path.lstrip("/")
    if db:
        parts.append(f"db={db}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    return ",".join(parts)


def feast_project(topic_prefix: str) -> str:
    """The Feast project of a topic prefix, so tenants and tests never share online keys."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", topic_prefix).strip("_")
    return name or "streamrec"


def repo_config(settings: Settings) -> RepoConfig:
    """The RepoConfig of this environment: feature_store.yaml, or the SQLite variant."""
    feast_dir = settings.state_dir / "feast"
    feast_dir.mkdir(parents=True, exist_ok=True)
    redis_url = settings.redis_connection_url
    values = {
        "FEAST_PROJECT": feast_project(settings.topic_prefix),
        "FEAST_REGISTRY": str(feast_dir / "registry.db"),
        "FEAST_REDIS": _redis_connection_string(redis_url) if redis_url else "",
        "FEAST_SQLITE": str(feast_dir / "online.db"),
    }
    name = "feature_store.yaml" if redis_url else "feature_store.sqlite.yaml"
    text = (FEATURE_REPO / name).read_text()
    raw: dict[str, Any] = yaml.safe_load(_PLACEHOLDER.sub(lambda m: values[m.group(1)], text))
    # Relative batch-source paths in the declarations resolve against the data directory.
    return RepoConfig(repo_path=settings.data_dir, **raw)


def open_store(settings: Settings) -> FeatureStore:
    return FeatureStore(config=repo_config(settings))


def apply_definitions(store: FeatureStore) -> None:
    """`feast apply` for the objects declared in feature_repo/definitions.py."""
    from feature_repo import definitions

    objects = [
        value
        for value in vars(definitions).values()
        if type(value).__module__.startswith("feast.") and hasattr(value, "name")
    ]
    store.apply(objects)


def service_refs(service: FeatureService) -> list[str]:
    """The ``view:feature`` references a declared feature service reads, in its order.

    Readers pass these to ``get_online_features`` / ``get_historical_features``: the same
    features as the service, without a registry look-up of the service on every call.
    """
    return [
        f"{projection.name_to_use()}:{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


# The proto field that holds a value of each feature type the push sources carry.
_PROTO_FIELDS = {
    ValueType.STRING: "string_val",
    ValueType.INT64: "int64_val",
    ValueType.INT32: "int32_val",
    ValueType.DOUBLE: "double_val",
    ValueType.FLOAT: "float_val",
    ValueType.BOOL: "bool_val",
}
_PROTO_LIST_FIELDS = {
    ValueType.STRING_LIST: "string_list_val",
    ValueType.INT64_LIST: "int64_list_val",
    ValueType.DOUBLE_LIST: "double_list_val",
}


class OnlineWriter:
    """Writes push-source rows to the Feast online store in Feast's layout.

    ``FeatureStore.push`` costs the worker most of its time per batch: it reloads the
    feature views from the registry on every call (and refreshes the whole registry,
    uncached, to look for pre-computed feature services), builds a DataFrame, converts
    it to Arrow and then to protobuf value by value with run-time type checks. Here the
    feature views of each push source are read from the registry once, and the columns
    become protobuf values directly. On a plain Redis online store the rows go out in
    one script per batch (``streamrec.infra.feast_redis``: Feast's keys, fields and
    keep-only-newer-rows rule, one round trip instead of two with a command per row);
    on any other store to the provider's ``online_write_batch``, the same call ``push``
    ends in. Views declared after this writer is built are not seen: the worker applies
    the declarations before it starts.
    """

    def __init__(self, store: FeatureStore) -> None:
        from streamrec.infra import feast_redis

        self._store = store
        self._views: dict[str, list[FeatureView]] = {}
        self._redis: feast_redis.RedisRowWriter | None = None
        if feast_redis.supports(store.config):
            # The client Feast's own Redis store reads with: same connection options.
            online: Any = store._get_provider().online_store
            client = online._get_client(store.config.online_store)
            self._redis = feast_redis.RedisRowWriter(store.config, client)

    def _views_of(self, push_source: str) -> list[FeatureView]:
        views = self._views.get(push_source)
        if views is None:
            views = [
                view
                for view in self._store.list_feature_views(allow_cache=True)
                if view.stream_source is not None and view.stream_source.name == push_source
            ]
            if not views:
                raise ValueError(f"no feature view reads the push source {push_source!r}")
            self._views[push_source] = views
        return views

    def write(self, push_source: str, columns: dict[str, list[Any]]) -> None:
        """Write one row per entity; ``event_timestamp`` is epoch milliseconds."""
        for view in self._views_of(push_source):
            features = [feature.name for feature in view.features]
            values = {
                feature.name: _proto_values(feature.name, feature.dtype.to_value_type(), columns)
                for feature in view.features
            }
            rows = [list(row) for row in zip(*values.values(), strict=True)]
            if self._redis is not None:
                self._write_redis(view, columns, features, rows)
            else:
                self._write_provider(view, columns, features, rows)

    def _write_redis(
        self,
        view: FeatureView,
        columns: dict[str, list[Any]],
        features: list[str],
        rows: list[list[ValueProto]],
    ) -> None:
        assert self._redis is not None
        names = _join_keys(view, columns)
        ids = [(*names, *row) for row in zip(*(columns[name] for name in names), strict=True)]

        def entity(row: int) -> EntityKeyProto:
            # Only for a key not cached yet, so only that row's: a batch with one new
            # user among a thousand known ones builds one key, not a thousand.
            return _entity_keys(view, {name: [columns[name][row]] for name in names})[0]

        name = compute_versioned_name(
            view, self._store.config.registry.enable_online_feature_view_versioning
        )
        self._redis.write(name, ids, entity, features, rows, columns["event_timestamp"])

    def _write_provider(
        self,
        view: FeatureView,
        columns: dict[str, list[Any]],
        features: list[str],
        rows: list[list[ValueProto]],
    ) -> None:
        times = [datetime.fromtimestamp(ms / 1000, tz=UTC) for ms in columns["event_timestamp"]]
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]] = [
            (key, dict(zip(features, row, strict=True)), times[n], None)
            for n, (key, row) in enumerate(zip(_entity_keys(view, columns), rows, strict=True))
        ]
        if data:
            self._store._get_provider().online_write_batch(
                self._store.config, view, data, progress=None
            )


def _join_keys(view: FeatureView, columns: dict[str, list[Any]]) -> list[str]:
    names = [column.name for column in view.entity_columns]
    missing = [name for name in names if name not in columns]
    if missing:
        raise ValueError(f"rows for feature view {view.name!r} lack the join keys {missing}")
    return names


def _entity_keys(view: FeatureView, columns: dict[str, list[Any]]) -> list[EntityKeyProto]:
    names = _join_keys(view, columns)
    values = [_proto_values(c.name, c.dtype.to_value_type(), columns) for c in view.entity_columns]
    return [
        EntityKeyProto(join_keys=names, entity_values=[column[row] for column in values])
        for row in range(len(columns[names[0]]))
    ]


def _list_value(field: str, values: list[Any]) -> ValueProto:
    # Extending the list of an empty message is 3x faster than building the list
    # message and passing it in (what a user row's 50 recent items cost most of).
    proto = ValueProto()
    holder = getattr(proto, field)
    holder.SetInParent()  # an empty list is still a list, not a missing value
    holder.val.extend(values)
    return proto


def _proto_values(name: str, kind: ValueType, columns: dict[str, list[Any]]) -> list[ValueProto]:
    if name not in columns:
        raise ValueError(f"the rows have no column {name!r}")
    if kind in _PROTO_FIELDS:
        field = _PROTO_FIELDS[kind]
        return [ValueProto(**{field: value}) for value in columns[name]]
    if kind in _PROTO_LIST_FIELDS:
        field = _PROTO_LIST_FIELDS[kind]
        return [_list_value(field, value) for value in columns[name]]
    raise ValueError(f"column {name!r}: feature type {kind.name} is not supported for writes")
