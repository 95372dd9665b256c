"""Operator settings: flags override `GREENLIGHT_*` environment variables, which override defaults.

Secrets (Slack tokens) are `SecretStr` so that printing or logging the settings never shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

ENV_PREFIX = "GREENLIGHT_"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = ()
    metrics_port: int = Field(9090, ge=0, le=65535)
    health_port: int = Field(8080, ge=0, le=65535)
    webhook_port: int = Field(9443, ge=0, le=65535)
    webhook_host: str = "127.0.0.1"
    webhook_cert_file: Path | None = None
    webhook_key_file: Path | None = None
    webhook_ca_file: Path | None = None
    webhook_manage: bool = False
    audit_file: Path = Path("/var/lib/greenlight/audit/audit.jsonl")
    audit_key_file: Path | None = None
    peering: str = ""  # kopf peering name; empty runs standalone (one replica)
    priority: int = 0
    log_level: Literal["DEBUG", "INFO", "WARN", "WARNING", "ERROR"] = "INFO"
    health_checks_file: Path | None = None
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_mode: Literal["http", "socket"] = "http"
    slack_default_channel: str = ""
    slack_api_url: str = "https://slack.com/api/"
    slack_interactions_port: int = Field(3000, ge=0, le=65535)
    slack_interactions_host: str = "0.0.0.0"  # noqa: S104 - reached through a Service/Ingress
    slack_user_mapping: Literal["email", "email-localpart", "map-only"] = "email"
    slack_user_map_file: Path | None = None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None and bool(self.slack_bot_token.get_secret_value())


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable or flag."""


def load(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from the environment, then apply non-None `overrides` (from flags)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        if name == "namespaces":
            values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
        elif field.annotation is bool:
            values[name] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            values[name] = raw
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid operator settings: {problems}") from None
