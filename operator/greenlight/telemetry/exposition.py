"""Serving a Prometheus registry over HTTP, for the operator and for the agent SDK alike.

The server runs in a daemon thread (prometheus-client's WSGI app on the standard library's
threading WSGI server), so a busy or blocked asyncio loop never delays a scrape. It negotiates
the format from the `Accept` header: Prometheus text by default, OpenMetrics when asked, which
is the format that carries exemplars.

The port needs no credentials, so what a caller can make it hold is bounded: at most
MAX_CONNECTIONS connections are served at once (one thread each; more are closed at once), at
most MAX_PER_CLIENT of them from one address, and a connection is closed CONNECTION_TIMEOUT
seconds after it opened, however slowly it sends (a byte every few seconds kept a slot for
ever when the timeout was only between reads). A scraper makes one short request at a time,
far inside all three.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.metrics_core import Metric

MAX_CONNECTIONS = 16
MAX_PER_CLIENT = 4
CONNECTION_TIMEOUT = 10.0

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


class _Handler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT  # applied to the connection's socket before it is read

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape is no log line."""


class _BoundedServer(ThreadingWSGIServer):
    """One thread per connection, at most MAX_CONNECTIONS at once; the rest are closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._per_client: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take(str(client_address[0])):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._give_back(str(client_address[0]))
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        deadline = threading.Timer(CONNECTION_TIMEOUT, _cut, (request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._give_back(str(client_address[0]))

    def _take(self, client: str) -> bool:
        with self._lock:
            if self._per_client.get(client, 0) >= MAX_PER_CLIENT:
                return False
            if not self._slots.acquire(blocking=False):
                return False
            self._per_client[client] = self._per_client.get(client, 0) + 1
            return True

    def _give_back(self, client: str) -> None:
        with self._lock:
            left = self._per_client.get(client, 1) - 1
            if left:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went silent (timed out) or away is no error worth a traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


def _cut(connection: socket.socket) -> None:
    """End a connection that outlived CONNECTION_TIMEOUT (its thread's read then fails)."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def serve(registry: CollectorRegistry, port: int, host: str = ALL_INTERFACES) -> MetricsServer:
    """Serve `registry` at http://host:port/metrics (every path answers with the metrics)."""

    class Server(_BoundedServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_Handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
