"""The measurements. Each returns plain numbers; `bench.report` turns them into Markdown.

Latencies are taken one request at a time (the next sample starts when the previous one is
completely done), so a sample measures the path and not a queue. Bursts are taken with many
requests in flight, to measure throughput.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from tests.fakes.slack import Call
from tests.support.operator import OperatorProcess
from tests.support.scrape import Scrape, scrape

from bench.apiclient import ApiClient, ApiError, Obj, Watcher, collection, phase
from bench.stats import Summary
from bench.testbed import (
    APPROVER,
    APPROVER_SLACK_ID,
    OUTSIDER,
    SLACK_CHANNEL,
    Testbed,
    cpu_seconds,
    gauge,
    manifest,
    rss_mib,
)
from greenlight.adapters.slack.blocks import APPROVE_ACTION_ID
from greenlight.core.model import GROUP, VERSION, Identity
from greenlight.core.timefmt import parse_time
from greenlight.kube import access_review, event_body

SEQ_ANNOTATION = "bench.greenlight.dev/seq"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def gather_limited(
    count: int, concurrency: int, work: Callable[[int], Awaitable[None]]
) -> None:
    """Run work(0..count-1) with at most `concurrency` in flight."""
    queue = iter(range(count))

    async def lane() -> None:
        for index in queue:
            await work(index)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


# -- baselines: the API server alone ------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    create_watch: Summary  # POST sent -> ADDED event arrives on a watch
    create_rtt: Summary  # POST sent -> response
    patch_watch: Summary  # PATCH sent -> MODIFIED event arrives
    patch_rtt: Summary  # PATCH sent -> response
    configmap_patch_watch: Summary  # the same on a ConfigMap (issue 16's raw baseline)
    configmap_patch_rtt: Summary


async def baseline(api: ApiClient, namespace: str, samples: int) -> Baseline:
    watcher = Watcher(api, namespace)
    await watcher.start()
    create_watch, create_rtt, patch_watch, patch_rtt = [], [], [], []
    names = []
    try:
        for _ in range(samples):
            name = unique("raw")
            seen = watcher.until(name, lambda _obj: True)
            started = time.perf_counter()
            await api.create(namespace, manifest(name))
            create_rtt.append(time.perf_counter() - started)
            create_watch.append(await asyncio.wait_for(seen, 30) - started)
            names.append(name)
        name = names[0]
        for seq in range(samples):
            value = str(seq)
            seen = watcher.until(name, _annotated(SEQ_ANNOTATION, value))
            started = time.perf_counter()
            await api.annotate(namespace, name, {SEQ_ANNOTATION: value})
            patch_rtt.append(time.perf_counter() - started)
            patch_watch.append(await asyncio.wait_for(seen, 30) - started)
    finally:
        await watcher.stop()
    cm_watch, cm_rtt = await configmap_patches(api, namespace, samples)
    return Baseline(
        Summary.of(create_watch),
        Summary.of(create_rtt),
        Summary.of(patch_watch),
        Summary.of(patch_rtt),
        cm_watch,
        cm_rtt,
    )


async def configmap_patches(
    api: ApiClient, namespace: str, samples: int
) -> tuple[Summary, Summary]:
    """A merge patch of one ConfigMap's annotation -> MODIFIED on a watch; and its round trip."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    name = unique("raw-cm")
    await api.request(
        "POST", path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    )
    watcher = Watcher(api, namespace, path=path)
    await watcher.start()
    watch, rtt = [], []
    try:
        for seq in range(samples):
            value = str(seq)
            seen = watcher.until(name, _annotated(SEQ_ANNOTATION, value))
            started = time.perf_counter()
            await api.request(
                "PATCH",
                f"{path}/{name}",
                {"metadata": {"annotations": {SEQ_ANNOTATION: value}}},
                content_type="application/merge-patch+json",
            )
            rtt.append(time.perf_counter() - started)
            watch.append(await asyncio.wait_for(seen, 30) - started)
    finally:
        await watcher.stop()
    return Summary.of(watch), Summary.of(rtt)


# -- what the API server spends per call --------------------------------------------------

_STAMP = "2030-01-01T00:00:00Z"
_PENDING_STATUS: dict[str, Any] = {
    "phase": "Pending",
    "expiresAt": _STAMP,
    "requestedBy": "bench",
    "planDigest": "sha256:" + "0" * 64,
    "notifications": [
        {"channel": "console", "ref": "console", "state": "sent", "at": _STAMP, "via": "console"}
    ],
    "conditions": [
        {"type": kind, "status": "True", "reason": "Bench", "lastTransitionTime": _STAMP}
        for kind in ("Verified", "Notified", "Audited")
    ],
}
_EXPIRED_STATUS: dict[str, Any] = {
    "phase": "Expired",
    "decision": {"outcome": "Expired", "by": "greenlight", "at": _STAMP, "via": "expiry"},
}


@dataclass(frozen=True)
class ApiCost:
    call: str
    count: int
    seconds: float  # wall time of all `count` calls
    plane_cpu: float  # kube-apiserver + etcd CPU seconds over them

    @property
    def ms_per_call(self) -> float:
        return self.plane_cpu * 1000 / self.count


async def api_costs(bed: Testbed, namespace: str, count: int, concurrency: int) -> list[ApiCost]:
    """The control plane's CPU per call for the calls Greenlight's paths are made of, with no
    operator and no webhook (run before any operator registers one): what one expiry or one
    decision costs the API server, whatever the operator does."""
    api = bed.api
    base, prefix = collection(namespace), unique("cost")
    objects: dict[int, Obj] = {}
    costs: list[ApiCost] = []

    async def measure(call: str, one: Callable[[int], Awaitable[Any]]) -> None:
        cpu, started = bed.plane_cpu(), time.perf_counter()
        await gather_limited(count, concurrency, one)
        spent = bed.plane_cpu() - cpu
        costs.append(ApiCost(call, count, time.perf_counter() - started, spent))

    async def status(index: int, body: Mapping[str, Any]) -> None:
        version = objects[index]["metadata"]["resourceVersion"]
        objects[index] = await api.request(
            "PATCH",
            f"{base}/{prefix}-{index}/status",
            {"metadata": {"resourceVersion": version}, "status": body},
            content_type="application/merge-patch+json",
        )

    async def get(index: int) -> None:
        objects[index] = await api.request("GET", f"{base}/{prefix}-{index}")

    async def event(index: int) -> None:
        name = f"{prefix}-{index}"
        uid = str(objects[index]["metadata"]["uid"])
        body = event_body(namespace, name, uid, "Expired", "Expired by greenlight via expiry")
        await api.request("POST", f"/api/v1/namespaces/{namespace}/events", body)

    async def review(index: int) -> None:
        approver = Identity(user=APPROVER)
        body = access_review(approver, "approve", namespace, f"{prefix}-{index}")
        await api.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)

    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    await measure(
        "ConfigMap create",
        lambda i: api.request(
            "POST",
            configmaps,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{prefix}-{i}"}},
        ),
    )
    await measure(
        "ConfigMap annotation patch",
        lambda i: api.request(
            "PATCH",
            f"{configmaps}/{prefix}-{i}",
            {"metadata": {"annotations": {SEQ_ANNOTATION: "1"}}},
            content_type="application/merge-patch+json",
        ),
    )
    await measure("ApprovalRequest create", lambda i: _create(api, namespace, f"{prefix}-{i}"))
    await measure("ApprovalRequest get", get)
    await measure("ApprovalRequest status patch: Pending", lambda i: status(i, _PENDING_STATUS))
    await measure("ApprovalRequest status patch: Expired", lambda i: status(i, _EXPIRED_STATUS))

    async def put(index: int) -> None:
        body = dict(objects[index])
        body["status"] = {**body["status"], "phase": "Cancelled"}
        objects[index] = await api.request("PUT", f"{base}/{prefix}-{index}/status", body)

    await measure("ApprovalRequest status update (PUT, the whole object)", put)
    await measure("Event create", event)
    await measure("SubjectAccessReview", review)
    return costs


@dataclass(frozen=True)
class Burst:
    count: int
    concurrency: int
    creates_seconds: float  # first POST sent -> last POST answered
    all_seen_seconds: float  # first POST sent -> the condition held for every object
    cpu_seconds: float | None = None  # the operator's user + system time over the same span
    plane_cpu_seconds: float | None = None  # kube-apiserver + etcd, over the same span
    bench_cpu_seconds: float | None = None  # this process (clients, watcher, fake Slack)

    @property
    def cpu_ms_per_request(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds * 1000 / self.count

    @property
    def creates_per_second(self) -> float:
        return self.count / self.creates_seconds

    @property
    def done_per_second(self) -> float:
        return self.count / self.all_seen_seconds


async def raw_burst(api: ApiClient, namespace: str, count: int, concurrency: int) -> Burst:
    """`count` creates with nothing but the API server: time until the watch saw them all."""
    watcher = Watcher(api, namespace)
    await watcher.start()
    prefix = unique("rawburst")
    seen: set[str] = set()
    done = asyncio.Event()

    def on_event(kind: str, obj: Obj, _arrived: float) -> None:
        name = obj["metadata"]["name"]
        if kind == "ADDED" and name.startswith(prefix):
            seen.add(name)
            if len(seen) == count:
                done.set()

    watcher.listen(on_event)
    try:
        started = time.perf_counter()
        await gather_limited(count, concurrency, lambda i: _create(api, namespace, f"{prefix}-{i}"))
        created = time.perf_counter() - started
        await asyncio.wait_for(done.wait(), 300)
        return Burst(count, concurrency, created, time.perf_counter() - started)
    finally:
        await watcher.stop()


async def _create(api: ApiClient, namespace: str, name: str, **kwargs: Any) -> None:
    await api.create(namespace, manifest(name, **kwargs))


def _annotated(key: str, value: str) -> Callable[[Obj], bool]:
    return lambda obj: _annotation(obj, key) == value


def _annotation(obj: Mapping[str, Any], key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


# -- the operator's paths -----------------------------------------------------------------


@dataclass(frozen=True)
class OperatorLatency:
    notify_slack: Summary  # POST sent -> fake Slack received chat.postMessage
    notify_status: Summary  # POST sent -> watch shows status.notifications written
    pending: Summary  # POST sent -> watch shows phase Pending
    create_rtt: Summary  # POST answered (mutating + validating webhooks on the way)
    plain_patch_rtt: Summary  # an annotation that is not a decision: webhooks, no authz
    decision_rtt: Summary  # the decision PATCH answered (webhooks, SubjectAccessReview, audit)
    decision_kubectl: Summary  # decision PATCH sent -> watch shows Approved
    decision_slack: Summary  # signed click POSTed -> watch shows Approved
    slack_ack: Summary  # signed click POSTed -> the endpoint's HTTP answer
    # Inside the operator over the kubectl decisions, from its own histograms: mean seconds
    # (and how many were observed) of each webhook's reviews and of the audit group commits.
    inside: dict[str, tuple[float, int]] = field(default_factory=dict)


INSIDE = {
    "mutating webhook review (SubjectAccessReview included)": (
        "greenlight_admission_review_duration_seconds",
        {"webhook": "greenlight-admission-mutate"},
    ),
    "validating webhook review": (
        "greenlight_admission_review_duration_seconds",
        {"webhook": "greenlight-admission-validate"},
    ),
    "audit group commit (write + fsync of the log and its head)": (
        "greenlight_audit_write_duration_seconds",
        {},
    ),
}


def inside_means(before: Scrape, after: Scrape) -> dict[str, tuple[float, int]]:
    """Mean duration and count of each INSIDE histogram between two scrapes."""
    means: dict[str, tuple[float, int]] = {}
    for what, (name, labels) in INSIDE.items():
        count = after.since(before, f"{name}_count", **labels)
        total = after.since(before, f"{name}_sum", **labels)
        means[what] = (total / count if count else 0.0, int(count))
    return means


def _notified(obj: Obj) -> bool:
    return bool((obj.get("status") or {}).get("notifications"))


def _resolved(obj: Obj) -> bool:
    entries = (obj.get("status") or {}).get("notifications") or []
    return bool(entries) and all(e.get("state") == "resolved" for e in entries)


def _metadata(call: Call) -> Mapping[str, Any]:
    raw = call.args.get("metadata")
    if isinstance(raw, str):
        raw = json.loads(raw)
    return raw if isinstance(raw, Mapping) else {}


def _post_for(bed: Testbed, name: str, after: int) -> Call | None:
    """The chat.postMessage (a top-level post, not a thread reply) announcing `name`."""
    for call in bed.slack.calls[after:]:
        if call.method != "chat.postMessage" or call.args.get("thread_ts"):
            continue
        if (_metadata(call).get("event_payload") or {}).get("name") == name:
            return call
    return None


def _approve_token(call: Call) -> str:
    raw = call.args.get("blocks")
    blocks = json.loads(raw) if isinstance(raw, str) else raw
    for block in blocks or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == APPROVE_ACTION_ID:
                return str(element["value"])
    raise LookupError("the posted message has no Approve button")


async def operator_latency(
    bed: Testbed, namespace: str, interactions_url: str, samples: int, metrics_port: int
) -> OperatorLatency:
    watcher = Watcher(bed.api, namespace)
    await watcher.start()
    notify_slack, notify_status, pending, create_rtt = [], [], [], []
    posts: dict[str, Call] = {}
    try:
        for _ in range(samples):
            name = unique("lat")
            calls_before = len(bed.slack.calls)
            is_pending = watcher.until(name, lambda o: phase(o) == "Pending")
            is_notified = watcher.until(name, _notified)
            wall, started = time.time(), time.perf_counter()
            await bed.api.create(namespace, manifest(name))
            create_rtt.append(time.perf_counter() - started)
            pending.append(await asyncio.wait_for(is_pending, 30) - started)
            notify_status.append(await asyncio.wait_for(is_notified, 30) - started)
            post = _post_for(bed, name, calls_before)
            if post is None:
                raise RuntimeError(f"status says {name} was notified but Slack got no post")
            posts[name] = post
            notify_slack.append(post.at - wall)

        names = list(posts)
        plain_rtt = []
        for index, name in enumerate(names):
            started = time.perf_counter()
            await bed.api.annotate(namespace, name, {SEQ_ANNOTATION: str(index)})
            plain_rtt.append(time.perf_counter() - started)

        decision_rtt, by_kubectl, by_slack, acks = [], [], [], []
        half = len(names) // 2
        before = await asyncio.to_thread(scrape, metrics_port)
        for name in names[:half]:
            approved = watcher.until(name, lambda o: phase(o) == "Approved")
            resolved = watcher.until(name, _resolved)
            started = time.perf_counter()
            await bed.api.annotate(
                namespace, name, {"greenlight.dev/decision": "approve"}, as_user=APPROVER
            )
            decision_rtt.append(time.perf_counter() - started)
            by_kubectl.append(await asyncio.wait_for(approved, 30) - started)
            await asyncio.wait_for(resolved, 30)
        inside = inside_means(before, await asyncio.to_thread(scrape, metrics_port))
        for name in names[half:]:
            post = posts[name]
            payload = bed.slack.block_actions(
                user=APPROVER_SLACK_ID,
                action_id=APPROVE_ACTION_ID,
                value=_approve_token(post),
                channel=str(post.args["channel"]),
                message_ts=_ts_of(bed, post),
            )
            signed = bed.slack.sign(payload)
            approved = watcher.until(name, lambda o: phase(o) == "Approved")
            resolved = watcher.until(name, _resolved)
            started = time.perf_counter()
            status, ack = await bed.slack.deliver(interactions_url, signed)
            if status != 200:
                raise RuntimeError(f"the interactions endpoint answered {status}")
            acks.append(ack)
            by_slack.append(await asyncio.wait_for(approved, 30) - started)
            await asyncio.wait_for(resolved, 30)
    finally:
        await watcher.stop()
    return OperatorLatency(
        notify_slack=Summary.of(notify_slack),
        notify_status=Summary.of(notify_status),
        pending=Summary.of(pending),
        create_rtt=Summary.of(create_rtt),
        plain_patch_rtt=Summary.of(plain_rtt),
        decision_rtt=Summary.of(decision_rtt),
        decision_kubectl=Summary.of(by_kubectl),
        decision_slack=Summary.of(by_slack),
        slack_ack=Summary.of(acks),
        inside=inside,
    )


def _ts_of(bed: Testbed, post: Call) -> str:
    """The ts Slack gave the posted message (the fake keeps its messages per channel)."""
    channel = str(post.args["channel"])
    name = (_metadata(post).get("event_payload") or {}).get("name")
    for message in bed.slack.messages(channel):
        metadata = message.get("metadata") or {}
        if (metadata.get("event_payload") or {}).get("name") == name:
            return str(message["ts"])
    raise LookupError(f"the fake Slack has no message for {name}")


def patience(count: int) -> float:
    """Seconds to wait for `count` objects to be handled (at least 15 minutes, 10 per second)."""
    return max(900.0, count / 10)


async def operator_burst(
    bed: Testbed,
    namespace: str,
    count: int,
    concurrency: int,
    *,
    slack: bool,
    process: OperatorProcess | None = None,
    plan_kib: int = 0,
) -> tuple[Burst, float]:
    """`count` creates through the operator: time until all are Pending and notified (Slack
    posts when `slack`, else status.notifications). Also returns the time until every status
    says so. With `process`, the burst's CPU time of that operator (until all are done)."""
    watcher = Watcher(bed.api, namespace, slim=True)
    await watcher.start()
    prefix = unique("burst")
    notified: set[str] = set()
    all_status = asyncio.Event()
    wait = patience(count)
    pid = process.process.pid if process is not None and process.process is not None else None

    def on_event(_kind: str, obj: Obj, _arrived: float) -> None:
        name = obj["metadata"]["name"]
        if name.startswith(prefix) and phase(obj) == "Pending" and _notified(obj):
            notified.add(name)
            if len(notified) == count:
                all_status.set()

    watcher.listen(on_event)
    calls_before = len(bed.slack.calls)
    try:
        cpu_before = cpu_seconds(pid) if pid is not None else 0.0
        plane_before, bench_before = bed.plane_cpu(), time.process_time()
        started = time.perf_counter()
        await gather_limited(
            count,
            concurrency,
            lambda i: _create(bed.api, namespace, f"{prefix}-{i}", plan_kib=plan_kib),
        )
        created = time.perf_counter() - started
        posted_at = None
        if slack:
            while posted_at is None:
                posted = {
                    (_metadata(c).get("event_payload") or {}).get("name")
                    for c in bed.slack.calls[calls_before:]
                    if c.method == "chat.postMessage" and not c.args.get("thread_ts")
                }
                if sum(1 for n in posted if str(n).startswith(prefix)) >= count:
                    posted_at = time.perf_counter()
                elif time.perf_counter() - started > wait:
                    raise TimeoutError(f"only {len(posted)} of {count} posts after {wait:.0f} s")
                else:
                    await asyncio.sleep(0.05)
        await watcher.wait(all_status, wait)
        status_at = time.perf_counter()
        cpu = cpu_seconds(pid) - cpu_before if pid is not None else None
        done_at = posted_at if posted_at is not None else status_at
        plane, spent = bed.plane_cpu() - plane_before, time.process_time() - bench_before
        burst = Burst(count, concurrency, created, done_at - started, cpu, plane, spent)
        return burst, status_at - started
    finally:
        await watcher.stop()


# -- scale ---------------------------------------------------------------------------------


@dataclass
class Scale:
    count: int
    fill: Burst  # creating them all, until every one is Pending and notified
    rss_settled_mib: float  # after the fill, once the operator is idle
    cold_start_seconds: float  # process start -> every expiry armed (pending gauge == count)
    cold_start_ready_seconds: float  # process start -> health + webhook answered
    rss_cold_peak_mib: float
    rss_cold_settled_mib: float
    rss_idle_mib: float = 0.0  # right after start, before any request
    plan_kib: int = 0
    expiring: int = 0
    expiring_same_second: int = 0
    expiry_lateness: Summary | None = None  # expiresAt -> watch shows Expired
    expiry_all_within: float = 0.0  # the target moment (shared expiresAt) -> last one Expired
    rss_after_expiry_mib: float = 0.0
    # CPU seconds from the shared second to the last Expired: the operator, and the control
    # plane (kube-apiserver + etcd), which shares the machine's cores with it
    expiry_operator_cpu: float = 0.0
    expiry_plane_cpu: float = 0.0
    expiry_calls: dict[str, float] = field(default_factory=dict)  # API calls served meanwhile
    notes: list[str] = field(default_factory=list)

    def expiry_ms(self, cpu: float) -> float:
        """CPU milliseconds per request of the storm."""
        return cpu * 1000 / max(self.expiring, 1)


_REQUESTS_TOTAL = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.eE+-]+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def api_calls(api: ApiClient) -> dict[str, float]:
    """The API server's own count of the calls it served (`apiserver_request_total`), by
    verb, resource and subresource."""
    text = await api.text("/metrics")
    counts: dict[str, float] = {}
    for labels, value in _REQUESTS_TOTAL.findall(text):
        label = dict(_LABEL.findall(labels))
        resource = label.get("resource", "")
        if label.get("subresource"):
            resource += "/" + label["subresource"]
        key = f"{label.get('verb', '')} {resource}"
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


async def _pending_gauge(bed: Testbed, process: OperatorProcess) -> float:
    try:
        text = await bed.metrics(process)
    except OSError:
        return -1.0
    return gauge(text, "greenlight_requests_pending") or 0.0


async def _until_pending(bed: Testbed, process: OperatorProcess, count: int) -> None:
    """Poll /metrics until the operator tracks `count` pending requests (every expiry armed)."""
    wait = patience(count)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if await _pending_gauge(bed, process) >= count:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the operator did not track {count} pending requests within {wait:.0f} s")


async def _settled_rss(process: OperatorProcess, seconds: float = 5.0) -> float:
    """The highest RSS over a few seconds of idling (what stays resident)."""
    assert process.process is not None
    high = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        high = max(high, rss_mib(process.process.pid))
        await asyncio.sleep(0.5)
    return high


async def scale(
    bed: Testbed,
    process: OperatorProcess,
    namespace: str,
    count: int,
    concurrency: int,
    *,
    plan_kib: int = 0,
) -> Scale:
    """`count` pending requests (plans of `plan_kib` KiB): RSS idle, then kill -9 and a cold
    start: time until every expiry is armed and RSS after it."""
    idle = await _settled_rss(process)
    fill, _status = await operator_burst(
        bed, namespace, count, concurrency, slack=False, plan_kib=plan_kib
    )
    await _until_pending(bed, process, count)
    settled = await _settled_rss(process)

    process.kill()
    started = time.perf_counter()
    start = asyncio.create_task(asyncio.to_thread(process.start, 120.0))
    peak = 0.0
    ready_at = None
    armed_at = None
    while armed_at is None:
        await asyncio.sleep(0.25)
        if start.done() and ready_at is None:
            await start
            ready_at = time.perf_counter() - started
        if process.process is not None and process.running:
            peak = max(peak, rss_mib(process.process.pid))
            if await _pending_gauge(bed, process) >= count:
                armed_at = time.perf_counter() - started
        if time.perf_counter() - started > patience(count):
            raise TimeoutError(f"the operator did not arm every expiry of {count} in time")
    await start
    if bed.profile_dir is not None:
        bed.profile(process, "cold-start")
    if ready_at is None:
        ready_at = time.perf_counter() - started
    return Scale(
        count=count,
        fill=fill,
        rss_settled_mib=settled,
        cold_start_seconds=armed_at,
        cold_start_ready_seconds=ready_at,
        rss_cold_peak_mib=peak,
        rss_cold_settled_mib=await _settled_rss(process),
        rss_idle_mib=idle,
        plan_kib=plan_kib,
    )


async def expiry_storm(
    bed: Testbed,
    process: OperatorProcess,
    namespace: str,
    count: int,
    concurrency: int,
    creates_per_second: float,
    result: Scale,
) -> None:
    """`count` requests whose expiresAt is one and the same second: how late is the last one?

    Timeouts are whole seconds, chosen per request so that creationTimestamp + timeout lands on
    the target second; a create that the server stamps a second later than predicted expires a
    second later (both counts are reported).
    """
    watcher = Watcher(bed.api, namespace)
    await watcher.start()
    prefix = unique("expire")
    expired_at: dict[str, float] = {}
    everyone = asyncio.Event()

    def on_event(_kind: str, obj: Obj, _arrived: float) -> None:
        name = obj["metadata"]["name"]
        if name.startswith(prefix) and phase(obj) == "Expired" and name not in expired_at:
            expired_at[name] = time.time()
            if len(expired_at) == count:
                everyone.set()

    watcher.listen(on_event)
    creating = count / max(creates_per_second, 1.0)
    target = math.ceil(time.time() + 2 * creating + 75)
    pid = process.process.pid if process.process is not None else None

    def cpu_now() -> tuple[float, float]:  # (the operator, the control plane)
        return (cpu_seconds(pid) if pid is not None else 0.0), bed.plane_cpu()

    async def at_target_second() -> tuple[tuple[float, float], dict[str, float]]:
        await asyncio.sleep(max(target - time.time(), 0.0))
        return cpu_now(), await api_calls(bed.api)

    async def create(index: int) -> None:
        timeout = max(60, target - math.floor(time.time()))
        await _create(bed.api, namespace, f"{prefix}-{index}", timeout=f"{timeout}s")

    at_target = asyncio.create_task(at_target_second())
    try:
        await gather_limited(count, concurrency, create)
        if time.time() > target - 5:
            result.notes.append(
                "creating the expiring requests took longer than planned; "
                "some were created after their shared expiry second was near"
            )
        await asyncio.wait_for(everyone.wait(), max(60.0, target - time.time() + 120))
        (operator_cpu, plane_cpu), calls = await at_target
        operator_now, plane_now = cpu_now()
        result.expiry_operator_cpu = operator_now - operator_cpu
        result.expiry_plane_cpu = plane_now - plane_cpu
        after = await api_calls(bed.api)
        result.expiry_calls = {
            key: after[key] - calls.get(key, 0.0)
            for key in after
            if after[key] - calls.get(key, 0.0) >= count / 10
        }
        expires = {
            name: parse_time(watcher.latest[name]["status"]["expiresAt"]).timestamp()
            for name in expired_at
        }
    finally:
        at_target.cancel()
        await watcher.stop()
    same = sum(1 for at in expires.values() if at == target)
    lateness = [expired_at[name] - expires[name] for name in expired_at]
    result.expiring = count
    result.expiring_same_second = same
    result.expiry_lateness = Summary.of(lateness)
    on_target = [expired_at[name] - target for name, at in expires.items() if at == target]
    result.expiry_all_within = max(on_target) if on_target else float("nan")
    result.rss_after_expiry_mib = await _settled_rss(process)


def error_lines(process: OperatorProcess) -> tuple[int, int]:
    """(log lines with level ERROR, lines that are not JSON) over all of the process's runs."""
    errors = unparsed = 0
    for line in process.log_lines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            unparsed += 1
            continue
        if isinstance(record, dict) and record.get("level") == "ERROR":
            errors += 1
            if errors <= 5:  # say what they were (on stderr: the tables stay as they are)
                print(f"operator ERROR: {line.strip()[:600]}", file=sys.stderr)
    return errors, unparsed


# -- floods: refused attempts must not fill the audit volume -------------------------------


def audit_bytes(process: OperatorProcess) -> int:
    return process.audit_file.stat().st_size if process.audit_file.exists() else 0


@dataclass(frozen=True)
class Flood:
    attempts: int
    seconds: float  # the flood itself
    statuses: dict[int, int]  # HTTP status -> how many answers
    audit_growth: int  # bytes, at the end of the flood
    audit_growth_settled: int  # bytes, after `settle` more seconds (open refusal windows closed)
    settle: float

    @property
    def per_second(self) -> float:
        return self.attempts / self.seconds if self.seconds else 0.0


async def _settled_growth(process: OperatorProcess, before: int, settle: float) -> int:
    await asyncio.sleep(settle)
    return audit_bytes(process) - before


async def refused_decisions(
    bed: Testbed,
    process: OperatorProcess,
    namespace: str,
    seconds: float,
    *,
    plan_kib: int,
    settle: float,
) -> Flood:
    """OUTSIDER (may patch, may not approve) loops `kubectl annotate decision=approve` against
    one pending request with a big plan, one attempt after the other, for `seconds`."""
    watcher = Watcher(bed.api, namespace, slim=True)
    await watcher.start()
    name = unique("flood")
    try:
        ready = watcher.until(name, lambda o: phase(o) == "Pending" and _notified(o))
        await _create(bed.api, namespace, name, plan_kib=plan_kib)
        await asyncio.wait_for(ready, 60)
    finally:
        await watcher.stop()
    await asyncio.sleep(1.0)  # let the request's own records land before the baseline size
    before = audit_bytes(process)
    statuses: dict[int, int] = {}
    attempts = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        try:
            await bed.api.annotate(
                namespace, name, {"greenlight.dev/decision": "approve"}, as_user=OUTSIDER
            )
            status = 200
        except ApiError as exc:
            status = exc.status
        statuses[status] = statuses.get(status, 0) + 1
        attempts += 1
    elapsed = time.perf_counter() - started
    grown = audit_bytes(process) - before
    return Flood(
        attempts, elapsed, statuses, grown, await _settled_growth(process, before, settle), settle
    )


async def unsigned_slack_posts(
    bed: Testbed,
    process: OperatorProcess,
    interactions_url: str,
    count: int,
    concurrency: int,
    *,
    settle: float,
) -> Flood:
    """`count` interaction POSTs that Slack did not sign (half without signature headers, half
    signed with a wrong secret), `concurrency` in flight: every one must be answered 401."""
    payload = bed.slack.block_actions(
        user=APPROVER_SLACK_ID,
        action_id=APPROVE_ACTION_ID,
        value="forged-token",
        channel=SLACK_CHANNEL,
        message_ts="1700000000.000100",
    )
    body = urlencode({"payload": json.dumps(payload)}).encode()
    forged = bed.slack.sign_body(body, secret="not-the-signing-secret").headers
    bare = {"Content-Type": "application/x-www-form-urlencoded"}
    statuses: dict[int, int] = {}
    before = audit_bytes(process)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def post(index: int) -> None:
            headers = bare if index % 2 == 0 else forged
            async with session.post(interactions_url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await gather_limited(count, concurrency, post)
        elapsed = time.perf_counter() - started
    grown = audit_bytes(process) - before
    return Flood(
        count, elapsed, statuses, grown, await _settled_growth(process, before, settle), settle
    )


POLICIES_PATH = f"/apis/{GROUP}/{VERSION}/clusterapprovalpolicies"
MARKER_POLICY: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "ClusterApprovalPolicy",
    "metadata": {"name": "bench-policy-marker"},
    "spec": {"require": {"approvals": 1}},
}


def cluster_policy(index: int) -> dict[str, Any]:
    """One of a thousand cluster policies: most name other actions (exact or by glob), some
    apply to every action with a CEL condition, a few to every action outright."""
    spec: dict[str, Any]
    if index % 200 == 0:
        spec = {"require": {"approvals": 2}}
    elif index % 10 == 0:
        spec = {
            "match": {"condition": f"plan.deletes > {index} || request.namespace == 'x{index}'"}
        }
    elif index % 2 == 0:
        spec = {"match": {"actions": [f"job-{index}-*"]}, "require": {"approvals": 2}}
    else:
        spec = {"match": {"actions": [f"deploy service-{index}"], "targets": ["prod*"]}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterApprovalPolicy",
        "metadata": {"name": f"bench-policy-{index:04d}"},
        "spec": spec,
    }


async def create_round_trips(api: ApiClient, namespace: str, samples: int) -> Summary:
    """Sequential creates through the webhooks: how long the API server takes to answer."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await _create(api, namespace, unique("policy-rtt"))
        times.append(time.perf_counter() - started)
    return Summary.of(times)


async def install_policies(api: ApiClient, count: int, concurrency: int) -> float:
    """Create `count` cluster policies (each through the validating webhook); seconds taken."""
    started = time.perf_counter()

    async def one(index: int) -> None:
        await api.apply_raw(POLICIES_PATH, cluster_policy(index))

    await gather_limited(count, concurrency, one)
    await api.apply_raw(POLICIES_PATH, MARKER_POLICY)
    return time.perf_counter() - started


async def policies_applied(api: ApiClient, namespace: str, within: float) -> None:
    """Wait until creates are judged with the marker policy, installed after the others (the
    webhook's watch delivers policies in order)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        name = unique("policy-probe")
        created = await api.create(namespace, manifest(name))
        stamp = json.loads(created["metadata"]["annotations"]["greenlight.dev/requested-by"])
        sources = (stamp.get("policy") or {}).get("from") or []
        if any(f"/{MARKER_POLICY['metadata']['name']}@" in s for s in sources):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the operator did not load the policies within {within:.0f} s")
