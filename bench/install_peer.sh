#!/usr/bin/env bash
# Install the benchmarks' peer: the bench extra (llama-cpp-python, compiled from source,
# about 10 minutes) built with llama_cpp_flags.sh's flags, then llama.cpp's llama-server
# from the same source (build_llama_server.sh, about 10 minutes more).
#
# Usage: bench/install_peer.sh      (PYTHON: pip's interpreter; default the repository's .venv)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# shellcheck source=bench/llama_cpp_flags.sh
source "$ROOT/bench/llama_cpp_flags.sh"
# pip's wheel cache would hand back a wheel built with other flags
"$PYTHON" -m pip install --quiet --no-cache-dir -e "$ROOT[bench]"
PYTHON="$PYTHON" bash "$ROOT/bench/build_llama_server.sh"
