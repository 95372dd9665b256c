#!/usr/bin/env bash
# Creates the kind cluster of kind-config.yaml (once), builds the operator image, loads it into
# the cluster and installs the operator chart. Needs Docker, kind and kubectl; helm is built by
# hack/helm/install.sh. Re-running it rebuilds the image and upgrades the release.
#
#   KIND_NODE_IMAGE=kindest/node:vX.Y.Z   pin the Kubernetes version (>= 1.28; default: kind's own)
#   GREENLIGHT_STACK=1                     install helm/greenlight-stack (needs internet for its
#                                          dependencies) instead of the operator chart alone
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up needs $tool on PATH" >&2; exit 1; }
done
helm="$(bash hack/helm/install.sh)/helm"
cluster=$(awk '/^name:/{print $2; exit}' kind-config.yaml)
image=greenlight:dev
namespace=greenlight

if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --config kind-config.yaml ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kubectl config use-context "kind-$cluster" >/dev/null

docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

image_values=(--set "image.repository=${image%%:*}" --set "image.tag=${image##*:}" --set image.pullPolicy=Never)
if [[ "${GREENLIGHT_STACK:-0}" == 1 ]]; then
  "$helm" dependency build helm/greenlight-stack
  kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n "$namespace" get secret greenlight-alerting >/dev/null 2>&1 ||
    kubectl -n "$namespace" create secret generic greenlight-alerting \
      --from-literal=pagerduty-routing-key=local-kind-cluster \
      --from-literal=slack-webhook-url=http://127.0.0.1:9/unused
  "$helm" upgrade --install greenlight helm/greenlight-stack --namespace "$namespace" \
    "${image_values[@]/#image/greenlight.image}" --wait --timeout 10m
else
  "$helm" upgrade --install greenlight helm/greenlight --namespace "$namespace" --create-namespace \
    "${image_values[@]}" --wait --timeout 5m
fi
kubectl -n "$namespace" rollout restart statefulset >/dev/null
kubectl -n "$namespace" rollout status statefulset --timeout 5m
echo "Greenlight is running in kind cluster '$cluster', namespace '$namespace'." >&2
