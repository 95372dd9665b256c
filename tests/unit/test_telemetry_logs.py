"""JSON log lines: every record in the process, whoever logged it, has the contract fields."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import kopf
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from kopf._core.actions import loggers as kopf_loggers
from opentelemetry.sdk.trace import TracerProvider

from greenlight.telemetry import logs

REQUIRED = (
    "timestamp",
    "level",
    "message",
    "logger",
    "workflow_id",
    "task_id",
    "trace_id",
    "span_id",
)
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    logs.configure("DEBUG", buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.captureWarnings(False)


@pytest.fixture
def lines(stream: io.StringIO) -> Lines:
    def read() -> list[dict[str, Any]]:
        raw = stream.getvalue().splitlines()
        return [json.loads(line) for line in raw]

    return read


def assert_contract(line: dict[str, Any]) -> None:
    for key in REQUIRED:
        assert key in line, f"{key} missing from {line}"
    assert RFC3339_UTC.match(line["timestamp"]), line["timestamp"]
    assert line["level"] in {"DEBUG", "INFO", "WARN", "ERROR"}
    for key in ("workflow_id", "task_id", "trace_id", "span_id"):
        assert isinstance(line[key], str)


def test_structlog_line_is_one_json_object_with_every_contract_field(lines: Lines) -> None:
    structlog.stdlib.get_logger("greenlight.handlers").info("request created", name="apr-1")

    [line] = lines()
    assert_contract(line)
    assert line["message"] == "request created"
    assert line["logger"] == "greenlight.handlers"
    assert line["level"] == "INFO"
    assert line["name"] == "apr-1"
    assert (line["workflow_id"], line["task_id"], line["trace_id"], line["span_id"]) == ("",) * 4


@pytest.mark.parametrize(
    ("levelno", "expected"),
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARN"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "ERROR"),
    ],
)
def test_levels_are_reported_as_the_four_contract_names(
    lines: Lines, levelno: int, expected: str
) -> None:
    logging.getLogger("greenlight.levels").log(levelno, "something")

    assert [line["level"] for line in lines()] == [expected]


def test_bind_request_adds_workflow_and_task_ids_and_restores_them(lines: Lines) -> None:
    log = structlog.stdlib.get_logger("greenlight.handlers")
    with logs.bind_request("wf-1", "task-9", request="apr-1"):
        log.info("inside")
        with logs.bind_request("wf-2"):
            logging.getLogger("kopf.objects").info("nested, from stdlib")
        log.info("inside again")
    log.info("outside")

    inside, nested, again, outside = lines()
    assert (inside["workflow_id"], inside["task_id"], inside["request"]) == (
        "wf-1",
        "task-9",
        "apr-1",
    )
    assert (nested["workflow_id"], nested["task_id"]) == ("wf-2", "")
    assert (again["workflow_id"], again["task_id"]) == ("wf-1", "task-9")
    assert (outside["workflow_id"], outside["task_id"]) == ("", "")
    assert "request" not in outside


def test_trace_and_span_ids_come_from_the_current_span(lines: Lines) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("greenlight.work").info("traced")
    context = span.get_span_context()

    [line] = lines()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_kopf_object_logger_records_are_json_with_the_object_reference(lines: Lines) -> None:
    body = kopf.Body(
        {
            "apiVersion": "greenlight.dev/v1alpha1",
            "kind": "ApprovalRequest",
            "metadata": {"name": "apr-1", "namespace": "team-a", "uid": "u-1"},
        }
    )
    logger = kopf.ObjectLogger(body=body, settings=kopf.OperatorSettings())
    with logs.bind_request("wf-7", "t-1"):
        logger.warning("Handler %r failed temporarily", "create", extra={"attempt": 2})

    [line] = lines()
    assert_contract(line)
    assert line["logger"] == "kopf.objects"
    assert line["level"] == "WARN"
    assert line["message"] == "Handler 'create' failed temporarily"
    assert line["object"]["name"] == "apr-1"
    assert line["object"]["namespace"] == "team-a"
    assert line["attempt"] == 2
    assert (line["workflow_id"], line["task_id"]) == ("wf-7", "t-1")
    assert "settings" not in line
    assert "k8s_skip" not in line


async def test_another_librarys_stdlib_records_go_through_the_same_formatter(lines: Lines) -> None:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/hello", hello)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        aiohttp.ClientSession() as session,
        session.get(server.make_url("/hello")) as response,
    ):
        assert response.status == 200

    access = [line for line in lines() if line["logger"] == "aiohttp.access"]
    assert len(access) == 1
    assert_contract(access[0])
    assert "GET /hello" in access[0]["message"]


def test_configure_replaces_kopfs_own_handler_so_no_line_is_printed_twice(
    stream: io.StringIO, lines: Lines, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio_logger = logging.getLogger("asyncio")
    saved = asyncio_logger.propagate, asyncio_logger.handlers[:]
    kopf_loggers.configure(verbose=True)  # what `kopf run` does before loading handlers
    asyncio_logger.propagate, asyncio_logger.handlers[:] = saved
    root = logging.getLogger()
    assert any(isinstance(h, kopf_loggers._KopfStreamHandler) for h in root.handlers)
    logs.configure("INFO", stream)

    logging.getLogger("kopf.activities.startup").info("Activity 'startup' succeeded.")

    assert len(root.handlers) == 1
    assert [line["message"] for line in lines()] == ["Activity 'startup' succeeded."]
    assert "Activity" not in capsys.readouterr().err


def test_exceptions_multiline_messages_and_odd_values_stay_on_one_json_line(
    stream: io.StringIO, lines: Lines
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    log = logging.getLogger("greenlight.odd")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("first line\nsecond line", extra={"thing": Opaque()})
    structlog.stdlib.get_logger("greenlight.odd").info("with a set", items={3})

    assert len(stream.getvalue().splitlines()) == 2
    failed, odd = lines()
    assert failed["message"] == "first line\nsecond line"
    assert failed["level"] == "ERROR"
    assert "RuntimeError: boom" in failed["exception"]
    assert failed["thing"] == "<opaque>"
    assert odd["items"] == [3]


def test_python_warnings_are_logged_as_json(lines: Lines) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)

    [line] = lines()
    assert line["logger"] == "py.warnings"
    assert line["level"] == "WARN"


def test_unknown_level_name_is_refused_with_the_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"unknown log level 'LOUD'.*WARN"):
        logs.configure("LOUD")


SLACK_BOT = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_APP = "xapp-1-A0123-4567-abcdef0123456789"
WEBHOOK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"
BEARER = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
VAULT = "hvs.CAESIJ0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"


def test_secrets_are_redacted_by_key_name_at_any_depth(stream: io.StringIO, lines: Lines) -> None:
    structlog.stdlib.get_logger("greenlight.config").info(
        "loaded settings",
        signing_secret=SIGNING,
        slack={"bot_token": "plain-looking", "channel": "C0123"},
        headers=[{"Authorization": "opaque-credential"}],
        api_key="k-123",
        password="hunter2",
        webhook_url="https://example.invalid/hook",
    )
    logging.getLogger("greenlight.config").info("stdlib extra", extra={"app_token": "opaque"})

    output = stream.getvalue()
    for secret in (
        SIGNING,
        "plain-looking",
        "opaque-credential",
        "k-123",
        "hunter2",
        "example.invalid",
    ):
        assert secret not in output
    first, second = lines()
    assert first["signing_secret"] == logs.REDACTED
    assert first["slack"] == {"bot_token": logs.REDACTED, "channel": "C0123"}
    assert first["headers"] == [{"Authorization": logs.REDACTED}]
    assert second["app_token"] == logs.REDACTED


def test_secrets_are_redacted_by_value_pattern_in_messages_values_and_tracebacks(
    stream: io.StringIO, lines: Lines
) -> None:
    log = logging.getLogger("slack_sdk.web")
    log.info("calling chat.postMessage with token %s", SLACK_BOT)
    structlog.stdlib.get_logger("greenlight.slack").warning(
        "socket mode", detail=f"app token {SLACK_APP}", url=WEBHOOK
    )
    try:
        raise ValueError(f"Authorization: Bearer {BEARER} rejected by https://u:pw@vault.example/")
    except ValueError:
        log.exception("request failed, vault token %s", VAULT)

    output = stream.getvalue()
    for secret in (SLACK_BOT, SLACK_APP, "T000/B000", BEARER, VAULT, "u:pw@"):
        assert secret not in output
    first, second, third = lines()
    assert first["message"] == f"calling chat.postMessage with token {logs.REDACTED}"
    assert second["url"] == f"https://hooks.slack.com/{logs.REDACTED}"
    assert f"Bearer {logs.REDACTED}" in third["exception"]
    assert third["message"] == f"request failed, vault token {logs.REDACTED}"


def test_redaction_keeps_ids_and_ordinary_text(lines: Lines) -> None:
    with logs.bind_request("wf-token-free", "t-1"):
        logging.getLogger("greenlight.handlers").info(
            "approved by alice", extra={"attempt": 1, "reason": "looks fine"}
        )

    [line] = lines()
    assert line["message"] == "approved by alice"
    assert line["workflow_id"] == "wf-token-free"
    assert line["reason"] == "looks fine"
    assert line["attempt"] == 1
