"""The 422 body: always renderable, always small.

FastAPI's default handler echoes each error's ``input`` back. That fails to render for
inputs JSON cannot hold (NaN, Infinity, a lone surrogate: a 500 instead of a 422) and
returns a 10 MB body for a 10 MB input. Here each error keeps its type, location and
message, and its input only as a short, safe preview.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

PREVIEW_CHARS = 80
MESSAGE_CHARS = 400


def _safe_text(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Printable, valid UTF-8, and short: control characters and lone surrogates escaped."""
    short = text if len(text) <= limit else text[:limit] + "…"
    escaped = short.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped)


def _preview(value: Any) -> Any:
    """The input as JSON can hold it: numbers as they are unless not finite, text escaped
    and cut, containers summarised rather than echoed."""
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _safe_text(value)
    if isinstance(value, dict):
        return f"<object with {len(value)} fields>"
    if isinstance(value, list | tuple):
        return f"<array of {len(value)}>"
    return _safe_text(repr(value))


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    safe = []
    for error in errors:
        item: dict[str, Any] = {
            "type": str(error.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else _safe_text(str(p)) for p in error.get("loc", ())],
            "msg": _safe_text(str(error.get("msg", "")), MESSAGE_CHARS),
        }
        if "input" in error:
            item["input"] = _preview(error["input"])
        safe.append(item)
    return safe


async def validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": safe_errors(exc.errors())}, status_code=422)
