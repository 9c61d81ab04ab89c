"""`LinearAttention` against a naive per-token recurrence, through real `ForwardBatch`es."""

from __future__ import annotations

import torch
from torch import Tensor

from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.layers.linear_attention import LinearAttention

H, D = 4, 8
SLOPES = torch.tensor([0.9, 0.25, 0.03, 0.001])
BLOCK_SIZE = 16
ATOL = 1e-4


def recurrence(q: Tensor, k: Tensor, v: Tensor, state: Tensor) -> tuple[Tensor, list[Tensor]]:
    """q/k/v [L, H, D], state [H, D, D] → (o [L, H, D], [state after 0, 1, ..., L tokens])."""
    decay = torch.exp(-SLOPES)[:, None, None]  # [H, 1, 1]
    outputs, states = [], [state]
    for t in range(q.shape[0]):
        state = decay * state + k[t, :, :, None] * v[t, :, None, :]  # [H, D, D]
        outputs.append(torch.einsum("hd,hde->he", q[t], state))
        states.append(state)
    return torch.stack(outputs), states


def make_layer(num_slots: int, num_snapshots: int = 4, chunk_size: int = 16) -> LinearAttention:
    layer = LinearAttention(H, D, SLOPES, chunk_size=chunk_size)
    layer.allocate_states(num_slots, num_snapshots, torch.device("cpu"))
    return layer


def make_batch(
    starts: list[int],
    lens: list[int],
    snapshots: dict[int, list[tuple[int, int]]] | None = None,
    restores: dict[int, int] | None = None,
) -> ForwardBatch:
    """Sequence i uses state row i + 1; block tables are irrelevant to linear attention."""
    snapshots, restores = snapshots or {}, restores or {}
    slices = [
        SequenceSlice(
            start,
            n,
            list(range(-(-(start + n) // BLOCK_SIZE))),
            state_slot=i + 1,
            snapshots=snapshots.get(i, []),
            restore_from=restores.get(i),
        )
        for i, (start, n) in enumerate(zip(starts, lens, strict=True))
    ]
    return ForwardBatch.build(slices, BLOCK_SIZE)


def random_qkv(lens: list[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
    return [tuple(torch.randn(n, H, D) * 0.5 for _ in range(3)) for n in lens]  # type: ignore[misc]


def run(layer: LinearAttention, batch: ForwardBatch, qkv: list[tuple[Tensor, ...]]) -> list[Tensor]:
    """One step; returns each sequence's output [n, H, D]."""
    q, k, v = (torch.cat([x[i] for x in qkv]) for i in range(3))
    out = layer(q, k, v, batch).view(-1, H, D)
    return list(out.split([x[0].shape[0] for x in qkv]))


def test_chunked_step_matches_recurrence() -> None:
    torch.manual_seed(0)
    lens = [1, 5, 40, 37]  # padding in every row but one, several 16-token chunk boundaries
    layer = make_layer(len(lens) + 1)
    initial = torch.randn(len(lens) + 1, H, D, D) * 0.3
    layer.state_pool.copy_(initial)
    qkv = random_qkv(lens)
    got = run(layer, make_batch([3] * len(lens), lens), qkv)
    for i, (q, k, v) in enumerate(qkv):
        want, states = recurrence(q, k, v, initial[i + 1])
        torch.testing.assert_close(got[i], want, atol=ATOL, rtol=0)
        torch.testing.assert_close(layer.state_pool[i + 1], states[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(layer.state_pool[0], initial[0])  # a row nobody uses


def test_decode_steps_continue_the_state() -> None:
    torch.manual_seed(1)
    lens = [6, 19]
    layer = make_layer(3, chunk_size=8)
    full = random_qkv([n + 3 for n in lens])
    outputs = run(
        layer,
        make_batch([0, 0], lens),
        [tuple(x[:n] for x in s) for s, n in zip(full, lens, strict=True)],
    )
    outputs = [[o] for o in outputs]
    for step in range(3):
        parts = [
            tuple(x[n + step : n + step + 1] for x in s) for s, n in zip(full, lens, strict=True)
        ]
        for i, o in enumerate(run(layer, make_batch([n + step for n in lens], [1, 1]), parts)):
            outputs[i].append(o)
    for i, (q, k, v) in enumerate(full):
        want, _ = recurrence(q, k, v, torch.zeros(H, D, D))
        torch.testing.assert_close(torch.cat(outputs[i]), want, atol=ATOL, rtol=0)


def test_snapshots_equal_intermediate_states() -> None:
    torch.manual_seed(2)
    lens = [21, 50]
    layer = make_layer(3, num_snapshots=6)
    initial = torch.randn(3, H, D, D) * 0.3
    layer.state_pool.copy_(initial)
    wanted = {0: [(0, 0), (1, 1), (21, 2)], 1: [(16, 3), (33, 4), (50, 5)]}
    qkv = random_qkv(lens)
    run(layer, make_batch([0, 0], lens, snapshots=wanted), qkv)
    for row, snaps in wanted.items():
        _, states = recurrence(*qkv[row], initial[row + 1])
        for consumed, snap in snaps:
            torch.testing.assert_close(
                layer.snapshot_pool[snap], states[consumed], atol=ATOL, rtol=0
            )


def test_restore_then_continue_equals_uninterrupted() -> None:
    torch.manual_seed(3)
    q, k, v = random_qkv([45])[0]
    whole = make_layer(2)
    uninterrupted = run(whole, make_batch([0], [45]), [(q, k, v)])[0]
    # Run a prefix of 30 tokens saving the state after 23, then resume from that snapshot
    # in a fresh row (a second sequence sharing the first 23 tokens).
    layer = make_layer(3, chunk_size=8)
    run(layer, make_batch([0], [30], snapshots={0: [(23, 1)]}), [(q[:30], k[:30], v[:30])])
    rest = (q[23:], k[23:], v[23:])
    batch = make_batch([0, 23], [1, 22], restores={1: 1})
    resumed = run(layer, batch, [(q[:1], k[:1], v[:1]), rest])[1]
    torch.testing.assert_close(resumed, uninterrupted[23:], atol=ATOL, rtol=0)
    torch.testing.assert_close(layer.state_pool[2], whole.state_pool[1], atol=ATOL, rtol=0)


def test_reset_states_zeroes_rows() -> None:
    layer = make_layer(4)
    layer.state_pool.fill_(1.0)
    layer.reset_states(torch.tensor([1, 3]))
    assert layer.state_pool[[1, 3]].abs().sum() == 0
    assert (layer.state_pool[[0, 2]] == 1.0).all()
