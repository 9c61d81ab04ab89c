"""Engine commands: `generate`, `chat` with a bare model, `models`, `bench`.

Printing only; every command calls the public engine API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from limelight.engine.errors import LimelightError


def list_models(_: argparse.Namespace) -> int:
    from limelight.engine.loader.packaged import PACKAGED_MODELS

    for name, model in PACKAGED_MODELS.items():
        print(f"{name:24} {model.description}")
    return 0


def bench(args: argparse.Namespace) -> int:
    """Benchmarks live in the source checkout (bench/), next to src/, not in the package."""
    import importlib

    root = Path(__file__).resolve().parents[3]  # src/limelight/cli/model.py → repo
    if not (root / "bench" / f"{args.benchmark}.py").is_file():
        raise LimelightError(
            f"no bench/{args.benchmark}.py beside {root / 'src'}; benchmarks run from a "
            "source checkout installed with `pip install -e .`"
        )
    sys.path.insert(0, str(root))
    module = importlib.import_module(f"bench.{args.benchmark}")
    return int(module.main(args.options))


def _stream(llm: object, prompt: str, args: argparse.Namespace) -> str:
    from limelight.engine.llm import LLM
    from limelight.engine.types import SamplingParams

    assert isinstance(llm, LLM)
    params = SamplingParams(
        temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed
    )
    engine = llm.engine
    request_id = engine.add_request(prompt, params)
    pieces = []
    while engine.has_unfinished:
        for delta in engine.step():
            print(delta.text, end="", flush=True)
            pieces.append(delta.text)
    engine.pop_output(request_id)
    print()
    return "".join(pieces)


def generate(args: argparse.Namespace) -> int:
    from limelight.engine.llm import LLM

    llm = LLM(args.model)
    prompt = args.prompt
    if args.chat:
        prompt = llm.apply_chat_template([{"role": "user", "content": prompt}])
    _stream(llm, prompt, args)
    return 0


def chat(args: argparse.Namespace) -> int:
    from limelight.engine.llm import LLM

    llm = LLM(args.model)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print(f"Chatting with {args.model}. An empty line or Ctrl-D ends the chat.")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        messages.append({"role": "user", "content": line})
        print("model> ", end="", flush=True)
        reply = _stream(llm, llm.apply_chat_template(messages), args)
        messages.append({"role": "assistant", "content": reply})
