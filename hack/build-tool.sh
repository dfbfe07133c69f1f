#!/usr/bin/env bash
# Builds a pinned tool from its tools module under hack/tools/<module> into
# bin/<name>-<version>/, reusing a per-user cache keyed by name, version and Go
# version so a fresh clone on the same machine does not rebuild.
#
#   hack/build-tool.sh <tools-module> <version-module> [name=]<package>... [-- <go build flags>]
#
# The version is read from the tools module's go.mod: that file is the one
# place a tool's version is pinned.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod=$1 verfrom=$2; shift 2
pkgs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do pkgs+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
flags=("$@")

moddir="$root/hack/tools/$mod"
version=$(cd "$moddir" && go list -m -f '{{.Version}}' "$verfrom")
gover=$(go env GOVERSION)
# The cache: $SPLITTER_TOOLS_CACHE, else under $XDG_CACHE_HOME or ~/.cache.
# Read with defaults: this runs under set -u, and a fresh machine sets none.
cache_root=${SPLITTER_TOOLS_CACHE:-}
if [ -z "$cache_root" ]; then
  base=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
  if [ -z "$base" ]; then
    echo "build-tool.sh: neither SPLITTER_TOOLS_CACHE, XDG_CACHE_HOME nor HOME is set: set SPLITTER_TOOLS_CACHE=/a/cache/dir" >&2
    exit 1
  fi
  cache_root=$base/splitter/tools
fi
cache="$cache_root/$mod-$version-$gover"
out="${BUILD_TOOL_OUT:-$root/bin}/$mod-$version"

names=() paths=()
for p in "${pkgs[@]}"; do
  if [[ $p == *=* ]]; then names+=("${p%%=*}"); paths+=("${p#*=}")
  else names+=("$(basename "$p")"); paths+=("$p"); fi
done

have() { local d=$1 n; for n in "${names[@]}"; do [ -x "$d/$n" ] || return 1; done; }

if have "$out"; then exit 0; fi
if ! have "$cache"; then
  echo ">> building ${names[*]} $version (once per machine; cached in $cache)" >&2
  start=$(date +%s)
  # Built into $cache.tmp and moved into place whole: a failed or killed
  # build leaves nothing that a later run takes for a built tool.
  rm -rf "$cache.tmp"
  trap 'rm -rf "$cache.tmp"' EXIT
  mkdir -p "$cache.tmp"
  for i in "${!names[@]}"; do
    (cd "$moddir" && go build -trimpath "${flags[@]}" -o "$cache.tmp/${names[$i]}" "${paths[$i]}")
  done
  secs=$(( $(date +%s) - start ))
  # Kept for `make bench`: how long this machine took to fill the cache.
  echo "$secs $(date -u +%FT%TZ) $(nproc) cores" > "$cache.tmp/build-seconds"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  echo ">> built ${names[*]} in ${secs}s" >&2
fi
mkdir -p "$out"
for n in "${names[@]}"; do cp -f "$cache/$n" "$out/$n"; done
