"""The chart's webhook configurations are the operator's, field by field.

The operator derives its configurations from the admission handlers' declarations
(`greenlight.adapters.webhookconfig`); the chart renders its own (`templates/webhook.yaml`).
Rendered with helm and compared here, they cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any, Literal

import kopf
import pytest
from tests.charts.render import NAMESPACE, one, render

from greenlight.adapters import webhookconfig

FIELDS = (
    "rules",
    "sideEffects",
    "failurePolicy",
    "matchPolicy",
    "matchConditions",
    "timeoutSeconds",
    "admissionReviewVersions",
    "reinvocationPolicy",
)
KINDS: dict[str, Literal["mutating", "validating"]] = {
    "MutatingWebhookConfiguration": "mutating",
    "ValidatingWebhookConfiguration": "validating",
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render({})


def chart_webhooks(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {hook["name"]: hook for hook in one(rendered, kind)["webhooks"]}


def operator_webhooks(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """What the operator builds for the chart's Service and its ServiceAccount identity."""
    account = one(rendered, "ServiceAccount")["metadata"]["name"]
    service = one(rendered, "Service")
    any_hook = next(iter(chart_webhooks(rendered, kind).values()))
    client_config: kopf.WebhookClientConfig = {
        "service": {"name": service["metadata"]["name"], "namespace": NAMESPACE, "port": 443},
        "caBundle": any_hook["clientConfig"]["caBundle"],
    }
    hooks = webhookconfig.webhooks(
        KINDS[kind], client_config, f"system:serviceaccount:{NAMESPACE}:{account}"
    )
    return {hook["name"]: hook for hook in hooks}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_chart_has_one_webhook_per_operator_handler(
    rendered: list[dict[str, Any]], kind: str
) -> None:
    assert sorted(chart_webhooks(rendered, kind)) == sorted(operator_webhooks(rendered, kind))


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_webhook_field_is_the_operators(
    rendered: list[dict[str, Any]], kind: str, field: str
) -> None:
    chart, operator = chart_webhooks(rendered, kind), operator_webhooks(rendered, kind)

    for name, hook in operator.items():
        assert chart[name].get(field) == hook.get(field), f"{kind} {name}: {field}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_webhook_calls_the_handlers_path_on_the_operators_service(
    rendered: list[dict[str, Any]], kind: str
) -> None:
    chart, operator = chart_webhooks(rendered, kind), operator_webhooks(rendered, kind)

    for name, hook in operator.items():
        assert chart[name]["clientConfig"] == hook["clientConfig"], name
        assert hook["clientConfig"]["service"]["path"] == "/" + name.removesuffix(".greenlight.dev")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_chart_sets_no_field_the_operator_does_not(
    rendered: list[dict[str, Any]], kind: str
) -> None:
    chart, operator = chart_webhooks(rendered, kind), operator_webhooks(rendered, kind)

    for name, hook in operator.items():
        assert set(chart[name]) == set(hook), name
