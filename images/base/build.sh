#!/usr/bin/env bash
# Builds the Debian bookworm base image without any container registry: debootstrap a minimal
# root file system, then `docker import` it.
# Usage: images/base/build.sh [--if-missing] [TAG]   (--if-missing: nothing to do when TAG exists)
set -euo pipefail
if_missing=
if [ "${1:-}" = --if-missing ]; then if_missing=1; shift; fi
tag=${1:-muster/base:bookworm}
if [ -n "$if_missing" ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "==> base image $tag present"
  exit 0
fi
[ -n "$if_missing" ] && echo "==> base image $tag missing: building it"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
root=$(mktemp -d /tmp/muster-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "==> debootstrap --variant=minbase bookworm ($mirror), about 30 s"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2
  echo "images/base/build.sh: debootstrap failed (full log: $root.log)" >&2
  exit 1
}
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
# Keep images small: no apt caches, no documentation from later installs.
cat >"$root/etc/apt/apt.conf.d/90muster" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
cat >"$root/etc/dpkg/dpkg.cfg.d/90muster" <<'DPKG'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
DPKG
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
echo "==> docker import as $tag"
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
rm -f "$root.log"
echo "==> $tag ready"
