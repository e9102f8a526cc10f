#!/bin/sh
# Prints alerts.yaml as a PrometheusRule for the Prometheus Operator, so the rules exist
# in one file only:
#
#   deploy/prometheus/prometheusrule.sh | kubectl apply -n storage -f -
#   deploy/prometheus/prometheusrule.sh release=prometheus | kubectl apply -n storage -f -
#
# Each NAME=VALUE argument becomes a label of the PrometheusRule (for a Prometheus whose
# ruleSelector asks for one).
set -eu
# The bracket ranges below mean ASCII only in the C locale.
export LC_ALL=C
rules="$(dirname "$0")/alerts.yaml"
[ -r "$rules" ] || { echo "prometheusrule.sh: cannot read $rules" >&2; exit 1; }
# Every label is checked before anything is printed (half a manifest piped to kubectl
# would apply nothing useful), against Kubernetes' own rules: a name is an optional DNS
# subdomain prefix and `/`, then 1 to 63 alphanumerics, `-`, `_` or `.`, starting and
# ending alphanumeric; a value is empty or the same 1 to 63.
segment='[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?'
prefix='[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'
refuse() { echo "prometheusrule.sh: $1" >&2; exit 2; }
newline='
'
seen=' '
for label in "$@"; do
  case "$label" in
    *"$newline"*) refuse "a label is one line" ;;
    *=*) ;;
    *) refuse "a label is NAME=VALUE, not '$label'" ;;
  esac
  name=${label%%=*}
  value=${label#*=}
  case "$name" in
    */*) key=${name#*/}; domain=${name%/*} ;;
    *) key=$name; domain= ;;
  esac
  printf '%s\n' "$key" | grep -Eqx "$segment" ||
    refuse "'$name' is not a label name (1 to 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
  if [ -n "$domain" ] || [ "$name" != "$key" ]; then
    [ ${#domain} -le 253 ] && printf '%s\n' "$domain" | grep -Eqx "$prefix" ||
      refuse "'$domain' in '$name' is not a DNS subdomain prefix"
  fi
  [ -z "$value" ] || printf '%s\n' "$value" | grep -Eqx "$segment" ||
    refuse "'$value' is not a label value (up to 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
  case "$name" in
    app.kubernetes.io/name | app.kubernetes.io/part-of) refuse "'$name' is set already" ;;
  esac
  case "$seen" in
    *" $name "*) refuse "'$name' is given twice" ;;
  esac
  seen="$seen$name "
done
cat <<'HEAD'
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: pageserver-controller
  labels:
    app.kubernetes.io/name: pageserver-controller
    app.kubernetes.io/part-of: neon-storage
HEAD
for label in "$@"; do
  # Quoted: a bare `on` or `no` would be read as a boolean.
  printf '    "%s": "%s"\n' "${label%%=*}" "${label#*=}"
done
echo "spec:"
# Everything from `groups:` on, indented under spec.
sed -n '/^groups:/,$p' "$rules" | sed 's/^./  &/'
