#!/usr/bin/env bash
# Builds everything the lab runs, from source, without a container registry:
#   1. muster as a static binary (copied to images/.build/muster for the Docker builds),
#   2. the Debian bookworm base image, when $BASE_IMAGE is not present already,
#   3. the images of compose/docker-compose.yml.
# Idempotent: Docker's cache and cargo's make a second run fast.
set -euo pipefail
cd "$(dirname "$0")/.."
export BASE_IMAGE=${BASE_IMAGE:-muster/base:bookworm}
say() { printf '==> %s\n' "$*"; }

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "building static muster"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu
mkdir -p images/.build
cp target/x86_64-unknown-linux-gnu/release/muster images/.build/muster

images/base/build.sh --if-missing "$BASE_IMAGE"

say "building the lab's images"
# A build mounts no secret, but docker-compose warns about a secret file that does not exist
# yet (compose/lab creates the lab's gossip key before `up`): an empty placeholder stands in.
if [ ! -f "${MUSTER_GOSSIP_KEY_FILE:-compose/.secrets/gossip.key}" ]; then
  placeholder=$(mktemp)
  trap 'rm -f "$placeholder"' EXIT
  export MUSTER_GOSSIP_KEY_FILE=$placeholder
fi
docker-compose -f compose/docker-compose.yml build --build-arg "BASE_IMAGE=$BASE_IMAGE"
say "images ready"
