"""The libraries' start-up lines that `streamrec` keeps out of an operator's output."""

from __future__ import annotations

import logging
import warnings

import pytest

from streamrec.infra.quiet import RAY_TOKEN_LOGGER, RAY_TOKEN_NOTICE, quiet_libraries


def _warn_from(module: str, message: str) -> None:
    warnings.warn_explicit(message, DeprecationWarning, f"{module}.py", 1, module=module)


def test_the_libraries_deprecations_are_ignored_even_after_a_filter_reset() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        # What Feast's modules do when imported: every DeprecationWarning once.
        warnings.simplefilter("once", DeprecationWarning)
        quiet_libraries()
        _warn_from("ray.data.context", "`use_polars` is deprecated")
        _warn_from("mlflow.store.tracking.sqlalchemy_store", "``noload`` is deprecated")
        _warn_from("streams.folding", "ours is still shown")
    assert [str(w.message) for w in caught] == ["ours is still shown"]


def test_rays_token_notice_is_dropped_and_its_other_lines_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_libraries()
    quiet_libraries()  # idempotent: one filter
    logger = logging.getLogger(RAY_TOKEN_LOGGER)
    assert len(logger.filters) == 1
    caplog.set_level(logging.WARNING, logger=RAY_TOKEN_LOGGER)
    logger.warning(RAY_TOKEN_NOTICE + ". Set RAY_AUTH_MODE=disabled to opt out.")
    logger.warning("Token authentication is disabled for this Ray cluster.")
    assert [r.getMessage() for r in caplog.records] == [
        "Token authentication is disabled for this Ray cluster."
    ]
