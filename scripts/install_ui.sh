#!/usr/bin/env bash
# The cockpit's chart library, uPlot, from the npm registry into api/ui/vendor/uplot/
# (not committed: the registry is where it comes from). Pinned by version and by the
# registry's sha512 integrity; skipped when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.6.32
INTEGRITY='sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=='
DEST=api/ui/vendor/uplot

if [[ "$(cat "$DEST/VERSION" 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "installing Debian's npm (to fetch the cockpit's chart library)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq npm >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "uplot@$VERSION" --silent >/dev/null)
tarball="$work/uplot-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$INTEGRITY" ]]; then
  echo "uplot-$VERSION.tgz: integrity $actual, expected $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
mkdir -p "$DEST"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$DEST/"
echo "$VERSION" >"$DEST/VERSION"
echo "uplot $VERSION in $DEST (MIT, LICENSE kept beside it)"
