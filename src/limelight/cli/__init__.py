"""The `limelight` command line.

`serve` (the HTTP server and web app), `chat` (a character or a bare model, in the
terminal), `characters`, `keys`, `generate`, `models` and `bench`.  Parsing and dispatch
live here; `model.py` holds the engine commands and `product.py` the character ones.
Errors limelight raises on purpose are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from limelight.engine.errors import LimelightError

BENCHMARKS = ["engine", "memory", "e2e"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limelight", description="limelight: self-hosted AI characters on its own engine."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server: OpenAI-compatible API and web app")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--model", default=None, help="model to serve (default SmolLM2)")
    serve.add_argument("--database", default=None, help="SQLAlchemy URL of the store")

    chat = commands.add_parser("chat", help="talk with a character (or a bare model)")
    chat.add_argument("character", nargs="?", help="a character's slug; omit to talk to the model")
    chat.add_argument("--user", default="local", help="who you are (memories are per user)")
    chat.add_argument("--new", action="store_true", help="start a new session")
    chat.add_argument("--database", default=None, help="SQLAlchemy URL of the store")
    chat.add_argument("--system", default=None, help="a system message (bare model only)")
    _model_options(chat)

    _store_commands(commands)

    gen = commands.add_parser("generate", help="complete a prompt with a model")
    gen.add_argument("prompt", metavar="PROMPT")
    _model_options(gen)
    gen.add_argument("--chat", action="store_true", help="wrap PROMPT in the chat template")

    commands.add_parser("models", help="list the packaged models and where they come from")

    bench = commands.add_parser("bench", help="run a benchmark of the repository's bench/ folder")
    bench.add_argument(
        "benchmark",
        choices=BENCHMARKS,
        help="engine: vs llama.cpp; memory: LoCoMo; e2e: latency vs an assembled stack",
    )
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    return parser


def _store_commands(commands: argparse._SubParsersAction) -> None:
    """`characters list|import` and `keys create`: commands on the store, no model."""
    chars = commands.add_parser("characters", help="list or import characters")
    chars_cmd = chars.add_subparsers(dest="action", required=True, metavar="ACTION")
    chars_cmd.add_parser("list", help="list the characters")
    imp = chars_cmd.add_parser("import", help="import a card: PNG, JSON or CHARX")
    imp.add_argument("file")
    for sub in chars_cmd.choices.values():
        sub.add_argument("--database", default=None, help="SQLAlchemy URL of the store")

    keys = commands.add_parser("keys", help="manage API keys")
    keys_cmd = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = keys_cmd.add_parser("create", help="create an API key for a user (shown once)")
    create.add_argument("user")
    create.add_argument("--name", default="")
    create.add_argument("--database", default=None, help="SQLAlchemy URL of the store")


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
    from limelight.cli import model, product

    commands = {
        "serve": product.serve,
        "chat": product.chat if args.command == "chat" and args.character else model.chat,
        "characters": product.characters,
        "keys": product.keys,
        "generate": model.generate,
        "models": model.list_models,
        "bench": model.bench,
    }
    try:
        return int(commands[args.command](args))
    except (LimelightError, OSError, TypeError, ValueError, LookupError, RuntimeError) as err:
        print(f"limelight: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
