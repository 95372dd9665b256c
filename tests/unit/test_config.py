"""Settings come from one place: `GREENLIGHT_*` variables, overridden by flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenlight import config


def test_namespaces_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_NAMESPACES", "ci, prod,,staging ")

    assert config.load().namespaces == ("ci", "prod", "staging")


def test_flags_override_the_environment_and_none_means_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GREENLIGHT_METRICS_PORT", "9100")
    monkeypatch.setenv("GREENLIGHT_AUDIT_FILE", "/tmp/from-env.jsonl")

    settings = config.load({"metrics_port": 9200, "audit_file": None})

    assert settings.metrics_port == 9200
    assert settings.audit_file == Path("/tmp/from-env.jsonl")


def test_an_empty_variable_keeps_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_SLACK_MODE", "")

    assert config.load().slack_mode == "http"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GREENLIGHT_HEALTH_PORT", "eighty"),
        ("GREENLIGHT_LOG_FORMAT", "fancy"),
        ("GREENLIGHT_WEBHOOK_MANAGE", "perhaps"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(config.SettingsError, match=f"^invalid operator settings: {variable}: "):
        config.load()


def test_vault_address_is_read_from_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "https://vault.internal:8200")

    assert config.load().vault_addr == "https://vault.internal:8200"


def test_slack_tokens_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_SLACK_BOT_TOKEN", "xoxb-secret")

    settings = config.load()

    assert settings.slack_enabled
    assert "xoxb-secret" not in repr(settings)


def test_the_cli_namespace_comes_from_greenlight_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GREENLIGHT_NAMESPACE", "ci")

    assert config.ClientSettings().namespace == "ci"


def test_a_webhook_client_ca_needs_the_names_it_may_sign_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any certificate the CA signed would otherwise call the webhooks: with the cluster CA,
    every user with a client certificate."""
    monkeypatch.setenv("GREENLIGHT_WEBHOOK_CLIENT_CA_FILE", "/etc/ca.crt")

    with pytest.raises(config.SettingsError, match=r"GREENLIGHT_WEBHOOK_CLIENT_NAMES: .*required"):
        config.load()

    monkeypatch.setenv("GREENLIGHT_WEBHOOK_CLIENT_NAMES", "kube-apiserver-webhook-client")
    assert config.load().webhook_client_names == ("kube-apiserver-webhook-client",)


def test_webhook_client_names_without_a_ca_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a CA no client certificate is asked for: the names would check nothing."""
    monkeypatch.setenv("GREENLIGHT_WEBHOOK_CLIENT_NAMES", "kube-apiserver-webhook-client")

    with pytest.raises(config.SettingsError, match=r"GREENLIGHT_WEBHOOK_CLIENT_NAMES: .*CA_FILE"):
        config.load()
