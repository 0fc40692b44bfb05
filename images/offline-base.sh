#!/usr/bin/env bash
# Create the base images our Dockerfiles start FROM, on a machine with no registry:
#   docker.io/library/debian:bookworm-slim  debootstrap --variant=minbase, plus this machine's
#                                           extra CA certificates (a re-signing HTTPS proxy)
#   docker.io/library/python:3.11-slim      a stand-in: Debian's python3 with a venv at
#                                           /opt/venv first on PATH (images/offline-base/)
# The names are the ones `FROM debian:bookworm-slim` / `FROM python:3.11-slim` normalize to,
# so the Dockerfiles stay unchanged. Idempotent: an image that exists is left alone
# (pass --force to rebuild both). Needs root, podman and debootstrap (images/setup-podman.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=images/podman/env.sh
source "$here/podman/env.sh"

DEBIAN_IMAGE="docker.io/library/debian:bookworm-slim"
PYTHON_IMAGE="docker.io/library/python:3.11-slim"
SUITE="bookworm"
force=0
if [ "${1:-}" = "--force" ]; then force=1; fi

log() { printf 'offline-base: %s\n' "$*" >&2; }

# Print the first URI serving suite $1 in this machine's apt sources (deb822 or one-line form).
apt_mirror_for() {
    local suite="$1" f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas are separated by blank lines; print the URI of the stanza whose
        # Suites field names the wanted suite.
        awk -v want="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uri = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
                    if ($i ~ /^Suites:/) {
                        n = split($i, s, /[ \t]+/)
                        for (j = 2; j <= n; j++) if (s[j] == want) ok = 1
                    }
                }
                if (ok && uri != "") { print uri; exit }
            }' "$f"
    done | head -n1 | grep . && return 0
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '$1 == "deb" { u = ($2 ~ /^\[/) ? $3 : $2; s = ($2 ~ /^\[/) ? $4 : $3;
              if (s == want) { print u; exit } }' "$f"
    done | head -n1 | grep .
}

build_debian() {
    local mirror security rootfs
    mirror="$(apt_mirror_for "$SUITE")" || { log "no apt source for $SUITE found"; exit 1; }
    security="$(apt_mirror_for "$SUITE-security" || true)"
    rootfs="$KUBESERVE_CONTAINERS_ROOT/rootfs-debian-$SUITE"
    rm -rf "$rootfs"
    log "debootstrap $SUITE (minbase) from the machine's apt mirror"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$KUBESERVE_CONTAINERS_ROOT/debootstrap.log" 2>&1 \
        || { tail -n 20 "$KUBESERVE_CONTAINERS_ROOT/debootstrap.log" >&2; exit 1; }

    # Same apt sources as the real image (release, updates, security), from the same mirror.
    rm -f "$rootfs/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' \
            "$mirror" "$SUITE" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        if [ -n "$security" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' \
                "$security" "$SUITE"
            printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
    } >"$rootfs/etc/apt/sources.list.d/debian.sources"

    # HTTPS from inside builds goes through a proxy that re-signs certificates: ship this
    # machine's extra CAs, so `apt-get install ca-certificates` in later images trusts them.
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    fi

    # Slim like the real image: no package caches or lists.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log "$rootfs"/tmp/*

    log "importing $DEBIAN_IMAGE"
    tar --numeric-owner -C "$rootfs" -c . \
        | podman import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

build_python() {
    log "building the stand-in $PYTHON_IMAGE"
    podman build --pull=never --network=host -t "$PYTHON_IMAGE" \
        -f "$here/offline-base/Dockerfile" "$here/offline-base" >"$KUBESERVE_CONTAINERS_ROOT/python-base.log" 2>&1 \
        || { tail -n 30 "$KUBESERVE_CONTAINERS_ROOT/python-base.log" >&2; exit 1; }
}

# One builder at a time: tests and CI may call this concurrently.
exec 9>"$KUBESERVE_CONTAINERS_ROOT/offline-base.lock"
flock 9

if [ "$force" = 1 ] || ! podman image exists "$DEBIAN_IMAGE"; then
    build_debian
    force=1 # the Python stand-in must be rebuilt on a new Debian base
else
    log "$DEBIAN_IMAGE exists"
fi
if [ "$force" = 1 ] || ! podman image exists "$PYTHON_IMAGE"; then
    build_python
else
    log "$PYTHON_IMAGE exists"
fi
