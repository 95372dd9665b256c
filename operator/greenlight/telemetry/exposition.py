"""Serving a Prometheus registry over HTTP, for the operator and for the agent SDK alike.

The server runs in a daemon thread (prometheus-client's WSGI server), so a busy or blocked
asyncio loop never delays a scrape. It negotiates the format from the `Accept` header: Prometheus
text by default, OpenMetrics when asked, which is the format that carries exemplars.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

# Metrics are scraped by Prometheus from another pod, so the default listens on every interface.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


class Registry(CollectorRegistry):
    """A registry that exposes exactly the documented series: no `*_created` samples.

    prometheus-client adds a `<name>_created` sample to counters and histograms; in the
    Prometheus text format it turns into a separate gauge family (e.g.
    `greenlight_requests_created_created`) that is in no contract and confuses readers.
    Filtering here leaves the library's process-wide setting alone, which matters for the
    agent SDK running inside someone else's process.
    """

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class MetricsServer:
    """A running `/metrics` endpoint; call it to stop serving."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The bound port (useful when serving on port 0)."""
        return int(self._server.server_port)

    def __call__(self) -> None:
        """Stop serving and release the port; safe to call more than once."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def serve(registry: CollectorRegistry, port: int, host: str = ALL_INTERFACES) -> MetricsServer:
    """Serve `registry` at http://host:port/metrics (every path answers with the metrics)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
