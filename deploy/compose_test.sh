#!/usr/bin/env bash
# The compose deployment for real: Docker images built offline, the stack of docker-compose.yml
# up on loopback, a 2-round secure FedKD across 3 SuperNode containers run with `flwr run`,
# checked, torn down; then the same with the TLS override (deploy/compose.tls.yml).
#
#   deploy/compose_test.sh            (as root; .ci/run calls it after `make test`)
#
# On a machine without Docker it installs Debian's docker.io, docker-compose and debootstrap
# (apt-get update once first), starts `dockerd --iptables=false --bridge=none` if no engine
# answers and stops it again at the end. Images (and the debootstrap tree and wheelhouse in
# $FEDKD_DOCKER_CACHE) are kept for the next run. The checks are tests/test_compose.py's
# `docker` tests (FEDKD_COMPOSE_TEST=1 enables them).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
CACHE="${FEDKD_DOCKER_CACHE:-/var/cache/fedkd-docker}"
export FEDKD_DOCKER_CACHE="$CACHE"
log() { printf '[compose_test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
mkdir -p "$CACHE"
start=$(date +%s)

if [ "$(id -u)" -ne 0 ] && ! docker info >/dev/null 2>&1; then
  echo "compose_test.sh: no Docker engine answers and this is not root (needed to install" \
       "and start dockerd)" >&2
  exit 1
fi
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

DOCKERD_PID=""
stop_dockerd() {
  if [ -n "$DOCKERD_PID" ]; then
    log "stopping the dockerd this script started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  fi
}
trap stop_dockerd EXIT
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd --iptables=false --bridge=none (log: $CACHE/dockerd.log)"
  dockerd --iptables=false --bridge=none >"$CACHE/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$CACHE/dockerd.log" >&2; exit 1; }
fi

deploy/build_images.sh
log "images ready after $(( $(date +%s) - start )) s; running the stack tests"
FEDKD_COMPOSE_TEST=1 "$PYTHON" -m pytest -q -m docker -p no:cacheprovider \
  tests/test_compose.py "$@"
log "done in $(( $(date +%s) - start )) s"
