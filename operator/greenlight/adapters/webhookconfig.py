"""The webhook configurations the API server uses to call the operator.

One webhook per admission handler (kopf serves each at `/<handler id>`): mutate and validate the
resource, and guard its status subresource. The operator's own writes match none of them
(`matchConditions` on the caller's user name): its status updates and bookkeeping need no
admission, and skipping it saves two webhook round trips per write. The Helm chart renders the
same configuration (templates/webhook.yaml); on the local control plane the operator registers it.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import kubernetes
import structlog
from kubernetes.client.exceptions import ApiException

from greenlight.adapters.admission import MUTATE_ID as MUTATE
from greenlight.adapters.admission import STATUS_ID as STATUS
from greenlight.adapters.admission import VALIDATE_ID as VALIDATE
from greenlight.core.model import GROUP, PLURAL, VERSION

NAME = "greenlight.dev"
_log = structlog.get_logger("greenlight.webhooks")


def _webhook(
    handler: str, base_url: str, ca: bytes, operator_user: str, resource: str, operations: list[str]
) -> dict[str, Any]:
    return {
        "name": f"{handler}.{NAME}",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": f"{base_url}/{handler}", "caBundle": base64.b64encode(ca).decode()},
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "operations": operations,
                "resources": [resource],
                "scope": "Namespaced",
            }
        ],
        "matchConditions": [
            {
                "name": "not-the-operator",
                "expression": f"request.userInfo.username != {_cel_string(operator_user)}",
            }
        ],
        "failurePolicy": "Fail",
        "sideEffects": "NoneOnDryRun",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": 10,
    }


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def configurations(
    base_url: str, ca: bytes, operator_user: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MutatingWebhookConfiguration and ValidatingWebhookConfiguration bodies."""
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {
                **_webhook(MUTATE, base_url, ca, operator_user, PLURAL, ["CREATE", "UPDATE"]),
                "reinvocationPolicy": "Never",
            },
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            _webhook(VALIDATE, base_url, ca, operator_user, PLURAL, ["CREATE", "UPDATE"]),
            _webhook(STATUS, base_url, ca, operator_user, f"{PLURAL}/status", ["UPDATE"]),
        ],
    }
    return mutating, validating


def register(
    api_client: kubernetes.client.ApiClient, base_url: str, ca: bytes, operator_user: str
) -> None:
    """Create or replace both configurations (blocking; call it off the event loop)."""
    api = kubernetes.client.AdmissionregistrationV1Api(api_client)
    mutating, validating = configurations(base_url, ca, operator_user)
    try:
        current = api.read_mutating_webhook_configuration(NAME)
        mutating["metadata"]["resourceVersion"] = _version(current.metadata)
        api.replace_mutating_webhook_configuration(
            NAME, kubernetes.client.V1MutatingWebhookConfiguration.model_validate(mutating)
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        api.create_mutating_webhook_configuration(
            kubernetes.client.V1MutatingWebhookConfiguration.model_validate(mutating)
        )
    try:
        existing = api.read_validating_webhook_configuration(NAME)
        validating["metadata"]["resourceVersion"] = _version(existing.metadata)
        api.replace_validating_webhook_configuration(
            NAME, kubernetes.client.V1ValidatingWebhookConfiguration.model_validate(validating)
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        api.create_validating_webhook_configuration(
            kubernetes.client.V1ValidatingWebhookConfiguration.model_validate(validating)
        )


def _version(meta: kubernetes.client.V1ObjectMeta | None) -> str | None:
    return meta.resource_version if meta is not None else None


async def register_when_listening(
    api_client: kubernetes.client.ApiClient,
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
        await asyncio.to_thread(register, api_client, f"https://{host}:{port}", ca, operator_user)
    except ApiException as exc:
        _log.error(
            "cannot register the webhook configurations", status=exc.status, reason=exc.reason
        )
        raise
    _log.info("webhook configurations registered", url=f"https://{host}:{port}")
