"""`make run` is read by a person: logs and approval requests render for a terminal there, and
stay JSON for log pipelines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import structlog

from greenlight.adapters.console import ConsoleNotifier
from greenlight.core.model import Phase, RequestView
from greenlight.core.plans import PlanReading
from greenlight.telemetry import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.captureWarnings(False)


def request(plan: str = "") -> RequestView:
    return RequestView(
        namespace="ci",
        name="apr-7",
        uid="u-1",
        action="pulumi destroy",
        target="production",
        workflow_id="wf-1",
        task_id="task-9",
        on_behalf_of="alice",
        plan_summary="-12 resources",
        plan_preview=plan,
        plan_digest="sha256:abc",
        requested_by="system:serviceaccount:ci:orchestrator",
        expires_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        phase=Phase.PENDING,
        required_approvals=2,
    )


def test_on_a_terminal_logs_render_for_people() -> None:
    terminal = Terminal()
    logs.configure("INFO", terminal)

    structlog.get_logger("greenlight.test").info("operator ready", port=9443)

    line = terminal.getvalue()
    assert "operator ready" in line
    assert "port" in line
    assert "9443" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_json_on_a_terminal_when_asked() -> None:
    terminal = Terminal()
    logs.configure("INFO", terminal, log_format="json")

    structlog.get_logger("greenlight.test").info("operator ready")

    assert json.loads(terminal.getvalue())["message"] == "operator ready"


def test_console_format_when_asked_also_off_a_terminal() -> None:
    pipe = io.StringIO()
    logs.configure("INFO", pipe, log_format="console")

    structlog.get_logger("greenlight.test").warning("slow", token="xoxb-123-secret")

    assert "slow" in pipe.getvalue()
    assert "xoxb-123-secret" not in pipe.getvalue()


async def test_the_console_notifier_prints_a_block_a_person_can_act_on() -> None:
    terminal = Terminal()
    plan = "\n".join(f"- resource {n}" for n in range(15))

    await ConsoleNotifier(terminal).notify(request(plan))

    text = terminal.getvalue()
    assert "Approval requested: ci/apr-7" in text
    assert "pulumi destroy" in text
    assert "production" in text
    assert "system:serviceaccount:ci:orchestrator, on behalf of alice" in text
    assert "2030-01-02T03:04:05Z" in text
    assert "- resource 0" in text
    assert "- resource 9" in text
    assert "- resource 10" not in text
    assert "5 more lines" in text
    assert "greenlight approve apr-7 -n ci" in text
    assert "greenlight deny apr-7 -n ci --reason '<why>'" in text
    assert "kubectl annotate apr apr-7 -n ci greenlight.dev/decision=approve" in text


async def test_without_a_terminal_the_request_is_one_json_line_with_the_commands() -> None:
    pipe = io.StringIO()
    logs.configure("INFO", pipe)

    await ConsoleNotifier().notify(request())

    record = json.loads(pipe.getvalue())
    assert record["message"] == "approval requested"
    assert record["approve"] == "greenlight approve apr-7 -n ci"
    assert record["name"] == "apr-7"


READING = PlanReading(
    format="pulumi-preview-json",
    creates=0,
    deletes=24,
    replaces=1,
    destroyed=(
        *(f"aws:s3/bucket:Bucket::logs-{n}" for n in range(24)),
        "aws:rds/instance:Instance::main",
    ),
    resource_types=("aws:rds/instance:Instance", "aws:s3/bucket:Bucket"),
)


async def test_the_block_shows_greenlights_counts_and_what_is_destroyed_first() -> None:
    terminal = Terminal()

    await ConsoleNotifier(terminal).notify(replace(request(), plan_reading=READING))

    text = terminal.getvalue()
    assert "  Changes:   24 to delete, 1 to replace, 0 to create, 0 to update" in text
    assert "  Destroys:  aws:s3/bucket:Bucket::logs-0\n" in text
    assert "             aws:s3/bucket:Bucket::logs-19\n" in text
    assert "logs-20" not in text
    assert "             ... and 5 more\n" in text
    assert "  Summary:   -12 resources  (in the requester's words)" in text
    assert text.index("Changes:") < text.index("Destroys:") < text.index("Summary:")


async def test_the_json_line_carries_greenlights_reading() -> None:
    pipe = io.StringIO()
    logs.configure("INFO", pipe)

    await ConsoleNotifier().notify(replace(request(), plan_reading=READING))

    record = json.loads(pipe.getvalue())
    assert record["plan"] == READING.to_json()
    assert record["plan_summary"] == "-12 resources"
