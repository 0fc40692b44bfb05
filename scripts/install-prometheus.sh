#!/usr/bin/env bash
# A real Prometheus binary (Debian's package) for tests/cluster/test_prometheus.py, which
# starts its own on 127.0.0.1. Idempotent; needs root (or sudo) and apt to install.
set -euo pipefail
if command -v prometheus >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-prometheus: no apt-get here; install Prometheus 2.x onto PATH yourself" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# The binary only: Debian's package also ships a service, which nothing starts here.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "install-prometheus: $(prometheus --version 2>&1 | head -1)" >&2
