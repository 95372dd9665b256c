"""External service checks against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from greenlight.config import Settings
from greenlight.telemetry import health
from greenlight.telemetry.metrics import OPERATOR_REGISTRY


def up(service: str) -> float | None:
    return OPERATOR_REGISTRY.get_sample_value(
        "greenlight_external_service_up", {"service": service}
    )


def latency_count(service: str) -> float:
    name = "greenlight_external_service_request_duration_seconds_count"
    return OPERATOR_REGISTRY.get_sample_value(name, {"service": service}) or 0.0


class FakeVault:
    """A stand-in for Vault's /v1/sys/health that answers like each Vault state does."""

    STATUS = {"active": 200, "standby": 429, "uninitialised": 501, "sealed": 503}

    def __init__(self, server: BaseTestServer) -> None:
        self.server = server
        self.state = "active"
        self.requests = 0
        self._changed = asyncio.Condition()

    async def answered(self) -> int:
        """Count a request; the caller answers it with the current state."""
        async with self._changed:
            self.requests += 1
            self._changed.notify_all()
            return self.requests

    async def wait_for_requests(self, count: int) -> None:
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: self.requests >= count)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def vault() -> AsyncIterator[FakeVault]:
    fake: FakeVault

    async def sys_health(_: web.Request) -> web.Response:
        await fake.answered()
        status = FakeVault.STATUS[fake.state]
        return web.json_response({"sealed": fake.state == "sealed"}, status=status)

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/v1/sys/health", sys_health)
    app.router.add_get("/slow", slow)
    async with TestServer(app, host="127.0.0.1") as server:
        fake = FakeVault(server)
        yield fake


def vault_check(vault: FakeVault, name: str) -> health.HealthCheck:
    defaults = health.default_checks(Settings(vault_addr=vault.url("/")))
    default = next(c for c in defaults if c.name == "vault")
    return default.model_copy(update={"name": name, "timeout_seconds": 2.0})


@pytest.mark.parametrize(
    ("state", "expected"),
    [("active", 1.0), ("standby", 1.0), ("sealed", 0.0), ("uninitialised", 0.0)],
)
async def test_vault_is_up_when_active_or_standby_and_down_when_sealed_or_uninitialised(
    vault: FakeVault, state: str, expected: float
) -> None:
    vault.state = state
    check = vault_check(vault, f"vault-{state}")

    async with aiohttp.ClientSession() as session:
        result = await health.probe(session, check)

    assert up(check.name) == expected
    assert result.up is bool(expected)
    assert result.status == FakeVault.STATUS[state]
    assert latency_count(check.name) == 1.0


async def test_a_probe_that_times_out_is_down_and_records_no_latency(vault: FakeVault) -> None:
    check = health.HealthCheck(name="slowpoke", url=vault.url("/slow"), timeout_seconds=0.2)

    async with aiohttp.ClientSession() as session:
        result = await health.probe(session, check)

    assert up("slowpoke") == 0.0
    assert (result.up, result.status, result.error) == (False, None, "timed out")
    assert latency_count("slowpoke") == 0.0


async def test_a_refused_connection_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = health.HealthCheck(name="nobody-home", url=f"http://127.0.0.1:{port}/")

    async with aiohttp.ClientSession() as session:
        result = await health.probe(session, check)

    assert up("nobody-home") == 0.0
    assert not result.up
    assert result.error


async def test_monitor_creates_every_series_then_keeps_probing_on_the_interval(
    vault: FakeVault,
) -> None:
    checks = [
        vault_check(vault, "vault-monitored").model_copy(update={"interval_seconds": 0.05}),
        health.HealthCheck(name="never-probed", url="http://127.0.0.1:1/", interval_seconds=3600),
    ]
    runner = asyncio.create_task(health.monitor(checks))
    try:
        # Probes of one check are sequential: request n+1 means probe n was recorded.
        await vault.wait_for_requests(3)
        assert up("vault-monitored") == 1.0
        assert latency_count("vault-monitored") >= 2
        vault.state = "sealed"
        await vault.wait_for_requests(vault.requests + 2)
        assert up("vault-monitored") == 0.0
        assert up("never-probed") == 0.0
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


def test_defaults_cover_github_pulumi_and_slack_and_vault_only_when_configured() -> None:
    without_vault = {c.name: c for c in health.default_checks(Settings(vault_addr=""))}
    with_vault = {
        c.name: c
        for c in health.default_checks(Settings(vault_addr="https://vault.internal:8200/"))
    }

    assert set(without_vault) == {"github", "pulumi", "slack"}
    assert without_vault["github"].url == "https://www.githubstatus.com/api/v2/status.json"
    assert without_vault["pulumi"].url == "https://api.pulumi.com/api/capabilities"
    assert without_vault["slack"].url == "https://slack.com/api/api.test"
    assert with_vault["vault"].url == "https://vault.internal:8200/v1/sys/health"
    assert 200 in with_vault["vault"].expected_status
    assert 429 in with_vault["vault"].expected_status
    assert 503 not in with_vault["vault"].expected_status
    assert 501 not in with_vault["vault"].expected_status


def test_slack_check_follows_the_configured_slack_api_url() -> None:
    checks = {
        c.name: c for c in health.default_checks(Settings(slack_api_url="http://127.0.0.1:9/api/"))
    }

    assert checks["slack"].url == "http://127.0.0.1:9/api/api.test"


def test_checks_file_replaces_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(
        "- name: vault\n"
        "  url: https://vault.internal:8200/v1/sys/health\n"
        "  expected_status: [200, 429]\n"
        "  interval: 15\n"
        "- name: artifactory\n"
        "  url: https://artifacts.internal/api/system/ping\n"
        "  expected_status: 200\n"
        "  interval_seconds: 60\n"
        "  timeout_seconds: 3\n"
    )

    vault, artifactory = health.load_checks(Settings(health_checks_file=path))

    assert (vault.name, vault.expected_status, vault.interval_seconds) == (
        "vault",
        (200, 429),
        15.0,
    )
    assert (artifactory.expected_status, artifactory.interval_seconds) == ((200,), 60.0)
    assert artifactory.timeout_seconds == 3.0


def test_an_empty_checks_file_disables_checking(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text("[]\n")

    assert health.load_checks(Settings(health_checks_file=path)) == []


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("- name: Vault!\n  url: https://v/\n", "name"),
        ("- name: vault\n  url: ftp://v/\n", "url"),
        ("- name: vault\n  url: https://v/\n  expected_status: 700\n", "expected_status"),
        ("- name: vault\n  url: https://v/\n  interval: 0\n", "interval"),
        ("- name: vault\n  url: https://v/\n  colour: red\n", "colour"),
        (
            "- {name: a, url: 'https://a/'}\n- {name: a, url: 'https://b/'}\n",
            "duplicate check names",
        ),
    ],
)
def test_an_invalid_checks_file_is_refused_naming_the_file_and_field(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(content)

    with pytest.raises(ValueError, match=complaint) as refused:
        health.load_checks(Settings(health_checks_file=path))
    assert str(path) in str(refused.value)
