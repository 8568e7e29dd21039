#!/bin/sh
# The image's entrypoint. One image, four roles; each takes its settings from FEDLORA_* variables
# (or the YAML file named by FEDLORA_CONFIG), never from arguments:
#   cloud      python -m cloud_server      (port FEDLORA_PORT, default 8700)
#   edge       python -m edge_aggregator   (port FEDLORA_PORT, default 8710)
#   client     python -m client_agent      (a hospital's agent; serves nothing)
#   bootstrap  python -m fedlora.bootstrap (one-shot: create the federation, issue each party its enrolment token)
#   pki        python -m fedlora.pki_setup (one-shot, before the cloud: the CA once, each party's TLS certificate)
#   store-users python -m fedlora.store_users (one-shot, before Redis: its ACL file, one user per tier)
# Anything else runs as given, e.g. `fedlora status` or `fedlora spec validate /etc/fedlora/federation.yaml`.
set -eu

role="${1:-}"
case "$role" in
  cloud) module=cloud_server ;;
  edge) module=edge_aggregator ;;
  client) module=client_agent ;;
  bootstrap) module=fedlora.bootstrap ;;
  pki) module=fedlora.pki_setup ;;
  store-users) module=fedlora.store_users ;;
  "")
    echo "usage: cloud | edge | client | bootstrap | pki | store-users | COMMAND [ARGS...]" >&2
    exit 64
    ;;
  *) exec "$@" ;;
esac

if [ "$#" -gt 1 ]; then
  echo "'$role' takes no arguments: its settings come from FEDLORA_* variables (see docs/operations.md)" >&2
  exit 64
fi
exec python -m "$module"
