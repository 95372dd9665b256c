"""The umbrella's test release: its namespace, its documented values profiles, and their renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.charts.render import render

# Release and namespace of the umbrella in these tests.
STACK_RELEASE = "greenlight"
STACK_NAMESPACE = "monitoring"

# The umbrella's documented values profiles (docs/install.md): the defaults; Slack in HTTP mode;
# the operator's scrape port open to the monitoring namespace alone.
STACK_PROFILES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "slack": {
        "greenlight": {
            "slack": {"existingSecret": "greenlight-slack", "defaultChannel": "C0123456"}
        }
    },
    "restricted-scrape": {
        "greenlight": {
            "networkPolicy": {
                "metricsFrom": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": STACK_NAMESPACE}
                        }
                    }
                ]
            }
        }
    },
}


class StackRenders:
    """``helm template`` of the built umbrella, once per profile."""

    def __init__(self, chart: Path) -> None:
        self.chart = chart
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, profile: str) -> list[dict[str, Any]]:
        if profile not in self._cache:
            self._cache[profile] = render(
                STACK_PROFILES[profile],
                chart=self.chart,
                release=STACK_RELEASE,
                namespace=STACK_NAMESPACE,
            )
        return self._cache[profile]
