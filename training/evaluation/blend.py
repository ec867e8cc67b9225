"""The final blend's weights, chosen on the validation period by prequential replay.

The cascade's last stage scores its shortlist by RankNet's standardized score plus
``final_recall_weight`` x the standardized recall score plus ``covisit_weight`` x the
standardized co-visitation score plus ``sasrec_weight`` x the standardized SASRec
next-item score (``models.cascade.place``). RankNet is trained on the
training period's static lists, where nothing co-visited yet exists as the live stream
would hold it; how much the co-visitation score should count is a question about the
stream, so it is answered on the stream: the validation period is replayed event by event
(``training.evaluation.prequential.validate``), each scored event's shortlist is built
once with the state folded up to that event (no event at or after it), and every pair of
weights of the grid places its top k from that same shortlist. The weights with the best
NDCG@k are the set's blend. Only the placement is repeated, and the grid's placements
run side by side (``models.cascade.place_many``), so the grid costs a part of the replay,
not a cascade per blend. A set with SASRec adds the SASRec weights,
crossed with the co-visitation weights around the fusion the sequential study found
(``z(SASRec) + 2 z(kNN)``) and the two smaller recall weights: 32 more placements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from torch import Tensor

from models.cascade import CascadeConfig, Shortlist, place_many, shortlist
from serving.cascade import ItemFeatures, ServingSet, cascade_inputs
from serving.loading import LoadedCascade
from training.evaluation.prequential_state import Arm, OnlineState

# The grid: the co-visitation score's weight, and the recall score's.
COVISIT_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
RECALL_WEIGHTS = (0.0, 0.5, 2.0)
# With SASRec in the set: its weight > 0, crossed with these co-visitation and recall ones.
SASREC_WEIGHTS = (1.0, 2.0, 4.0, 8.0)
SASREC_COVISIT_WEIGHTS = (2.0, 4.0, 8.0, 16.0)
SASREC_RECALL_WEIGHTS = (0.0, 0.5)
BLEND_PREFIX = "cascade blend "


@dataclass(frozen=True)
class Blend:
    covisit_weight: float
    final_recall_weight: float
    sasrec_weight: float = 0.0

    @property
    def name(self) -> str:
        """``covisit/recall``, then ``/sasrec`` when SASRec counts."""
        name = f"{BLEND_PREFIX}{self.covisit_weight:g}/{self.final_recall_weight:g}"
        return f"{name}/{self.sasrec_weight:g}" if self.sasrec_weight > 0 else name

    def applied(self, config: CascadeConfig) -> CascadeConfig:
        return replace(
            config,
            covisit_weight=self.covisit_weight,
            final_recall_weight=self.final_recall_weight,
            sasrec_weight=self.sasrec_weight,
        )


def blend_grid(
    covisit_weights: Sequence[float] = COVISIT_WEIGHTS,
    recall_weights: Sequence[float] = RECALL_WEIGHTS,
    sasrec: bool = False,
) -> list[Blend]:
    """The grid without SASRec (its weight 0), then, for a set with SASRec, the SASRec
    weights crossed with ``SASREC_COVISIT_WEIGHTS`` and ``SASREC_RECALL_WEIGHTS``."""
    grid = [Blend(c, r) for c in covisit_weights for r in recall_weights]
    if sasrec:
        grid += [
            Blend(c, r, s)
            for s in SASREC_WEIGHTS
            for c in SASREC_COVISIT_WEIGHTS
            for r in SASREC_RECALL_WEIGHTS
        ]
    return grid


@dataclass
class BlendGrid:
    """One shortlist per request, placed once per blend of the grid.

    ``arms()`` gives one arm per blend; the replay calls them one after the other for the
    same (user, state), so the shortlist is built on the first call and reused.
    """

    cascade: LoadedCascade
    k: int
    blends: list[Blend] = field(default_factory=blend_grid)
    # per blend: DIN's logit of every item it placed (the monitor's reference, for the
    # blend the set keeps)
    din_scores: dict[str, list[float]] = field(default_factory=dict)
    _features: tuple[tuple[int, int], ItemFeatures] | None = None
    _shortlist: tuple[tuple[str, int, int], Shortlist | None] | None = None
    _placements: tuple[tuple[str, int, int], list[Tensor]] | None = None

    def _short(self, user_id: str, state: OnlineState) -> Shortlist | None:
        key = (id(state), state.version)
        if self._features is None or self._features[0] != key:
            self._features = (key, state.item_features(every_row=False))
        request_key = (user_id, *key)
        if self._shortlist is None or self._shortlist[0] != request_key:
            state.choose_rows_of(user_id)  # into the arrays the features are views of
            serving = ServingSet(self.cascade, self._features[1])
            table, request = cascade_inputs(serving, user_id, state.recent(user_id), self.k)
            # Any co-visitation (SASRec) weight > 0 makes the shortlist carry the
            # co-visitation (SASRec) scores to blend.
            config = replace(self.cascade.config, covisit_weight=1.0, sasrec_weight=1.0)
            self._shortlist = (
                request_key,
                shortlist(self.cascade.models, table, request, config),
            )
        return self._shortlist[1]

    def _placed(self, user_id: str, state: OnlineState) -> tuple[Shortlist, list[Tensor]] | None:
        """The shortlist and every blend's placement of it, all placed on the first call
        for a request (``place_many``: the grid's placements side by side)."""
        short = self._short(user_id, state)
        if short is None:
            return None
        assert self._shortlist is not None
        request_key = self._shortlist[0]
        if self._placements is None or self._placements[0] != request_key:
            configs = [blend.applied(self.cascade.config) for blend in self.blends]
            placements = place_many(self.cascade.models, short, configs, self.k)
            self._placements = (request_key, [placed for placed, _, _ in placements])
        return short, self._placements[1]

    def arm(self, blend: Blend) -> Arm:
        position = self.blends.index(blend)

        def answer(user_id: str, state: OnlineState) -> list[int]:
            placing = self._placed(user_id, state)
            if placing is None:
                return []
            short, placements = placing
            placed = placements[position]
            if short.rank_source == "din":
                logits = self.din_scores.setdefault(blend.name, [])
                logits.extend(float(x) for x in short.din_scores[placed].tolist())
            return [int(i) for i in short.items[placed].tolist()]

        return answer

    def arms(self) -> dict[str, Arm]:
        return {blend.name: self.arm(blend) for blend in self.blends}


def best_blend(scores: Mapping[str, float], blends: Sequence[Blend]) -> Blend:
    """The blend with the best score; ties go to the first in grid order (smaller weights)."""
    return max(blends, key=lambda blend: (scores[blend.name], -blends.index(blend)))


__all__ = ["BLEND_PREFIX", "SASREC_WEIGHTS", "Blend", "BlendGrid", "best_blend", "blend_grid"]
