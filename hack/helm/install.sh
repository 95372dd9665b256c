#!/usr/bin/env bash
# Makes helm (Helm 3) available, built from the Go module proxy into a cache outside git.
#
# Prints the directory that holds the binary (~/.cache/greenlight/bin by default).
# The binary is built once per pinned version (versions.env) into its own versioned directory and
# linked from the bin directory, so a version bump rebuilds and nothing else does.
# The link flags are the ones helm's release Makefile sets: without them `helm version` reports no
# patch version and `helm template` assumes Kubernetes 1.20 for .Capabilities.KubeVersion.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"

cache=${GREENLIGHT_CACHE:-$HOME/.cache/greenlight}
bin="$cache/bin"
dir="$cache/helm/helm-$HELM_VERSION"
mkdir -p "$bin"

if [[ ! -x "$dir/helm" ]]; then
  mkdir -p "$dir"
  export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
  # The Kubernetes version helm assumes when no cluster is asked: one minor above client-go's v0.MINOR.
  client_go=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
    python3 -c 'import json,re,sys; print(re.search(r"k8s.io/client-go v0\.(\d+)\.", open(json.load(sys.stdin)["GoMod"]).read()).group(1))')
  pkg=helm.sh/helm/v3
  GOBIN="$dir" go install -trimpath -ldflags "-s -w \
    -X $pkg/internal/version.version=$HELM_VERSION \
    -X $pkg/internal/version.gitTreeState=clean \
    -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$client_go \
    -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$client_go" \
    "$pkg/cmd/helm@$HELM_VERSION" >&2
fi
ln -sfn "$dir/helm" "$bin/helm"
echo "$bin"
