#!/usr/bin/env bash
# Installs what the test suite needs when it is missing. Safe to run again:
# every step first checks whether its tool is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_rust_component() {
    rustup component list --installed 2>/dev/null | grep -q "^$1" || rustup component add "$1"
}

if command -v rustup >/dev/null 2>&1; then
    need_rust_component rustfmt
    need_rust_component clippy
fi
