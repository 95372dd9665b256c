"""Who clicked (teams/users.py): the mapping file first, then Teams' member record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.teams import OTHER_TENANT_ID, TEAM_ID, TENANT_ID, FakeTeams, Member

from greenlight.adapters.teams.connector import AppTokens, BotConnector, RetryPolicy
from greenlight.adapters.teams.serviceurls import ServiceUrls
from greenlight.adapters.teams.users import (
    Clicker,
    MappedUser,
    TeamsDirectory,
    UnknownUser,
    UserLookupError,
    UserMapping,
    load_user_map,
)
from greenlight.core.model import Identity

ALICE = "0b6a3c1e-8f39-4c5e-9d8a-2f1f7c9e5a10"
BOB = "6f2d9b7a-1c3e-4b5a-8e9f-0a1b2c3d4e5f"


@pytest.fixture
async def teams(tmp_path: Path) -> AsyncIterator[FakeTeams]:
    async with FakeTeams(tmp_path) as fake:
        yield fake


@pytest.fixture
async def connector(teams: FakeTeams) -> AsyncIterator[BotConnector]:
    tokens = AppTokens(
        app_id=teams.app_id,
        credential=teams.app_password,
        authority=f"{teams.authority_url}/{TENANT_ID}",
        scope="https://api.botframework.com/.default",
        verify=str(teams.ca_file),
    )
    client = BotConnector(
        tokens,
        ServiceUrls([teams.base_url + "/"]),
        RetryPolicy(max_retries=1, backoff_factor=0.01),
        ssl_context=teams.client_ssl(),
    )
    yield client
    await client.close()


def clicker(teams: FakeTeams, member: Member, **changes: Any) -> Clicker:
    values = {
        "aad_object_id": member.oid,
        "user_id": member.teams_id,
        "conversation": "19:greenlightapprovals@thread.tacv2;messageid=1",
        "team": TEAM_ID,
        "service_url": teams.service_url,
    }
    values.update(changes)
    return Clicker(**values)


def directory(
    connector: BotConnector,
    mode: UserMapping = UserMapping.UPN,
    mapping: dict[str, MappedUser] | None = None,
) -> TeamsDirectory:
    return TeamsDirectory(connector, mapping or {}, mode, TENANT_ID)


@pytest.mark.parametrize(
    ("mode", "user"),
    [
        (UserMapping.UPN, "alice@example.com"),
        (UserMapping.EMAIL, "alice.smith@example.com"),
        (UserMapping.OID, ALICE),
    ],
)
async def test_member_record_names_the_user_per_mode(
    teams: FakeTeams, connector: BotConnector, mode: UserMapping, user: str
) -> None:
    alice = teams.add_member(ALICE, "Alice@Example.com", email="Alice.Smith@example.com")

    identity = await directory(connector, mode).identity(clicker(teams, alice))

    assert identity == Identity(user, ("system:authenticated",))
    (call,) = teams.calls_to("member")
    assert call.path.endswith(f"/members/{alice.teams_id}")
    assert f"/conversations/{TEAM_ID}/members/" in call.path, "the team's member list is asked"


async def test_the_mapping_file_comes_first(teams: FakeTeams, connector: BotConnector) -> None:
    alice = teams.add_member(ALICE, "alice@example.com", role="guest")
    mapped = {ALICE: MappedUser("alice-admin", ("sre",))}

    identity = await directory(connector, mapping=mapped).identity(clicker(teams, alice))

    assert identity == Identity("alice-admin", ("sre", "system:authenticated"))
    assert teams.calls_to("member") == []


async def test_lookups_are_cached(teams: FakeTeams, connector: BotConnector) -> None:
    alice = teams.add_member(ALICE, "alice@example.com")
    users = directory(connector)
    for _ in range(3):
        await users.identity(clicker(teams, alice))
    assert len(teams.calls_to("member")) == 1


@pytest.mark.parametrize(
    ("fields", "reason", "why"),
    [
        ({"role": "guest"}, "unknown_user", "is a guest"),
        ({"role": "anonymous"}, "unknown_user", "is a guest"),
        ({"upn": "alice_example.com#EXT#@contoso.onmicrosoft.com"}, "unknown_user", "is a guest"),
        ({"tenant": OTHER_TENANT_ID}, "foreign_tenant", "another organization"),
        ({"tenant": ""}, "foreign_tenant", "another organization"),
        ({"upn": "no-at-sign"}, "unknown_user", "no userPrincipalName"),
        ({"upn": "ali\u200bce@example.com"}, "unknown_user", "invisible"),
    ],
    ids=["guest", "anonymous", "ext-upn", "other-tenant", "no-tenant", "no-upn", "invisible"],
)
async def test_members_who_may_not_decide_are_refused(
    teams: FakeTeams, connector: BotConnector, fields: dict[str, Any], reason: str, why: str
) -> None:
    upn = fields.pop("upn", "alice@example.com")
    member = teams.add_member(ALICE, upn, **fields)

    with pytest.raises(UnknownUser) as caught:
        await directory(connector).identity(clicker(teams, member))

    assert caught.value.reason == reason
    assert why in caught.value.message


async def test_a_member_record_of_another_account_is_refused(
    teams: FakeTeams, connector: BotConnector
) -> None:
    bob = teams.add_member(BOB, "bob@example.com")
    with pytest.raises(UnknownUser, match="another account"):
        await directory(connector).identity(clicker(teams, bob, aad_object_id=ALICE))


async def test_someone_teams_does_not_list_is_unknown(
    teams: FakeTeams, connector: BotConnector
) -> None:
    stranger = Member(BOB, "bob@example.com")  # not added to the fake
    with pytest.raises(UnknownUser, match="does not list you"):
        await directory(connector).identity(clicker(teams, stranger))


async def test_no_object_id_is_unknown(teams: FakeTeams, connector: BotConnector) -> None:
    alice = teams.add_member(ALICE, "alice@example.com")
    with pytest.raises(UnknownUser, match="no Entra object id"):
        await directory(connector).identity(clicker(teams, alice, aad_object_id=""))
    assert teams.calls_to("member") == []


async def test_an_outage_is_a_lookup_error_not_a_refusal(
    teams: FakeTeams, connector: BotConnector
) -> None:
    alice = teams.add_member(ALICE, "alice@example.com")
    teams.outage = True
    with pytest.raises(UserLookupError):
        await directory(connector).identity(clicker(teams, alice))


def test_user_map_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(f"{ALICE.upper()}: alice@example.com\n{BOB}: {{user: bob, groups: [sre]}}\n")

    assert load_user_map(path) == {
        ALICE: MappedUser("alice@example.com"),
        BOB: MappedUser("bob", ("sre",)),
    }
    assert load_user_map(None) == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("29:1abc: alice\n", "not an Entra object id"),
        (f"{ALICE}: ''\n", "must map to a user name"),
        (f"{ALICE}: {{user: bob, groups: sre}}\n", "groups must be a list"),
        ("- alice\n", "expected a mapping"),
    ],
)
def test_malformed_user_map_names_the_entry(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        load_user_map(path)


async def test_a_principal_name_that_folds_into_another_ascii_name_is_refused(
    teams: FakeTeams, connector: BotConnector
) -> None:
    member = teams.add_member(ALICE, "\uff41lice@example.com")  # a full-width a

    with pytest.raises(UnknownUser, match="characters outside ASCII"):
        await directory(connector).identity(clicker(teams, member))
