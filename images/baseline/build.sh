#!/usr/bin/env bash
# Builds the images of the lab's own stack (compose/baseline.yml): muster-baseline/ha,
# muster-baseline/webapp and muster-baseline/collector, tagged $MUSTER_IMAGE_TAG (default
# dev), from Debian packages on $BASE_IMAGE (default muster/base:bookworm; built by
# images/base/build.sh when missing). Needs no container registry and no npm registry, and
# no muster binary. Idempotent: Docker's cache makes a second run fast.
# Usage: images/baseline/build.sh [docker-compose build options, e.g. --no-cache]
# Then: docker-compose -f compose/baseline.yml -p baseline up -d --scale webapp=3
# (see the top of compose/baseline.yml for the interface).
set -euo pipefail
cd "$(dirname "$0")/../.."
export BASE_IMAGE=${BASE_IMAGE:-muster/base:bookworm}
say() { printf '==> %s\n' "$*"; }

command -v docker-compose >/dev/null || {
  say "installing docker-compose"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}
images/base/build.sh --if-missing "$BASE_IMAGE"
say "building the baseline's images (tag ${MUSTER_IMAGE_TAG:-dev})"
docker-compose -f compose/baseline.yml build --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@"
say "images ready"
