"""Slack user -> Kubernetes identity: the mapping file first, then a confirmed email."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.fakes.slack import FakeSlack

from greenlight.adapters.slack.client import RetryPolicy, build_client
from greenlight.adapters.slack.users import (
    EmailStrategy,
    UnknownUser,
    UserDirectory,
    UserLookupError,
    load_user_map,
)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def _directory(
    slack: FakeSlack,
    mapping_yaml: str = "",
    strategy: EmailStrategy = EmailStrategy.EMAIL,
    tmp_path: Path | None = None,
) -> UserDirectory:
    mapping = {}
    if mapping_yaml and tmp_path is not None:
        path = tmp_path / "users.yaml"
        path.write_text(mapping_yaml)
        mapping = load_user_map(path)
    client = build_client(
        slack.bot_token, slack.api_url, RetryPolicy(max_retries=1, backoff_factor=0.01)
    )
    return UserDirectory(client, mapping, strategy)


async def test_mapped_user_wins_over_email_and_keeps_groups(
    slack: FakeSlack, tmp_path: Path
) -> None:
    slack.add_user("U1", "alice@example.com")
    directory = _directory(slack, "U1: {user: alice, groups: [sre]}\n", tmp_path=tmp_path)
    identity = await directory.identity("U1")
    assert identity.user == "alice"
    assert identity.groups == ("sre", "system:authenticated")
    assert slack.calls_to("users.info") == []


async def test_confirmed_email_is_the_user_name(slack: FakeSlack) -> None:
    slack.add_user("U2", "bob@example.com")
    identity = await _directory(slack).identity("U2")
    assert identity.user == "bob@example.com"
    assert identity.groups == ("system:authenticated",)


async def test_email_localpart_strategy(slack: FakeSlack) -> None:
    slack.add_user("U2", "bob@example.com")
    assert (
        await _directory(slack, strategy=EmailStrategy.EMAIL_LOCALPART).identity("U2")
    ).user == "bob"


async def test_email_lookups_are_cached(slack: FakeSlack) -> None:
    slack.add_user("U2", "bob@example.com")
    directory = _directory(slack)
    await directory.identity("U2")
    await directory.identity("U2")
    assert len(slack.calls_to("users.info")) == 1


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        ({"email_confirmed": False}, "not confirmed"),
        ({"is_bot": True}, "bot"),
        ({"deleted": True}, "deactivated"),
    ],
)
async def test_users_without_a_trustworthy_email_are_unknown(
    slack: FakeSlack, flags: dict[str, bool], why: str
) -> None:
    slack.add_user("U3", "mallory@example.com", **flags)
    with pytest.raises(UnknownUser, match=why):
        await _directory(slack).identity("U3")


async def test_user_slack_does_not_know_is_unknown(slack: FakeSlack) -> None:
    with pytest.raises(UnknownUser):
        await _directory(slack).identity("U404")


async def test_map_only_strategy_never_asks_slack(slack: FakeSlack) -> None:
    slack.add_user("U2", "bob@example.com")
    with pytest.raises(UnknownUser, match="mapping"):
        await _directory(slack, strategy=EmailStrategy.MAP_ONLY).identity("U2")
    assert slack.calls_to("users.info") == []


async def test_slack_outage_is_a_lookup_error_not_an_unknown_user(slack: FakeSlack) -> None:
    slack.add_user("U2", "bob@example.com")
    slack.outage = True
    with pytest.raises(UserLookupError):
        await _directory(slack).identity("U2")


def test_malformed_mapping_file_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("U1: alice\nU2: [not, a, user]\n")
    with pytest.raises(ValueError, match="U2"):
        load_user_map(path)


def test_no_mapping_file_is_an_empty_mapping() -> None:
    assert load_user_map(None) == {}
