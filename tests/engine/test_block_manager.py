from limelight.engine.block_manager import ZERO_STATE_SLOT, BlockManager
from limelight.engine.sequence import Sequence
from limelight.engine.types import SamplingParams

BS = 4


def seq(tokens: list[int], arrival: int = 0) -> Sequence:
    return Sequence(f"r{arrival}", list(tokens), SamplingParams(), arrival)


def computed(manager: BlockManager, s: Sequence) -> Sequence:
    manager.allocate(s)
    s.num_computed = len(s)
    manager.commit(s)
    return s


def test_shared_prefix_reuses_blocks_and_counts_references() -> None:
    m = BlockManager(16, BS)
    a = computed(m, seq(list(range(10))))
    b = seq([*range(8), 99, 98, 97])
    m.allocate(b)
    assert b.block_table[:2] == a.block_table[:2]  # the two full shared blocks
    assert b.num_computed == 8 and b.num_cached_prompt_tokens == 8
    assert b.block_table[2] != a.block_table[2]
    assert m.blocks[a.block_table[0]].ref_count == 2
    m.release(a)
    m.release(b)
    assert m.num_free_blocks == 16


def test_whole_prompt_hit_still_leaves_a_token_to_compute() -> None:
    m = BlockManager(16, BS)
    computed(m, seq(list(range(8))))
    again = seq(list(range(8)), 1)
    m.allocate(again)
    assert again.num_computed == 4  # the last block is recomputed to get logits


def test_released_blocks_stay_matchable_until_reused_lru() -> None:
    m = BlockManager(4, BS)
    a = computed(m, seq(list(range(8))))
    m.release(a)
    b = seq(list(range(9)), 1)
    m.allocate(b)
    assert b.num_computed == 8
    m.release(b)
    # fill the cache with other tokens: the old blocks are evicted, oldest first
    c = computed(m, seq([50 + i for i in range(16)], 2))
    m.release(c)
    d = seq(list(range(9)), 3)
    m.allocate(d)
    assert d.num_computed == 0


def test_prefix_match_agrees_with_naive_reference() -> None:
    m = BlockManager(64, BS)
    stored = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 9, 9, 9, 9, 9, 9], [7] * 13]
    for i, tokens in enumerate(stored):
        computed(m, seq(tokens, i))
    for j, query in enumerate([[1, 2, 3, 4, 5, 6, 7, 8, 0], [1, 2, 3, 4, 9, 9, 9, 9, 1], [7] * 20]):
        s = seq(query, 10 + j)
        m.allocate(s)
        naive = (
            max(
                (
                    n
                    for t in stored
                    for n in range(0, len(query), BS)
                    if n + BS <= len(t) and n + BS < len(query) and t[: n + BS] == query[: n + BS]
                ),
                default=-BS,
            )
            + BS
        )
        assert s.num_computed == naive


def test_hybrid_match_ends_at_a_block_with_a_state_snapshot() -> None:
    m = BlockManager(32, BS, num_snapshots=3)  # slots 1 and 2 usable
    a = seq(list(range(13)))
    m.allocate(a)
    assert a.restore_from == ZERO_STATE_SLOT
    plan = m.plan_snapshots(a, 13)  # boundaries after 4, 8 and 12 tokens
    assert [consumed for consumed, _ in plan] == [4, 8, 12]
    a.num_computed = 13
    m.commit(a)
    # only two slots: the snapshot after block 0 was evicted for the one after block 2
    b = seq(list(range(13)), 1)
    m.allocate(b)
    assert b.num_computed == 12
    assert b.restore_from == plan[2][1]
    c = seq([*range(6), 77, 77, 77], 2)
    m.allocate(c)
    assert c.num_computed == 0  # block 0 matches but its snapshot is gone
