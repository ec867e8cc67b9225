"""What batching lists would save the cascade: each stage's arithmetic for B lists one
after the other against one pass over the B lists, at a catalogue's size.

    .venv/bin/python bench/cascade_batching.py [--items 47471 --users 62915] [--lists 16]

Random models of the served shapes (``bench.cascade_latency.build_models``: LightGCN's
exported embeddings, DIN, SASRec; dimension 64), the served cascade's numbers
(``trained_cascade``: 250 candidates, DIN over the 20 most recent items), one thread.
For each stage, alternating rounds, per list:

- recall: LightGCN's scores of every item for the user's vector, standardised, plus the
  item prior, and the top 250 (``recall_scores`` and one ``topk``), against one (I, B)
  product, the same standardisation per column and one ``topk`` over (B, I);
- SASRec: ``next_logits`` per list (the served trace) against one eager forward pass over
  the B left-padded sequences and one (B, I) product of the last states;
- DIN: ``score_candidates`` per list (250 candidates, 20 recent items) against one pass
  with the candidates (B, 250) and each list's recent items broadcast over its
  candidates, the attention on (B, 250, 20, H) at once.

Each batched output is compared with the lists' own (largest absolute difference). The
whole cascade's median per list (``recommend``) is printed for scale. No services.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bench.cascade_latency import alternating, build_models, make_requests, with_sasrec
from models.cascade import (
    CascadeModels,
    CascadeRequest,
    recall_scores,
    recommend,
    user_vector,
)
from models.din import DIN
from models.sasrec import left_padded
from training.fit.hyper import trained_cascade


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def din_batched(
    din: DIN, candidates: torch.Tensor, history: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """DIN's logits (B, N) for B lists at once: candidates (B, N), history (B, L), context
    (B, N, C); each list's recent items broadcast over its own candidates."""
    attention = din.attention
    query = din.embed(candidates)  # (B, N, E)
    keys = din.embed(history).unsqueeze(1)  # (B, 1, L, E)
    hidden = attention.product_proj(query.unsqueeze(-2) * keys)  # (B, N, L, H)
    hidden += attention.query_proj(query).unsqueeze(-2)
    hidden += attention.key_proj(keys)
    weights = torch.sigmoid(attention.out(attention.act(hidden))).squeeze(-1)  # (B, N, L)
    interest = torch.matmul(weights.unsqueeze(-2), keys).squeeze(-2)  # (B, N, E)
    return din.mlp(torch.cat([interest, query, context], dim=-1)).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=47_471)
    parser.add_argument("--users", type=int, default=62_915)
    parser.add_argument("--lists", type=int, default=16, help="lists per batch (B)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base, table = build_models(0, args.users, args.items)
    models: CascadeModels = with_sasrec(base, args.items)
    assert models.sasrec is not None and models.din is not None
    assert models.item_embeddings is not None
    models.sasrec.trace_for_serving()
    config = trained_cascade()
    requests: list[CascadeRequest] = make_requests(args.lists, 10, 1, args.users, args.items)
    b, depth, history = len(requests), config.n_candidates, config.max_history
    item_embeddings, prior = models.item_embeddings, models.standardized_prior()
    assert prior is not None
    vectors = [user_vector(models, r, config) for r in requests]
    queries = torch.stack([v for v in vectors if v is not None])  # (B, D): all have one
    sequences = left_padded(
        [r.recent_items.flip(0).tolist() for r in requests], models.sasrec.config.max_length
    )
    candidates = torch.randint(0, args.items, (b, depth))
    recent = torch.stack([r.recent_items[:history] for r in requests])  # (B, L)
    context = torch.rand(b, depth, 4)
    mask = torch.ones(history, dtype=torch.bool)
    din, sasrec = models.din, models.sasrec

    def recall_singly() -> torch.Tensor:
        return torch.stack(
            [torch.topk(recall_scores(models, table, r, config)[0], depth).values for r in requests]
        )

    def recall_batched() -> torch.Tensor:
        scores = item_embeddings @ queries.T  # (I, B)
        centred = scores - scores.mean(0)
        scores = centred / scores.std(0) + config.prior_weight * prior.unsqueeze(1)
        return torch.topk(scores.T, depth, dim=1).values

    def sasrec_singly() -> torch.Tensor:
        return torch.stack([sasrec.next_logits(r.recent_items.flip(0)) for r in requests])

    def sasrec_batched() -> torch.Tensor:
        return sasrec.item_logits(sasrec(sequences)[:, -1])

    def din_singly() -> torch.Tensor:
        return torch.stack(
            [din.score_candidates(candidates[n], recent[n], mask, context[n])[0] for n in range(b)]
        )

    stages = {
        "recall (LightGCN scores, top 250)": (recall_singly, recall_batched),
        "SASRec (forward, every item's logit)": (sasrec_singly, sasrec_batched),
        "DIN (250 candidates x 20 recent)": (
            din_singly,
            lambda: din_batched(din, candidates, recent, context),
        ),
    }
    print(
        f"{args.items:,} items, {args.users:,} users, {b} lists a batch, one thread; "
        f"ms per list, {args.rounds} alternating rounds (medians of {args.repeats})"
    )
    with torch.inference_mode():
        whole = median_ms(lambda: [recommend(models, table, r, config) for r in requests], 5)
        print(f"the whole cascade (recommend), one list at a time: {whole / b:.2f} ms a list")
        for name, (singly, batched) in stages.items():
            medians = alternating(
                {"singly": singly, "batched": batched},
                lambda call: median_ms(call, args.repeats) / b,
                args.rounds,
            )
            one, many = medians["singly"], medians["batched"]
            difference = float((singly() - batched()).abs().max())
            ratio = statistics.median(many) / statistics.median(one)
            print(
                f"  {name:<38} singly {', '.join(f'{x:.3f}' for x in one)}; batched "
                f"{', '.join(f'{x:.3f}' for x in many)} ({ratio:.2f}x; max |diff| "
                f"{difference:.1e})"
            )


if __name__ == "__main__":
    main()
