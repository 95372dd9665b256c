#!/usr/bin/env bash
# Makes promtool and amtool available, built from the Go module proxy into a cache outside git.
#
# Prints the directory that holds both binaries (~/.cache/greenlight/bin by default).
# Each binary is built once per pinned version (versions.env) into its own versioned directory;
# the bin directory holds symlinks to the current pins, so a version bump rebuilds and nothing else does.
# The Prometheus and Alertmanager servers are Debian packages (prometheus, prometheus-alertmanager).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"

cache=${GREENLIGHT_CACHE:-$HOME/.cache/greenlight}
bin="$cache/bin"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# install_tool NAME PACKAGE MODULE_VERSION SEMVER: builds PACKAGE@MODULE_VERSION unless cached.
install_tool() {
  local name=$1 pkg=$2 modver=$3 semver=$4
  local dir="$cache/prom/$name-$modver"
  if [[ ! -x "$dir/$name" ]]; then
    mkdir -p "$dir"
    GOBIN="$dir" go install -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$semver" \
      "$pkg@$modver" >&2
  fi
  ln -sfn "$dir/$name" "$bin/$name"
}

# Prometheus tags its Go module v0.3MM.P for release 3.MM.P.
prom_semver() {
  local v=${1#v0.}
  local mm=${v%%.*}
  echo "3.$((10#${mm:1})).${v#*.}"
}

install_tool promtool github.com/prometheus/prometheus/cmd/promtool \
  "$PROMETHEUS_MODULE_VERSION" "$(prom_semver "$PROMETHEUS_MODULE_VERSION")"
install_tool amtool github.com/prometheus/alertmanager/cmd/amtool \
  "$ALERTMANAGER_VERSION" "${ALERTMANAGER_VERSION#v}"

echo "$bin"
