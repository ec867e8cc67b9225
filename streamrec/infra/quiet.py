"""Start-up lines of libraries that say nothing an operator can act on, kept out of the output.

`streamrec train` printed them before its first epoch: Ray's notice that a new local
cluster enabled token authentication (Ray's default; ``RAY_AUTH_MODE`` decides, and a
connection to a cluster is unaffected), and deprecation warnings of options that Ray Data's
and MLflow's own code still sets (``DataContext``'s renamed fields, SQLAlchemy's
``noload``). Feast's modules reset the DeprecationWarning filter to "once" when imported,
so the commands call :func:`quiet_libraries` again right before Ray and MLflow start
(idempotent: ``warnings.filterwarnings`` replaces an equal filter, the log filter is added
once).
"""

from __future__ import annotations

import logging
import warnings

RAY_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"
RAY_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
# Modules (regular expressions on the warning's module) whose deprecations are not ours.
QUIET_DEPRECATIONS = (r"ray\.data\.context", r"mlflow\.store\.")


class _DropStart(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def quiet_libraries() -> None:
    for module in QUIET_DEPRECATIONS:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    logger = logging.getLogger(RAY_TOKEN_LOGGER)
    if not any(isinstance(f, _DropStart) for f in logger.filters):
        logger.addFilter(_DropStart(RAY_TOKEN_NOTICE))
