#!/usr/bin/env bash
# Docker for CI (called by .ci/run): a running engine and the offline base image the docker
# runner's tests build step images on. Idempotent and quick when both are already there.
#
#   1. containers/ensure-docker.sh installs Debian's docker.io if dockerd is missing and starts
#      dockerd if `docker info` fails (root only; no systemd needed).
#   2. containers/build-base-image.sh builds conveyor/python-base:3.11 (or $CONVEYOR_BASE_IMAGE)
#      with debootstrap + `docker import` -- no registry involved -- unless it exists.
#   3. A smoke test: a container of the base image runs Python as the step user, offline.
#
# Afterwards tests marked `docker` run for real; under CONVEYOR_CI_STRICT=1 they fail rather
# than skip if either part is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${CONVEYOR_BASE_IMAGE:-conveyor/python-base:3.11}

containers/ensure-docker.sh
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "docker-setup: base image $tag exists" >&2
else
    containers/build-base-image.sh --tag "$tag" >/dev/null
fi
docker run --rm --network none --user 1000:1000 "$tag" \
    python3 -c 'import sys; print("docker-setup: base image python", sys.version.split()[0])' >&2
