"""init_ray's local start: Ray's fixed 30 s raylet registration is retried, nothing else."""

from __future__ import annotations

from typing import Any

import pytest
import ray

from streamrec.settings import Settings
from training.fit import distributed

TIMED_OUT = Exception(
    "The current node timed out during startup. This could happen because some of the "
    "raylet failed to startup or the GCS has become overloaded."
)


class FakeRay:
    """ray.init that fails with the given errors first; counts inits and shutdowns."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = list(errors)
        self.inits = 0
        self.shutdowns = 0

    def init(self, **_kwargs: Any) -> None:
        self.inits += 1
        if self.errors:
            raise self.errors.pop(0)

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(errors: list[BaseException]) -> FakeRay:
        fake = FakeRay(errors)
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", fake.init)
        monkeypatch.setattr(ray, "shutdown", fake.shutdown)
        return fake

    return install


def test_a_startup_timeout_is_retried_after_a_shutdown(fake_ray: Any, tmp_path: Any) -> None:
    fake = fake_ray([TIMED_OUT, TIMED_OUT])
    distributed.init_ray(Settings(state_dir=tmp_path), workers=1)
    assert (fake.inits, fake.shutdowns) == (3, 2)


def test_it_gives_up_after_the_last_attempt(fake_ray: Any, tmp_path: Any) -> None:
    fake = fake_ray([TIMED_OUT] * distributed.LOCAL_START_ATTEMPTS)
    with pytest.raises(Exception, match="timed out during startup"):
        distributed.init_ray(Settings(state_dir=tmp_path), workers=1)
    assert fake.inits == distributed.LOCAL_START_ATTEMPTS


def test_any_other_error_is_raised_at_once(fake_ray: Any, tmp_path: Any) -> None:
    fake = fake_ray([ValueError("bad runtime_env")])
    with pytest.raises(ValueError, match="bad runtime_env"):
        distributed.init_ray(Settings(state_dir=tmp_path), workers=1)
    assert (fake.inits, fake.shutdowns) == (1, 0)
