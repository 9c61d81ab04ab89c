"""The scheduler driven by a simulated model, with a real BlockManager and real Sequences.

A simulated step does what the engine does after running the model: every scheduled
sequence gets `num_new` more computed tokens and its full blocks committed, and one that
`samples` gets a new token, a fixed function of its id and position, so that the expected
output of every sequence is known in advance.  After each step the simulation checks the
scheduler's invariants, and at the end a ledger of computed tokens against a naive count.
"""

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from limelight.engine import scheduler as scheduler_module
from limelight.engine.block_manager import BlockManager
from limelight.engine.scheduler import BACKGROUND_MAX_WAIT_S, ScheduledSeq, Scheduler
from limelight.engine.sequence import Sequence, Status
from limelight.engine.types import EngineConfig, SamplingParams

BS = 4


def token_at(seq: Sequence, position: int) -> int:
    return (int(seq.request_id[1:]) * 31 + position * 7) % 200 + 4


@dataclass
class Sim:
    config: EngineConfig
    blocks: BlockManager
    scheduler: Scheduler
    targets: dict[str, int] = field(default_factory=dict)  # request id → final length
    seqs: list[Sequence] = field(default_factory=list)
    batches: list[list[ScheduledSeq]] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_lost_tokens: int = 0  # computed tokens thrown away by preemption
    victims: list[Sequence] = field(default_factory=list)


def make_sim(num_blocks: int = 256, prefix_caching: bool = False, **options: int) -> Sim:
    config = EngineConfig(block_size=BS, num_kv_blocks=num_blocks, **options)
    blocks = BlockManager(num_blocks, BS, prefix_caching)
    return Sim(config, blocks, Scheduler(config, blocks))


def add(
    sim: Sim, prompt_len: int, max_new: int, rng: random.Random | None = None, shared: int = 0
) -> Sequence:
    """A new request whose prompt starts with `shared` tokens common to all such requests."""
    arrival = len(sim.seqs)
    rng = rng or random.Random(arrival)
    prompt = list(range(4, 4 + min(shared, prompt_len)))
    prompt += [rng.randrange(4, 200) for _ in range(prompt_len - len(prompt))]
    seq = Sequence(f"r{arrival}", prompt, SamplingParams(max_tokens=max_new), arrival)
    sim.targets[seq.request_id] = prompt_len + max_new
    sim.seqs.append(seq)
    sim.scheduler.add(seq)
    return seq


def expected_tokens(sim: Sim, seq: Sequence) -> list[int]:
    prompt = seq.token_ids[: seq.num_prompt_tokens]
    target = sim.targets[seq.request_id]
    return prompt + [token_at(seq, p) for p in range(len(prompt), target)]


def step(sim: Sim) -> list[ScheduledSeq]:
    scheduler = sim.scheduler
    was_running = list(scheduler.running)
    computed_before = {s.request_id: s.num_computed for s in was_running}
    batch = scheduler.schedule()
    check_batch(sim, batch, was_running)
    victims = [s for s in was_running if s.status is Status.WAITING]
    survivors = [s for s in was_running if s.status is Status.RUNNING]
    if victims:  # the newest running sequences are preempted first
        assert min(v.arrival for v in victims) > max((s.arrival for s in survivors), default=-1)
    sim.victims += victims
    sim.num_lost_tokens += sum(computed_before[v.request_id] for v in victims)
    for item in batch:  # what the engine does with the model's output
        seq = item.seq
        seq.num_computed += item.num_new
        sim.num_computed_tokens += item.num_new
        sim.blocks.commit(seq)
        if item.samples:
            seq.token_ids.append(token_at(seq, len(seq)))
            if len(seq) >= sim.targets[seq.request_id]:
                scheduler.finish(seq)
    check_blocks(sim)
    sim.batches.append(batch)
    return batch


def check_batch(sim: Sim, batch: list[ScheduledSeq], was_running: list[Sequence]) -> None:
    config, scheduler = sim.config, sim.scheduler
    assert sum(item.num_new for item in batch) <= config.max_num_batched_tokens
    assert len(scheduler.running) <= config.max_num_seqs
    seqs = [item.seq for item in batch]
    assert len(set(map(id, seqs))) == len(seqs)  # no sequence twice in a step
    for item in batch:
        seq = item.seq
        assert seq.status is Status.RUNNING and seq in scheduler.running
        assert 1 <= item.num_new <= seq.num_pending
        assert item.samples == (item.num_new == seq.num_pending)
        assert len(seq.block_table) * BS >= seq.num_computed + item.num_new  # KV slots exist
    # every decoding sequence that is still running was scheduled, ahead of any prefill chunk
    decoding = [s for s in was_running if s.num_pending == 1 and s.status is Status.RUNNING]
    assert seqs[: len(decoding)] == decoding
    assert all(item.num_new == 1 for item in batch[: len(decoding)])


def check_blocks(sim: Sim) -> None:
    """Reference counts equal the block tables of running sequences; free means unused."""
    refs = Counter(b for s in sim.scheduler.running for b in s.block_table)
    for block in sim.blocks.blocks:
        assert block.ref_count == refs[block.block_id]
        assert (block.block_id in sim.blocks.free) == (block.ref_count == 0)
    assert all(not s.block_table for s in sim.scheduler.waiting)


def run(sim: Sim, max_steps: int = 2000) -> None:
    for _ in range(max_steps):
        if not sim.scheduler.has_work:
            break
        step(sim)
    check_done(sim)


def check_done(sim: Sim) -> None:
    """Everything finished with the expected tokens, all blocks back, the ledger balanced."""
    assert not sim.scheduler.has_work
    assert all(s.status is Status.FINISHED for s in sim.seqs)
    assert [s.token_ids for s in sim.seqs] == [expected_tokens(sim, s) for s in sim.seqs]
    assert sim.blocks.num_free_blocks == len(sim.blocks.blocks)
    # the last sampled token of a sequence is never computed; preemption costs recompute,
    # minus what the prefix cache gave back
    naive = sum(len(s) - 1 for s in sim.seqs)
    assert sim.num_computed_tokens == naive + sim.num_lost_tokens - sim.blocks.num_hit_tokens


def test_long_prompt_is_chunked_while_the_others_decode_every_step() -> None:
    sim = make_sim(max_num_batched_tokens=16)
    short = [add(sim, n, 30) for n in (5, 3, 7)]
    for _ in range(3):
        step(sim)
    assert all(s.num_pending == 1 for s in short)  # prompts done: all three decode now
    long = add(sim, 60, 3)
    chunks = []
    while long.num_output_tokens == 0:
        pending = long.num_pending
        batch = step(sim)
        assert [item.seq for item in batch[:3]] == short  # decoders keep their token
        assert sum(item.num_new for item in batch) == min(16, 3 + pending)  # the rest prefills
        chunks += [item.num_new for item in batch if item.seq is long]
    assert chunks == [13, 13, 13, 13, 8]
    run(sim)
    assert sim.scheduler.num_preemptions == 0
    assert sim.num_computed_tokens == sum(len(s) - 1 for s in sim.seqs)


def test_token_budget_and_max_num_seqs_hold_and_admission_is_first_come() -> None:
    sim = make_sim(max_num_batched_tokens=10, max_num_seqs=2)
    for n in (12, 1, 25, 4, 9):
        add(sim, n, 6)
    run(sim)
    first_seen: dict[str, None] = {}
    for batch in sim.batches:
        assert len(batch) <= 2
        first_seen.update((item.seq.request_id, None) for item in batch)
    assert list(first_seen) == [s.request_id for s in sim.seqs]
    assert max(sum(item.num_new for item in b) for b in sim.batches) == 10  # the budget binds
    assert sim.scheduler.num_preemptions == 0


def test_small_kv_budget_preempts_newest_first_and_everyone_finishes() -> None:
    for prefix_caching in (False, True):
        sim = make_sim(num_blocks=10, prefix_caching=prefix_caching, max_num_batched_tokens=32)
        for n in (6, 5, 7, 6):
            add(sim, n, 10)  # each needs 4 blocks at the end: 16 > 10
        run(sim)  # checks newest-first at every step, and the ledger at the end
        assert sim.scheduler.num_preemptions == len(sim.victims) > 0
        assert sim.num_lost_tokens > 0
        assert (sim.blocks.num_hit_tokens > 0) == prefix_caching  # recompute reuses blocks


def test_finish_of_a_running_sequence_frees_its_blocks_at_once() -> None:
    sim = make_sim(num_blocks=12)
    a, b, c = add(sim, 9, 20), add(sim, 6, 20), add(sim, 3, 20)
    step(sim)
    step(sim)
    held = len(b.block_table)
    assert held == 2 and sim.blocks.num_free_blocks == 12 - 3 - 2 - 1
    sim.scheduler.finish(b)
    assert b.status is Status.FINISHED and not b.block_table
    assert b not in sim.scheduler.running
    assert sim.blocks.num_free_blocks == 12 - 3 - 1
    check_blocks(sim)
    waiting = add(sim, 4, 2)
    sim.scheduler.finish(waiting)  # aborted before it ran
    assert not sim.scheduler.waiting
    batch = step(sim)
    assert [item.seq for item in batch] == [a, c]
    sim.targets[b.request_id] = len(b)  # it stopped early: expect what it had
    sim.seqs.remove(waiting)  # never computed anything: out of the ledger
    run(sim)


def test_random_workloads_keep_every_invariant() -> None:
    for trial in range(60):
        rng = random.Random(trial)
        sim = make_sim(
            num_blocks=rng.randrange(8, 30),
            prefix_caching=rng.random() < 0.5,
            max_num_batched_tokens=rng.randrange(1, 40),
            max_num_seqs=rng.randrange(1, 6),
        )
        capacity = len(sim.blocks.blocks) * BS
        arrivals = sorted(rng.randrange(0, 20) for _ in range(rng.randrange(1, 13)))
        for now in range(3000):
            while arrivals and arrivals[0] <= now:
                arrivals.pop(0)
                prompt_len = rng.randrange(1, 30)
                max_new = rng.randrange(1, min(30, capacity - prompt_len))
                add(sim, prompt_len, max_new, rng, shared=rng.choice([0, 0, 9, 20]))
            if not (arrivals or sim.scheduler.has_work):
                break
            step(sim)
        check_done(sim)


def add_background(sim: Sim, prompt_len: int, max_new: int) -> Sequence:
    seq = add(sim, prompt_len, max_new)
    seq.background = True
    return seq


def test_a_background_prompt_waits_while_replies_run_then_decodes_beside_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler_module, "BACKGROUND_CHUNK", 16)
    sim = make_sim(max_num_batched_tokens=32)
    reply = add(sim, 10, 12)
    memory = add_background(sim, 20, 30)
    while reply.status is not Status.FINISHED:
        batch = step(sim)
        assert memory not in [item.seq for item in batch]  # not even a prompt chunk
    assert [(item.seq, item.num_new) for item in step(sim)] == [(memory, 16)]  # alone, in
    assert [(item.seq, item.num_new) for item in step(sim)] == [(memory, 4)]  # short chunks
    late = add(sim, 8, 60)  # a reply arriving while the background request decodes
    assert [(item.seq, item.num_new) for item in step(sim)] == [(memory, 1), (late, 8)]
    waiting = add_background(sim, 12, 2)  # another background prompt: waits for the reply
    while late.status is not Status.FINISHED:
        assert waiting not in [item.seq for item in step(sim)]
    run(sim)


def test_a_background_request_is_not_starved(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = make_sim(max_num_batched_tokens=32)
    add(sim, 10, 200)
    memory = add_background(sim, 20, 4)
    step(sim)
    assert memory.status is Status.WAITING
    later = memory.queued_at + BACKGROUND_MAX_WAIT_S + 1
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: later)
    assert memory in [item.seq for item in step(sim)]
    run(sim)


def test_background_prompts_share_one_chunk_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory jobs that all waited their limit at once add one chunk to a reply's steps,
    not one each; alone, they still take one chunk per step."""
    monkeypatch.setattr(scheduler_module, "BACKGROUND_CHUNK", 16)
    sim = make_sim(num_blocks=64, max_num_batched_tokens=128)
    reply = add(sim, 10, 40)
    jobs = [add_background(sim, 40, 2) for _ in range(3)]
    step(sim)  # the reply's prompt; the jobs wait
    later = max(job.queued_at for job in jobs) + BACKGROUND_MAX_WAIT_S + 1
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: later)

    done = 0  # the jobs' prompt tokens computed
    for _ in range(7):  # their 3 x 40 prompt tokens take 8 steps at 16 a step at most
        before = {job: job.num_computed for job in jobs}
        batch = step(sim)
        assert reply in [item.seq for item in batch]  # its decode slot, every step
        prompt = sum(min(i.num_new, 40 - before[i.seq]) for i in batch if i.seq in before)
        assert 0 < prompt <= 16
        done += prompt
    assert done == 7 * 16  # one full chunk a step: shared, yet never idle
    run(sim)


def test_background_work_runs_when_nothing_else_can() -> None:
    """A reply that cannot get KV blocks must not leave a background request idle."""
    sim = make_sim(num_blocks=12, max_num_batched_tokens=64)
    memory = add_background(sim, 30, 4)  # 8 of 12 blocks once admitted
    assert [item.seq for item in step(sim)] == [memory]  # nobody else: it runs at once
    add(sim, 30, 4)  # cannot be admitted: too few blocks left
    assert [item.seq for item in step(sim)] == [memory]
    run(sim)
