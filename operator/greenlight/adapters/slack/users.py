"""Who clicked: mapping a Slack user to the Kubernetes identity that is then authorized.

Two sources, in this order:

1. The mapping file (GREENLIGHT_SLACK_USER_MAP_FILE), a YAML mapping from Slack user id to a
   Kubernetes user name, or to `{user: NAME, groups: [G, ...]}` when RoleBindings name groups:

       U0123ABCD: alice@example.com
       U0456EFGH: {user: bob, groups: [sre]}

2. Otherwise the user's email from `users.info` (scope users:read.email), only when Slack says
   it is confirmed (`is_email_confirmed`) and the account is a full member of the app's own
   workspace: not deleted, not a bot or the Slackbot, not a guest (`is_restricted`,
   `is_ultra_restricted`), not a Slack Connect user of another organization (`is_stranger`, or an
   `enterprise_user` of another enterprise), and of the workspace `auth.test` names for the bot
   (`team_id`). When allowed domains are configured the email's domain must be one of them. The
   strategy turns the email into a user name: `email` (the address itself, what OIDC providers
   usually put in the `email` claim), `email-localpart` (the part before `@`, which requires
   allowed domains: otherwise `alice@evil.example` would be `alice`), or `map-only` (no email
   fallback: only mapped users may decide). The name is the `canonical` form
   (greenlight.core.identity), and a name that form cannot make safe is refused.

Every identity also carries `system:authenticated`, as the API server adds it to every
authenticated user, so a SubjectAccessReview answers the same question it answers for kubectl.
Anything else is an unknown user and is refused.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from greenlight.adapters.chat import authenticated
from greenlight.adapters.slack.client import API_ERRORS
from greenlight.core.identity import canonical, name_problem
from greenlight.core.model import Identity


class EmailStrategy(enum.StrEnum):
    EMAIL = "email"
    EMAIL_LOCALPART = "email-localpart"
    MAP_ONLY = "map-only"


class UnknownUser(Exception):
    """The Slack user has no Kubernetes identity; `message` says why, for the person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserLookupError(Exception):
    """Slack could not be asked who the user is (outage, missing scope): try again later."""


@dataclass(frozen=True)
class MappedUser:
    user: str
    groups: tuple[str, ...] = ()


def load_user_map(path: str | Path | None) -> dict[str, MappedUser]:
    """Read the mapping file; raises ValueError naming the entry that is malformed."""
    if path is None or str(path) == "":
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of Slack user id to Kubernetes user")
    mapping: dict[str, MappedUser] = {}
    for slack_id, value in data.items():
        if isinstance(value, str) and value:
            mapping[str(slack_id)] = MappedUser(user=value)
        elif isinstance(value, Mapping) and isinstance(value.get("user"), str) and value["user"]:
            groups = value.get("groups", [])
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError(f"{path}: {slack_id}.groups must be a list of group names")
            mapping[str(slack_id)] = MappedUser(user=value["user"], groups=tuple(groups))
        else:
            raise ValueError(
                f"{path}: {slack_id} must map to a user name or to {{user: NAME, groups: [...]}}"
            )
    return mapping


class UserDirectory:
    """Resolves Slack user ids to Identities; email lookups are cached for `cache_seconds`."""

    def __init__(
        self,
        client: AsyncWebClient,
        mapping: Mapping[str, MappedUser],
        strategy: EmailStrategy = EmailStrategy.EMAIL,
        cache_seconds: float = 300.0,
        allowed_domains: Iterable[str] = (),
    ) -> None:
        """`allowed_domains` empty accepts any domain (`email` only); raises ValueError for
        `email-localpart` without allowed domains."""
        self._client = client
        self._mapping = dict(mapping)
        self._strategy = strategy
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Identity]] = {}
        self._domains = frozenset(canonical(d).removeprefix("@") for d in allowed_domains) - {""}
        self._workspace: tuple[str, str] | None = None  # the bot's (team_id, enterprise_id)
        if strategy is EmailStrategy.EMAIL_LOCALPART and not self._domains:
            raise ValueError(
                "the email-localpart mapping needs allowed email domains "
                "(GREENLIGHT_SLACK_ALLOWED_EMAIL_DOMAINS)"
            )

    async def identity(self, slack_user_id: str) -> Identity:
        """The Kubernetes identity for the user; raises UnknownUser or UserLookupError."""
        mapped = self._mapping.get(slack_user_id)
        if mapped is not None:
            return authenticated(mapped.user, mapped.groups)
        if self._strategy is EmailStrategy.MAP_ONLY:
            raise UnknownUser(
                f"Slack user {slack_user_id} is not in Greenlight's user mapping; "
                "ask an administrator to add you, or decide with kubectl"
            )
        cached = self._cache.get(slack_user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        user = await self._info(slack_user_id)
        identity = authenticated(self._name_from_email(slack_user_id, user, await self._bot_team()))
        self._cache[slack_user_id] = (time.monotonic() + self._cache_seconds, identity)
        return identity

    async def _info(self, slack_user_id: str) -> Mapping[str, Any]:
        try:
            response = await self._client.users_info(user=slack_user_id)
        except SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            if error in {"user_not_found", "user_not_visible"}:
                raise UnknownUser(f"Slack does not know user {slack_user_id}") from exc
            raise UserLookupError(f"users.info failed: {error or exc}") from exc
        except API_ERRORS as exc:
            raise UserLookupError(f"users.info failed: {exc}") from exc
        user = response.get("user")
        if not isinstance(user, Mapping):
            raise UserLookupError("users.info returned no user object")
        return user

    async def _bot_team(self) -> tuple[str, str]:
        """The workspace (team id) and enterprise id the app is installed in, from auth.test."""
        if self._workspace is None:
            try:
                response = await self._client.auth_test()
            except API_ERRORS as exc:
                raise UserLookupError(f"auth.test failed: {exc}") from exc
            team = str(response.get("team_id") or "")
            if not team:
                raise UserLookupError("auth.test returned no team_id")
            self._workspace = (team, str(response.get("enterprise_id") or ""))
        return self._workspace

    def _name_from_email(
        self, slack_user_id: str, user: Mapping[str, Any], workspace: tuple[str, str]
    ) -> str:
        who = f"Slack user {slack_user_id}"
        if user.get("deleted") or user.get("is_bot") or slack_user_id == "USLACKBOT":
            raise UnknownUser(f"{who} is deactivated or a bot")
        if user.get("is_restricted") or user.get("is_ultra_restricted"):
            raise UnknownUser(
                f"{who} is a guest of this workspace; guests may not decide (an administrator "
                "can add you to Greenlight's user mapping)"
            )
        if not self._same_workspace(user, workspace):
            raise UnknownUser(
                f"{who} belongs to another workspace or organization (Slack Connect); only "
                "members of the workspace Greenlight is installed in may decide"
            )
        profile = user.get("profile")
        email = profile.get("email") if isinstance(profile, Mapping) else None
        if not isinstance(email, str) or "@" not in email:
            raise UnknownUser(f"{who} has no visible email (the app needs users:read.email)")
        if user.get("is_email_confirmed") is not True:
            raise UnknownUser(f"the email of {who} is not confirmed")
        address = canonical(email)
        local, domain = address.rsplit("@", 1)
        if self._domains and domain not in self._domains:
            raise UnknownUser(
                f"the email domain {domain!r} of {who} is not one Greenlight accepts "
                f"({', '.join(sorted(self._domains))}); an administrator can map you instead"
            )
        name = local if self._strategy is EmailStrategy.EMAIL_LOCALPART else address
        problem = name_problem(name, "the user name from the email")
        if problem is not None or not local:
            raise UnknownUser(f"{who} cannot decide: {problem or 'the email has no local part'}")
        if not email.isascii():
            # Folding made a full-width or ligature mailbox into an ASCII name: someone else's.
            raise UnknownUser(
                f"the email {email!r} of {who} has characters outside ASCII, which could pass "
                "for another person's name; an administrator can map you instead"
            )
        return name

    @staticmethod
    def _same_workspace(user: Mapping[str, Any], workspace: tuple[str, str]) -> bool:
        """A member of the bot's own workspace; in an Enterprise Grid, of its enterprise too."""
        team, enterprise = workspace
        if user.get("is_stranger"):
            return False
        grid = user.get("enterprise_user")
        if isinstance(grid, Mapping):
            if not enterprise or grid.get("enterprise_id") != enterprise:
                return False
            teams = grid.get("teams")
            if isinstance(teams, list) and team in teams:
                return True
        return bool(team) and user.get("team_id") == team
