#!/usr/bin/env bash
# Entrypoint of the PostgreSQL stand-in (k8s/images/stand-ins/Dockerfile): the subset of the official postgres
# image's entrypoint the deployment uses.
# - A first argument starting with `-` gets `postgres` prepended; any other command is run as it is.
# - For `postgres`: started as root, it makes PGDATA (default /var/lib/postgresql/data) and the socket folder
#   the postgres user's (uid/gid 999) and runs itself again as that user (setpriv, util-linux); started as uid 999
#   (e.g. with fsGroup 999 on a volume) it goes on directly.
# - On an empty PGDATA it runs initdb: superuser `postgres` with the password of POSTGRES_PASSWORD_FILE (or
#   POSTGRES_PASSWORD), UTF-8, listen_addresses='*' (the configuration sample says so), and scram-sha-256 for
#   every TCP connection, loopback included (stricter than the official image, which trusts loopback); the local
#   socket is trusted, as in the official image. POSTGRES_HOST_AUTH_METHOD and POSTGRES_INITDB_ARGS as there.
# - Then it execs the command, so the server is PID 1 and gets the stop signal itself.
# The password is read from the file into initdb's --pwfile only: never on a command line or in the server's
# environment.
set -euo pipefail

if [[ ${1:-} == -* ]]; then
  set -- postgres "$@"
fi

# The value of NAME, or of the file NAME_FILE names (not both), as the official image's file_env.
secret() {
  local name=$1 file_variable="$1_FILE"
  if [[ -n ${!name:-} && -n ${!file_variable:-} ]]; then
    echo "error: both $name and $file_variable are set (but are exclusive)" >&2
    exit 1
  fi
  if [[ -n ${!file_variable:-} ]]; then
    cat -- "${!file_variable}"
  else
    printf '%s' "${!name:-}"
  fi
}

initialise() {
  local password auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256} options=()
  password=$(secret POSTGRES_PASSWORD)
  if [[ -z $password && $auth != trust ]]; then
    cat >&2 <<'MESSAGE'
error: the database is uninitialised and no superuser password is given: set POSTGRES_PASSWORD_FILE (a file
holding the password of `postgres`), or POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust (never do that).
MESSAGE
    exit 1
  fi
  read -ra options <<<"${POSTGRES_INITDB_ARGS:-}"
  options=(--username=postgres --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host="$auth"
           "${options[@]}")
  if [[ -n $password ]]; then
    initdb "${options[@]}" --pwfile=<(printf '%s\n' "$password")
  else
    initdb "${options[@]}"
  fi
  printf '\n# Every address, as the official image.\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  echo "PostgreSQL init process complete; ready for start up." >&2
}

if [[ ${1:-} == postgres ]]; then
  : "${PGDATA:=/var/lib/postgresql/data}"
  export PGDATA
  if [[ $(id -u) == 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA"
    chmod 03775 /var/run/postgresql
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
  fi
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" 2>/dev/null || :
  if [[ ! -s $PGDATA/PG_VERSION ]]; then
    initialise
  fi
fi

exec "$@"
