#!/usr/bin/env bash
# Build kubeserve's images with one tag.
#
#   images/build.sh [--only NAMES] [--gpu] [--skip-missing-base] [TAG]
#
#   TAG                  default: the package version in pyproject.toml
#   --only a,b           build a subset of: operator onnxruntime storage-initializer torchserve tfserving
#   --gpu                also build the GPU variants (onnxruntime, tfserving), tagged TAG-gpu
#   --skip-missing-base  skip an image whose base is neither local nor pullable (tensorflow/serving
#                        on machines without a registry) instead of failing
#
# Engine: docker when a Docker daemon answers, else podman with the settings of
# images/podman/env.sh. CONTAINER_ENGINE=docker|podman forces one. Under podman, builds never
# pull (--pull=never, KUBESERVE_PULL=missing to allow it) and missing python/debian bases are
# created by images/offline-base.sh.
#
# Env: KUBESERVE_IMAGE_PREFIX (default kubeserve) names images PREFIX/NAME:TAG, as the
# operator's defaults expect; TORCH_WHEEL=path/to/torch-*.whl for the torchserve image;
# ONNXRUNTIME_GPU_PACKAGE (default 'onnxruntime-gpu[cuda,cudnn]==1.31.1') for --gpu.
# Prints one line per image, "built REF SECONDS s" on stdout; progress and logs on stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
all_images=(operator onnxruntime storage-initializer torchserve tfserving)
gpu_images=(onnxruntime tfserving)
prefix="${KUBESERVE_IMAGE_PREFIX:-kubeserve}"
onnxruntime_gpu="${ONNXRUNTIME_GPU_PACKAGE:-onnxruntime-gpu[cuda,cudnn]==1.31.1}"
tfserving_base="tensorflow/serving:2.18.0"

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

only=""
gpu=0
skip_missing=0
tag=""
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only="${2:?--only needs a list}"; shift 2 ;;
        --only=*) only="${1#--only=}"; shift ;;
        --gpu) gpu=1; shift ;;
        --skip-missing-base) skip_missing=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [ -z "$tag" ] || die "one TAG only"; tag="$1"; shift ;;
    esac
done
if [ -z "$tag" ]; then
    tag="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n1)"
fi
[ -n "$tag" ] || die "no TAG given and no version in pyproject.toml"

selected=("${all_images[@]}")
if [ -n "$only" ]; then
    IFS=',' read -r -a selected <<<"$only"
    for name in "${selected[@]}"; do
        [ -f "$here/$name/Dockerfile" ] || die "unknown image '$name' (known: ${all_images[*]})"
    done
fi

# --- engine -----------------------------------------------------------------------------
engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v podman >/dev/null; then
        engine=podman
    else
        die "neither a Docker daemon nor podman is available (images/setup-podman.sh installs podman)"
    fi
fi
pull_args=()
if [ "$engine" = podman ]; then
    # shellcheck source=images/podman/env.sh
    source "$here/podman/env.sh"
    pull="${KUBESERVE_PULL:-never}"
    pull_args=(--pull="$pull" --network=host)
    if [ "$pull" = never ]; then
        "$here/offline-base.sh"
    fi
fi
log "engine: $engine, tag: $tag"

image_exists() {
    if [ "$engine" = podman ]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

# --- build context ----------------------------------------------------------------------
# A filtered copy of the repository root: the Dockerfiles COPY repo-relative paths, and the
# real root holds virtualenvs and container storage that must not be sent to a daemon.
build_dir="${KUBESERVE_BUILD_DIR:-$repo/.build}"
context="$build_dir/image-context"
rm -rf "$context"
mkdir -p "$context"
(
    cd "$repo"
    files=(pyproject.toml operator images)
    [ -f README.md ] && files+=(README.md)
    [ -f LICENSE ] && files+=(LICENSE)
    tar -c --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' \
        --exclude='images/torchserve/wheels/*.whl' "${files[@]}"
) | tar -x -C "$context"

# torch for the torchserve image: a local CPU wheel when there is one (see its Dockerfile).
find_torch_wheel() {
    if [ -n "${TORCH_WHEEL:-}" ]; then echo "$TORCH_WHEEL"; return; fi
    local dirs dir
    dirs="${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true)"
    for dir in $dirs; do
        dir="${dir#file://}"
        [ -d "$dir" ] || continue
        compgen -G "$dir/torch-2.13.0+cpu-*.whl" | head -n1 && return
    done
    return 0
}
for name in "${selected[@]}"; do
    if [ "$name" = torchserve ]; then
        wheel="$(find_torch_wheel)"
        if [ -n "$wheel" ]; then
            log "torchserve: using the local wheel $(basename "$wheel")"
            ln "$wheel" "$context/images/torchserve/wheels/" 2>/dev/null \
                || cp "$wheel" "$context/images/torchserve/wheels/"
        else
            log "torchserve: no local CPU torch wheel; torch comes from the package index"
        fi
    fi
done

# --- build ------------------------------------------------------------------------------
build_one() { # NAME REF [build args...]
    local name="$1" ref="$2" start seconds logfile
    shift 2
    logfile="$build_dir/build-$name.log"
    start="$(date +%s.%N)"
    log "building $ref (log: $logfile)"
    if ! "$engine" build "${pull_args[@]}" -f "$context/images/$name/Dockerfile" -t "$ref" \
        --build-arg "VERSION=$tag" "$@" "$context" >"$logfile" 2>&1; then
        tail -n 40 "$logfile" >&2
        die "building $ref failed"
    fi
    seconds="$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 1))" "$(date +%s.%N)" "$start")"
    printf 'built %s %.1f s\n' "$ref" "$seconds"
}

total_start="$(date +%s)"
for name in "${selected[@]}"; do
    variants=("")
    if [ "$gpu" = 1 ] && [[ " ${gpu_images[*]} " == *" $name "* ]]; then variants+=("-gpu"); fi
    for variant in "${variants[@]}"; do
        args=()
        case "$name$variant" in
            onnxruntime-gpu) args=(--build-arg "ONNXRUNTIME_PACKAGE=$onnxruntime_gpu") ;;
            tfserving-gpu) args=(--build-arg "TFSERVING_VARIANT=-gpu") ;;
        esac
        if [ "$name" = tfserving ] && [ "${pull:-missing}" = never ] \
            && ! image_exists "$tfserving_base$variant"; then
            if [ "$skip_missing" = 1 ]; then
                log "skipping tfserving$variant: its base $tfserving_base$variant is not local and pulls are off"
                continue
            fi
            die "tfserving$variant needs $tfserving_base$variant (not local, pulls off); use --skip-missing-base"
        fi
        build_one "$name" "$prefix/$name:$tag$variant" ${args[@]+"${args[@]}"}
    done
done
log "total $(($(date +%s) - total_start)) s"
