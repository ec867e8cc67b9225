"""The "user changed" notice: Redis pub/sub, published by the worker, read by the SSE route.

One channel per topic prefix; each message is the user_id whose features were just written.
"""

from __future__ import annotations


def user_changed_channel(topic_prefix: str) -> str:
    return f"{topic_prefix}user-changed"
