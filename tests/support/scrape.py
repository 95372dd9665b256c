"""Scraping a running process's /metrics as Prometheus would, and reading the numbers back.

`scrape` asks for the Prometheus text format (what a scraper gets by default); `exemplars`
asks for OpenMetrics, the only format that carries exemplars, and returns them per sample.
Both parse with prometheus-client's own parsers, so a malformed exposition fails the test.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_Key = tuple[str, frozenset[tuple[str, str]]]


def _fetch(port: int, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers.get("Content-Type", ""), response.read().decode()


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by name and labels."""

    samples: Mapping[_Key, float]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; a missing series fails with the names that do exist."""
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            known = sorted({n for n, _ in self.samples if n.startswith(name)})
            raise AssertionError(f"no sample {name}{labels}; series of that name: {known}")
        return self.samples[key]

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def since(self, before: Scrape, name: str, **labels: str) -> float:
        """How much the sample grew since `before` (a series new since then counts from 0)."""
        start = before.value(name, **labels) if before.has(name, **labels) else 0.0
        return self.value(name, **labels) - start


def scrape(port: int) -> Scrape:
    _, text = _fetch(port)
    samples: dict[_Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples)


@dataclass(frozen=True)
class ExemplarSample:
    name: str
    labels: Mapping[str, str]
    exemplar_labels: Mapping[str, str]
    exemplar_value: float


def exemplars(port: int) -> list[ExemplarSample]:
    """Every sample that carries an exemplar, from an OpenMetrics scrape."""
    content_type, text = _fetch(port, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text"), content_type
    found: list[ExemplarSample] = []
    # prometheus-client leaves its OpenMetrics parser unannotated.
    for family in openmetrics_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            if sample.exemplar is not None:
                found.append(
                    ExemplarSample(
                        sample.name,
                        dict(sample.labels),
                        dict(sample.exemplar.labels),
                        sample.exemplar.value,
                    )
                )
    return found
