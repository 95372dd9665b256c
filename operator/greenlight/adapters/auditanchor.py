"""The audit log's anchor: its head (seq, hash, MAC) kept in a ConfigMap in the operator's
namespace, outside the log's volume, so a log cut or deleted together with its head file is
still caught (docs/audit.md, "The anchor").

The operator moves the anchor after durable groups, off the write path: `record` never waits
for the API server. `AnchorPublisher` keeps only the newest head and writes it at most once per
`interval` seconds, retrying until the anchor is current; so the anchor trails the log by at
most about `interval` seconds (longer while the API server cannot be reached) and never moves
backwards. Verification accepts a log that has gone on past its anchor, never one that stops
short of it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import structlog

from greenlight.adapters.auditlog import AuditChainBroken, AuditLog
from greenlight.config import Settings
from greenlight.core import audit as chain
from greenlight.kube import Kube, configmaps
from greenlight.telemetry import metrics

_log = structlog.get_logger("greenlight.audit")
NAME_PREFIX = "greenlight-audit-anchor"
PUBLISH_INTERVAL = 1.0
RETRY_INTERVAL = 5.0


def anchor_name(audit_file: Path) -> str:
    """`greenlight-audit-anchor-<replica>` from the log's name (`audit-greenlight-0.jsonl` gives
    `greenlight-audit-anchor-greenlight-0`; `audit.jsonl` gives `greenlight-audit-anchor`), so
    each per-replica chain has its own anchor."""
    stem = audit_file.name.removesuffix(".jsonl")
    stem = stem.removeprefix("audit").lstrip("-_.")
    label = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    name = f"{NAME_PREFIX}-{label}" if label else NAME_PREFIX
    return name[:253].rstrip("-")


class AuditAnchor:
    """One anchor ConfigMap: `data` holds `seq`, `hash`, `mac` and the log's file name."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._collection = configmaps(namespace)

    def __str__(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    async def read(self) -> chain.Head | None:
        """The anchored head; None when there is no anchor yet. Raises chain.HeadError."""
        obj = await self.kube.read_object(self._collection, self.name)
        if obj is None:
            return None
        return chain.parse_head(obj.get("data") or {}, source=f"the anchor {self}")

    async def write(self, head: chain.Head, log_file: str) -> None:
        data = {k: str(v) for k, v in head.to_json().items()}
        data["file"] = log_file
        labels = {
            "app.kubernetes.io/name": "greenlight",
            "app.kubernetes.io/component": "audit-anchor",
        }
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "data": data,
        }
        await self.kube.merge_or_create(self._collection, body)


class AnchorPublisher:
    """Moves the anchor to the log's newest durable head, batched (see the module docstring)."""

    def __init__(
        self,
        anchor: AuditAnchor,
        log_file: str,
        *,
        interval: float = PUBLISH_INTERVAL,
        retry: float = RETRY_INTERVAL,
    ) -> None:
        self.anchor = anchor
        self.log_file = log_file
        self.interval = interval
        self.retry = retry
        self.published: chain.Head | None = None
        self._latest: chain.Head | None = None
        self._wake = asyncio.Event()

    def note(self, head: chain.Head) -> None:
        """Called after every durable group; never blocks."""
        if self._latest is None or head.seq > self._latest.seq:
            self._latest = head
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            head = self._latest
            if head is None or head == self.published:
                continue
            try:
                await self.anchor.write(head, self.log_file)
            except Exception as exc:  # any failure (API down, RBAC): keep the head, try again
                _log.warning(
                    "cannot update the audit anchor", anchor=str(self.anchor), error=str(exc)
                )
                self._wake.set()
                await asyncio.sleep(self.retry)
                continue
            self.published = head
            await asyncio.sleep(self.interval)


async def guard(audit: AuditLog, kube: Kube, settings: Settings) -> asyncio.Task[None] | None:
    """At start: check the log against its head file and anchor, and adopt the records a crash
    left past the head file (`AuditLog.adopt_tail`). When records are missing, set
    `greenlight_audit_chain_broken` to 1 and make the log refuse every write (so nothing is
    decided) until an admin runs `greenlight audit reset`; else keep the anchor current (the
    returned task). With no anchor namespace configured only the head file is checked."""
    anchor = None
    if settings.audit_anchor_namespace:
        name = settings.audit_anchor_name or anchor_name(settings.audit_file)
        anchor = AuditAnchor(kube, settings.audit_anchor_namespace, name)
    try:
        anchored = await anchor.read() if anchor is not None else None
        audit.check_against(anchored, anchor_expected=anchor is not None)
        audit.adopt_tail()
    except (AuditChainBroken, chain.HeadError) as exc:
        metrics.AUDIT_CHAIN_BROKEN.set(1)
        reason = f"the audit chain is broken: {exc}"
        _log.error("audit chain broken; no decision will be recorded", error=str(exc))
        audit.refuse(reason)
        return None
    metrics.AUDIT_CHAIN_BROKEN.set(0)
    if anchor is None:
        return None
    publisher = AnchorPublisher(anchor, settings.audit_file.name)
    audit.watch(publisher.note)
    publisher.note(audit.head)
    return asyncio.create_task(publisher.run())
