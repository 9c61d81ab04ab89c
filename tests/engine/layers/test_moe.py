"""`SparseMoE`'s grouped path against a dense reference that runs every expert on every token."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from limelight.engine.layers.moe import SparseMoE, expert_tensor, is_stacked_loaded

HIDDEN, INTERMEDIATE, NUM_EXPERTS, TOP_K = 16, 24, 6, 2

ROUTERS: dict[str, dict[str, Any]] = {
    "softmax-topk-renorm": dict(routing="softmax_topk", normalize_topk=True),
    "softmax-topk": dict(routing="softmax_topk", normalize_topk=False),
    "topk-softmax": dict(routing="topk_softmax"),
}


class SharedMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.proj(x))


def make_moe(shared: bool = False, top_k: int = TOP_K, **router: Any) -> SparseMoE:
    torch.manual_seed(0)
    moe = SparseMoE(
        HIDDEN,
        INTERMEDIATE,
        NUM_EXPERTS,
        top_k,
        shared_expert=SharedMLP() if shared else None,
        shared_expert_gate=shared,
        **router,
    )
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0.0, 0.5)
    return moe


def reference_weights(moe: SparseMoE, x: Tensor) -> Tensor:
    """[T, E] routing weights, zero outside each token's top k, written from the definitions."""
    logits = moe.gate(x).float()  # [T, E]
    kept = torch.zeros_like(logits, dtype=torch.bool)
    kept.scatter_(1, logits.topk(moe.top_k, dim=-1).indices, True)
    if moe.routing == "topk_softmax":
        return logits.masked_fill(~kept, float("-inf")).softmax(dim=-1)
    probs = logits.softmax(dim=-1).masked_fill(~kept, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True) if moe.normalize_topk else probs


def dense_reference(moe: SparseMoE, x: Tensor) -> Tensor:
    """Every expert on every token, weighted: [T, H]."""
    experts = moe.experts
    gate_up = torch.einsum("th,eih->tei", x, experts.gate_up_proj)  # [T, E, 2I]
    gate, up = gate_up.chunk(2, dim=-1)
    hidden = experts.act(gate) * up  # [T, E, I]
    outputs = torch.einsum("tei,ehi->teh", hidden, experts.down_proj)  # [T, E, H]
    out = (reference_weights(moe, x)[..., None] * outputs).sum(dim=1)
    if moe.shared_expert is not None and moe.shared_expert_gate is not None:
        out = out + torch.sigmoid(moe.shared_expert_gate(x)) * moe.shared_expert(x)
    return out


def count_expert_runs(moe: SparseMoE, monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    runs: Counter[int] = Counter()
    original = moe.experts.run

    def counting_run(index: int, x: Tensor) -> Tensor:
        runs[index] += 1
        return original(index, x)

    monkeypatch.setattr(moe.experts, "run", counting_run)
    return runs


@pytest.mark.parametrize("router", ROUTERS.values(), ids=ROUTERS.keys())
@pytest.mark.parametrize("shared", [False, True], ids=["routed", "shared-expert"])
def test_grouped_matches_dense(router: dict[str, Any], shared: bool) -> None:
    moe = make_moe(shared=shared, **router)
    x = torch.randn(37, HIDDEN)  # 74 assignments over 6 experts: every expert collides
    with torch.no_grad():
        torch.testing.assert_close(moe(x), dense_reference(moe, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("router", ROUTERS.values(), ids=ROUTERS.keys())
def test_router_weights(router: dict[str, Any]) -> None:
    moe = make_moe(**router)
    x = torch.randn(20, HIDDEN)
    with torch.no_grad():
        weights, ids = moe.route(x)
        dense = torch.zeros(20, NUM_EXPERTS).scatter_(1, ids, weights)
        torch.testing.assert_close(dense, reference_weights(moe, x))
    if router.get("normalize_topk", True):
        torch.testing.assert_close(weights.sum(-1), torch.ones(20))
    else:
        assert (weights.sum(-1) < 1).all()


def test_each_expert_runs_once_per_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    moe = make_moe(top_k=3)
    runs = count_expert_runs(moe, monkeypatch)
    x = torch.randn(50, HIDDEN)
    with torch.no_grad():
        _, ids = moe.route(x)
        moe(x)
    assert set(runs) == set(ids.unique().tolist())
    assert max(runs.values()) == 1


def test_identical_tokens_share_their_experts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens that all pick the same k experts: k runs, and the same output for each token."""
    moe = make_moe()
    runs = count_expert_runs(moe, monkeypatch)
    x = torch.randn(1, HIDDEN).expand(9, HIDDEN).contiguous()
    with torch.no_grad():
        out = moe(x)
        torch.testing.assert_close(out, dense_reference(moe, x), atol=1e-5, rtol=1e-5)
    assert sum(runs.values()) == TOP_K and max(runs.values()) == 1
    torch.testing.assert_close(out, out[:1].expand_as(out))


def test_single_token_and_empty_step() -> None:
    moe = make_moe()
    with torch.no_grad():
        one = torch.randn(1, HIDDEN)
        torch.testing.assert_close(moe(one), dense_reference(moe, one), atol=1e-5, rtol=1e-5)
        assert moe(torch.empty(0, HIDDEN)).shape == (0, HIDDEN)


def test_invalid_router_options() -> None:
    with pytest.raises(ValueError, match="sum to one"):
        SparseMoE(
            HIDDEN, INTERMEDIATE, NUM_EXPERTS, TOP_K, routing="topk_softmax", normalize_topk=False
        )
    with pytest.raises(ValueError, match="top_k"):
        SparseMoE(HIDDEN, INTERMEDIATE, NUM_EXPERTS, NUM_EXPERTS + 1)
    with pytest.raises(ValueError, match="shared_expert"):
        SparseMoE(HIDDEN, INTERMEDIATE, NUM_EXPERTS, TOP_K, shared_expert_gate=True)


def test_per_expert_names_fill_stacked_parameters() -> None:
    root = nn.Module()
    root.mlp = make_moe()
    experts = root.mlp.experts
    loaded: set[str] = set()
    for e in range(NUM_EXPERTS):
        for proj, (rows, cols) in {"w1": (24, 16), "up_proj": (24, 16), "w2": (16, 24)}.items():
            name = f"mlp.experts.{e}.{proj}.weight"
            target = expert_tensor(root, name)
            assert target is not None and target.shape == (rows, cols)
            with torch.no_grad():
                target.fill_(e * 10 + len(proj))
            loaded.add(name)
    assert torch.equal(experts.gate_up_proj[3, :INTERMEDIATE], torch.full((24, 16), 32.0))
    assert torch.equal(experts.gate_up_proj[3, INTERMEDIATE:], torch.full((24, 16), 37.0))
    assert torch.equal(experts.down_proj[5], torch.full((16, 24), 52.0))
    assert is_stacked_loaded(root, "mlp.experts.gate_up_proj", loaded)
    assert is_stacked_loaded(root, "mlp.experts.down_proj", loaded)
    assert not is_stacked_loaded(
        root, "mlp.experts.down_proj", loaded - {"mlp.experts.4.w2.weight"}
    )
    assert expert_tensor(root, f"mlp.experts.{NUM_EXPERTS}.w1.weight") is None
    assert expert_tensor(root, "mlp.experts.0.w9.weight") is None
    assert expert_tensor(root, "other.experts.0.w1.weight") is None
