"""The rules and dashboards are written against the contract in alerting_contract.py; these tests
pin that contract to the metrics the operator and the agent SDK actually register."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as MetricFamily
from tests.observability.alerting_contract import CONTRACT_METRICS

from greenlight.agent import AGENT_REGISTRY
from greenlight.telemetry.metrics import OPERATOR_REGISTRY


def families(*registries: CollectorRegistry) -> dict[str, MetricFamily]:
    """Metric families by their exposed name (counters carry their ``_total`` suffix)."""
    found: dict[str, MetricFamily] = {}
    for registry in registries:
        for family in registry.collect():
            suffix = "_total" if family.type == "counter" else ""
            found[family.name + suffix] = family
    return found


REGISTERED = families(OPERATOR_REGISTRY, AGENT_REGISTRY)


def test_operator_and_agent_register_exactly_the_contract_metrics() -> None:
    assert sorted(REGISTERED) == sorted(CONTRACT_METRICS)


@pytest.mark.parametrize("name", sorted(CONTRACT_METRICS))
def test_registered_metric_has_the_contract_type_and_labels(name: str) -> None:
    family = REGISTERED[name]
    assert family.type == CONTRACT_METRICS[name].kind
    labels = {key for sample in family.samples for key in sample.labels} - {"le"}
    if family.samples:
        assert labels == CONTRACT_METRICS[name].labels
