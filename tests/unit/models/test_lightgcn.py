from __future__ import annotations

import torch

from models.lightgcn import LightGCN, LightGCNConfig, normalized_adjacency

# Two communities: users 0-9 interact with items 0-5, users 10-19 with items 6-11. Each
# user misses exactly one item of their own community: the one recall must find first.
N_USERS, N_ITEMS, PER_COMMUNITY = 20, 12, 6


def _community_graph() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    users, items, held_out = [], [], []
    for user in range(N_USERS):
        community = user // 10
        held = community * PER_COMMUNITY + user % PER_COMMUNITY
        held_out.append(held)
        for item in range(community * PER_COMMUNITY, (community + 1) * PER_COMMUNITY):
            if item != held:
                users.append(user)
                items.append(item)
    return torch.tensor(users), torch.tensor(items), torch.tensor(held_out)


def test_normalized_adjacency_is_symmetric_degree_normalized_and_dedupes() -> None:
    users = torch.tensor([0, 0, 1, 0])  # (0, 0) twice: counts once
    items = torch.tensor([0, 1, 1, 0])
    adj = normalized_adjacency(users, items, n_users=3, n_items=2).to_dense()  # (5, 5)
    assert adj.shape == (5, 5)
    assert torch.allclose(adj, adj.T)
    # degrees: user0 2, user1 1, user2 0, item0 1, item1 2
    assert torch.isclose(adj[0, 3], torch.tensor(1 / (2 * 1) ** 0.5))
    assert torch.isclose(adj[0, 4], torch.tensor(1 / (2 * 2) ** 0.5))
    assert torch.isclose(adj[1, 4], torch.tensor(1 / (1 * 2) ** 0.5))
    assert adj[2].abs().sum() == 0  # isolated user
    assert adj[:3, :3].abs().sum() == 0 and adj[3:, 3:].abs().sum() == 0  # bipartite


def test_propagate_is_mean_of_layer_embeddings() -> None:
    torch.manual_seed(0)
    users, items, _ = _community_graph()
    adj = normalized_adjacency(users, items, N_USERS, N_ITEMS)
    model = LightGCN(LightGCNConfig(N_USERS, N_ITEMS, dim=4, layers=2))
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    dense = adj.to_dense()
    expected = (ego + dense @ ego + dense @ dense @ ego) / 3
    user_final, item_final = model.propagate(adj)
    assert torch.allclose(torch.cat([user_final, item_final]), expected, atol=1e-6)


def test_propagation_gradients_equal_the_dense_products() -> None:
    """The sparse product's own backward (adj @ grad, adj being symmetric) against autograd
    through the dense matrix."""
    torch.manual_seed(0)
    users, items, _ = _community_graph()
    adj = normalized_adjacency(users, items, N_USERS, N_ITEMS)
    model = LightGCN(LightGCNConfig(N_USERS, N_ITEMS, dim=4, layers=3))
    weights = torch.randn(N_USERS + N_ITEMS, 4)  # a loss that weighs every output entry
    user_final, item_final = model.propagate(adj)
    (torch.cat([user_final, item_final]) * weights).sum().backward()
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    ego.requires_grad_(True)
    dense = adj.to_dense()
    layer, total = ego, ego
    for _ in range(3):
        layer = dense @ layer
        total = total + layer
    ((total / 4) * weights).sum().backward()
    assert ego.grad is not None and model.user_embedding.weight.grad is not None
    sparse_grad = torch.cat([model.user_embedding.weight.grad, model.item_embedding.weight.grad])
    assert torch.allclose(sparse_grad, ego.grad, atol=1e-5)
    assert sparse_grad.abs().sum() > 0


def test_bpr_training_recalls_the_communitys_unseen_item_first() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    users, items, held_out = _community_graph()
    adj = normalized_adjacency(users, items, N_USERS, N_ITEMS)
    model = LightGCN(LightGCNConfig(N_USERS, N_ITEMS, dim=8, layers=2, reg_weight=1e-4))
    seen = torch.zeros(N_USERS, N_ITEMS, dtype=torch.bool)
    seen[users, items] = True
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(150):
        # a uniformly sampled non-interacted item per positive pair
        neg_logits = torch.where(seen[users], float("-inf"), 0.0)  # (E, I)
        neg = torch.multinomial(neg_logits.softmax(-1), 1, generator=generator).squeeze(-1)
        loss, bpr = model.bpr_loss(adj, users, items, neg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(bpr.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10

    user_emb, item_emb = model.export_embeddings(adj)
    assert user_emb.shape == (N_USERS, 8) and item_emb.shape == (N_ITEMS, 8)
    assert not user_emb.requires_grad
    scores = (user_emb @ item_emb.T).masked_fill(seen, float("-inf"))  # (U, I)
    assert torch.equal(scores.argmax(dim=1), held_out)
