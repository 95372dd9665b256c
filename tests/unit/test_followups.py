"""Reminders and escalation (core/followups.py): what is due when, from the request's own
timestamps, and what the stamped policy puts on the status (round trips, or every reconcile
would write again)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from greenlight.core import followups
from greenlight.core.followups import Due, Progress, Schedule
from greenlight.core.model import Phase
from greenlight.core.plans import PlanReading
from greenlight.core.policies import EffectivePolicy, EscalationStep, Mention, Notify, Outcome
from greenlight.core.request import Status
from greenlight.core.stamps import Stamp, Subject

CREATED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EXPIRES = CREATED + timedelta(hours=2)
SCHEDULE = Schedule(timedelta(minutes=15), (timedelta(hours=1), timedelta(minutes=90)))


def at(minutes: float) -> datetime:
    return CREATED + timedelta(minutes=minutes)


def test_nothing_is_due_before_the_first_interval() -> None:
    assert not followups.due(SCHEDULE, CREATED, EXPIRES, at(14), Progress())
    assert followups.next_at(SCHEDULE, CREATED, EXPIRES, Progress()) == at(15)


def test_a_reminder_is_due_each_interval_and_only_once() -> None:
    assert followups.due(SCHEDULE, CREATED, EXPIRES, at(15), Progress()) == Due(reminder=1)
    done = followups.after(Progress(), Due(reminder=1))
    assert not followups.due(SCHEDULE, CREATED, EXPIRES, at(20), done)
    assert followups.next_at(SCHEDULE, CREATED, EXPIRES, done) == at(30)


def test_reminders_missed_while_down_go_out_once_numbered_for_the_latest() -> None:
    assert followups.due(SCHEDULE, CREATED, EXPIRES, at(50), Progress(1)) == Due(reminder=3)


def test_escalation_steps_go_out_each_in_order() -> None:
    due = followups.due(SCHEDULE, CREATED, EXPIRES, at(95), Progress(6))
    assert due.escalations == (1, 2)
    assert followups.after(Progress(6), due) == Progress(6, 2)


def test_nothing_is_due_at_or_after_expiry() -> None:
    assert not followups.due(SCHEDULE, CREATED, EXPIRES, EXPIRES, Progress())
    assert followups.next_at(SCHEDULE, CREATED, at(10), Progress()) is None


def test_a_reminder_that_would_fall_on_the_expiry_is_not_sent() -> None:
    short = CREATED + timedelta(minutes=30)
    assert followups.due(Schedule(timedelta(minutes=15)), CREATED, short, at(29), Progress(1)) == (
        Due()
    )


def test_the_stamped_policy_and_plan_reading_survive_the_status_round_trip() -> None:
    policy = EffectivePolicy(
        outcome=Outcome.REQUIRE_APPROVAL,
        required_approvals=2,
        timeout=timedelta(minutes=30),
        notify=Notify(slack=("C0PROD",)),
        reminders_every=timedelta(minutes=15),
        escalation=(
            EscalationStep(
                timedelta(hours=1), Notify(slack=("C0ONCALL",)), Mention(("S0SRE",), ())
            ),
        ),
        sources=("ClusterApprovalPolicy/prod@12",),
    )
    plan = PlanReading("terraform-plan-json", deletes=2, destroyed=("aws_db_instance.main",))
    status = Status(
        phase=Phase.PENDING,
        expires_at=EXPIRES,
        policy=policy,
        plan=plan,
        follow_ups=Progress(2, 1),
    )
    assert Status.from_json(status.to_json()) == status


def test_a_stamp_carrying_a_policy_verifies_only_with_that_policy() -> None:
    key, subject = b"k" * 32, Subject("ci", "pulumi destroy", "production", "sha256:00")
    stamp = Stamp("ci-bot", (), CREATED, policy={"requiredApprovals": 2}).signed(key, subject)
    parsed = Stamp.from_annotation(stamp.to_annotation())
    assert parsed.valid(key, subject, CREATED)
    loosened = Stamp.from_annotation(
        stamp.to_annotation().replace('"requiredApprovals":2', '"requiredApprovals":1')
    )
    assert not loosened.valid(key, subject, CREATED)
