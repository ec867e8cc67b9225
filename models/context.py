"""Context features from raw online-store values: the one definition training and serving share.

Training computes these from point-in-time feature rows, the API from the online store's
current rows; both call the functions below with the same arguments, so the model never
sees a feature computed two ways. ``now_ms`` is event time (the moment a recommendation is
made), not the wall clock: a replayed log from 1998 has its own "now".

Item side (the order of :class:`models.cascade.ItemTable`'s ``context``):

- ``popularity``: ``log1p`` of the item's trend score (a decayed interaction count, stored
  as of its last event) decayed further to ``now_ms``. Never-seen items get 0.
- ``recency``: ``1 / (1 + days since the item's last event)``; 0 for never-seen items.
- ``ctr``: clicks on served recommendations per impression, smoothed toward a prior so an
  item shown twice and clicked once is not a 50 % item.

User side: ``activity`` (``log1p`` of the interaction count) and ``user_recency``
(``1 / (1 + days since the user's last event)``; 0 for a user with no history).
"""

from __future__ import annotations

import torch
from torch import Tensor

ITEM_CONTEXT: tuple[str, ...] = ("popularity", "recency", "ctr")
USER_CONTEXT: tuple[str, ...] = ("activity", "user_recency")
DAY_MS = 24 * 3600 * 1000
CTR_PRIOR_CLICKS = 1.0
CTR_PRIOR_IMPRESSIONS = 20.0


def _age_days(last_event_time: Tensor, now_ms: Tensor | int) -> Tensor:
    now = torch.as_tensor(now_ms, dtype=torch.float64)
    return ((now - last_event_time.to(torch.float64)) / DAY_MS).clamp(min=0.0)


def popularity(
    trend_score: Tensor, last_event_time: Tensor, now_ms: Tensor | int, half_life_ms: int
) -> Tensor:
    """(N,) float32 ``log1p`` of the trend score decayed from each item's last event to now."""
    age_ms = _age_days(last_event_time, now_ms) * DAY_MS
    score = trend_score.to(torch.float64) * torch.pow(2.0, -age_ms / half_life_ms)
    return torch.log1p(score.clamp(min=0.0)).to(torch.float32)


def recency(last_event_time: Tensor, now_ms: Tensor | int) -> Tensor:
    """(N,) float32 in (0, 1]; 0 where ``last_event_time`` is 0 (never seen)."""
    value = 1.0 / (1.0 + _age_days(last_event_time, now_ms))
    return torch.where(last_event_time > 0, value, torch.zeros_like(value)).to(torch.float32)


def ctr(clicks: Tensor, impressions: Tensor) -> Tensor:
    """(N,) float32 smoothed click-through rate."""
    rate = (clicks.to(torch.float64) + CTR_PRIOR_CLICKS) / (
        impressions.to(torch.float64) + CTR_PRIOR_IMPRESSIONS
    )
    return rate.clamp(max=1.0).to(torch.float32)


def user_context(
    interaction_count: Tensor, last_event_time: Tensor, now_ms: Tensor | int
) -> Tensor:
    """(..., 2) float32 ``[activity, user_recency]``; accepts scalars or batches."""
    activity = torch.log1p(interaction_count.to(torch.float64).clamp(min=0.0)).to(torch.float32)
    return torch.stack([activity, recency(last_event_time, now_ms)], dim=-1)
