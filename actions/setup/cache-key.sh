#!/usr/bin/env bash
# Prints `key=<version>-<id>` to $GITHUB_OUTPUT: the cache key of the installed binaries, named
# after the version of wms this action is.
#
# `hashFiles()` cannot be used: it reads only inside the workspace and rejects `..`, and the
# action's files live outside it (under the runner's _actions folder), so a hashFiles key was
# constant and stale binaries came back. Instead:
# - a published action repository (release.env next to this script, written by
#   tools/publish-actions.sh) is one release: `<version>-release`;
# - the monorepo at an immutable ref (a full commit sha, or the release tag v<version>, given in
#   WMS_SETUP_REF = github.action_ref): `<version>-<ref>`;
# - anything else (a branch, a moving tag such as v1, `uses: ./actions/…` with no ref — composite
#   actions may also see an empty github.action_ref, actions/runner#2473): `<version>-src-<hash>`
#   of the action's own source, so every change of the source is a new key.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ref="${WMS_SETUP_REF:-}"
if [ -f "$here/release.env" ]; then
  version="$(sed -n 's/^WMS_RELEASE_VERSION=\([0-9A-Za-z.+-]*\)$/\1/p' "$here/release.env")"
  key="${version}-release"
else
  src="$(cd "$here/../.." && pwd)"
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/Cargo.toml" | head -n1)"
  if [[ "$ref" =~ ^[0-9a-f]{40}$ || "$ref" == "v$version" ]]; then
    key="${version}-${ref}"
  else
    cd "$src"
    inputs=()
    for p in Cargo.toml Cargo.lock requirements.lock build.rs src; do
      [ -e "$p" ] && inputs+=("$p")
    done
    hash="$(find "${inputs[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)"
    key="${version}-src-${hash}"
  fi
fi
if [ -z "$version" ]; then
  echo "::error::wms setup: no version found (Cargo.toml or release.env next to the action); the action's files are incomplete" >&2
  exit 1
fi
echo "key=$key" >> "${GITHUB_OUTPUT:-/dev/stdout}"
