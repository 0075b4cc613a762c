#!/usr/bin/env bash
# Entrypoint of the Redis stand-in (k8s/images/stand-ins/Dockerfile), as the official redis image's:
# - a first argument starting with `-` (or ending in `.conf`) gets `redis-server` prepended; any other command
#   (e.g. `sh -c 'exec redis-server - ... <<EOF ...'`, the password as configuration on stdin) is run as it is;
# - `redis-server` started as root makes the working folder (/data) the redis user's (uid/gid 999) and runs
#   itself again as that user (setpriv, util-linux); any other command runs as the container's user;
# - a umask of 0022 becomes 0077, and the command is exec'd, so it gets the stop signal itself.
set -euo pipefail

if [[ $# -eq 0 || ${1} == -* || ${1} == *.conf ]]; then
  set -- redis-server "$@"
fi

if [[ $1 == redis-server && $(id -u) == 0 ]]; then
  find . \! -user redis -exec chown redis:redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

if [[ $(umask) == 0022 ]]; then
  umask 0077
fi

exec "$@"
