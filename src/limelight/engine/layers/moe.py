"""The sparse mixture-of-experts MLP every MoE architecture shares: `SparseMoE`.

A router scores each token against E experts and keeps the best k; each expert is a gated
MLP, and the token's output is the routing-weighted sum of its k experts' outputs (plus an
optional always-on shared expert).  The experts are stored stacked, `gate_up_proj`
`[E, 2I, H]` (gate rows first) and `down_proj` `[E, H, I]`, as transformers 5 holds them
in memory, so a fused checkpoint loads by name; `expert_tensor` and `is_stacked_loaded`
map the per-expert layout of checkpoints on disk (`experts.3.w1.weight`,
`experts.3.gate_proj.weight`) into slices of those parameters.

The forward groups the step's (token, slot) assignments by expert, so each active expert
runs once per step over all its tokens (two matmuls), never once per token.  The loop
over active experts is plain PyTorch, kept readable; a grouped-GEMM kernel can replace
`_run_grouped` without changing anything else.

This module owns routing and expert compute.  It does not know architectures: which
routing a family uses, its checkpoint names, and which layers are sparse live in
`models/`.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from limelight.engine.layers.activation import activation

# "softmax_topk": softmax over all E logits, keep the k largest probabilities (they sum to
#   less than one unless `normalize_topk` rescales them) — mixtral, qwen2/3_moe, olmoe.
# "topk_softmax": keep the k largest logits, softmax over those k only — granitemoe.
Routing = Literal["softmax_topk", "topk_softmax"]

# Per-expert checkpoint projection names → the part of the stacked parameters they fill.
_PROJECTION_PART = {
    "w1": "gate",
    "gate_proj": "gate",
    "w3": "up",
    "up_proj": "up",
    "w2": "down",
    "down_proj": "down",
}
_STACKED_PARTS = {"gate_up_proj": ("gate", "up"), "down_proj": ("down",)}
_EXPERT_TENSOR = re.compile(r"(?P<moe>.+)\.experts\.(?P<index>\d+)\.(?P<proj>\w+)\.weight")


class Experts(nn.Module):
    """E gated MLPs (`down(act(gate(x)) * up(x))`) as two stacked parameters."""

    def __init__(
        self, num_experts: int, hidden_size: int, intermediate_size: int, act: str
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.intermediate_size = intermediate_size
        e, h, i = num_experts, hidden_size, intermediate_size
        # Filled by the checkpoint; `torch.empty` avoids initialising billions of values.
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))  # [E, 2I, H]
        self.down_proj = nn.Parameter(torch.empty(e, h, i))  # [E, H, I]
        self.act = activation(act)

    def run(self, index: int, x: Tensor) -> Tensor:
        """Expert `index` on all the tokens routed to it: [N, H] → [N, H]."""
        gate, up = F.linear(x, self.gate_up_proj[index]).chunk(2, dim=-1)  # [N, I] each
        return F.linear(self.act(gate) * up, self.down_proj[index])

    def part(self, index: int, part: str) -> Tensor:
        """A view of one expert's gate `[I, H]`, up `[I, H]` or down `[H, I]` matrix."""
        size = self.intermediate_size
        if part == "gate":
            return self.gate_up_proj[index, :size]
        if part == "up":
            return self.gate_up_proj[index, size:]
        assert part == "down", part
        return self.down_proj[index]


class SparseMoE(nn.Module):
    """Top-k routed experts, with an optional shared expert; [T, H] → [T, H].

    Router options (all explicit, so a new family states its choice in one call):
      routing: "softmax_topk" or "topk_softmax", see `Routing`.
      normalize_topk: with "softmax_topk", rescale the k kept probabilities to sum to one
        (mixtral: always; qwen2_moe / qwen3_moe / olmoe: config `norm_topk_prob`).
        "topk_softmax" weights always sum to one, so it requires True.
      shared_expert: a module every token also goes through (qwen2_moe's dense MLP), added
        to the routed output; built by the model so this layer stays architecture-free.
      shared_expert_gate: scale the shared expert's output by `sigmoid(x · w)`, one learned
        scalar per token (`shared_expert_gate.weight` `[1, H]`, qwen2_moe).
    The router is `gate` (`[E, H]`, no bias); router logits, softmax and weights are
    float32 whatever the activation dtype.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int,
        top_k: int,
        *,
        routing: Routing = "softmax_topk",
        normalize_topk: bool = True,
        act: str = "silu",
        shared_expert: nn.Module | None = None,
        shared_expert_gate: bool = False,
    ) -> None:
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts}, got {top_k}")
        if routing == "topk_softmax" and not normalize_topk:
            raise ValueError("top-k-then-softmax weights always sum to one")
        if shared_expert_gate and shared_expert is None:
            raise ValueError("shared_expert_gate needs a shared_expert")
        self.top_k = top_k
        self.routing = routing
        self.normalize_topk = normalize_topk
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts = Experts(num_experts, hidden_size, intermediate_size, act)
        self.shared_expert = shared_expert
        self.shared_expert_gate = (
            nn.Linear(hidden_size, 1, bias=False) if shared_expert_gate else None
        )

    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[T, H] → (weights [T, k] float32, expert ids [T, k])."""
        logits = self.gate(x).float()  # [T, E]
        if self.routing == "topk_softmax":
            top_logits, ids = logits.topk(self.top_k, dim=-1)
            return top_logits.softmax(dim=-1), ids
        weights, ids = logits.softmax(dim=-1).topk(self.top_k, dim=-1)
        if self.normalize_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, ids

    def forward(self, x: Tensor) -> Tensor:
        weights, ids = self.route(x)
        out = self._run_grouped(x, weights, ids)
        if self.shared_expert is not None:
            shared = self.shared_expert(x)  # [T, H]
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared
            out = out + shared
        return out

    def _run_grouped(self, x: Tensor, weights: Tensor, ids: Tensor) -> Tensor:
        """Sort the T·k assignments by expert, run each active expert once, scatter back."""
        if x.shape[0] == 0:
            return torch.zeros_like(x)
        flat_ids = ids.flatten()  # [T*k] expert of each (token, slot)
        order = flat_ids.argsort(stable=True)  # [T*k] assignments grouped by expert
        tokens = order // self.top_k  # [T*k] token of each grouped assignment
        # One host sync per layer: the group sizes decide which experts run.
        counts = torch.bincount(flat_ids, minlength=self.experts.num_experts).tolist()
        groups = x[tokens].split(counts)  # E chunks of [N_e, H]
        outputs = [self.experts.run(e, group) for e, group in enumerate(groups) if counts[e]]
        y = torch.cat(outputs) * weights.flatten()[order, None]  # [T*k, H], float32 weights
        return torch.zeros_like(x).index_add_(0, tokens, y.to(x.dtype))


def expert_tensor(root: nn.Module, name: str) -> Tensor | None:
    """The slice a per-expert checkpoint tensor fills, or None if `name` is not one.

    `name` is `<moe>.experts.<e>.<proj>.weight` with `<moe>` a `SparseMoE` under `root`
    and `<proj>` one of w1/w3/w2 (mixtral) or gate_proj/up_proj/down_proj (qwen, olmoe).
    """
    match = _EXPERT_TENSOR.fullmatch(name)
    if match is None or match["proj"] not in _PROJECTION_PART:
        return None
    try:
        moe = root.get_submodule(match["moe"])
    except AttributeError:
        return None
    index = int(match["index"])
    if not isinstance(moe, SparseMoE) or index >= moe.experts.num_experts:
        return None
    return moe.experts.part(index, _PROJECTION_PART[match["proj"]])


def is_stacked_loaded(root: nn.Module, param_name: str, loaded: set[str]) -> bool:
    """Whether a stacked expert parameter was filled expert by expert from `loaded` names."""
    moe_name, sep, param = param_name.rpartition(".experts.")
    if not sep or param not in _STACKED_PARTS:
        return False
    moe = root.get_submodule(moe_name)
    if not isinstance(moe, SparseMoE):
        return False
    return all(
        any(
            f"{moe_name}.experts.{e}.{proj}.weight" in loaded
            for proj, filled in _PROJECTION_PART.items()
            if filled == part
        )
        for e in range(moe.experts.num_experts)
        for part in _STACKED_PARTS[param]
    )
