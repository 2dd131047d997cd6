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

# Installs Debian package $2 unless command $1 is already there.
need_debian_package() {
    command -v "$1" >/dev/null 2>&1 && return
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update && apt-get install -y "$2"
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update && sudo apt-get install -y "$2"
    else
        echo "setup.sh: $1 is missing and this is not root; install the '$2' package" >&2
        exit 1
    fi
}

# --- Chromium, for the browser tests of the demo page (tests/api/browser.rs) ---
# They drive Debian's /usr/bin/chromium headless; nothing downloads a browser.
need_debian_package chromium chromium

# --- Redis, for the replica tests (tests/api/cluster.rs, redis_cluster.rs) ---
# The tests start their own redis-server on a free loopback port, and
# redis-cli joins six of them into a cluster.
need_debian_package redis-server redis-server
need_debian_package redis-cli redis-tools

# --- nginx, for the reverse-proxy test (tests/api/nginx.rs) ---
# The test runs /usr/sbin/nginx in the foreground on a free loopback port.
need_debian_package /usr/sbin/nginx nginx

# --- OpenSSL, for the RSA and older-format keys of the HTTPS tests (tests/api/tls.rs) ---
need_debian_package openssl openssl

# --- systemd-analyze, for the check of the unit file (tests/api/deploy/systemd.rs) ---
# `systemd-analyze verify` reads a unit offline: no running systemd is needed,
# so it works in a container too.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update && apt-get install -y systemd
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update && sudo apt-get install -y systemd
    else
        echo "setup.sh: systemd-analyze is missing and this is not root; install the 'systemd' package" >&2
        exit 1
    fi
fi

# --- Real OpenAI clients, for the SDK tests (tests/api/sdk.rs) ---
# The Python SDK in a virtual environment, the Node SDK and the AI SDK from
# the lock file; each is (re)installed only when missing or out of date.
sdk=tests/sdk
for tool in python3 node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: $tool is missing; the SDK tests need Python 3.10+ and Node.js 20+" >&2
        exit 1
    fi
done
pinned_openai=$(sed -n 's/^openai==//p' "$sdk/requirements.txt")
installed_openai=$("$sdk/.venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("openai"))' 2>/dev/null || true)
if [ "$installed_openai" != "$pinned_openai" ]; then
    [ -x "$sdk/.venv/bin/python" ] || python3 -m venv "$sdk/.venv"
    "$sdk/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$sdk/requirements.txt"
fi
# npm records what it installed in node_modules/.package-lock.json.
if [ ! -f "$sdk/node_modules/.package-lock.json" ] \
    || [ "$sdk/package-lock.json" -nt "$sdk/node_modules/.package-lock.json" ]; then
    (cd "$sdk" && npm ci --no-audit --no-fund)
fi

# --- The useChat example, for its browser test (tests/api/ui_page.rs) ---
# React, the AI SDK and esbuild from its lock file; the test builds the bundle.
example=examples/ai-sdk-chat
if [ ! -f "$example/node_modules/.package-lock.json" ] \
    || [ "$example/package-lock.json" -nt "$example/node_modules/.package-lock.json" ]; then
    (cd "$example" && npm ci --no-audit --no-fund)
fi
