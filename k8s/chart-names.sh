# shellcheck shell=bash
# Sourced by k8s/create-secrets.sh and k8s/install.sh (sourced, not run): the chart's <fullname> for a release, as
# helm/delinkcious/templates/_helpers.tpl makes it (FULLNAME when the release sets fullnameOverride): the
# release name, plus "-delinkcious" unless it already contains it. Object names are <fullname>-<component>.
chart_fullname() {  # RELEASE
  if [[ -n ${FULLNAME:-} ]]; then
    echo "$FULLNAME"
  elif [[ $1 == *delinkcious* ]]; then
    echo "$1"
  else
    echo "$1-delinkcious"
  fi
}
