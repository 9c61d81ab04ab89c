"""Check a limelight architecture against `transformers` on a tiny random model.

`check_parity` builds the reference model from a transformers config, saves it with
`save_pretrained`, loads the folder with limelight's loader, then compares logits of a
batch of sequences of different lengths: prefill of each prompt in one batched step, then
16 decode steps through the paged KV cache (blocks handed out in a scrambled order).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.loader.safetensors import iter_safetensors, read_hf_config
from limelight.engine.models import CausalLM, model_class

BLOCK_SIZE = 4
NUM_DECODE = 16
TOLERANCE = 1e-3


def load_limelight(folder: Path) -> CausalLM:
    config = read_hf_config(folder)
    model = model_class(config.model_type)(config)
    model.load_weights(iter_safetensors(folder))
    return model.eval()


def paged_logits(
    model: CausalLM, sequences: list[list[int]], prompt_lens: list[int], num_snapshots: int = 0
) -> list[torch.Tensor]:
    """Logits [len(seq), V] of each sequence: its prompt in one batched prefill, then decode."""
    num_blocks_each = -(-max(map(len, sequences)) // BLOCK_SIZE)
    block_ids = list(range(1, 1 + num_blocks_each * len(sequences)))
    random.Random(0).shuffle(block_ids)
    tables = [
        block_ids[i * num_blocks_each : (i + 1) * num_blocks_each] for i in range(len(sequences))
    ]
    model.allocate_caches(
        (len(block_ids) + 1) * BLOCK_SIZE, len(sequences) + 1, num_snapshots, torch.float32
    )
    outputs: list[list[torch.Tensor]] = [[] for _ in sequences]
    steps = [[(0, n) for n in prompt_lens]]
    steps += [[(n + i, 1) for n in prompt_lens] for i in range(NUM_DECODE)]
    with torch.no_grad():
        for step in steps:
            slices = [
                SequenceSlice(start, num, tables[i], state_slot=i + 1)
                for i, (start, num) in enumerate(step)
            ]
            batch = ForwardBatch.build(slices, BLOCK_SIZE)
            ids = torch.tensor(
                [t for (s, n), seq in zip(step, sequences, strict=True) for t in seq[s : s + n]]
            )
            logits = model.compute_logits(model(ids, batch))
            for i, part in enumerate(logits.split([n for _, n in step])):
                outputs[i].append(part)
    return [torch.cat(parts) for parts in outputs]


def check_parity(hf_config: PretrainedConfig, tmp_path: Path, seed: int = 0) -> float:
    """Return the largest logit difference; assert it is within TOLERANCE."""
    torch.manual_seed(seed)
    reference = AutoModelForCausalLM.from_config(hf_config).float().eval()
    reference.save_pretrained(tmp_path)
    model = load_limelight(tmp_path)
    rng = random.Random(seed)
    prompt_lens = [1, 5, 11, 7]
    sequences = [
        [rng.randrange(hf_config.vocab_size) for _ in range(n + NUM_DECODE)] for n in prompt_lens
    ]
    ours = paged_logits(model, sequences, prompt_lens)
    worst = 0.0
    with torch.no_grad():
        for seq, got in zip(sequences, ours, strict=True):
            want = reference(torch.tensor([seq])).logits[0].float()
            worst = max(worst, (got - want).abs().max().item())
    assert worst < TOLERANCE, f"max |logit difference| {worst:.2e} exceeds {TOLERANCE}"
    return worst
