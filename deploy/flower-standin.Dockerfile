# Local stand-ins for Flower's official images flwr/superlink, flwr/supernode and
# flwr/superexec, for machines that cannot pull them (no registry). Same user (`app`, uid 49999),
# working directory (/app), virtual environment (/python/venv on PATH) and entrypoints as the
# official images; Flower pinned to FLWR_VERSION. Built by deploy/build_images.sh:
#
#   docker build -f deploy/flower-standin.Dockerfile --target superlink \
#       --build-arg BASE_IMAGE=fedkd-base/debian:bookworm -t fedkd-standin/superlink:1.42.0 .
#
# BASE_IMAGE needs python3 (>= 3.11) with the venv module; PIP_INSTALL_OPTIONS tells pip where
# the wheels are (e.g. "--no-index --find-links http://127.0.0.1:8765/" for a local wheelhouse).
ARG BASE_IMAGE=fedkd-base/debian:bookworm
FROM ${BASE_IMAGE} AS base
ARG FLWR_VERSION=1.42.0
ARG PIP_INSTALL_OPTIONS=""
RUN groupadd --gid 49999 app \
    && useradd --uid 49999 --gid 49999 --home-dir /app --create-home --shell /bin/sh app \
    && python3 -m venv /python/venv \
    && chown -R app:app /python/venv
ENV PATH=/python/venv/bin:${PATH} \
    HOME=/app \
    PYTHONUNBUFFERED=1
USER app
WORKDIR /app
RUN python -m pip install --no-cache-dir ${PIP_INSTALL_OPTIONS} "flwr==${FLWR_VERSION}" \
    && flwr --version

FROM base AS superlink
ENTRYPOINT ["flower-superlink"]

FROM base AS supernode
ENTRYPOINT ["flower-supernode"]

FROM base AS superexec
ENTRYPOINT ["flower-superexec"]
