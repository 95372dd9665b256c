"""The local Kubernetes control plane for tests and ``make run`` (kube-apiserver + etcd)."""

from greenlight.devcluster.controlplane import ControlPlane, ControlPlaneError, find_assets
from greenlight.devcluster.manifests import install, kubectl_binary

__all__ = ["ControlPlane", "ControlPlaneError", "find_assets", "install", "kubectl_binary"]
