#!/usr/bin/env bash
# Build llama.cpp's own `llama-server`, the peer of bench/engine.py's concurrent figures.
#
# It is built from the llama.cpp source that the llama-cpp-python sdist bundles
# (vendor/llama.cpp), so the server and the single-stream peer (llama-cpp-python) run
# the same llama.cpp.  Release, native CPU flags but AMX (llama_cpp_flags.sh says why), web
# UI and TLS off, only the server target, two jobs.  Work already done is skipped: the
# download, the unpacking and the build each happen once per version under the cache folder.
#
# Usage: bench/build_llama_server.sh            (prints the binary's path on the last line)
# Environment: PYTHON (pip's interpreter; default: the repository's .venv, else python3),
#              LIMELIGHT_CACHE (default: ~/.cache/limelight), LLAMA_CPP_PYTHON_VERSION.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LIMELIGHT_CACHE:-$HOME/.cache/limelight}/llama.cpp/$VERSION"
BUILD="$CACHE/build-no-amx"
BINARY="$BUILD/bin/llama-server"

if [[ -x "$BINARY" ]]; then
    echo "$BINARY"
    exit 0
fi

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
for tool in cmake c++; do
    command -v "$tool" >/dev/null || { echo "build_llama_server: $tool is needed (apt-get install cmake g++)" >&2; exit 1; }
done

mkdir -p "$CACHE"
SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
    # --no-binary for this package only: with :all: pip would also insist on building
    # the sdist's build requirements (scikit-build-core, ...) from source, recursively.
    "$PYTHON" -m pip download --quiet --no-binary llama-cpp-python --no-deps --dest "$CACHE" \
        "llama-cpp-python==$VERSION"
fi
SOURCE="$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [[ ! -f "$SOURCE/CMakeLists.txt" ]]; then
    tar -xzf "$SDIST" -C "$CACHE"
fi

GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
# shellcheck source=bench/llama_cpp_flags.sh
source "$ROOT/bench/llama_cpp_flags.sh"
cmake -S "$SOURCE" -B "$BUILD" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF >&2
cmake --build "$BUILD" --target llama-server -j 2 >&2

[[ -x "$BINARY" ]] || { echo "build_llama_server: no $BINARY after the build" >&2; exit 1; }
echo "$BINARY"
