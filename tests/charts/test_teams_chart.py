"""The operator chart's Teams values (docs/teams.md): Secret, settings, ports, ingress, policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.charts.render import HelmError, by_kind, one, render

OID = "0b6a3c1e-8f39-4c5e-9d8a-2f1f7c9e5a10"
TEAMS: dict[str, Any] = {
    "teams": {
        "existingSecret": "greenlight-teams",
        "defaultConversation": "19:approvals@thread.tacv2",
        "userMap": {OID: "alice@example.com"},
        "allowedTenants": ["t-1", "t-2"],
        "ingress": {"enabled": True, "host": "bot.example.com", "tlsSecretName": "bot-tls"},
    }
}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return dict(found)


def env_of(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(objects)["env"]}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(TEAMS)


def test_without_teams_values_nothing_of_teams_is_rendered() -> None:
    objects = render({})
    assert not [name for name in env_of(objects) if name.startswith("GREENLIGHT_TEAMS_")]
    assert "teams" not in {p["name"] for p in one(objects, "Service")["spec"]["ports"]}
    assert not [i for i in by_kind(objects, "Ingress") if i["metadata"]["name"].endswith("-teams")]


def test_the_bots_identity_comes_from_the_existing_secret(rendered: list[dict[str, Any]]) -> None:
    env = env_of(rendered)
    for variable, key in (
        ("GREENLIGHT_TEAMS_APP_ID", "app-id"),
        ("GREENLIGHT_TEAMS_TENANT_ID", "tenant-id"),
        ("GREENLIGHT_TEAMS_APP_PASSWORD", "app-password"),
    ):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("greenlight-teams", key)
    assert "GREENLIGHT_TEAMS_CERTIFICATE_FILE" not in env
    assert env["GREENLIGHT_TEAMS_DEFAULT_CONVERSATION"]["value"] == "19:approvals@thread.tacv2"
    assert env["GREENLIGHT_TEAMS_ALLOWED_TENANTS"]["value"] == "t-1,t-2"
    assert env["GREENLIGHT_TEAMS_SERVICE_URLS"]["value"] == "https://smba.trafficmanager.net/"
    config = next(
        o for o in by_kind(rendered, "ConfigMap") if o["metadata"]["name"].endswith("-config")
    )
    path = Path(env["GREENLIGHT_TEAMS_USER_MAP_FILE"]["value"])
    assert yaml.safe_load(config["data"][path.name]) == {OID: "alice@example.com"}


def test_a_certificate_credential_is_mounted_from_the_secret() -> None:
    objects = render({"teams": {**TEAMS["teams"], "credential": "certificate"}})
    env = env_of(objects)

    assert "GREENLIGHT_TEAMS_APP_PASSWORD" not in env
    path = env["GREENLIGHT_TEAMS_CERTIFICATE_FILE"]["value"]
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "teams-certificate"]
    assert volume["secret"] == {
        "secretName": "greenlight-teams",
        "items": [{"key": "certificate.pem", "path": "certificate.pem"}],
    }
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["name"] == "teams-certificate"]
    assert path == f"{mount['mountPath']}/certificate.pem"


def test_the_messaging_endpoint_is_served_exposed_and_allowed_in(
    rendered: list[dict[str, Any]],
) -> None:
    ports = {p["name"]: p for p in container(rendered)["ports"]}
    assert ports["teams"]["containerPort"] == 3978
    service = {p["name"]: p for p in one(rendered, "Service")["spec"]["ports"]}
    assert (service["teams"]["port"], service["teams"]["targetPort"]) == (3978, "teams")
    (ingress,) = [
        i for i in by_kind(rendered, "Ingress") if i["metadata"]["name"].endswith("-teams")
    ]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (rule["host"], path["path"], path["pathType"]) == (
        "bot.example.com",
        "/api/messages",
        "Exact",
    )
    assert path["backend"]["service"]["port"]["name"] == "teams"
    assert ingress["spec"]["tls"] == [{"hosts": ["bot.example.com"], "secretName": "bot-tls"}]
    policy = one(rendered, "NetworkPolicy")["spec"]
    assert {"protocol": "TCP", "port": 3978} in [
        p for rule in policy["ingress"] for p in rule["ports"]
    ]


@pytest.mark.parametrize(
    ("teams", "field"),
    [
        ({"userMapping": "email-localpart"}, "/teams/userMapping"),
        ({"credential": "token"}, "/teams/credential"),
        # helm names the wrong location for a bad key; the message names the key and the rule.
        ({"userMap": {"alice": "alice"}}, "'alice' does not match pattern '^[0-9a-fA-F]{8}-"),
        ({"defaultConversation": "general"}, "/teams/defaultConversation"),
        (
            {"cloud": {"serviceUrls": ["http://smba.trafficmanager.net/"]}},
            "/teams/cloud/serviceUrls",
        ),
        ({"ingress": {"enabled": True}}, "/teams/ingress/host"),
    ],
)
def test_wrong_teams_values_are_refused_naming_the_field(teams: dict[str, Any], field: str) -> None:
    with pytest.raises(HelmError) as caught:
        render({"teams": teams})
    assert field in caught.value.stderr
