"""The best one list for the users without training history, from the test labels.

A user with no history looks the same at the cutoff to every scorer, so every method gives
all of them one list; with binary gains the mean NDCG@k of one list is
``sum over positions of discount * w(item)`` with ``w(i)`` the mean of ``rel_u(i) / IDCG_u``,
so sorting by ``w`` is optimal. ``analysis.headroom`` explains what follows for the targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from training.data.split import TimeSplit
from training.evaluation.metrics import discounts

K = 10


def best_uniform_list(relevant: sp.csr_matrix, k: int = K) -> tuple[np.ndarray, float]:
    """The one list of ``k`` items with the highest mean NDCG@k over ``relevant``'s rows.

    ``relevant`` is (U, I) binary, every row non-empty, nothing masked (new users). Returns
    the items, best first, and the mean NDCG@k it reaches; exact (see the module docstring).
    """
    n_relevant = np.diff(relevant.indptr)
    if len(n_relevant) == 0 or (n_relevant == 0).any():
        raise ValueError("every row needs at least one relevant item")
    ideal = np.cumsum(discounts(k))[np.minimum(n_relevant, k) - 1]  # (U,)
    weight = np.asarray(relevant.multiply(1.0 / ideal[:, None]).sum(axis=0)).ravel()
    weight /= len(n_relevant)  # (I,) mean NDCG gain of an item per unit discount
    k = min(k, relevant.shape[1])
    items = np.lexsort((np.arange(len(weight)), -weight))[:k]  # ties to the lower index
    return items, float(weight[items] @ discounts(k))


def new_user_bound(split: TimeSplit) -> dict[str, Any]:
    """The test users, the new ones among them, and the best list for those (see above)."""
    test = split.test
    is_new = test.users >= split.n_train_users
    n_new = int(is_new.sum())
    items, bound = (
        best_uniform_list(test.relevant[np.flatnonzero(is_new)])
        if n_new
        else (np.empty(0, np.int64), 0.0)
    )
    return {
        "n_users": len(test.users),
        "n_new": n_new,
        "bound": bound,
        "best_list": [str(split.item_ids[i]) for i in items],
    }
