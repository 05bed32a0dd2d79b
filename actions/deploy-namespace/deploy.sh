#!/usr/bin/env bash
# Builds the `wms deploy` command line of the deploy-namespace action from IN_* variables, one
# array element per value (never eval'd, never word-split), and runs it.
set -euo pipefail

command="${IN_COMMAND:-apply}"
case "$command" in
  apply|promote|rollback|scale|config|status|cleanup|debug) ;;
  *) echo "::error::deploy-namespace: command must be apply, promote, rollback, scale, config, status, cleanup or debug" >&2; exit 2 ;;
esac

args=(deploy "$command")
flag() { # flag NAME VALUE: --NAME VALUE when VALUE is not empty
  if [ -n "$2" ]; then args+=("--$1" "$2"); fi
}
flag context "${IN_CONTEXT:-}"
flag eks-cluster "${IN_EKS_CLUSTER:-}"
# --region is the region of --eks-cluster; wms refuses it alone (a kubeconfig needs none).
if [ -n "${IN_EKS_CLUSTER:-}" ]; then flag region "${IN_REGION:-}"; fi
flag namespace-prefix "${IN_NAMESPACE_PREFIX:-}"
flag system-namespace "${IN_SYSTEM_NAMESPACE:-}"
flag lock-timeout "${IN_LOCK_TIMEOUT:-}"
if [ "${IN_FORCE:-false}" = "true" ]; then args+=(--force); fi

case "$command" in
  apply)
    flag image "${IN_IMAGE:-}"
    flag version "${IN_VERSION:-}"
    flag model "${IN_MODEL:-}"
    flag onnx "${IN_ONNX:-}"
    flag replicas "${IN_REPLICAS:-}"
    flag wait "${IN_WAIT:-}"
    flag smoke-test "${IN_SMOKE_TEST:-}"
    # A photo's smoke test pings first anyway; wms refuses both flags together.
    if [ "${IN_SMOKE_PING:-false}" = "true" ] && [ -z "${IN_SMOKE_TEST:-}" ]; then args+=(--smoke-ping); fi
    flag config "${IN_CONFIG:-}"
    if [ "${IN_ALLOW_TAG:-false}" = "true" ]; then args+=(--allow-tag); fi
    ;;
  promote|debug)
    flag version "${IN_VERSION:-}"
    flag model "${IN_MODEL:-}"
    ;;
  rollback)
    flag model "${IN_MODEL:-}"
    ;;
  scale)
    flag version "${IN_VERSION:-}"
    flag model "${IN_MODEL:-}"
    flag replicas "${IN_REPLICAS:-}"
    flag wait "${IN_WAIT:-}"
    ;;
  config)
    flag version "${IN_VERSION:-}"
    flag model "${IN_MODEL:-}"
    flag wait "${IN_WAIT:-}"
    while IFS= read -r line; do
      line="${line%$'\r'}"
      if [ -n "${line// /}" ]; then args+=(--set "$line"); fi
    done <<< "${IN_SET:-}"
    ;;
  status)
    flag model "${IN_MODEL:-}"
    args+=(--output json)
    ;;
  cleanup)
    flag model "${IN_MODEL:-}"
    flag keep "${IN_KEEP:-}"
    flag wait "${IN_WAIT:-}"
    ;;
esac

exec wms "${args[@]}"
