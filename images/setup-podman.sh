#!/usr/bin/env bash
# Install podman and friends from Debian, for machines without a Docker engine (CI calls this).
# Needs root (or sudo). Idempotent: does nothing when every tool is already there.
# What the settings must be and why: images/podman/env.sh and images/README.md.
set -euo pipefail

packages=(podman buildah runc debootstrap iptables uidmap containernetworking-plugins
    golang-github-containers-common)
tools=(podman buildah runc debootstrap iptables newuidmap)
missing=0
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || missing=1
done
[ -d /usr/lib/cni ] || missing=1
if [ "$missing" = 0 ]; then
    echo "setup-podman: already installed ($(podman --version))" >&2
    exit 0
fi

sudo=()
if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "setup-podman: installed ($(podman --version))" >&2
