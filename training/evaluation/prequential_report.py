"""The prequential table in Markdown, and the issue's targets checked at their significance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from training.evaluation.prequential import CASCADE, KNN, KNN_TUNED

SIGNIFICANCE = 0.05
CASCADE_OVER_KNN = 1.2  # the cascade, live, against the live item-kNN of the same run
LIVE_OVER_FROZEN = 2.5


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}" if digits < 4 else f"{value:.{digits}f}"


def _significant_gain(part: Mapping[str, Any], other: str, k: int) -> tuple[bool, Any]:
    """The live cascade's NDCG above ``other``'s, with its Wilcoxon p below SIGNIFICANCE."""
    arms, paired = part.get("arms", {}), part.get("paired", {}).get(other, {})
    reference, versus = arms.get(f"{CASCADE} live"), arms.get(other)
    p_value = paired.get("wilcoxon_p")
    if reference is None or versus is None or p_value is None:
        return False, p_value
    return reference[f"ndcg@{k}"] > versus[f"ndcg@{k}"] and p_value < SIGNIFICANCE, p_value


def check_targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's §2 targets: met only when the paired test says so at p < 0.05."""
    k = result["k"]
    name = f"ndcg@{k}"
    arms = result["all"].get("arms", {})
    if f"{CASCADE} live" not in arms:
        return []
    live = arms[f"{CASCADE} live"][name]
    frozen = arms[f"{CASCADE} frozen"][name]
    knn_name = KNN_TUNED if f"{KNN_TUNED} live" in arms else KNN
    knn = arms[f"{knn_name} live"][name]
    checks = []
    passed, p_value = _significant_gain(result["all"], f"{knn_name} live", k)
    checks.append(
        {
            "target": f"cascade live NDCG@{k} >= {CASCADE_OVER_KNN} x live {knn_name}",
            "value": live / knn if knn else None,
            "goal": CASCADE_OVER_KNN,
            "met": bool(live >= CASCADE_OVER_KNN * knn and passed),
            "p": p_value,
        }
    )
    passed, p_value = _significant_gain(result["all"], f"{CASCADE} frozen", k)
    checks.append(
        {
            "target": f"cascade live / frozen NDCG@{k} >= {LIVE_OVER_FROZEN}",
            "value": live / frozen if frozen else None,
            "goal": LIVE_OVER_FROZEN,
            "met": bool(live >= LIVE_OVER_FROZEN * frozen and passed),
            "p": p_value,
        }
    )
    for slice_name, part in result["slices"].items():
        passed, p_value = _significant_gain(part, f"{knn_name} live", k)
        part_arms = part.get("arms", {})
        ratio = (
            part_arms[f"{CASCADE} live"][name] / part_arms[f"{knn_name} live"][name]
            if part_arms and part_arms[f"{knn_name} live"][name]
            else None
        )
        checks.append(
            {
                "target": f"{slice_name}: cascade live beats live {knn_name}",
                "value": ratio,
                "goal": 1.0,
                "met": passed,
                "p": p_value,
            }
        )
    return checks


def markdown(result: Mapping[str, Any]) -> str:
    k = result["k"]
    lines = [
        "## Prequential evaluation (test-then-learn, every user)",
        "",
        f"{result['all'].get('n_events', 0):,} test events scored of "
        f"{result['n_eligible']:,} eligible (a user's first interaction with a vocabulary "
        f"item), {result['all'].get('n_users', 0):,} users, sample seed {result['seed']}. "
        "Live: everything before the event folded in with the worker's functions; frozen: "
        "the state at the cutoff. p: Wilcoxon signed-rank of the per-event NDCG difference "
        "against the live cascade (two-sided).",
    ]
    tuned = result.get("knn_tuned")
    if tuned:
        lines.append(
            f"Tuned item-kNN (validation period): history {tuned['history']}, "
            f"decay {tuned['decay']}."
        )
    blend = (result.get("validation") or {}).get("blend")
    if blend:
        best = max(blend["grid"].values(), default=0.0)
        lines.append(
            f"Cascade final blend (validation period, NDCG@10 {best:.4f}): co-visitation "
            f"weight {blend['covisit_weight']:g}, recall weight "
            f"{blend['final_recall_weight']:g}, SASRec weight "
            f"{blend.get('sasrec_weight', 0.0):g}; grid (co-visitation/recall[/SASRec]): "
            + ", ".join(f"{name} {value:.4f}" for name, value in blend["grid"].items())
            + "."
        )
    timing = result.get("cascade_ms")
    if timing:
        lines.append(
            f"Cascade compute per request (serving.cascade.serve): median "
            f"{timing['median']:.2f} ms, p95 {timing['p95']:.2f} ms over {timing['n']:,}."
        )
    parts = [("all", result["all"])] + [
        (name.replace("_", " "), part) for name, part in result["slices"].items()
    ]
    header = "| arm | " + " | ".join(f"{label} N@{k} | H@{k} | p" for label, _ in parts) + " |"
    lines += ["", header, "|---" * (1 + 3 * len(parts)) + "|"]
    arms = list(result["all"].get("arms", {}))
    for arm in arms:
        cells = []
        for _, part in parts:
            values = part.get("arms", {}).get(arm)
            p_value = part.get("paired", {}).get(arm, {}).get("wilcoxon_p")
            cells += [
                _fmt(values and values[f"ndcg@{k}"]),
                _fmt(values and values[f"hit@{k}"]),
                _fmt(p_value, 2),
            ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{label}: {part.get('n_events', 0):,} events" for label, part in parts)
    lines += ["", counts]
    checks = check_targets(result)
    if checks:
        lines += ["", "| target | value | goal | p | met |", "|---|---|---|---|---|"]
        for check in checks:
            lines.append(
                f"| {check['target']} | {_fmt(check['value'], 3)} | {check['goal']} | "
                f"{_fmt(check['p'], 2)} | {'yes' if check['met'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"
