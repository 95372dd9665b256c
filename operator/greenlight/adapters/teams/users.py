"""Who clicked: a Teams user (`from.aadObjectId`) to the Kubernetes identity then authorized.

Two sources, in this order:

1. The mapping file (GREENLIGHT_TEAMS_USER_MAP_FILE), YAML from Microsoft Entra object id to a
   Kubernetes user name, or to `{user: NAME, groups: [G, ...]}`:

       0b6a3c1e-8f39-4c5e-9d8a-2f1f7c9e5a10: alice@example.com
       6f2d9b7a-1c3e-4b5a-8e9f-0a1b2c3d4e5f: {user: bob, groups: [sre]}

2. Otherwise the member record Teams keeps for the conversation
   (`GET {serviceUrl}/v3/conversations/{team or conversation}/members/{from.id}`), which must
   describe the same object id, belong to Greenlight's own tenant (GREENLIGHT_TEAMS_TENANT_ID)
   and not be a guest (`userRole` guest or anonymous, or a `#EXT#` UPN). The mode
   (GREENLIGHT_TEAMS_USER_MAPPING) picks the name: `upn` (userPrincipalName, what AKS's and
   most Entra OIDC set-ups put in the username claim), `email`, or `oid` (the object id itself).
   The name is the `canonical` form (greenlight.core.identity); a name that form cannot make
   safe is refused.

The activity's tenant was already checked against the allowed tenants (invoke.py); a member of
another tenant is refused here too (`foreign_tenant`), whatever the activity said.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from greenlight.adapters.chat import authenticated
from greenlight.adapters.teams.connector import BotConnector, ConnectorError
from greenlight.core.identity import canonical, name_problem
from greenlight.core.model import Identity

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_GUEST_ROLES = frozenset({"guest", "anonymous"})
CACHE_SECONDS = 300.0
MAX_CACHE = 4096


class UserMapping(enum.StrEnum):
    UPN = "upn"
    EMAIL = "email"
    OID = "oid"


class UnknownUser(Exception):
    """The Teams user has no Kubernetes identity. `reason` is the refusal label
    (`unknown_user`, `foreign_tenant`); `message` says why, for the person."""

    def __init__(self, message: str, reason: str = "unknown_user") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class UserLookupError(Exception):
    """Teams could not be asked who the user is (outage): try again later."""


@dataclass(frozen=True)
class MappedUser:
    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Clicker:
    """Who the activity says clicked, and where (all from a verified activity)."""

    aad_object_id: str
    user_id: str  # the Teams user id ("29:..."), as the members API names members
    conversation: str  # the conversation id of the activity
    team: str  # channelData.team.id, "" outside a team
    service_url: str


def load_user_map(path: str | Path | None) -> dict[str, MappedUser]:
    """Read the mapping file; raises ValueError naming the entry that is malformed."""
    if path is None or str(path) == "":
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of Entra object id to Kubernetes user")
    mapping: dict[str, MappedUser] = {}
    for key, value in data.items():
        oid = str(key).strip().lower()
        if not _GUID.match(oid):
            raise ValueError(f"{path}: {key!r} is not an Entra object id (a GUID)")
        if isinstance(value, str) and value:
            mapping[oid] = MappedUser(user=value)
        elif isinstance(value, Mapping) and isinstance(value.get("user"), str) and value["user"]:
            groups = value.get("groups", [])
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError(f"{path}: {key}.groups must be a list of group names")
            mapping[oid] = MappedUser(user=value["user"], groups=tuple(groups))
        else:
            raise ValueError(
                f"{path}: {key} must map to a user name or to {{user: NAME, groups: [...]}}"
            )
    return mapping


class TeamsDirectory:
    """Resolves Teams users to Identities; member lookups are cached for CACHE_SECONDS."""

    def __init__(
        self,
        connector: BotConnector,
        mapping: Mapping[str, MappedUser],
        mode: UserMapping,
        tenant_id: str,
    ) -> None:
        self._connector = connector
        self._mapping = dict(mapping)
        self._mode = mode
        self._tenant = tenant_id.strip().lower()
        self._cache: dict[str, tuple[float, Identity]] = {}

    async def identity(self, clicker: Clicker) -> Identity:
        """The Kubernetes identity for `clicker`; raises UnknownUser or UserLookupError."""
        oid = clicker.aad_object_id.strip().lower()
        if not _GUID.match(oid):
            raise UnknownUser("Teams did not say who you are (no Entra object id)")
        mapped = self._mapping.get(oid)
        if mapped is not None:
            return authenticated(mapped.user, mapped.groups)
        cached = self._cache.get(oid)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        member = await self._member(clicker)
        identity = authenticated(self._name(oid, member))
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[oid] = (time.monotonic() + CACHE_SECONDS, identity)
        return identity

    async def _member(self, clicker: Clicker) -> Mapping[str, Any]:
        where = clicker.team or clicker.conversation
        try:
            return await self._connector.member(clicker.service_url, where, clicker.user_id)
        except ConnectorError as exc:
            if exc.status in {400, 403, 404}:
                raise UnknownUser(
                    "Teams does not list you as a member of this team or chat"
                ) from exc
            raise UserLookupError(str(exc)) from exc

    def _name(self, oid: str, member: Mapping[str, Any]) -> str:
        who = f"Teams user {oid}"
        if str(member.get("aadObjectId") or "").strip().lower() != oid:
            raise UnknownUser(f"Teams describes another account than {who}")
        tenant = str(member.get("tenantId") or "").strip().lower()
        if tenant != self._tenant:
            raise UnknownUser(
                f"{who} belongs to another organization (tenant {tenant or 'unknown'}); only "
                "members of the tenant Greenlight is registered in may decide",
                reason="foreign_tenant",
            )
        upn = str(member.get("userPrincipalName") or "")
        role = str(member.get("userRole") or "").lower()
        if role in _GUEST_ROLES or "#ext#" in upn.lower():
            raise UnknownUser(
                f"{who} is a guest in this tenant; guests may not decide (an administrator "
                "can add you to Greenlight's user mapping)"
            )
        if self._mode is UserMapping.OID:
            name = value = oid
        else:
            field = "userPrincipalName" if self._mode is UserMapping.UPN else "email"
            value = upn if self._mode is UserMapping.UPN else str(member.get("email") or "")
            if "@" not in value:
                raise UnknownUser(f"Teams shows no {field} for {who}")
            name = canonical(value)
        problem = name_problem(name, "the user name from Teams")
        if problem is not None:
            raise UnknownUser(f"{who} cannot decide: {problem}")
        if not value.isascii():
            # Folding made a full-width or ligature name into an ASCII one: someone else's.
            raise UnknownUser(
                f"the name {value!r} Teams shows for {who} has characters outside ASCII, which "
                "could pass for another person's name; an administrator can map you instead"
            )
        return name
