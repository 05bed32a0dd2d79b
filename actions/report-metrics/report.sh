#!/usr/bin/env bash
# Runs `wms report pr` (inputs as INPUT_*) or builds the `wms report deployment` command line from
# IN_* variables, one array element per value (never eval'd, never word-split). The Markdown wms
# prints is already in the job summary, so stdout is dropped.
set -euo pipefail

case "${IN_COMMAND:-pr}" in
  pr)
    exec wms report pr >/dev/null
    ;;
  deployment)
    args=(report deployment --environment "${IN_ENVIRONMENT:-}" --state "${IN_STATE:-}")
    flag() { # flag NAME VALUE: --NAME VALUE when VALUE is not empty
      if [ -n "$2" ]; then args+=("--$1" "$2"); fi
    }
    flag url "${IN_URL:-}"
    flag ref "${IN_REF:-}"
    flag deployment-id "${IN_DEPLOYMENT_ID:-}"
    flag description "${IN_DESCRIPTION:-}"
    exec wms "${args[@]}" >/dev/null
    ;;
  *)
    echo "::error::report-metrics: command must be pr or deployment" >&2
    exit 2
    ;;
esac
