"""The "user changed" notice: Redis pub/sub, published by the worker, read by the SSE route.

One channel per topic prefix; each message names the users whose features were just
written, as a JSON array of user_ids: one message per worker batch rather than one per
user, since a batch changes hundreds of users and each publish costs the worker a command.
"""

from __future__ import annotations

import json
from collections.abc import Iterable


def user_changed_channel(topic_prefix: str) -> str:
    return f"{topic_prefix}user-changed"


def item_changes_key(topic_prefix: str) -> str:
    """The sorted set of item_ids whose online row the worker wrote, each scored with the
    wall-clock milliseconds of its latest write: the API re-reads only those rows (its
    item refresh had read every row, 47k at the mission's scale, every 5 seconds)."""
    return f"{topic_prefix}items-changed"


def changed_message(user_ids: Iterable[str]) -> str:
    """One notice naming every user of a batch."""
    return json.dumps(list(user_ids), separators=(",", ":"))


def changed_users(data: bytes | str) -> list[str]:
    """The user_ids a notice names.

    A notice that is not a JSON array of strings is one bare user_id, as workers before
    the batched form published them.
    """
    text = data.decode() if isinstance(data, bytes) else data
    if text.startswith("["):
        try:
            users = json.loads(text)
        except ValueError:
            return [text]
        if isinstance(users, list) and all(isinstance(user, str) for user in users):
            return users
    return [text]
