"""The `limelight` command, run as a user would: a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.engine.test_tokenizer import save_tiny_llama


def limelight(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "limelight", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command() -> None:
    result = limelight("--help")
    assert result.returncode == 0
    for command in ("generate", "chat", "models"):
        assert command in result.stdout


def test_generate_prints_the_completion(tmp_path: Path) -> None:
    save_tiny_llama(tmp_path)
    args = ("generate", "--model", str(tmp_path), "--max-tokens", "8", "--temperature", "0")
    result = limelight(*args, "Hello world")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert limelight(*args, "Hello world").stdout == result.stdout  # greedy is deterministic


def test_bad_model_is_one_clear_line() -> None:
    result = limelight("generate", "--model", "no-such-model", "Hi")
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "smollm2-135m-instruct" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_lists_the_packaged_models() -> None:
    result = limelight("models")
    assert result.returncode == 0
    assert "smollm2-135m-instruct" in result.stdout and "gemma3-270m" in result.stdout
