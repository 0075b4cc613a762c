#!/usr/bin/env bash
# Creates the Secrets the Helm chart (helm/delinkcious) mounts, with random values, under the names the chart uses
# by default (secrets.* empty), for release RELEASE in NAMESPACE:
#   k8s/create-secrets.sh [NAMESPACE] [RELEASE]          defaults: default, delinkcious
#
#   <fullname>-caller-tokens       one key per calling service: api-gateway, social-graph, news
#   <fullname>-database-passwords  one key per service with a database (link, user, social-graph), and postgres
#                                  (the PostgreSQL superuser's)
#   <fullname>-redis               redis-password
#   <fullname>-gateway             session-secret, oauth-client-secret
#   <fullname>-page-tokens         one key per service that signs page tokens: link, social-graph, news
# <fullname> is the chart's: RELEASE when it contains "delinkcious", else RELEASE-delinkcious (FULLNAME=... when the
# release sets fullnameOverride).
#
# Idempotent: an existing Secret keeps every value it has; only missing Secrets and missing keys are generated
# (kubectl create secret generic ... --dry-run=client -o yaml | kubectl apply -f -). Values are 32 random bytes in
# hex (openssl rand, else head -c from /dev/urandom), written to files in a private temporary folder that is removed
# on exit: no value is ever on a command line. The namespace is created when missing.
#
# The OAuth app's real secret (GitHub, an OIDC provider): OAUTH_CLIENT_SECRET_FILE=/path/to/file replaces the
# gateway Secret's oauth-client-secret (the random one only suits the development identity provider).
# KUBECTL (default kubectl) and KUBECONFIG are honoured.
set -euo pipefail

namespace=${1:-default}
release=${2:-delinkcious}
kubectl=${KUBECTL:-kubectl}
# shellcheck source-path=SCRIPTDIR source=chart-names.sh
. "$(dirname "${BASH_SOURCE[0]}")/chart-names.sh"
fullname=$(chart_fullname "$release")

# The services' facts these keys follow from are in services/catalogue.py (tests/test_helm_chart.py checks them).
caller_keys=(api-gateway social-graph news)
database_keys=(postgres link user social-graph)
page_token_keys=(link social-graph news)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

log() { printf '[create-secrets] %s\n' "$*" >&2; }

random_value() {
  if command -v openssl >/dev/null; then
    openssl rand -hex 32
  else
    head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n'
    echo
  fi
}

# ensure_secret NAME KEY...: keeps the Secret's existing keys, generates the missing ones, applies when any was missing.
# A key given as KEY=FILE takes its value from FILE, replacing an existing one.
ensure_secret() {
  local name=$1 dir=$work/$1 exists spec key source value missing=() args=()
  shift
  mkdir -p "$dir"
  exists=$("$kubectl" --namespace "$namespace" get secret "$name" --ignore-not-found -o name)
  for spec in "$@"; do
    key=${spec%%=*}
    source=
    [[ $spec == *=* ]] && source=${spec#*=}
    if [[ -n $source ]]; then
      cp -- "$source" "$dir/$key"
      missing+=("$key")
      args+=("--from-file=$key=$dir/$key")
      continue
    fi
    value=
    if [[ -n $exists ]]; then
      value=$("$kubectl" --namespace "$namespace" get secret "$name" \
        -o go-template="{{with index .data \"$key\"}}{{.}}{{end}}")
    fi
    if [[ -n $value ]]; then
      printf '%s' "$value" | base64 -d >"$dir/$key"
    else
      random_value | tr -d '\n' >"$dir/$key"
      missing+=("$key")
    fi
    args+=("--from-file=$key=$dir/$key")
  done
  if ((${#missing[@]} == 0)); then
    log "secret/$name: kept (it has every key)"
    return 0
  fi
  "$kubectl" --namespace "$namespace" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml \
    | "$kubectl" label --local -f - -o yaml app.kubernetes.io/part-of=delinkcious \
        "app.kubernetes.io/instance=$release" \
    | "$kubectl" --namespace "$namespace" apply -f - >/dev/null
  log "secret/$name: ${exists:+updated, }set ${missing[*]}"
}

if [[ -z $("$kubectl" get namespace "$namespace" --ignore-not-found -o name) ]]; then
  "$kubectl" create namespace "$namespace" >/dev/null
  log "namespace/$namespace: created"
fi

ensure_secret "$fullname-caller-tokens" "${caller_keys[@]}"
ensure_secret "$fullname-database-passwords" "${database_keys[@]}"
ensure_secret "$fullname-redis" redis-password
oauth="oauth-client-secret"
[[ -z ${OAUTH_CLIENT_SECRET_FILE:-} ]] || oauth="oauth-client-secret=$OAUTH_CLIENT_SECRET_FILE"
ensure_secret "$fullname-gateway" session-secret "$oauth"
ensure_secret "$fullname-page-tokens" "${page_token_keys[@]}"
