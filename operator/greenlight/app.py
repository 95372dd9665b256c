"""`greenlight operator`: wire the adapters together and run kopf."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
import structlog

from greenlight.adapters import (  # noqa: F401  (admission registers the webhook handlers)
    admission,
    auditanchor,
    receiptkeys,
    webhookconfig,
)
from greenlight.adapters.admission import AdmissionGate
from greenlight.adapters.announce import Announcer
from greenlight.adapters.auditlog import AuditLog, AuditLogLocked, load_or_create_key
from greenlight.adapters.console import ConsoleNotifier
from greenlight.adapters.converge import Converger
from greenlight.adapters.decisions import DecisionService
from greenlight.adapters.ledger import Ledger
from greenlight.adapters.notifiers import Notifier
from greenlight.adapters.peers import ActiveGate, peering_paths
from greenlight.adapters.policyindex import PolicyIndex
from greenlight.adapters.refusals import RefusalLog
from greenlight.adapters.watch import RequestWatch
from greenlight.adapters.webhookcerts import ensure_webhook_certs
from greenlight.adapters.webhookserver import WebhookServer
from greenlight.adapters.webhookserver import routes as webhook_routes
from greenlight.config import Settings
from greenlight.core.stamps import derive_key
from greenlight.kube import Kube, operator_credentials
from greenlight.telemetry import health, heap, logs, metrics, traces

_log = structlog.get_logger("greenlight.operator")
PEERING_LIFETIME = 15
IO_THREADS = 32
# Objects per page when listing the requests: with plans at the size limit a page of 25 is
# about 6 MiB of JSON, read and parsed at a time (pages of 100 peaked 75 MiB higher on a cold
# start with 1,000 plans of 256 KiB; docs/benchmarks.md).
LIST_PAGE = 25
# Requests a list left to do, reconciled at once (each read afresh; adapters/watch.py).
CATCH_UP = 32


def run(settings: Settings) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM)."""
    logs.configure(settings.log_level, log_format=settings.log_format)
    # This replica's name among its peers: the pod's name, made unique per start.
    identity = f"{os.environ.get('POD_ID') or socket.gethostname()}/{secrets.token_hex(4)}"
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        priority=settings.priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(settings=settings, identity=identity),
    )


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials are Greenlight's (`kube.operator_credentials`), read afresh on each
    login (kopf logs in again when the API server answers 401)."""
    return operator_credentials().current()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo["settings"]
    logs.configure(config.log_level, log_format=config.log_format)
    # slack_sdk logs whole request bodies at DEBUG (button tokens included): keep it at INFO.
    logging.getLogger("slack_sdk").setLevel(max(logging.INFO, logs.parse_level(config.log_level)))
    traces.configure("greenlight-operator")
    webhook_ca = _configure_kopf(settings, config)

    # Blocking work (audit fsyncs, key files, chat SDK calls) runs in threads; the default pool
    # (cores + 4) would let a burst of audit commits queue behind a handful of slow calls.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="greenlight-io")
    )
    kube = Kube()
    memo["kube"] = kube
    try:
        await _start(memo, config, kube, webhook_ca, settings.admission.server)
    except BaseException:
        await kube.close()  # a failed start exits without unclosed-connection noise
        raise


def _warn_of_keys_on_the_volume(config: Settings) -> None:
    """Keys kept beside the audit log are only as safe as the volume (the chart sets both)."""
    if config.audit_key_file is None:
        _log.warning(
            "GREENLIGHT_AUDIT_KEY_FILE is not set: audit records carry no MAC, and the marks "
            "key is kept on the audit volume, so whoever can write the volume can forge stamps "
            "and decision records; set it to a file outside the volume (the chart does)",
            marks_key=str(config.audit_file.parent / "marks.key"),
        )
    if config.receipt_key_file is None:
        _log.warning(
            "GREENLIGHT_RECEIPT_KEY_FILE is not set: the receipt signing key is kept on the "
            "audit volume, so whoever can write the volume can sign receipts; set it to a file "
            "outside the volume (the chart does)",
            receipt_key=str(config.audit_file.parent / "receipt.key"),
        )


async def _start(
    memo: kopf.Memo, config: Settings, kube: Kube, webhook_ca: bytes, server: object
) -> None:
    """Everything the operator runs, wired with explicit arguments."""
    operator = await kube.whoami()
    _warn_of_keys_on_the_volume(config)
    key = load_or_create_key(config.audit_key_file) if config.audit_key_file else None
    try:
        audit = AuditLog(config.audit_file, key=key)
    except AuditLogLocked as exc:
        raise kopf.PermanentError(str(exc)) from exc
    memo["audit_anchor_task"] = await auditanchor.guard(audit, kube, config)
    marks_key = derive_key(key or load_or_create_key(config.audit_file.parent / "marks.key"))
    refusals = RefusalLog(audit)
    memo["refusals"] = refusals
    ledger = Ledger()
    decisions = DecisionService(kube, refusals, ledger, marks_key)
    notifiers, stops = await _notifiers(config, decisions, refusals)
    signer = receiptkeys.load_or_create_signer(
        config.receipt_key_file or config.audit_file.parent / "receipt.key"
    )
    if config.receipt_keys_namespace:
        await receiptkeys.publish(
            kube, config.receipt_keys_namespace, config.receipt_keys_name, signer
        )
    converger = Converger(
        kube,
        audit,
        Announcer(kube, audit, notifiers, marks_key, config.follow_up_scale),
        marks_key,
        ledger,
        signer,
    )
    memo["converger"] = converger
    policies = PolicyIndex()
    memo["policy_tasks"] = policies.start(kube.credentials)
    if not await policies.synced(within=30):
        # Admission refuses creates (503) until they are listed: failing closed.
        _log.warning("the approval policies are not listed yet; creates wait for them")
    memo["gate"] = AdmissionGate(kube, refusals, ledger, marks_key, operator, policies)
    if isinstance(server, WebhookServer):  # reviews answered by the handlers directly
        server.routes = webhook_routes(kopf.get_default_registry())
        server.memo = memo
    memo["stop_notifiers"] = stops
    try:
        memo["metrics_server"] = metrics.serve(config.metrics_port)
    except OSError as exc:
        raise kopf.PermanentError(
            f"cannot serve metrics on port {config.metrics_port} ({exc}); "
            "set GREENLIGHT_METRICS_PORT (or --metrics-port) to a free port"
        ) from exc
    metrics.OLDEST_PENDING_AGE.set_function(ledger.oldest_age)
    metrics.OLDEST_UNFINISHED_EXECUTION_AGE.set_function(ledger.oldest_unfinished_age)
    memo["expiry_task"] = asyncio.create_task(converger.clock.run())
    gate = (
        ActiveGate(
            memo["identity"],
            config.priority,
            config.peering,
            peering_paths(config.namespaces),
        )
        if config.peering
        else ActiveGate.standalone()
    )
    memo["peer_tasks"] = gate.start(kube.credentials)
    watch = RequestWatch(
        kube, converger, config.namespaces, gate, page=LIST_PAGE, catch_up=CATCH_UP
    )
    memo["watch_task"] = asyncio.create_task(watch.run())
    memo["trim_task"] = asyncio.create_task(heap.trim_forever())
    if config.webhook_manage:
        memo["webhook_task"] = asyncio.create_task(
            webhookconfig.register_when_listening(
                kube, config.webhook_host, config.webhook_port, webhook_ca, operator.user
            )
        )
    if config.health_checks_file is not None:
        memo["health_task"] = asyncio.create_task(health.monitor(health.load_checks(config)))
    _log.info(
        "greenlight operator started",
        identity=operator.user,
        notifiers=[n.name for n in notifiers],
        audit_file=str(config.audit_file),
        namespaces=list(config.namespaces) or "all",
    )


def _configure_kopf(settings: kopf.OperatorSettings, config: Settings) -> bytes:
    """kopf's settings; returns the CA bundle that the webhook configuration must trust."""
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 30
    # A standby replica takes over at most PEERING_LIFETIME seconds after the active one died
    # (docs/benchmarks.md, "Resilience"); keep-alives are written every 5-10 s less than that.
    settings.peering.lifetime = PEERING_LIFETIME
    settings.peering.stealth = True
    cert, key, ca = config.webhook_cert_file, config.webhook_key_file, config.webhook_ca_file
    if config.webhook_manage and cert is None:
        generated = ensure_webhook_certs(config.audit_file.parent / "webhook", config.webhook_host)
        cert, key, ca = generated.cert, generated.key, generated.ca
    if cert is None or key is None:
        raise kopf.PermanentError(
            "the admission webhook needs a serving certificate: set "
            "GREENLIGHT_WEBHOOK_CERT_FILE and GREENLIGHT_WEBHOOK_KEY_FILE, "
            "or GREENLIGHT_WEBHOOK_MANAGE=true to generate one locally"
        )
    settings.admission.server = WebhookServer(
        client_ca=config.webhook_client_ca_file,
        client_names=config.webhook_client_names,
        addr=config.webhook_host if config.webhook_manage else "0.0.0.0",  # noqa: S104
        port=config.webhook_port,
        host=config.webhook_host,
        certfile=str(cert),
        pkeyfile=str(key),
        cafile=str(ca) if ca else None,
    )
    return Path(ca or cert).read_bytes()


async def _notifiers(
    config: Settings, decisions: DecisionService, refusals: RefusalLog
) -> tuple[list[Notifier], list[Callable[[], Awaitable[None]]]]:
    """Every configured chat channel (Slack, Teams); the console when none is (the embedded
    default). Each channel is one module with a `start_*` that returns its notifier and how
    to stop receiving its clicks."""
    notifiers: list[Notifier] = []
    stops: list[Callable[[], Awaitable[None]]] = []
    if config.slack_enabled:
        from greenlight.adapters import slack

        port = slack.DecisionsPort(
            submit_decision=decisions.submit_decision,
            find_request_by_uid=decisions.find_request_by_uid,
            record_audit=refusals.refused_attempt,
        )
        slack_runtime = await slack.start_slack(
            config,
            port,
            host=config.slack_interactions_host,
            email_strategy=slack.EmailStrategy(config.slack_user_mapping),
        )
        _log.info(
            "slack connected", mode=slack_runtime.mode, interactions=slack_runtime.interactions_url
        )
        notifiers.append(slack_runtime.notifier)
        stops.append(slack_runtime.stop)
    if config.teams_enabled:
        from greenlight.adapters import chat, teams

        try:
            teams_runtime = await teams.start_teams(
                config,
                chat.DecisionsPort(
                    submit_decision=decisions.submit_decision,
                    find_request_by_uid=decisions.find_request_by_uid,
                    record_audit=refusals.refused_attempt,
                ),
                card_key=decisions.marks_key,
            )
        except teams.TeamsConfigError as exc:
            raise kopf.PermanentError(str(exc)) from exc
        _log.info("teams bot listening", messages=teams_runtime.messages_url)
        notifiers.append(teams_runtime.notifier)
        stops.append(teams_runtime.stop)
    if not notifiers:
        people = logs.for_people(sys.stdout, config.log_format)
        notifiers.append(ConsoleNotifier(sys.stdout if people else None))
    return notifiers, stops


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for name in ("watch_task", "expiry_task", "trim_task", "health_task", "webhook_task"):
        task: asyncio.Task[None] | None = memo.get(name)
        if task is not None:
            task.cancel()
    for task in [*(memo.get("policy_tasks") or ()), *(memo.get("peer_tasks") or ())]:
        task.cancel()
    for stop in memo.get("stop_notifiers") or ():
        await stop()
    refusals: RefusalLog | None = memo.get("refusals")
    if refusals is not None:
        await refusals.close()
    server = memo.get("metrics_server")
    if server is not None:
        server()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.close()
    traces.shutdown()
