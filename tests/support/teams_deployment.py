"""The operator process wired to the fake Teams, as docs/teams.md deploys it.

`teams_deployment(...)` starts the fake Teams (its own thread), writes the user mapping file, and
starts `greenlight operator` with the Teams settings pointing at the fake: its Entra ID, its Bot
Framework metadata and its Bot Connector, trusted through the run's CA (SSL_CERT_FILE for
aiohttp, REQUESTS_CA_BUNDLE for msal). The returned `TeamsDeployment` plays the people in the
channel: it finds a request's card, clicks it (a signed invoke POSTed to the bot's messaging
endpoint), and reads what Teams shows.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.fakes.teams import (
    CONVERSATION,
    OTHER_TENANT_ID,
    TENANT_ID,
    Call,
    Card,
    FakeTeams,
    Forgery,
    Member,
    text_of,
)
from tests.support.logcontract import check_lines
from tests.support.manifests import poll
from tests.support.operator import OperatorProcess
from tests.support.teams_service import TeamsService

from greenlight.devcluster import ControlPlane
from greenlight.devcluster.controlplane import free_port

GENUINE = Forgery()
# Entra object ids of the people in the channel (People in operator_fixtures), in the mapping.
MAPPED = {
    "alice": "0b6a3c1e-8f39-4c5e-9d8a-2f1f7c9e5a10",
    "bob": "6f2d9b7a-1c3e-4b5a-8e9f-0a1b2c3d4e5f",
    "carol": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
    "mallory": "8c7b6a5f-4e3d-4c2b-a1f0-e9d8c7b6a5f4",
}
DAVE = "dave@example.com"  # not in the mapping: named by the members API (UPN)


@dataclass(frozen=True)
class TeamsDeployment:
    teams: TeamsService
    operator: OperatorProcess
    messages_url: str
    members: Mapping[str, Member]

    # -- what the channel shows -------------------------------------------------------------

    def cards_for(self, namespace: str, name: str, conversation: str = CONVERSATION) -> list[Card]:
        """The cards about `namespace/name` (copies: what a person saw then)."""
        return self.teams.read(
            lambda fake: copy.deepcopy(fake.cards_for(namespace, name, conversation))
        )

    def card_for(self, namespace: str, name: str, timeout: float = 20.0) -> Card:
        """The one card about the request, waiting for it to be posted."""
        found: list[Card] = poll(lambda: self.cards_for(namespace, name), timeout)
        assert len(found) == 1, f"{len(found)} cards for {namespace}/{name}"
        return found[0]

    def card(self, activity_id: str) -> Card:
        return self.teams.read(lambda fake: copy.deepcopy(fake.cards[activity_id]))

    def updated(self, activity_id: str, timeout: float = 20.0) -> Card:
        """The card once the operator rewrote it (PUT), waiting for that."""
        found: Card = poll(lambda: (c := self.card(activity_id)).edited and c, timeout)
        return found

    def replies(self, activity_id: str) -> list[dict[str, Any]]:
        return self.card(activity_id).replies

    def calls(self, operation: str) -> list[Call]:
        return self.teams.read(lambda fake: fake.calls_to(operation))

    def log_records(self) -> list[dict[str, Any]]:
        """Every operator line, checked against the log contract: no app password and no
        access token in any of them."""
        secrets = [self.teams.fake.app_password, *self.teams.read(lambda fake: list(fake.issued))]
        return check_lines(self.operator.log_lines(), secrets, str(self.operator.log_file))

    # -- what people do ---------------------------------------------------------------------

    def activity(
        self, who: str, card: Card, verb: str = "approve", **options: Any
    ) -> dict[str, Any]:
        member = self.members[who]
        return self.teams.read(lambda fake: fake.activity(member, card, verb, **options))

    def click(
        self,
        who: str,
        card: Card,
        verb: str = "approve",
        *,
        forgery: Forgery = GENUINE,
        **options: Any,
    ) -> tuple[int, Any]:
        """Click `verb` on `card` as `who`: (HTTP status, the AdaptiveCardInvokeResponse)."""
        return self.deliver(self.activity(who, card, verb, **options), forgery)

    def deliver(self, activity: dict[str, Any], forgery: Forgery = GENUINE) -> tuple[int, Any]:
        token = self.teams.read(lambda fake: fake.sign(activity, forgery))
        if forgery.activity_service_url is not None:
            activity = {**activity, "serviceUrl": forgery.activity_service_url}
        return self.teams.run(self.teams.fake.deliver(self.messages_url, activity, token))

    def answer_text(self, answer: Any) -> str:
        """What the clicker is shown: the message, or everything on the replacing card."""
        if isinstance(answer, dict) and answer.get("type", "").endswith("card.adaptive"):
            return text_of(answer["value"])
        return str(answer.get("value") if isinstance(answer, dict) else answer)


def _members() -> dict[str, Member]:
    members = {name: Member(oid, f"{name}@example.com") for name, oid in MAPPED.items()}
    members.update(
        dave=Member("5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c1b", DAVE),
        erin=Member("2f1e0d9c-8b7a-4f6e-9d5c-4b3a2f1e0d9c", "erin@example.com"),
        guest=Member(
            "3a2f1e0d-9c8b-4a7f-8e6d-5c4b3a2f1e0d",
            "dave_example.com#EXT#@contoso.onmicrosoft.com",
            email=DAVE,
            role="guest",
        ),
        foreigner=Member("6b5a4f3e-2d1c-4b0a-9f8e-7d6c5b4a3f2e", DAVE, tenant=OTHER_TENANT_ID),
        stranger=Member("7c6b5a4f-3e2d-4c1b-8a0f-9e8d7c6b5a4f", "stranger@example.com"),
    )
    return members


@contextmanager
def teams_deployment(
    plane: ControlPlane, workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[TeamsDeployment]:
    """The fake Teams and an operator using it, for the duration of the block."""
    workdir.mkdir(parents=True, exist_ok=True)
    user_map = workdir / "teams-users.yaml"
    user_map.write_text(yaml.safe_dump({oid: name for name, oid in MAPPED.items()}))
    members = _members()
    with TeamsService(workdir / "fake-teams") as teams:
        fake = teams.fake

        def register(f: FakeTeams) -> None:
            for name, member in members.items():
                if name != "stranger":  # Teams does not list the stranger
                    f.members[member.teams_id] = member

        teams.read(register)
        port = free_port()
        operator = OperatorProcess(
            plane,
            workdir,
            env={
                "GREENLIGHT_TEAMS_APP_ID": fake.app_id,
                "GREENLIGHT_TEAMS_APP_PASSWORD": fake.app_password,
                "GREENLIGHT_TEAMS_TENANT_ID": TENANT_ID,
                "GREENLIGHT_TEAMS_OPENID_METADATA_URL": fake.metadata_url,
                "GREENLIGHT_TEAMS_AUTHORITY_URL": fake.authority_url,
                "GREENLIGHT_TEAMS_SERVICE_URL": fake.service_url,
                "GREENLIGHT_TEAMS_SERVICE_URLS": fake.base_url + "/",
                "GREENLIGHT_TEAMS_DEFAULT_CONVERSATION": CONVERSATION,
                "GREENLIGHT_TEAMS_USER_MAP_FILE": str(user_map),
                "GREENLIGHT_TEAMS_HOST": "127.0.0.1",
                "GREENLIGHT_TEAMS_PORT": str(port),
                # The fake's CA, for aiohttp (OpenSSL's default paths) and for msal (requests).
                "SSL_CERT_FILE": str(fake.ca_file),
                "REQUESTS_CA_BUNDLE": str(fake.ca_file),
                **(env or {}),
            },
        )
        operator.start()
        try:
            yield TeamsDeployment(
                teams=teams,
                operator=operator,
                messages_url=f"http://127.0.0.1:{port}/api/messages",
                members=members,
            )
        finally:
            operator.stop()


__all__ = ["DAVE", "GENUINE", "MAPPED", "TeamsDeployment", "teams_deployment"]
