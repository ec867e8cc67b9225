"""Which Ray `streamrec train` uses: a cluster's (STREAMREC_RAY_ADDRESS, else Ray's own
RAY_ADDRESS, which `ray job submit` sets for its driver) or a local one started here.

Connecting to a real cluster is the integration path (`ray start --head`, then
`STREAMREC_RAY_ADDRESS=127.0.0.1:6379 streamrec train`, docs/design.md); here `ray.init` is
replaced by a recorder, so the test checks what is asked of Ray without starting it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamrec.settings import Settings
from training.fit import distributed
from training.fit.distributed import init_ray, ray_address


@pytest.fixture
def ray_init_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import ray
    from ray._private import ray_constants

    calls: list[dict[str, Any]] = []
    # what init_ray changes for a local Ray, restored after the test
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "1")
    monkeypatch.setattr(
        ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV
    )
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    return calls


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(state_dir=tmp_path / "state", **overrides)


def test_the_streamrec_setting_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray-from-ray:6379")
    assert ray_address(_settings(tmp_path, ray_address="head:6379")) == "head:6379"
    assert ray_address(_settings(tmp_path)) == "ray-from-ray:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_address(_settings(tmp_path)) == ""


def test_an_address_attaches_to_the_cluster_and_ships_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_init_calls: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("STREAMREC_RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = Settings(state_dir=tmp_path / "state")  # read from the environment
    init_ray(settings, workers=2)
    (call,) = ray_init_calls
    assert call["address"] == "127.0.0.1:6379"
    # a cluster's own CPUs: asking for num_cpus would make Ray refuse to connect
    assert "num_cpus" not in call
    assert call["runtime_env"]["working_dir"] == str(distributed.REPO_ROOT)


def test_rays_own_variable_attaches_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_init_calls: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray-head:6379")
    init_ray(_settings(tmp_path), workers=1)
    (call,) = ray_init_calls
    assert call["address"] == "ray-head:6379" and "num_cpus" not in call


def test_without_an_address_a_local_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_init_calls: list[dict[str, Any]]
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_ray(_settings(tmp_path), workers=2)
    (call,) = ray_init_calls
    assert "address" not in call
    assert call["num_cpus"] >= 2
