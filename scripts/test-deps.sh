#!/usr/bin/env bash
# System packages the test suite needs beyond PyPI: Debian's Chromium for the web app's
# browser tests (driven by Playwright, never a downloaded browser), PostgreSQL's server
# binaries for the store's tests, and a C++ compiler (the CPU attention kernel and
# torch.compile build with it).  Installs only what is missing; run by `make test`.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v g++ >/dev/null || need+=(g++)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "test-deps: install ${need[*]} with this system's package manager" >&2
    exit 0  # the tests that need them say so when they run
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "test-deps: apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
