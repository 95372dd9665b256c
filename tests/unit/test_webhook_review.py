"""Admission reviews answered by the declared handlers directly (adapters/webhookserver.py): the
same answers kopf's own admission path gives, without its copies of the object."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, cast

import jsonpatch
import kopf
import pytest

from greenlight.adapters.webhookserver import Route, json_patch, review, routes

BODY: dict[str, Any] = {
    "metadata": {
        "name": "r",
        "annotations": {"keep": "1", "greenlight.dev/decision": "approve", "a~b/c": "x"},
    },
    "spec": {"plan": {"details": "x" * 1000}},
}


def applied(body: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(body, ops)
    return result


@pytest.mark.parametrize(
    "changes",
    [
        {"greenlight.dev/decision": None, "decisions.greenlight.dev/abc": "{}"},
        {"a~b/c": None},
        {"a~b/c": "y", "new/key~": "z"},
        {"keep": "1"},  # unchanged: no operation
        {"absent": None},  # removing what is not there: no operation
    ],
)
def test_annotation_patches_apply_like_kopfs_own(changes: dict[str, Any]) -> None:
    patch = kopf.Patch()
    for key, value in changes.items():
        patch.metadata.annotations[key] = value

    ours = json_patch(BODY, patch)

    assert applied(BODY, ours) == applied(
        BODY, [dict(op) for op in patch.as_json_patch(cast(kopf.RawBody, BODY))]
    )
    assert all(op["path"].startswith("/metadata/annotations/") for op in ours)


def test_an_object_without_annotations_gets_the_whole_map() -> None:
    body = {"metadata": {"generateName": "r-"}, "spec": {}}
    patch = kopf.Patch()
    patch.metadata.annotations["greenlight.dev/requested-by"] = "{}"
    patch.metadata.annotations["gone"] = None

    ops = json_patch(body, patch)

    assert ops == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {"greenlight.dev/requested-by": "{}"},
        }
    ]


def test_other_patches_fall_back_to_kopfs_diff() -> None:
    patch = kopf.Patch()
    patch.spec["x"] = 1
    assert applied(BODY, json_patch(BODY, patch))["spec"]["x"] == 1


def data(operation: str = "UPDATE", **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": BODY,
            "oldObject": BODY,
            **request,
        },
    }


def test_an_admission_error_is_a_refusal_with_its_code() -> None:
    async def refuse(**_: Any) -> None:
        raise kopf.AdmissionError("no, and here is why", code=403)

    answer = asyncio.run(review(Route(refuse, mutating=False), data(), memo={}))

    assert answer["response"] == {
        "uid": "u-1",
        "allowed": False,
        "status": {"message": "no, and here is why", "code": 403},
    }
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")


def test_any_other_failure_refuses_with_500() -> None:
    async def broken(**_: Any) -> None:
        raise KeyError("gate")

    answer = asyncio.run(review(Route(broken, mutating=False), data(), memo={}))

    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 500


def test_the_handler_sees_the_review_and_its_patch_is_returned() -> None:
    seen: dict[str, Any] = {}

    async def mutate(**kwargs: Any) -> None:
        seen.update(kwargs)
        kwargs["patch"].metadata.annotations["greenlight.dev/decision"] = None

    answer = asyncio.run(review(Route(mutate, mutating=True), data(dryRun=True), memo={"m": 1}))

    assert answer["response"]["allowed"] is True
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert ops == [{"op": "remove", "path": "/metadata/annotations/greenlight.dev~1decision"}]
    assert answer["response"]["patchType"] == "JSONPatch"
    assert (seen["operation"], seen["dryrun"], seen["memo"]) == ("UPDATE", True, {"m": 1})
    assert seen["userinfo"] == {"username": "alice"}


def test_mutating_handlers_do_not_run_on_delete() -> None:
    async def never(**_: Any) -> None:
        raise AssertionError("a mutation ran on DELETE")

    answer = asyncio.run(review(Route(never, mutating=True), data("DELETE"), memo={}))

    assert answer["response"] == {"uid": "u-1", "allowed": True}


def test_every_greenlight_webhook_is_routed() -> None:
    from greenlight.adapters import admission, policycheck

    table = routes(kopf.get_default_registry())

    assert table[admission.MUTATE_ID].fn is admission.admit
    assert table[admission.MUTATE_ID].mutating is True
    for webhook in (admission.VALIDATE_ID, admission.STATUS_ID, admission.DELETE_ID):
        assert table[webhook].mutating is False
    assert table[policycheck.CLUSTER_ID].fn is policycheck.check_cluster_policy


def test_every_routed_webhook_has_its_latency_series() -> None:
    from greenlight.adapters import admission, policycheck  # noqa: F401  (register the handlers)
    from greenlight.telemetry import metrics

    assert sorted(routes(kopf.get_default_registry())) == sorted(metrics.WEBHOOKS)


def test_the_audit_subject_of_a_new_object_ignores_the_status_its_creator_sent() -> None:
    from greenlight.adapters.admission import subject_of
    from greenlight.core.stamps import plan_digest

    sent: dict[str, Any] = {
        "metadata": {"namespace": "ci", "name": "r"},
        "spec": {"plan": {"details": "drop table"}},
        "status": {"requestedBy": "alice", "phase": "Approved", "planDigest": "sha256:" + "0" * 64},
    }
    subject = subject_of(sent)
    assert subject is not None
    assert (subject["requestedBy"], subject["phase"]) == (None, None)
    assert subject["planDigest"] == plan_digest("drop table")

    stored = {**sent, "metadata": {**sent["metadata"], "uid": "uid-1"}}
    assert subject_of(stored) == {**subject, "uid": "uid-1", **sent["status"]}
