#!/usr/bin/env bash
# Prints `key=<hash>` to $GITHUB_OUTPUT: the identity of the wms source this action runs, for the
# cache key of the built binaries. `hashFiles()` cannot be used for this: it reads only inside the
# workspace and rejects `..`, and the action's source lives outside it (under the runner's
# _actions folder), so a hashFiles key was constant and stale binaries were reused.
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$src"
inputs=()
for p in Cargo.toml Cargo.lock requirements.lock build.rs src; do
  [ -e "$p" ] && inputs+=("$p")
done
key="$(find "${inputs[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)"
echo "key=$key" >> "${GITHUB_OUTPUT:-/dev/stdout}"
