"""Structured logs: one JSON object per line, for Greenlight and every library in the process.

On a terminal (stdout is a TTY, or `GREENLIGHT_LOG_FORMAT=console`) the same events render for
people, with structlog's console renderer; anywhere else, and with `GREENLIGHT_LOG_FORMAT=json`,
they are the JSON lines below.

structlog owns the single handler on the *root* stdlib logger, so records from Greenlight
(structlog or stdlib), kopf (including its per-object `LoggerAdapter`), aiohttp, the Kubernetes
client and OpenTelemetry all leave through the same `ProcessorFormatter`. Every line carries the
fields the log queries, dashboards and alert runbooks rely on (docs/telemetry.md):

    timestamp, level, message, logger, workflow_id, task_id, trace_id, span_id

`workflow_id`/`task_id` come from `bind_request` (structlog contextvars), `trace_id`/`span_id`
from the current OpenTelemetry span; unknown values are empty strings, never missing keys.
kopf logs about an object after its handler returned ("Handler ... failed temporarily"),
outside that binding; such records name the object (`k8s_ref`), so the ids last bound for
that namespace/name are added to them as well.
Secrets are removed by key name and by value pattern before rendering (`redact`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Levels as they appear in the `level` field: the contract allows exactly these four.
_LEVEL_NAMES = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING}
_LEVEL_NAMES |= {"WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}

# Key names whose values are secrets wherever they appear (substring, case-insensitive).
_SECRET_KEY = re.compile(
    r"token|secret|passw(or)?d|authorization|api[_-]?key|webhook[_-]?url|private[_-]?key"
    r"|credential|cookie",
    re.IGNORECASE,
)

# Secret-looking values, wherever they appear inside a string (messages, URLs, tracebacks).
_SECRET_VALUES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bxox[a-z](?:\.xox[a-z])?-[0-9A-Za-z-]+"), REDACTED),  # Slack bot/user tokens
    (re.compile(r"\bxapp-[0-9A-Za-z-]+"), REDACTED),  # Slack app-level (Socket Mode) tokens
    (re.compile(r"https?://hooks\.slack\.com/[^\s\"'<>]*"), "https://hooks.slack.com/" + REDACTED),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1 " + REDACTED),
    (re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"), REDACTED),  # HashiCorp Vault tokens
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), REDACTED),
    (re.compile(r"(?<=://)[^/\s:@\"']+:[^/\s@\"']+(?=@)"), REDACTED),  # user:password@ in URLs
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# kopf's ObjectLogger extras: `k8s_ref` is rendered as `object`; the others are kopf internals
# (`settings` is the whole OperatorSettings object).
_KOPF_INTERNAL = frozenset({"settings", "k8s_skip", "k8s_ref"})
_REQUIRED = ("timestamp", "level", "message", "logger", "workflow_id", "task_id")
# (namespace, name) -> (workflow_id, task_id) last bound by `bind_request`, for kopf's own
# per-object records; bounded, least recently bound dropped first.
_OBJECT_IDS: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
_OBJECT_IDS_MAX = 4096
_TRACE_FIELDS = ("trace_id", "span_id")


def _level_name(levelno: int) -> str:
    if levelno <= logging.DEBUG:
        return "DEBUG"
    if levelno <= logging.INFO:
        return "INFO"
    if levelno <= logging.WARNING:
        return "WARN"
    return "ERROR"


def _record_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Take timestamp, level, logger name and `extra=` fields from the stdlib record."""
    record: logging.LogRecord = event_dict.pop("_record")
    from_structlog = event_dict.pop("_from_structlog")
    event_dict["timestamp"] = (
        datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
    ).replace("+00:00", "Z")
    event_dict["level"] = _level_name(record.levelno)
    event_dict["logger"] = record.name
    if not from_structlog:
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in _KOPF_INTERNAL and not key.startswith("_"):
                event_dict.setdefault(key, value)
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping):
        event_dict.setdefault("object", dict(ref))
        ids = _OBJECT_IDS.get((str(ref.get("namespace", "")), str(ref.get("name", ""))))
        if ids is not None and not event_dict.get("workflow_id"):
            event_dict["workflow_id"], event_dict["task_id"] = ids
    return event_dict


def _trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the ids of the OpenTelemetry span that is current where the line was logged."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for pattern, replacement in _SECRET_VALUES:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED if _is_secret_entry(str(key), item) else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else is rendered through str(): scrub that text, since a repr may hold a secret.
    return _scrub(str(value))


def _is_secret_entry(key: str, value: Any) -> bool:
    return bool(_SECRET_KEY.search(key)) and value is not None and value != ""


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace secrets by key name and by value pattern, at any depth of the event.

    Key names: anything containing token, secret, password, authorization, api_key,
    webhook_url, private_key, credential or cookie. Values: Slack tokens (`xox?-`, `xapp-`),
    Slack incoming-webhook URLs, `Bearer`/`Basic` credentials, Vault and GitHub tokens and
    `user:password@` in URLs, wherever they occur in a string (including the message and a
    rendered traceback).
    """
    scrubbed: EventDict = _scrub(event_dict)
    return scrubbed


def _shape(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Order the contract fields first, and make sure each one is present."""
    message = event_dict.pop("event", "")
    event_dict["message"] = message if isinstance(message, str) else str(message)
    shaped: dict[str, Any] = {key: event_dict.pop(key, "") for key in _REQUIRED}
    for key in ("workflow_id", "task_id"):
        shaped[key] = "" if shaped[key] is None else str(shaped[key])
    shaped.update((key, event_dict.pop(key, "")) for key in _TRACE_FIELDS)
    shaped.update(event_dict)
    return shaped


def _for_people(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """On a terminal: no empty fields (no workflow, no span), no span ids, kopf's object
    reference as `namespace/name`, an audit record as its sequence, event, actor and outcome
    (the chain's hashes and MAC are for the log pipeline's copy), access lines as the line."""
    shown = {
        key: value
        for key, value in event_dict.items()
        if value not in ("", None) and key not in _TRACE_FIELDS
    }
    if shown.get("logger") == "aiohttp.access":  # the message already is the access line
        kept = ("event", "timestamp", "level", "logger")
        return {key: shown[key] for key in kept if key in shown}
    ref = shown.get("object")
    if isinstance(ref, Mapping):
        shown["object"] = f"{ref.get('namespace', '')}/{ref.get('name', '')}".lstrip("/")
    record = shown.get("audit")
    if isinstance(record, Mapping):
        shown["audit"] = " ".join(
            f"{key}={record[key]}" for key in ("seq", "event", "actor", "outcome") if key in record
        )
    return shown


def _formatter(console: bool, colors: bool) -> structlog.stdlib.ProcessorFormatter:
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _record_fields,
        _trace_context,
        structlog.processors.format_exc_info,
        redact,
    ]
    if console:
        processors += [_for_people, structlog.dev.ConsoleRenderer(colors=colors)]
    else:
        processors += [_shape, structlog.processors.JSONRenderer()]
    return structlog.stdlib.ProcessorFormatter(processors=processors)


def for_people(stream: TextIO, log_format: Literal["auto", "json", "console"] = "auto") -> bool:
    """Whether output on `stream` is for people: `console`, or `auto` on a terminal."""
    if log_format == "auto":
        return stream.isatty()
    return log_format == "console"


def parse_level(level: str) -> int:
    """The stdlib level for a name as operators write it (`WARN` and `WARNING` both work)."""
    try:
        return _LEVEL_NAMES[level.strip().upper()]
    except KeyError:
        allowed = ", ".join(_LEVEL_NAMES)
        raise ValueError(f"unknown log level {level!r}; use one of {allowed}") from None


def configure(
    level: str = "INFO",
    stream: TextIO = sys.stdout,
    log_format: Literal["auto", "json", "console"] = "auto",
) -> None:
    """Make every log record in the process a line on `stream`: JSON, or for people when
    `for_people(stream, log_format)`.

    Replaces all handlers of the root logger (including one `kopf run` may have installed)
    with a single handler, so no line is printed twice. Idempotent: call it at start-up
    and again from kopf's startup handler.
    """
    console = for_people(stream, log_format)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(console, colors=console and stream.isatty()))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


@contextmanager
def bind_request(workflow_id: str, task_id: str = "", **context: Any) -> Iterator[None]:
    """Bind `workflow_id`, `task_id` and more to every line logged inside the block.

    Uses contextvars, so it holds for everything running in the same thread or asyncio task
    (kopf's own handler logs included) and is restored on exit, also when nested. With
    `namespace` and `name` in `context`, the ids are also remembered for kopf's later lines
    about that object (logged outside the block).
    """
    namespace, name = context.get("namespace"), context.get("name")
    if namespace and name:
        _OBJECT_IDS[(str(namespace), str(name))] = (workflow_id, task_id)
        _OBJECT_IDS.move_to_end((str(namespace), str(name)))
        while len(_OBJECT_IDS) > _OBJECT_IDS_MAX:
            _OBJECT_IDS.popitem(last=False)
    tokens = structlog.contextvars.bind_contextvars(
        workflow_id=workflow_id, task_id=task_id, **context
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
