"""The `limelight` command line: `generate`, `chat`, `models` and `bench`.

Argument parsing and printing only; every command calls the public engine API.  Errors
that limelight raises on purpose are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from limelight.engine.errors import LimelightError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limelight", description="limelight: self-hosted AI characters on its own engine."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="complete a prompt with a model")
    gen.add_argument("prompt", metavar="PROMPT")
    _model_options(gen)
    gen.add_argument("--chat", action="store_true", help="wrap PROMPT in the chat template")

    chat = commands.add_parser("chat", help="talk with a model in the terminal")
    _model_options(chat)
    chat.add_argument("--system", default=None, help="a system message")

    commands.add_parser("models", help="list the packaged models and where they come from")

    bench = commands.add_parser("bench", help="run a benchmark of the repository's bench/ folder")
    bench.add_argument("benchmark", choices=["engine"], help="engine: limelight vs llama.cpp")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="packaged model name, .gguf file or Hugging Face checkpoint folder",
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=None)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            return _list_models()
        if args.command == "generate":
            return _generate(args)
        if args.command == "bench":
            return _bench(args)
        return _chat(args)
    except (LimelightError, TypeError, ValueError) as err:
        print(f"limelight: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _list_models() -> int:
    from limelight.engine.loader.packaged import PACKAGED_MODELS

    for name, model in PACKAGED_MODELS.items():
        print(f"{name:24} {model.description}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Benchmarks live in the source checkout (bench/), next to src/, not in the package."""
    import importlib

    root = Path(__file__).resolve().parents[2]
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


def _generate(args: argparse.Namespace) -> int:
    from limelight.engine.llm import LLM

    llm = LLM(args.model)
    prompt = args.prompt
    if args.chat:
        prompt = llm.apply_chat_template([{"role": "user", "content": prompt}])
    _stream(llm, prompt, args)
    return 0


def _chat(args: argparse.Namespace) -> int:
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
