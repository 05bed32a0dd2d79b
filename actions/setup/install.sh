#!/usr/bin/env bash
# Installs the wms binaries of this action's own version; see action.yml. No mutable downloads and
# no `curl | sh`: a release asset is only used when its sha256 is committed in checksums.txt next
# to this script; anything else is built from the action's own source with --locked.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here/../.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/Cargo.toml" | head -n1)"
arch="$(uname -m)"
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
platform="${arch}-unknown-${os}-gnu"
asset="wms-${version}-${platform}.tar.gz"
cache="${WMS_SETUP_CACHE:-$HOME/.cache/wms}/${version}-${platform}"
bin_dir="$cache/bin"
want_train="${WMS_SETUP_TRAIN:-false}"

have_all() {
  [ -x "$bin_dir/wms" ] && [ -x "$bin_dir/wms-serve" ] || return 1
  [ "$want_train" != "true" ] || [ -x "$bin_dir/wms-train" ]
}

if ! have_all; then
  mkdir -p "$bin_dir"
  sum="$(awk -v a="$asset" '$2 == a { print $1 }' "$here/checksums.txt" 2>/dev/null || true)"
  if [ -n "$sum" ] && [ -n "${WMS_SETUP_REPOSITORY:-}" ] && [ "$want_train" != "true" ]; then
    echo "::group::wms: release asset $asset"
    tmp="$(mktemp -d)"
    url="https://github.com/${WMS_SETUP_REPOSITORY}/releases/download/v${version}/${asset}"
    curl --fail --location --silent --show-error ${WMS_SETUP_TOKEN:+-H "Authorization: Bearer $WMS_SETUP_TOKEN"} -o "$tmp/$asset" "$url"
    echo "$sum  $tmp/$asset" | sha256sum --check --strict -
    tar -xzf "$tmp/$asset" -C "$bin_dir"
    rm -rf "$tmp"
    echo "::endgroup::"
  else
    echo "::group::wms: building $version from source (no verified release asset for $platform)"
    export CARGO_TARGET_DIR="$cache/target"
    (cd "$src" && cargo build --release --locked --bin wms --bin wms-serve)
    cp "$CARGO_TARGET_DIR/release/wms" "$CARGO_TARGET_DIR/release/wms-serve" "$bin_dir/"
    if [ "$want_train" = "true" ]; then
      # Pinned PyTorch from the lock file; the venv is kept next to the binaries because
      # wms-train's rpath points into it.
      export WMS_VENV="$cache/venv"
      (cd "$src" && make bootstrap && cargo build --release --locked --features train --bin wms-train)
      cp "$CARGO_TARGET_DIR/release/wms-train" "$bin_dir/"
    fi
    echo "::endgroup::"
  fi
fi

# ONNX Runtime for wms-serve and `wms export-onnx --check`: the pinned wheel's library.
if [ -d "$cache/venv" ] && [ -z "${ORT_DYLIB_PATH:-}" ]; then
  lib="$(ls "$cache"/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1 || true)"
  [ -n "$lib" ] && echo "ORT_DYLIB_PATH=$lib" >> "${GITHUB_ENV:-/dev/null}"
fi

echo "$bin_dir" >> "${GITHUB_PATH:-/dev/null}"
{
  echo "bin-dir=$bin_dir"
  echo "version=$version"
} >> "${GITHUB_OUTPUT:-/dev/null}"
echo "wms $version installed in $bin_dir"
