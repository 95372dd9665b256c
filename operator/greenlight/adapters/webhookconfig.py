"""The webhook configurations the API server uses to call the operator.

They are derived from the admission handlers' own declarations (`@kopf.on.mutate` /
`@kopf.on.validate` in `adapters/admission.py`: id, resource, subresource, operations, side
effects, failure policy) with kopf's `build_webhooks`, so the handlers are their single source:
one webhook per handler, served at `/<handler id>`. Greenlight adds what kopf does not declare:
the operator's own writes match none of the webhooks (`matchConditions` on the caller's user
name; its status updates and bookkeeping need no admission, and skipping it saves two webhook
round trips per write), a 10 s timeout, AdmissionReview `v1` only, and each rule's scope.

The Helm chart renders the same webhooks (`templates/webhook.yaml`);
`tests/charts/test_webhook_config.py` compares them field by field. On the local control plane
the operator registers them itself (`register`).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Literal

import kopf
import structlog
from kopf._core.engines.admission import build_webhooks
from kopf._core.intents.causes import WebhookType

from greenlight.adapters import admission as _handlers  # noqa: F401  (registers the handlers)
from greenlight.adapters import policycheck as _policy_handlers  # noqa: F401
from greenlight.adapters.policyindex import CLUSTER_PLURAL, NAMESPACED_PLURAL
from greenlight.core.model import GROUP, KIND, PLURAL, VERSION
from greenlight.kube import ApiError, Conflict, Kube, NotFound

NAME = "greenlight.dev"
TIMEOUT_SECONDS = 10
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
_RESOURCES = (
    kopf.Resource(
        group=GROUP,
        version=VERSION,
        plural=PLURAL,
        kind=KIND,
        namespaced=True,
        subresources=frozenset({"status"}),
    ),
    kopf.Resource(
        group=GROUP,
        version=VERSION,
        plural=CLUSTER_PLURAL,
        kind="ClusterApprovalPolicy",
        namespaced=False,
    ),
    kopf.Resource(
        group=GROUP,
        version=VERSION,
        plural=NAMESPACED_PLURAL,
        kind="ApprovalPolicy",
        namespaced=True,
    ),
)
_SCOPES = {
    resource.plural: "Namespaced" if resource.namespaced else "Cluster" for resource in _RESOURCES
}
_log = structlog.get_logger("greenlight.webhooks")


def webhooks(
    kind: Literal["mutating", "validating"],
    client_config: kopf.WebhookClientConfig,
    operator_user: str,
) -> list[dict[str, Any]]:
    """The webhooks of one kind, one per registered handler of that kind, in declaration order."""
    reason = WebhookType(kind)
    handlers = [
        handler
        for handler in kopf.get_default_registry()._webhooks.get_all_handlers()
        if handler.reason == reason
    ]
    built = build_webhooks(
        handlers, resources=_RESOURCES, name_suffix=NAME, client_config=client_config
    )
    for webhook in built:
        webhook.pop("objectSelector", None)  # no handler filters on labels
        for rule in webhook["rules"]:
            rule["scope"] = _SCOPES[rule["resources"][0].split("/")[0]]
        webhook["admissionReviewVersions"] = ["v1"]
        webhook["timeoutSeconds"] = TIMEOUT_SECONDS
        webhook["matchConditions"] = [
            {
                "name": "not-the-operator",
                "expression": f"request.userInfo.username != {_cel_string(operator_user)}",
            }
        ]
        if reason == WebhookType.MUTATING:
            webhook["reinvocationPolicy"] = "Never"
    return built


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def configurations(
    base_url: str, ca: bytes, operator_user: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MutatingWebhookConfiguration and ValidatingWebhookConfiguration bodies."""
    client_config: kopf.WebhookClientConfig = {
        "url": base_url,
        "caBundle": base64.b64encode(ca).decode(),
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": webhooks("mutating", client_config, operator_user),
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": webhooks("validating", client_config, operator_user),
    }
    return mutating, validating


async def register(kube: Kube, base_url: str, ca: bytes, operator_user: str) -> None:
    """Create or replace both configurations."""
    mutating, validating = configurations(base_url, ca, operator_user)
    await kube.replace_or_create(f"{ADMISSION}/mutatingwebhookconfigurations", mutating)
    await kube.replace_or_create(f"{ADMISSION}/validatingwebhookconfigurations", validating)


async def register_when_listening(
    kube: Kube,
    host: str,
    port: int,
    ca: bytes,
    operator_user: str,
    wait_seconds: float = 60.0,
) -> None:
    """Register once the webhook server accepts connections, so the API server never calls a
    port nobody listens on yet (which, failing closed, would refuse every write meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        break
    try:
        await register(kube, f"https://{host}:{port}", ca, operator_user)
    except (ApiError, Conflict, NotFound) as exc:
        _log.error(
            "cannot register the webhook configurations", error=str(exc) or type(exc).__name__
        )
        raise
    _log.info("webhook configurations registered", url=f"https://{host}:{port}")
