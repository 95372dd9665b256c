"""Kubernetes label selection, evaluated on rendered objects the way the API server does."""

from __future__ import annotations

from typing import Any


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (``matchLabels`` and ``matchExpressions``) selects ``labels``.

    An empty selector selects everything; ``None`` is left to the caller (its meaning depends
    on the field: "own namespace only" for a Prometheus's namespace selectors).
    """
    if selector is None:
        raise ValueError("a nil selector has no meaning of its own here")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def admits_from_namespace(rule: dict[str, Any], namespace: str, pod_labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy ingress rule admits a pod with ``pod_labels`` in ``namespace``
    of a cluster that labels namespaces with ``kubernetes.io/metadata.name`` (1.21+)."""
    peers = rule.get("from")
    if not peers:
        return True
    namespace_labels = {"kubernetes.io/metadata.name": namespace}
    for peer in peers:
        if "ipBlock" in peer:
            continue
        namespaces = peer.get("namespaceSelector")
        pods = peer.get("podSelector")
        if namespaces is None and pods is not None:
            continue  # pods of the policy's own namespace only: not decidable for a remote peer
        if namespaces is not None and not selects(namespaces, namespace_labels):
            continue
        if pods is not None and not selects(pods, pod_labels):
            continue
        return True
    return False
