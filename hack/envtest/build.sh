#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into a cache outside git.
#
# Prints the directory that holds the binaries (the value for KUBEBUILDER_ASSETS).
# Honours KUBEBUILDER_ASSETS when it is already set and holds both binaries.
# Rebuilds only when the pinned versions in versions.env change.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache=${GREENLIGHT_CACHE:-$HOME/.cache/greenlight}
out="$cache/control-plane/k8s-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}"
if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

build_apiserver() {
  local work="$here/apiserver"
  grep -q "k8s.io/kubernetes $KUBERNETES_VERSION" "$work/go.mod" 2>/dev/null || generate_apiserver_mod "$work"
  (cd "$work" && go build -trimpath -o "$out/kube-apiserver" \
    -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$(minor_of "$KUBERNETES_VERSION") \
      -X k8s.io/component-base/version.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver >&2)
}

minor_of() { local v=${1#v1.}; echo "${v%%.*}"; }

# Writes go.mod for the wrapper module from the release's own go.mod (never hand-copied).
generate_apiserver_mod() {
  local work=$1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local minor
  minor=$(minor_of "$KUBERNETES_VERSION")
  {
    echo "module greenlight.dev/envtest/apiserver"
    echo
    awk '/^go [0-9]/{print; exit}' "$gomod"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    # Every staging module the release requires at v0.0.0 is published as v0.<minor>.
    awk '$2 == "v0.0.0" && $1 ~ /^k8s.io\// {print $1}' "$gomod" | sort -u |
      while read -r m; do echo "	$m => $m v0.$minor.${KUBERNETES_VERSION##*.}"; done
    echo ")"
  } >"$work/go.mod"
  rm -f "$work/go.sum"
  (cd "$work" && go mod tidy >&2)
}

build_etcd() {
  local work="$here/etcd"
  grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$work/go.mod" 2>/dev/null || generate_etcd_mod "$work"
  (cd "$work" && go build -trimpath -o "$out/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3 >&2)
}

generate_etcd_mod() {
  local work=$1
  local gomod
  gomod=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module greenlight.dev/envtest/etcd"
    echo
    awk '/^go [0-9]/{print; exit}' "$gomod"
    echo
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo
    echo "replace ("
    # The server's own go.mod replaces its sibling modules with ../ paths; pin them to the release.
    awk '$2 == "=>" && $3 ~ /^\.\.\// {print $1}' "$gomod" | sort -u |
      while read -r m; do echo "	$m => $m $ETCD_VERSION"; done
    echo ")"
  } >"$work/go.mod"
  rm -f "$work/go.sum"
  (cd "$work" && go mod tidy >&2)
}

build_etcd
build_apiserver
echo "$out"
