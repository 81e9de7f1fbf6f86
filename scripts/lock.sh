#!/usr/bin/env bash
# Regenerate requirements.lock: one version of every package canvascast, its extras and
# its Modal images install, resolved once for CPython 3.11 on x86_64 Linux (CI, these
# machines, Modal's debian_slim images).
#
#   scripts/lock.sh                          # after editing pyproject.toml: keeps every
#                                            # pin that still fits, adds what is new
#   scripts/lock.sh --upgrade                # everything to the newest release
#   scripts/lock.sh --upgrade-package httpx  # one package (and what it needs)
#
# bench (MoviePy) is left out: install it without -c. Then run README's test command and
# commit the lock on its own. Needs uv (pip install uv).
# torch stays at README's `pip install torch==...` (the CPU build these machines carry).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH=2.13.0
if ! command -v uv >/dev/null; then
    echo "scripts/lock.sh needs uv: pip install uv" >&2
    exit 2
fi
# Every extra but bench (MoviePy, a benchmark baseline, holds Pillow below 12).
extras=$(python3 -c 'import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print(" ".join(f"--extra {name}" for name in extras if name != "bench"))')

# shellcheck disable=SC2086  # $extras is a list of words
echo "torch==$TORCH" | uv pip compile pyproject.toml $extras --constraint - \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-emit-package canvascast --custom-compile-command "scripts/lock.sh" \
    --output-file requirements.lock "$@"
