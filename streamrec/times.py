"""Time arguments, read the same way everywhere in the CLI: epoch seconds or ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds (UTC) from "1700000000", "1700000000.5" or "2023-11-14T22:13:20Z".

    An ISO time without a zone is taken as UTC. Raises ValueError naming the input.
    """
    value = text.strip()
    try:
        return int(round(float(value) * 1000))
    except ValueError:
        pass
    try:
        return parse_iso_ms(value)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither epoch seconds nor an ISO 8601 time (e.g. 2023-11-14T22:13:20Z)"
        ) from exc


def parse_iso_ms(text: str) -> int:
    """Epoch milliseconds (UTC) of an ISO 8601 time; one without a zone is taken as UTC."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def format_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
