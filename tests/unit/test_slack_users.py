"""Slack user -> Kubernetes identity: the mapping file first, then a confirmed email."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.fakes.slack import TEAM_ID, FakeSlack

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
    domains: tuple[str, ...] = (),
) -> UserDirectory:
    mapping = {}
    if mapping_yaml and tmp_path is not None:
        path = tmp_path / "users.yaml"
        path.write_text(mapping_yaml)
        mapping = load_user_map(path)
    client = build_client(
        slack.bot_token, slack.api_url, RetryPolicy(max_retries=1, backoff_factor=0.01)
    )
    return UserDirectory(client, mapping, strategy, allowed_domains=domains)


def _localpart(slack: FakeSlack, *domains: str) -> UserDirectory:
    return _directory(slack, strategy=EmailStrategy.EMAIL_LOCALPART, domains=domains)


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
    assert (await _localpart(slack, "example.com").identity("U2")).user == "bob"


def test_email_localpart_without_allowed_domains_is_refused(slack: FakeSlack) -> None:
    with pytest.raises(ValueError, match="GREENLIGHT_SLACK_ALLOWED_EMAIL_DOMAINS"):
        _localpart(slack)


async def test_email_localpart_refuses_an_address_of_another_domain(slack: FakeSlack) -> None:
    """`alice@evil.example` is not `alice`."""
    slack.add_user("U6", "alice@evil.example")
    with pytest.raises(UnknownUser, match=r"email domain 'evil\.example' .* not one"):
        await _localpart(slack, "example.com").identity("U6")


async def test_allowed_domains_match_exactly_after_normalization(slack: FakeSlack) -> None:
    slack.add_user("U7", "Alice@EXAMPLE.com")
    slack.add_user("U8", "alice@sub.example.com")
    slack.add_user("U9", "alice@example.com.evil.example")
    directory = _localpart(slack, "Example.com")
    assert (await directory.identity("U7")).user == "alice"
    for other in ("U8", "U9"):
        with pytest.raises(UnknownUser, match="email domain"):
            await directory.identity(other)


async def test_email_mapping_applies_allowed_domains_when_set(slack: FakeSlack) -> None:
    slack.add_user("U2", "Bob@Example.com")
    slack.add_user("U6", "bob@evil.example")
    directory = _directory(slack, domains=("example.com",))
    assert (await directory.identity("U2")).user == "bob@example.com"
    with pytest.raises(UnknownUser, match="email domain"):
        await directory.identity("U6")


async def test_lookalike_email_name_is_refused(slack: FakeSlack) -> None:
    slack.add_user("U5", "\N{CYRILLIC SMALL LETTER A}lice@example.com")
    with pytest.raises(UnknownUser, match="CYRILLIC SMALL LETTER A"):
        await _localpart(slack, "example.com").identity("U5")


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        ({"is_restricted": True}, "guest"),
        ({"is_ultra_restricted": True}, "guest"),
        ({"team_id": "T0OTHER001"}, "another workspace"),
        ({"is_stranger": True}, "another workspace or organization"),
        ({"enterprise_id": "E0OTHER001"}, "another workspace or organization"),
    ],
    ids=["guest", "single-channel-guest", "other-workspace", "slack-connect", "other-enterprise"],
)
async def test_only_full_members_of_the_workspace_map_by_email(
    slack: FakeSlack, flags: dict[str, object], why: str
) -> None:
    slack.add_user("U4", "alice@example.com", **flags)
    for directory in (_directory(slack), _localpart(slack, "example.com")):
        with pytest.raises(UnknownUser, match=why):
            await directory.identity("U4")


async def test_member_of_the_same_enterprise_grid_workspace_maps(slack: FakeSlack) -> None:
    slack.enterprise_id = "E0FAKE0001"
    slack.add_user("U4", "alice@example.com", team_id="T0HOME0001", enterprise_id="E0FAKE0001")
    slack.users["U4"].enterprise_teams = ("T0HOME0001", TEAM_ID)
    assert (await _localpart(slack, "example.com").identity("U4")).user == "alice"


async def test_grid_user_of_another_enterprise_is_refused_even_in_our_team(
    slack: FakeSlack,
) -> None:
    slack.enterprise_id = "E0FAKE0001"
    slack.add_user("U4", "alice@example.com", enterprise_id="E0OTHER001")
    with pytest.raises(UnknownUser, match="another workspace or organization"):
        await _localpart(slack, "example.com").identity("U4")


async def test_the_workspace_is_asked_once(slack: FakeSlack) -> None:
    slack.add_user("U2", "bob@example.com")
    slack.add_user("U3", "carol@example.com")
    directory = _directory(slack)
    await directory.identity("U2")
    await directory.identity("U3")
    assert len(slack.calls_to("auth.test")) == 1


async def test_auth_test_failure_is_a_lookup_error(slack: FakeSlack) -> None:
    slack.add_user("U2", "bob@example.com")
    slack.fail("auth.test", error="invalid_auth")
    with pytest.raises(UserLookupError, match=r"auth\.test"):
        await _directory(slack).identity("U2")


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


@pytest.mark.parametrize("email", ["\uff41lice@example.com", "\ufb01ona@example.com"])
async def test_an_email_that_folds_into_another_ascii_name_is_refused(
    slack: FakeSlack, email: str
) -> None:
    slack.add_user("U7", email)  # full-width a; the fi ligature
    with pytest.raises(UnknownUser, match="characters outside ASCII"):
        await _localpart(slack, "example.com").identity("U7")
