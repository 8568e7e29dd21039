# Sourced by deploy/image.sh and deploy/deploy-test.sh: podman as it runs on these machines (Debian 12,
# root, a hybrid cgroup tree, no container registry reachable).
# shellcheck shell=bash

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# rlimits cannot be set here and crun refuses the hybrid cgroup tree: deploy/podman/containers.conf says
# so to every podman command, podman-compose's included.
export CONTAINERS_CONF="${CONTAINERS_CONF:-$DEPLOY_DIR/podman/containers.conf}"

# Debian's podman, runc, podman-compose and debootstrap, installed with apt-get when one is missing.
ensure_podman() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || test -x /usr/sbin/runc || missing+=(runc)
  command -v podman-compose >/dev/null 2>&1 || missing+=(podman-compose)
  command -v debootstrap >/dev/null 2>&1 || test -x /usr/sbin/debootstrap || missing+=(debootstrap)
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    sudo=sudo
    echo "not root: installing ${missing[*]} with sudo apt-get (podman here runs as root: rootless needs subuids)"
  else
    echo "installing Debian's ${missing[*]}"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Seconds since the epoch with a fraction, for the wall times the scripts print.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
