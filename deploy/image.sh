#!/usr/bin/env bash
# `make image`: the project's image (deploy/Dockerfile) and the Redis image deploy/compose.yaml runs, both
# from a Debian bookworm base built here with debootstrap and `podman import`: no registry is pulled from.
# pip installs from the package registries during the build (--network host); torch is the CPU wheel of
# TORCH_WHEEL_DIR when it holds one (this machine's /opt/wheels), else PyTorch's CPU index.
#
#   FEDLORA_IMAGE   the image's tag (fedlora:0.1.0)
#   REDIS_IMAGE     the Redis image's tag (fedlora-redis:7-bookworm)
#   BASE_IMAGE      the base's tag (fedlora-base:bookworm), built once: remove it to build it again
#   DEBIAN_MIRROR   where debootstrap downloads from (http://deb.debian.org/debian)
set -euo pipefail
source "$(dirname "$0")/podman.sh"
ROOT="$(cd "$DEPLOY_DIR/.." && pwd)"
FEDLORA_IMAGE="${FEDLORA_IMAGE:-fedlora:0.1.0}"
REDIS_IMAGE="${REDIS_IMAGE:-fedlora-redis:7-bookworm}"
BASE_IMAGE="${BASE_IMAGE:-fedlora-base:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TORCH_WHEEL_DIR="${TORCH_WHEEL_DIR:-/opt/wheels}"

ensure_podman
started=$(now)

if podman image exists "$BASE_IMAGE"; then
  echo "base $BASE_IMAGE: cached"
else
  echo "base $BASE_IMAGE: debootstrap bookworm (minbase, python3, python3-venv, ca-certificates)"
  step=$(now)
  rootfs="$(mktemp -d /var/tmp/fedlora-base.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # The package lists and caches are not needed in an image; the build stages run apt-get update again.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "base $BASE_IMAGE: built in $(elapsed "$step") s"
fi

# torch from the host's wheel folder when it has the pinned CPU wheel (mounted read-only into the build).
build_args=()
if compgen -G "$TORCH_WHEEL_DIR/torch-2.13.0+cpu-*.whl" >/dev/null; then
  build_args=(--volume "$TORCH_WHEEL_DIR:/opt/torch-wheels:ro" --build-arg TORCH_WHEEL_DIR=/opt/torch-wheels)
  echo "torch: the CPU wheel in $TORCH_WHEEL_DIR"
else
  echo "torch: PyTorch's CPU index (no torch-2.13.0+cpu wheel in $TORCH_WHEEL_DIR)"
fi

# pip in the build trusts what the host trusts (PIP_CA_BUNDLE, default the system bundle), for registries
# reached through a proxy that re-signs TLS: mounted read-only, named by a build argument, never copied
# into the image.
PIP_CA_BUNDLE="${PIP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$PIP_CA_BUNDLE" ]; then
  build_args+=(--volume "$PIP_CA_BUNDLE:/etc/fedlora-build/pip-ca.crt:ro" --build-arg PIP_CERT=/etc/fedlora-build/pip-ca.crt)
fi

step=$(now)
nice -n 10 podman build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -f "$DEPLOY_DIR/redis.Dockerfile" -t "$REDIS_IMAGE" "$DEPLOY_DIR" >/dev/null
echo "redis $REDIS_IMAGE: $(elapsed "$step") s"

step=$(now)
nice -n 10 podman build --network host --build-arg "PYTHON_IMAGE=localhost/$BASE_IMAGE" "${build_args[@]}" \
  -f "$DEPLOY_DIR/Dockerfile" -t "$FEDLORA_IMAGE" "$ROOT"
echo "image $FEDLORA_IMAGE: $(elapsed "$step") s"

size() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
echo "== make image: $(elapsed "$started") s in all"
echo "   $FEDLORA_IMAGE  $(size "$FEDLORA_IMAGE")  user $(podman image inspect --format '{{.Config.User}}' "$FEDLORA_IMAGE")"
echo "   $REDIS_IMAGE  $(size "$REDIS_IMAGE")"
echo "   $BASE_IMAGE  $(size "$BASE_IMAGE")"
