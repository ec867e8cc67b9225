"""Opening the Feast store from settings, and applying the declarations in feature_repo/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from feast import FeatureStore, RepoConfig

from streamrec.settings import Settings

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
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
