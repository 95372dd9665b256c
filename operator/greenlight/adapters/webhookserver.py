"""The HTTPS server behind the admission webhooks: kopf's, with two things a gate needs.

- **Who is calling.** Only the API server should reach the webhook port: an AdmissionReview is a
  claim about who did what, and a forged one must not even be read. With a client CA configured
  (`GREENLIGHT_WEBHOOK_CLIENT_CA_FILE`), the TLS handshake requires a client certificate signed
  by it (the API server presents one when its admission configuration names a kubeconfig for
  the webhook: docs/security.md); `GREENLIGHT_WEBHOOK_CLIENT_NAMES` further restricts the
  certificate's common name. Anything else is turned away before its body is read.
- **How much it may send.** An AdmissionReview carries the object twice (old and new); a plan at
  the schema's size limit does not fit aiohttp's default 1 MiB body limit, which made such a
  request undecidable. Bodies up to MAX_REVIEW_BYTES are read (the API server itself bounds an
  object to about 1.5 MiB); larger ones get 413. Without a client CA anyone who reaches the
  port can send reviews, so what they can make the operator hold is bounded too: the reviews
  being read and answered at once hold at most REVIEW_BYTES_IN_FLIGHT of bodies between them
  (each chunk is counted as it arrives; a review that finds no room is answered 503 at once,
  so a stalled sender holds only what it sent and no review queues behind it), and a body
  must arrive within BODY_SECONDS (408). Only the handlers' own paths are answered (404).

Reviews for Greenlight's own webhooks are answered here directly (`review`): the handler
declared with `@kopf.on.mutate`/`@kopf.on.validate` for the webhook's id is called with the
review's parts, and the response is built from its `kopf.AdmissionError` or its annotation
patch. kopf's own admission path keeps a memory per object, diffs the whole old and new objects
and deep-copies the object to compute the JSON patch: with big plans that was most of the
webhook's CPU, for nothing these handlers use. The declarations stay kopf's, so the webhook
configuration is still derived from them (adapters/webhookconfig.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf
import structlog
from kopf._core.intents.causes import WebhookType

from greenlight.telemetry import metrics

_log = structlog.get_logger("greenlight.webhooks")
MAX_REVIEW_BYTES = 8 * 1024 * 1024
REVIEW_BYTES_IN_FLIGHT = 32 * 1024 * 1024
BODY_SECONDS = 5.0


class ByteBudget:
    """Bytes that the reviews being read and answered hold between them. A review takes room for
    each chunk of its body as it arrives, and never waits for it: with no room left it is
    answered 503 at once. So a sender that stalls holds only what it has sent, and nobody's
    review queues behind another's."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total

    @contextlib.contextmanager
    def account(self) -> Iterator[Callable[[int], None]]:
        """A `take(size)` for one review; all it took is given back when the review is done."""
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            if size > self.free:
                raise aiohttp.web.HTTPServiceUnavailable(
                    reason="too many admission reviews in flight; try again"
                )
            self.free -= size
            taken += size

        try:
            yield take
        finally:
            self.free += taken


@dataclass(frozen=True)
class Route:
    """One declared webhook handler: its function, and whether it mutates."""

    fn: Callable[..., Awaitable[Any]]
    mutating: bool


def routes(registry: Any) -> dict[str, Route]:
    """Every webhook handler declared in kopf's registry, by webhook id (the URL path)."""
    return {
        str(handler.id): Route(handler.fn, handler.reason == WebhookType.MUTATING)
        for handler in registry._webhooks.get_all_handlers()
    }


class WebhookServer(kopf.WebhookServer):
    def __init__(
        self,
        *,
        client_ca: Path | None = None,
        client_names: Collection[str] = (),
        **kwargs: Any,
    ) -> None:
        if client_ca is not None:
            kwargs.update(verify_mode=ssl.CERT_REQUIRED, verify_cafile=str(client_ca))
        super().__init__(**kwargs)
        self.client_names = frozenset(client_names)
        self.requires_client_cert = client_ca is not None
        self.budget = ByteBudget(REVIEW_BYTES_IN_FLIGHT)
        # Set at start-up: the handlers' routes and the operator's memo (the gate).
        self.routes: Mapping[str, Route] = {}
        self.memo: Any = None

    async def _serve(  # type: ignore[override]
        self, fn: kopf.WebhookFn, request: aiohttp.web.Request
    ) -> aiohttp.web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if self.requires_client_cert and not self._trusted(peer):
            _log.warning("admission review from an unexpected client refused", peer=_cn(peer))
            raise aiohttp.web.HTTPForbidden(reason="client certificate not accepted")
        with self.budget.account() as take:
            body = await read_body(request, take)
            return await self._answer(request, body)

    async def _answer(self, request: aiohttp.web.Request, body: bytes) -> aiohttp.web.Response:
        started = time.perf_counter()
        webhook = request.match_info.get("id", "")
        route = self.routes.get(webhook)
        if route is None:
            # Only the handlers' own paths are answered (kopf's generic handler would keep a
            # memo of every uid a caller makes up).
            raise aiohttp.web.HTTPNotFound(reason="no such webhook")
        if self.memo is None:
            raise aiohttp.web.HTTPServiceUnavailable(reason="the operator is starting")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:  # JSON, UTF-8, digit limits, nesting
            raise aiohttp.web.HTTPBadRequest(reason=str(exc)[:200] or "not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
            raise aiohttp.web.HTTPBadRequest(reason="not an AdmissionReview")
        answer = await review(route, data, self.memo)
        metrics.observe_admission_review(webhook, time.perf_counter() - started)
        return aiohttp.web.json_response(answer)

    def _trusted(self, peer: Any) -> bool:
        if not peer:
            return False
        return not self.client_names or _cn(peer) in self.client_names


async def review(route: Route, data: dict[str, Any], memo: Any) -> dict[str, Any]:
    """Answer one AdmissionReview with `route`'s handler, as kopf would: allowed unless it
    raised (an AdmissionError's message and code; anything else 500), with its patch of the
    object's annotations as a JSON patch."""
    request = data["request"]
    userinfo = request.get("userInfo")
    new, old = request.get("object"), request.get("oldObject")
    if userinfo is None or (new is None and old is None):
        raise aiohttp.web.HTTPBadRequest(reason="the review has no userInfo or no object")
    operation = request.get("operation")
    body = new if new is not None else old
    patch = kopf.Patch()
    warnings: list[str] = []
    error: Exception | None = None
    if not (route.mutating and operation == "DELETE"):  # kopf runs no mutation on a delete
        try:
            await route.fn(
                operation=operation,
                subresource=request.get("subResource"),
                userinfo=userinfo,
                old=old,
                new=new,
                body=body,
                patch=patch,
                warnings=warnings,
                dryrun=bool(request.get("dryRun")),
                memo=memo,
                logger=_log,
            )
        except kopf.AdmissionError as exc:
            error = exc
        except Exception as exc:
            _log.exception("an admission handler failed; the write is refused")
            error = exc
    payload: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": error is None}
    if warnings:
        payload["warnings"] = [str(w) for w in warnings]
    if error is not None:
        code = error.code if isinstance(error, kopf.AdmissionError) else None
        payload["status"] = {"message": str(error) or repr(error), "code": code or 500}
    else:
        ops = json_patch(body, patch)
        if ops:
            payload["patch"] = base64.b64encode(json.dumps(ops).encode()).decode("ascii")
            payload["patchType"] = "JSONPatch"
    return {
        "apiVersion": data.get("apiVersion", "admission.k8s.io/v1"),
        "kind": data.get("kind", "AdmissionReview"),
        "response": payload,
    }


def json_patch(body: Any, patch: kopf.Patch) -> list[dict[str, Any]]:
    """The JSON patch for `patch` against `body`. Greenlight's handlers change only
    annotations: those become add/remove operations on their own keys (no copy of the object);
    anything else is left to kopf's general (copying) diff."""
    if not patch:
        return []
    meta = patch.get("metadata")
    if set(patch) != {"metadata"} or not isinstance(meta, dict) or set(meta) != {"annotations"}:
        return [dict(op) for op in patch.as_json_patch(body)]
    changes: dict[str, Any] = meta["annotations"]
    current = (body.get("metadata") or {}).get("annotations") if isinstance(body, dict) else None
    if not isinstance(current, dict):
        values = {k: v for k, v in changes.items() if v is not None}
        return [{"op": "add", "path": "/metadata/annotations", "value": values}] if values else []
    ops: list[dict[str, Any]] = []
    for key, value in changes.items():
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        if value is None:
            if key in current:
                ops.append({"op": "remove", "path": path})
        elif current.get(key) != value:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


def _too_large(size: int) -> aiohttp.web.HTTPRequestEntityTooLarge:
    return aiohttp.web.HTTPRequestEntityTooLarge(max_size=MAX_REVIEW_BYTES, actual_size=size)


async def read_body(
    request: aiohttp.web.Request, take: Callable[[int], None] = lambda size: None
) -> bytes:
    """The review's body, at most MAX_REVIEW_BYTES (413) and within BODY_SECONDS (408); `take`
    is given the size of each chunk before it is kept (it raises to refuse it)."""
    if request.content_length is not None and request.content_length > MAX_REVIEW_BYTES:
        raise _too_large(request.content_length)
    try:
        async with asyncio.timeout(BODY_SECONDS):
            return await _read_bounded(request, take)
    except TimeoutError:
        raise aiohttp.web.HTTPRequestTimeout(
            reason="the review's body was not sent in time"
        ) from None


async def _read_bounded(request: aiohttp.web.Request, take: Callable[[int], None]) -> bytes:
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_REVIEW_BYTES:
            raise _too_large(size)
        take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def _cn(peer: Any) -> str:
    """The subject common name of a peer certificate as `ssl` reports it."""
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
