"""Teams settings and `start_teams`' refusals of a wrong configuration (teams/__init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from tests.fakes.slack import StubDecisions

from greenlight import config
from greenlight.adapters.chat import DecisionsPort
from greenlight.adapters.teams import TeamsConfigError, start_teams
from greenlight.config import Settings


def test_teams_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_TEAMS_APP_ID", "app-1")
    monkeypatch.setenv("GREENLIGHT_TEAMS_APP_PASSWORD", "s3cret-app-password")
    monkeypatch.setenv("GREENLIGHT_TEAMS_ALLOWED_TENANTS", "t-1, t-2")
    monkeypatch.setenv(
        "GREENLIGHT_TEAMS_SERVICE_URLS",
        "https://smba.infra.gov.teams.microsoft.us/,https://smba.trafficmanager.net/",
    )

    settings = config.load()

    assert settings.teams_enabled
    assert settings.teams_allowed_tenants == ("t-1", "t-2")
    assert settings.teams_service_urls[0] == "https://smba.infra.gov.teams.microsoft.us/"
    assert settings.teams_user_mapping == "upn"
    assert settings.teams_port == 3978
    assert "s3cret-app-password" not in repr(settings)


def test_an_unknown_user_mapping_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_TEAMS_USER_MAPPING", "email-localpart")
    with pytest.raises(config.SettingsError, match="GREENLIGHT_TEAMS_USER_MAPPING"):
        config.load()


def _port() -> DecisionsPort:
    stub = StubDecisions()
    return DecisionsPort(stub.submit_decision, stub.find_request_by_uid, stub.record_audit)


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "teams_app_id": "app-1",
        "teams_app_password": SecretStr("pw"),
        "teams_tenant_id": "tenant-1",
        "teams_port": 0,
        "teams_host": "127.0.0.1",
        "audit_file": tmp_path / "audit.jsonl",
    }
    values.update(changes)
    return Settings(**values)


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"teams_tenant_id": ""}, "GREENLIGHT_TEAMS_TENANT_ID"),
        ({"teams_app_password": None}, "GREENLIGHT_TEAMS_APP_PASSWORD"),
        ({"teams_service_url": "https://evil.example/teams/"}, "GREENLIGHT_TEAMS_SERVICE_URL"),
        ({"teams_service_urls": ("http://smba.trafficmanager.net/",)}, "SERVICE_URLS"),
        ({"teams_openid_metadata_url": "http://x/"}, "GREENLIGHT_TEAMS_OPENID_METADATA_URL"),
        ({"teams_certificate_file": Path("/nonexistent.pem")}, "one of"),
        (
            {"teams_app_password": None, "teams_certificate_file": Path("/nonexistent.pem")},
            "GREENLIGHT_TEAMS_CERTIFICATE_FILE",
        ),
        ({"teams_user_map_file": Path("/nonexistent.yaml")}, "GREENLIGHT_TEAMS_USER_MAP_FILE"),
    ],
    ids=[
        "no-tenant",
        "no-credential",
        "service-url-not-allowed",
        "http-prefix",
        "http-metadata",
        "password-and-certificate",
        "unreadable-certificate",
        "unreadable-user-map",
    ],
)
async def test_a_wrong_setting_is_refused_with_its_name(
    tmp_path: Path, changes: dict[str, Any], variable: str
) -> None:
    with pytest.raises(TeamsConfigError, match=variable):
        await start_teams(_settings(tmp_path, **changes), _port(), card_key=b"k" * 32)
