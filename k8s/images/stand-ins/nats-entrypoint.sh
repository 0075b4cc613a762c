#!/usr/bin/env bash
# Entrypoint of the NATS stand-in (k8s/images/stand-ins/Dockerfile), as the official nats image's: a first
# argument starting with `-` (or none) gets `nats-server` prepended; any other command is run as it is, exec'd,
# so it gets the stop signal itself. Unlike the official image, `nats-server` never runs as root: started as root,
# it makes /data (the JetStream store, `--store_dir /data`) the nats user's (uid/gid 999) and runs itself again
# as that user (setpriv, util-linux).
set -euo pipefail

if [[ $# -eq 0 || ${1} == -* ]]; then
  set -- nats-server "$@"
fi

if [[ $1 == nats-server && $(id -u) == 0 ]]; then
  mkdir -p /data
  find /data \! -user nats -exec chown nats:nats '{}' +
  exec setpriv --reuid=nats --regid=nats --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

exec "$@"
