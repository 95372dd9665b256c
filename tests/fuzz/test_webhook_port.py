"""Generated AdmissionReview bodies POSTed to the operator's live webhook port, as the API server
would send them (with its client certificate): whatever arrives, the server answers 200 with a
review or a 4xx, never 5xx, and the audit log grows only by small refusal records."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.operator import OperatorProcess

from greenlight.devcluster import ControlPlane

HANDLERS = [
    "greenlight-admission-mutate",
    "greenlight-admission-validate",
    "greenlight-admission-status",
    "greenlight-admission-delete",
    "no-such-handler",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=30), st.floats(allow_nan=False)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
ANNOTATIONS = st.dictionaries(
    st.sampled_from(
        [
            "greenlight.dev/decision",
            "greenlight.dev/reason",
            "greenlight.dev/cancel",
            "greenlight.dev/requested-by",
            "decisions.greenlight.dev/2bd806c97f0e00af1a1fc3328fa763a9269723c8",
        ]
    ),
    st.one_of(st.text(max_size=40), st.just("approve"), st.just("{}")),
    max_size=3,
)


@st.composite
def objects(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(JSON)
    return {
        "apiVersion": "greenlight.dev/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {
            "namespace": draw(st.text(max_size=10)),
            "name": draw(st.text(max_size=10)),
            "uid": draw(st.text(max_size=10)),
            "creationTimestamp": draw(st.sampled_from(["2026-01-01T00:00:00Z", "yesterday", 7])),
            "annotations": draw(st.one_of(ANNOTATIONS, JSON)),
        },
        "spec": draw(st.one_of(JSON, st.just({"action": "a", "target": "t"}))),
        "status": draw(st.one_of(st.just({}), JSON)),
    }


@st.composite
def reviews(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    request = {
        "uid": draw(st.text(max_size=10)),
        "kind": {"group": "greenlight.dev", "version": "v1alpha1", "kind": "ApprovalRequest"},
        "resource": {
            "group": "greenlight.dev",
            "version": "v1alpha1",
            "resource": draw(st.sampled_from(["approvalrequests", "pods", ""])),
        },
        "subResource": draw(st.sampled_from([None, "status"])),
        "operation": draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", "", 3])),
        "userInfo": draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"username": st.text(max_size=20), "groups": st.lists(st.text(max_size=8))}
                ),
                JSON,
            )
        ),
        "object": draw(st.one_of(st.none(), objects())),
        "oldObject": draw(st.one_of(st.none(), objects())),
        "dryRun": draw(st.booleans()),
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def api_server_context(plane: ControlPlane) -> ssl.SSLContext:
    """A TLS client presenting the API server's webhook client certificate."""
    pki = plane._require_pki()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(pki.webhook_client.cert), str(pki.webhook_client.key))
    return context


def post(operator: OperatorProcess, handler: str, body: bytes, context: ssl.SSLContext) -> int:
    request = urllib.request.Request(
        f"https://127.0.0.1:{operator.webhook_port}/{handler}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            answer = json.loads(response.read())
            assert answer.get("kind") == "AdmissionReview", answer
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def size(operator: OperatorProcess) -> int:
    return operator.audit_file.stat().st_size if operator.audit_file.exists() else 0


def test_generated_reviews_never_break_the_webhook_server(
    operator: OperatorProcess, control_plane: ControlPlane
) -> None:
    context = api_server_context(control_plane)
    before = size(operator)
    statuses: list[int] = []

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.sampled_from(HANDLERS), reviews())
    def one(handler: str, review: Any) -> None:
        status = post(operator, handler, json.dumps(review).encode(), context)
        assert status < 500, (status, handler, review)
        statuses.append(status)

    one()
    assert post(operator, HANDLERS[0], b"\xff\xfe not json", context) == 400
    grown = size(operator) - before
    assert grown < 2048 * len(statuses), grown
    assert operator.running
