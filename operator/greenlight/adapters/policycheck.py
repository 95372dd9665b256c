"""The admission webhook for policies: a ClusterApprovalPolicy or ApprovalPolicy that
Greenlight could not apply exactly as written is refused at `kubectl apply`, with the field
named (`spec.match.condition: CEL does not compile: ...`). The API server's schema checks the
shape and bounds first; this checks what only Greenlight can: globs, CEL, durations together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from greenlight.adapters.admission import check_policy_shape
from greenlight.adapters.policyindex import CLUSTER_PLURAL, NAMESPACED_PLURAL
from greenlight.core.model import GROUP, VERSION
from greenlight.core.policies import PolicyError, PolicyKind, compile_policy

CLUSTER_ID = "greenlight-policy-validate-cluster"
NAMESPACED_ID = "greenlight-policy-validate"


def _check(kind: PolicyKind, userinfo: Any, new: Mapping[str, Any] | None) -> None:
    check_policy_shape(userinfo, new)
    if new is None:
        return
    body = dict(new)
    body.setdefault("kind", kind.value)
    try:
        compile_policy(body)
    except PolicyError as exc:
        raise kopf.AdmissionError(f"{kind.value} {exc}", code=400) from exc


@kopf.on.validate(
    GROUP,
    VERSION,
    CLUSTER_PLURAL,
    id=CLUSTER_ID,
    operations=["CREATE", "UPDATE"],
    side_effects=False,
    ignore_failures=False,
    persistent=True,
)
async def check_cluster_policy(
    *, userinfo: Mapping[str, Any], new: Mapping[str, Any] | None = None, **_: Any
) -> None:
    _check(PolicyKind.CLUSTER, userinfo, new)


@kopf.on.validate(
    GROUP,
    VERSION,
    NAMESPACED_PLURAL,
    id=NAMESPACED_ID,
    operations=["CREATE", "UPDATE"],
    side_effects=False,
    ignore_failures=False,
    persistent=True,
)
async def check_policy(
    *, userinfo: Mapping[str, Any], new: Mapping[str, Any] | None = None, **_: Any
) -> None:
    _check(PolicyKind.NAMESPACED, userinfo, new)
