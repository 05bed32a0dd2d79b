#!/usr/bin/env bash
# Generates the repositories that `uses: wms/<name>@v1` resolves to: GitHub looks for action.yml
# at the ROOT of the repository wms/<name>, not in actions/<name>/ of this one. For each folder
# actions/<name>/ this writes OUT/<name>/, a self-contained copy:
#   - every file of actions/<name>/, with the two paths that point outside the folder rewritten:
#     `$GITHUB_ACTION_PATH/../setup/` -> `$GITHUB_ACTION_PATH/setup/` and
#     `$GITHUB_ACTION_PATH/../../requirements.lock` -> `$GITHUB_ACTION_PATH/requirements.lock`;
#   - setup/{install.sh,cache-key.sh,checksums.txt} (for the setup action itself: at the root), and
#     requirements.lock when the action reads it;
#   - release.env next to install.sh: the version and the repository whose release assets
#     install.sh downloads (checksum-verified against checksums.txt), since a published action has
#     no source to build;
#   - a README.md pointing back to the documentation.
# And OUT/workflows/: the reusable workflows of workflows/*.yaml under .github/workflows/ (GitHub
# runs reusable workflows only from there), callable as
# `uses: <owner>/workflows/.github/workflows/train.yaml@v1`.
#
# Nothing is pushed here; .github/workflows/release.yml pushes each tree and moves its tags.
# tests/it/workflows.rs checks that the generated trees match actions/ and are self-contained.
#
# usage: tools/publish-actions.sh OUT_DIR OWNER/REPOSITORY [VERSION]
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 OUT_DIR OWNER/REPOSITORY [VERSION]" >&2
  exit 2
fi
out="$1"
repository="$2"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${3:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)}"
if ! [[ "$repository" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
  echo "error: $repository is not OWNER/REPOSITORY; hint: e.g. wms/wms" >&2
  exit 2
fi
if ! [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]]; then
  echo "error: version $version is not X.Y.Z; hint: pass it as the third argument" >&2
  exit 2
fi
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "error: $out exists and is not empty; hint: pass a new directory" >&2
  exit 2
fi
mkdir -p "$out"

rewrite() { # rewrite FROM TO: copy FROM to TO with the outside paths made inside
  sed -e 's|\$GITHUB_ACTION_PATH/\.\./setup/|$GITHUB_ACTION_PATH/setup/|g' \
      -e 's|\$GITHUB_ACTION_PATH/\.\./\.\./requirements\.lock|$GITHUB_ACTION_PATH/requirements.lock|g' \
      "$1" > "$2"
  chmod --reference="$1" "$2"
}

release_env() { # release_env DIR
  printf 'WMS_RELEASE_VERSION=%s\nWMS_RELEASE_REPOSITORY=%s\n' "$version" "$repository" > "$1/release.env"
}

for dir in "$root"/actions/*/; do
  name="$(basename "$dir")"
  [ -f "$dir/action.yml" ] || continue
  dest="$out/$name"
  mkdir -p "$dest"
  (cd "$dir" && find . -type f -print0) | while IFS= read -r -d '' f; do
    mkdir -p "$dest/$(dirname "$f")"
    rewrite "$dir/$f" "$dest/$f"
  done
  if [ "$name" = setup ]; then
    release_env "$dest"
  else
    mkdir -p "$dest/setup"
    for f in install.sh cache-key.sh checksums.txt; do
      rewrite "$root/actions/setup/$f" "$dest/setup/$f"
    done
    release_env "$dest/setup"
  fi
  if grep -q 'GITHUB_ACTION_PATH/requirements.lock' "$dest/action.yml"; then
    cp "$root/requirements.lock" "$dest/requirements.lock"
  fi
  cat > "$dest/README.md" <<MD
# wms $name

\`uses: ${repository%%/*}/$name@v1\`: generated from [\`actions/$name/\`](https://github.com/$repository/tree/v$version/actions/$name)
of $repository v$version by \`tools/publish-actions.sh\`; do not edit here. Inputs, outputs and
examples: [actions/README.md](https://github.com/$repository/blob/v$version/actions/README.md#$name).
MD
done

mkdir -p "$out/workflows/.github/workflows"
for f in "$root"/workflows/*.yaml; do
  cp "$f" "$out/workflows/.github/workflows/$(basename "$f")"
done
cat > "$out/workflows/README.md" <<MD
# wms workflows

Reusable workflows for model repositories, generated from
[\`workflows/\`](https://github.com/$repository/tree/v$version/workflows) of $repository v$version by
\`tools/publish-actions.sh\`; do not edit here. Call them as
\`uses: ${repository%%/*}/workflows/.github/workflows/train.yaml@v1\`.
MD
echo "generated $(ls "$out" | wc -l) trees in $out (version $version, release repository $repository)"
