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
  object to about 1.5 MiB); larger ones get 413.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

import aiohttp.web
import kopf
import structlog
from kopf._cogs.structs import reviews
from kopf._core.engines.admission import WebhookError

_log = structlog.get_logger("greenlight.webhooks")
MAX_REVIEW_BYTES = 8 * 1024 * 1024


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

    async def _serve(  # type: ignore[override]
        self, fn: kopf.WebhookFn, request: aiohttp.web.Request
    ) -> aiohttp.web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if self.requires_client_cert and not self._trusted(peer):
            _log.warning("admission review from an unexpected client refused", peer=_cn(peer))
            raise aiohttp.web.HTTPForbidden(reason="client certificate not accepted")
        body = await _read_bounded(request)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise aiohttp.web.HTTPBadRequest(reason=str(exc)[:200]) from None
        if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
            raise aiohttp.web.HTTPBadRequest(reason="not an AdmissionReview")
        try:
            response = await fn(
                cast(reviews.Request, data),
                webhook=kopf.HandlerId(request.match_info.get("id", "")),
                sslpeer=peer,
                headers=dict(request.headers),
            )
        except WebhookError as exc:  # kopf's own "this is not a review" errors
            raise aiohttp.web.HTTPBadRequest(reason=str(exc)[:200] or None) from None
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a malformed review
            _log.warning("malformed admission review refused", error=str(exc)[:200])
            raise aiohttp.web.HTTPBadRequest(reason="malformed AdmissionReview") from None
        return aiohttp.web.json_response(response)

    def _trusted(self, peer: Any) -> bool:
        if not peer:
            return False
        return not self.client_names or _cn(peer) in self.client_names


async def _read_bounded(request: aiohttp.web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_REVIEW_BYTES:
        raise aiohttp.web.HTTPRequestEntityTooLarge(
            max_size=MAX_REVIEW_BYTES, actual_size=request.content_length
        )
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_REVIEW_BYTES:
            raise aiohttp.web.HTTPRequestEntityTooLarge(max_size=MAX_REVIEW_BYTES, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


def _cn(peer: Any) -> str:
    """The subject common name of a peer certificate as `ssl` reports it."""
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
