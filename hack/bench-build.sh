#!/usr/bin/env bash
# Reports how long the pinned tools take to build. By default it prints the
# times recorded when this machine filled its tool cache; BENCH_COLD=1
# rebuilds every tool with an empty Go build cache (the module download cache
# is kept: downloads measure the network, not the build) and times that.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="${SPLITTER_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME:-}/.cache}/splitter/tools}"

echo "tool build times (machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go env GOVERSION))"
if [ "${BENCH_COLD:-0}" != 1 ]; then
  for f in "$cache"/*/build-seconds; do
    [ -f "$f" ] || continue
    read -r secs when _ < "$f"
    printf '  %-40s %5ss  (recorded %s when the cache was filled; Go build cache state unknown)\n' "$(basename "$(dirname "$f")")" "$secs" "$when"
  done
  echo "  (BENCH_COLD=1 make bench rebuilds everything from an empty Go build cache and times it)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GOCACHE="$tmp/gocache"
total_start=$(date +%s)
build() { # name module pkg... -- flags
  local name=$1; shift
  local start; start=$(date +%s)
  BUILD_TOOL_OUT="$tmp/bin" SPLITTER_TOOLS_CACHE="$tmp/tools" "$root/hack/build-tool.sh" "$@" >/dev/null 2>&1
  printf '  %-32s %5ss (cold)\n' "$name" "$(( $(date +%s) - start ))"
}
build etcd etcd go.etcd.io/etcd/server/v3 etcd=go.etcd.io/etcd/server/v3 -- -ldflags "-s -w"
build kube-apiserver+controller-manager+scheduler kube k8s.io/kubernetes k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler -- -ldflags "-s -w"
build kwok kwok sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok -- -ldflags "-s -w"
build controller-gen controller-gen sigs.k8s.io/controller-tools sigs.k8s.io/controller-tools/cmd/controller-gen -- -ldflags "-s -w"
build prometheus prometheus github.com/prometheus/prometheus github.com/prometheus/prometheus/cmd/prometheus -- -tags remove_all_sd -ldflags "-s -w"
printf '  %-32s %5ss (cold, sequential)\n' "all tools" "$(( $(date +%s) - total_start ))"
