#!/usr/bin/env bash
# Build every image the compose stack needs, offline, on a machine that cannot pull images.
#
#   deploy/build_images.sh            (as root or a docker user; a Docker engine must answer)
#
# 1. Base image fedkd-base/debian:bookworm: `debootstrap --variant=minbase bookworm` (with
#    python3, python3-venv, ca-certificates) imported with `docker import`.
# 2. A wheelhouse built on the host with the host's own pip settings (its local wheel folders,
#    index and CA bundle): flwr, the project's dependencies and the CPU build of PyTorch.
#    Served to the builds on 127.0.0.1 only, installed with --no-index --find-links.
# 3. flwr/superlink, flwr/supernode, flwr/superexec $FLWR_VERSION: pulled when a registry
#    answers, else local stand-ins (deploy/flower-standin.Dockerfile, tagged fedkd-standin/*).
# 4. The app image fedkd-superexec:$FLWR_VERSION from deploy/Dockerfile on top of (3).
#
# Images, the debootstrap tree and the wheelhouse are kept in $FEDKD_DOCKER_CACHE
# (default /var/cache/fedkd-docker) and in the engine, so a second run only rebuilds what
# changed. Every build uses the host network (there is no bridge). The image names chosen are
# written to $FEDKD_DOCKER_CACHE/images.env (SUPERLINK_IMAGE=..., read by deploy/compose_e2e.py).
set -euo pipefail
cd "$(dirname "$0")/.."

FLWR_VERSION="${FLWR_VERSION:-1.42.0}"
TORCH_REQUIREMENTS="${TORCH_REQUIREMENTS:-torch==2.13.0}"   # the CPU build on this disk
CACHE="${FEDKD_DOCKER_CACHE:-/var/cache/fedkd-docker}"
BASE_IMAGE="${FEDKD_BASE_IMAGE:-fedkd-base/debian:bookworm}"
APP_IMAGE="fedkd-superexec:${FLWR_VERSION}"
WHEEL_PORT="${FEDKD_WHEEL_PORT:-18765}"
PYTHON="${PYTHON:-python3}"
export DOCKER_BUILDKIT=0   # the classic builder ships with docker.io; BuildKit needs buildx

log() { printf '[build_images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
seconds_since() { echo $(( $(date +%s) - $1 )); }
mkdir -p "$CACHE"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base_image() {
  if have_image "$BASE_IMAGE"; then log "base image $BASE_IMAGE present"; return; fi
  local start; start=$(date +%s)
  if [ ! -d "$CACHE/rootfs" ]; then
    log "debootstrap bookworm into $CACHE/rootfs (minbase + python3)"
    rm -rf "$CACHE/rootfs.tmp"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$CACHE/rootfs.tmp" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
      > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$CACHE"/rootfs.tmp/var/cache/apt/archives/*.deb "$CACHE"/rootfs.tmp/var/lib/apt/lists/*
    mv "$CACHE/rootfs.tmp" "$CACHE/rootfs"
  fi
  tar -C "$CACHE/rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  log "base image $BASE_IMAGE built in $(seconds_since "$start") s"
}

requirements() {  # flwr (no simulation extra), the project's dependencies, PyTorch's CPU build
  "$PYTHON" - "$TORCH_REQUIREMENTS" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    if re.match(r"torch(vision)?\b", dep):
        continue
    print(dep.replace("flwr[simulation]", "flwr"))
print(*sys.argv[1].split(), sep="\n")
print("setuptools>=68\nwheel")  # the project's build backend, for `pip install .`
PY
}

build_wheelhouse() {
  local wanted; wanted="$(requirements)"
  if [ -f "$CACHE/wheels/requirements.txt" ] \
      && [ "$wanted" = "$(cat "$CACHE/wheels/requirements.txt")" ]; then
    log "wheelhouse $CACHE/wheels up to date"; return
  fi
  local start; start=$(date +%s)
  log "building the wheelhouse with the host's pip settings"
  mkdir -p "$CACHE/wheels"
  printf '%s\n' "$wanted" > "$CACHE/wheels/requirements.in"
  "$PYTHON" -m pip wheel -q -w "$CACHE/wheels" -r "$CACHE/wheels/requirements.in" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  "$PYTHON" -m pip download -q --no-index --find-links "$CACHE/wheels" -d "$CACHE/wheels" \
    -r "$CACHE/wheels/requirements.in" >/dev/null  # fails if anything is missing
  printf '%s\n' "$wanted" > "$CACHE/wheels/requirements.txt"
  log "wheelhouse built in $(seconds_since "$start") s ($(du -sh "$CACHE/wheels" | cut -f1))"
}

serve_wheelhouse() {  # a plain HTTP index on 127.0.0.1 for pip's --find-links
  "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$CACHE/wheels" "$WHEEL_PORT" \
    > "$CACHE/wheel-server.log" 2>&1 &
  WHEEL_SERVER=$!
  trap 'kill "$WHEEL_SERVER" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$WHEEL_PORT/')" \
        2>/dev/null; then return; fi
    sleep 0.2
  done
  log "wheel server on 127.0.0.1:$WHEEL_PORT did not start"; cat "$CACHE/wheel-server.log" >&2; exit 1
}

pull_official() {  # true when all three official images are present or pullable
  local image
  for image in superlink supernode superexec; do
    have_image "flwr/$image:$FLWR_VERSION" && continue
    timeout 60 docker pull -q "flwr/$image:$FLWR_VERSION" >/dev/null 2>&1 || return 1
  done
}

build_flower_images() {
  if [ "${FEDKD_STANDIN:-auto}" != "always" ] && pull_official; then
    log "official Flower images flwr/*:$FLWR_VERSION present"
    FLOWER_PREFIX="flwr"; return
  fi
  FLOWER_PREFIX="fedkd-standin"
  log "official Flower images cannot be pulled: building local stand-ins fedkd-standin/*"
  local image start
  for image in superlink supernode superexec; do
    start=$(date +%s)
    docker build -q --network host --target "$image" \
      --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg FLWR_VERSION="$FLWR_VERSION" \
      --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links http://127.0.0.1:$WHEEL_PORT/" \
      -t "fedkd-standin/$image:$FLWR_VERSION" - < deploy/flower-standin.Dockerfile >/dev/null
    log "fedkd-standin/$image:$FLWR_VERSION ready in $(seconds_since "$start") s"
  done
}

build_app_image() {
  local start; start=$(date +%s)
  # The build context is exactly what the Dockerfile copies (no .venv, runs or caches).
  tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
      pyproject.toml README.md deploy/Dockerfile fedkd clients server experiments \
    | docker build -q --network host -f deploy/Dockerfile \
        --build-arg BASE_IMAGE="$FLOWER_PREFIX/superexec:$FLWR_VERSION" \
        --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links http://127.0.0.1:$WHEEL_PORT/" \
        --build-arg TORCH_REQUIREMENTS="$TORCH_REQUIREMENTS" \
        --label org.fedkd.build=app -t "$APP_IMAGE" - >/dev/null
  # The previous app image, untagged by this build, is of no further use.
  docker image prune -f --filter label=org.fedkd.build=app >/dev/null
  log "$APP_IMAGE ready in $(seconds_since "$start") s"
}

main() {
  docker info >/dev/null 2>&1 || { log "no Docker engine answers (start dockerd first)"; exit 1; }
  local start; start=$(date +%s)
  build_base_image
  build_wheelhouse
  serve_wheelhouse
  build_flower_images
  build_app_image
  cat > "$CACHE/images.env" <<ENV
SUPERLINK_IMAGE=$FLOWER_PREFIX/superlink:$FLWR_VERSION
SUPERNODE_IMAGE=$FLOWER_PREFIX/supernode:$FLWR_VERSION
APP_IMAGE=$APP_IMAGE
ENV
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E "^($FLOWER_PREFIX/|fedkd-superexec:|${BASE_IMAGE%%:*}:)" >&2 || true
  log "all images ready in $(seconds_since "$start") s"
}

main "$@"
