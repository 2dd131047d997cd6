#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every
# test. Installs what the tests need first when it is missing, so a fresh
# machine needs nothing but this command.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "==> cargo test"
cargo test --locked
