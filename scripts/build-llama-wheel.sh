#!/usr/bin/env bash
# Build llama-cpp-python once per machine and install it from the cached wheel.
#
# PyPI ships llama-cpp-python only as an sdist, and compiling llama.cpp takes 5–7 minutes on 2 cores.
# The wheel is kept in a cache outside the work tree, so a fresh clone on the same machine (or a
# `make clean`) installs it in seconds. GGML_NATIVE=OFF keeps the wheel portable across CPUs of the same
# architecture: a wheel tuned to the build host's exact ISA could crash with SIGILL on an older CPU that
# later gets the same cache (a CI runner, a copied home directory).
#
# Usage: scripts/build-llama-wheel.sh PYTHON
#   PYTHON                  the venv's interpreter (installs the wheel into that venv)
#   SIPAGENT_WHEEL_CACHE    where the wheel is kept (default: ~/.cache/sipagent/wheels)
#   LLAMA_CMAKE_ARGS        extra CMake flags, e.g. "-DGGML_CUDA=on" on a GPU box (use another
#                           SIPAGENT_WHEEL_CACHE for it: the cache is keyed by version only)
set -euo pipefail

# The version is the one pinned in pyproject.toml, so there is one place to change it.
root=$(cd "$(dirname "$0")/.." && pwd)
LLAMA_VERSION=$(sed -n 's/.*"llama-cpp-python==\([0-9][0-9.]*\)".*/\1/p' "$root/pyproject.toml")
[ -n "$LLAMA_VERSION" ] || { echo "no llama-cpp-python==X.Y.Z pin in $root/pyproject.toml" >&2; exit 1; }

python=${1:?usage: $0 PYTHON}
cache=${SIPAGENT_WHEEL_CACHE:-$HOME/.cache/sipagent/wheels}
mkdir -p "$cache"

if "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LLAMA_VERSION')" \
    2>/dev/null; then
    exit 0  # already installed in this venv
fi

# The wheel holds a compiled extension for one Python version: match its tag (cp311, cp312, ...).
tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
pattern="llama_cpp_python-${LLAMA_VERSION}-${tag}-*.whl"
wheel=$(find "$cache" -maxdepth 1 -name "$pattern" | head -n 1)
if [ -z "$wheel" ]; then
    echo "building llama-cpp-python ${LLAMA_VERSION} from source (once per machine: 3-7 min on 2 cores)" >&2
    tmp=$(mktemp -d "$cache/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    # Build into a temporary folder and move the wheel in at the end, so an interrupted build never
    # leaves a half-written wheel that later installs would trust.
    CMAKE_ARGS="-DGGML_NATIVE=OFF ${LLAMA_CMAKE_ARGS:-}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$python" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "llama-cpp-python==${LLAMA_VERSION}"
    built=$(find "$tmp" -maxdepth 1 -name "$pattern" | head -n 1)
    [ -n "$built" ] || { echo "llama-cpp-python build produced no wheel" >&2; exit 1; }
    mv "$built" "$cache/"
    wheel="$cache/$(basename "$built")"
fi

# Install its pure-Python dependencies (numpy, jinja2, diskcache, typing-extensions) from the index.
"$python" -m pip install -q "$wheel"
