"""The external-service health checks cover Teams when it is configured (telemetry/health.py)."""

from __future__ import annotations

from greenlight.config import Settings
from greenlight.telemetry import health


def test_teams_services_are_checked_only_when_teams_is_configured() -> None:
    assert not {c.name for c in health.default_checks(Settings())} & {"teams", "teams-keys"}

    checks = {
        c.name: c
        for c in health.default_checks(
            Settings(
                teams_app_id="app",
                teams_tenant_id="tenant-1",
                teams_service_url="https://smba.infra.gov.teams.microsoft.us/teams/",
                teams_authority_url="https://login.microsoftonline.us/",
            )
        )
    }

    connector = checks["teams"]
    assert connector.url == "https://smba.infra.gov.teams.microsoft.us/teams/v3/conversations"
    assert connector.expected_status == (401,), "an anonymous call is refused when it is up"
    assert checks["teams-keys"].url == (
        "https://login.botframework.com/v1/.well-known/openidconfiguration"
    )
    assert checks["teams-login"].url == (
        "https://login.microsoftonline.us/tenant-1/v2.0/.well-known/openid-configuration"
    )
