#!/usr/bin/env bash
# Finds a command that a Debian package provides and installs the package
# when the command is missing:
#
#   hack/debian-tool.sh <command> <VAR> <package> [<package>...]
#
# Where it looks, in order:
#   1. $VAR, when set: the user's choice, a path or a command on PATH. It
#      must be an executable; nothing is installed in its place (a typo
#      should not pull in a package).
#   2. <command> on PATH.
#   3. $DEBIAN_BIN/<command> (default /usr/bin), where the package puts it.
# When none has it and we are root with apt-get: `apt-get update` (a fresh
# machine has no package lists), then the first <package> that installs, and
# the command must then be found. Several <package> names cover a package
# renamed across releases; chromium and prometheus have kept their names in
# Debian 10 to 13, so the Makefile passes one each.
#
# Prints the command's path on stdout when found. Every failure exits 1 with
# one line on stderr that says what to do; test/install checks each of them.
# Runs under set -u: every optional variable is read with a default.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 <command> <VAR> <package>..." >&2
  exit 2
fi
cmd=$1 var=$2
shift 2
pkgs=("$@")
debian_bin=${DEBIAN_BIN:-/usr/bin}
choice=${!var:-}

if [ -n "$choice" ]; then
  # A name without a slash is looked up on PATH, as exec does.
  if [[ $choice != */* ]] && found=$(type -P "$choice"); then
    choice=$found
  fi
  if [ -x "$choice" ] && [ ! -d "$choice" ]; then
    echo "$choice"
    exit 0
  fi
  echo "$var=$choice is not an executable: point it at $cmd, or unset it to use (or install) Debian's ${pkgs[0]}" >&2
  exit 1
fi

find_cmd() {
  if type -P "$cmd"; then return 0; fi
  if [ -x "$debian_bin/$cmd" ]; then echo "$debian_bin/$cmd"; return 0; fi
  return 1
}

if find_cmd; then exit 0; fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$cmd is missing: install it (Debian: apt-get install ${pkgs[0]}) or set $var=/path/to/$cmd" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Another install (make -j, a second clone's make test) may hold dpkg's lock:
# wait for it rather than fail.
apt=(apt-get -o DPkg::Lock::Timeout=300)
echo ">> installing $cmd from Debian's packages (${pkgs[*]})" >&2
if ! "${apt[@]}" update -qq >/dev/null; then
  echo "apt-get update failed: install ${pkgs[0]} by hand or set $var=/path/to/$cmd" >&2
  exit 1
fi
for p in "${pkgs[@]}"; do
  if "${apt[@]}" install -y -qq --no-install-recommends "$p" >/dev/null; then
    if find_cmd; then exit 0; fi
    echo "apt-get installed $p but $cmd is neither on PATH nor in $debian_bin: set $var=/path/to/$cmd" >&2
    exit 1
  fi
done
echo "apt-get could not install $cmd (${pkgs[*]}): install it by hand or set $var=/path/to/$cmd" >&2
exit 1
