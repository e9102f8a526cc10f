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
rules="$(dirname "$0")/alerts.yaml"
[ -r "$rules" ] || { echo "prometheusrule.sh: cannot read $rules" >&2; exit 1; }
# Every label is checked before anything is printed: half a manifest piped to kubectl
# would apply nothing useful.
for label in "$@"; do
  case "$label" in
    *=*[!A-Za-z0-9_.-]* | *[!A-Za-z0-9_./-]*=* | =*)
      echo "prometheusrule.sh: '$label' is not a Kubernetes label NAME=VALUE" >&2; exit 2 ;;
    ?*=*) ;;
    *) echo "prometheusrule.sh: a label is NAME=VALUE, not '$label'" >&2; exit 2 ;;
  esac
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
  printf '    %s: "%s"\n' "${label%%=*}" "${label#*=}"
done
echo "spec:"
# Everything from `groups:` on, indented under spec.
sed -n '/^groups:/,$p' "$rules" | sed 's/^./  &/'
