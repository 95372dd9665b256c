"""Settings, from one place: flags override environment variables, which override defaults.

Every setting the package reads from the environment is declared here (pydantic-settings):

- `Settings`: the operator, `GREENLIGHT_*` (lists such as `GREENLIGHT_NAMESPACES` are
  comma-separated), plus `VAULT_ADDR` for the Vault health check;
- `ClientSettings`: the CLI and the SDK (`GREENLIGHT_NAMESPACE`);
- `TraceSettings`: the standard `OTEL_*` variables that decide whether spans are exported (the
  OTLP exporter reads its own endpoint, headers and TLS settings).

Where the Kubernetes credentials come from (`KUBECONFIG`, in-cluster) is `greenlight.kube`'s.
Secrets (Slack tokens) are `SecretStr` so that printing or logging the settings never shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "GREENLIGHT_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        populate_by_name=True,
    )

    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    metrics_port: int = Field(9090, ge=0, le=65535)
    health_port: int = Field(8080, ge=0, le=65535)
    webhook_port: int = Field(9443, ge=0, le=65535)
    webhook_host: str = "127.0.0.1"
    webhook_cert_file: Path | None = None
    webhook_key_file: Path | None = None
    webhook_ca_file: Path | None = None
    webhook_manage: bool = False
    # The CA that signs the API server's client certificate for webhooks: set, the webhook port
    # accepts only TLS clients with such a certificate (and, if listed, one of these names).
    webhook_client_ca_file: Path | None = None
    webhook_client_names: Annotated[tuple[str, ...], NoDecode] = Field((), validate_default=True)
    # Divides every reminder and escalation interval of the effective policies: 1 in
    # production; tests run a policy's minutes-long schedule in seconds.
    follow_up_scale: float = Field(1.0, ge=1.0, le=3600.0)
    audit_file: Path = Path("/var/lib/greenlight/audit/audit.jsonl")
    audit_key_file: Path | None = None
    # The anchor ConfigMap's namespace (empty: no anchor, the head file only) and name (empty:
    # derived from the log's file name, e.g. greenlight-audit-anchor-greenlight-0).
    audit_anchor_namespace: str = ""
    audit_anchor_name: str = ""
    # The Ed25519 key that signs approval receipts (PEM, PKCS#8); unset: receipt.key next to
    # the audit file, created once. The public keys are published in the ConfigMap
    # receipt_keys_namespace/receipt_keys_name (empty namespace: not published).
    receipt_key_file: Path | None = None
    receipt_keys_namespace: str = ""
    receipt_keys_name: str = "greenlight-receipt-keys"
    peering: str = ""  # kopf peering name; empty runs standalone (one replica)
    priority: int = 0
    log_level: Literal["DEBUG", "INFO", "WARN", "WARNING", "ERROR"] = "INFO"
    # auto: for people on a terminal (stdout is a TTY), JSON lines otherwise.
    log_format: Literal["auto", "json", "console"] = "auto"
    health_checks_file: Path | None = None
    vault_addr: str = Field("", validation_alias=AliasChoices("VAULT_ADDR", "vault_addr"))
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
    # Email domains whose Slack users the email mappings accept (`email-localpart` requires it).
    slack_allowed_email_domains: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validate_default=True
    )
    # Microsoft Teams (docs/teams.md): the bot's Entra app registration, single-tenant.
    teams_app_id: str = ""
    teams_app_password: SecretStr | None = None
    teams_certificate_file: Path | None = None  # PEM with the private key and its certificate
    teams_tenant_id: str = ""
    # Tenants whose users may act on cards (empty: teams_tenant_id only).
    teams_allowed_tenants: Annotated[tuple[str, ...], NoDecode] = ()
    # Public cloud defaults; docs/teams.md lists the values for the US Government clouds.
    teams_openid_metadata_url: str = (
        "https://login.botframework.com/v1/.well-known/openidconfiguration"
    )
    teams_token_issuer: str = "https://api.botframework.com"
    teams_authority_url: str = "https://login.microsoftonline.com"
    teams_token_scope: str = "https://api.botframework.com/.default"
    # Where cards are posted, and the prefixes the bot's token may ever be sent to.
    teams_service_url: str = "https://smba.trafficmanager.net/teams/"
    teams_service_urls: Annotated[tuple[str, ...], NoDecode] = ("https://smba.trafficmanager.net/",)
    teams_user_mapping: Literal["upn", "email", "oid"] = "upn"
    teams_user_map_file: Path | None = None
    teams_default_conversation: str = ""
    teams_port: int = Field(3978, ge=0, le=65535)
    teams_host: str = "0.0.0.0"  # noqa: S104 - reached through a Service/Ingress

    @field_validator(
        "namespaces",
        "slack_allowed_email_domains",
        "webhook_client_names",
        "teams_allowed_tenants",
        "teams_service_urls",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("webhook_client_names")
    @classmethod
    def _names_for_client_ca(cls, value: tuple[str, ...], info: ValidationInfo) -> object:
        if info.data.get("webhook_client_ca_file") is not None and not value:
            raise ValueError(
                "required with GREENLIGHT_WEBHOOK_CLIENT_CA_FILE: name the common name of the "
                "API server's webhook client certificate (comma-separated), because any "
                "certificate that CA signed (a user's, when it is the cluster CA) could "
                "otherwise call the webhooks"
            )
        if value and info.data.get("webhook_client_ca_file") is None:
            raise ValueError(
                "needs GREENLIGHT_WEBHOOK_CLIENT_CA_FILE: the names are checked on client "
                "certificates, and without a CA no client certificate is asked for (anyone who "
                "reaches the webhook port could call it)"
            )
        return value

    @field_validator("slack_allowed_email_domains")
    @classmethod
    def _domains_for_localpart(cls, value: tuple[str, ...], info: ValidationInfo) -> object:
        if info.data.get("slack_user_mapping") == "email-localpart" and not value:
            raise ValueError(
                "required with GREENLIGHT_SLACK_USER_MAPPING=email-localpart, which drops the "
                "email's domain: list the domains whose Slack users may decide, comma-separated "
                "(e.g. example.com), or use the mapping `email` or `map-only`"
            )
        return value

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None and bool(self.slack_bot_token.get_secret_value())

    @property
    def teams_enabled(self) -> bool:
        return bool(self.teams_app_id.strip())


class ClientSettings(BaseSettings):
    """What the CLI and the SDK read: the namespace to use when none is given."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True)

    namespace: str = "default"


class TraceSettings(BaseSettings):
    """The `OTEL_*` variables that decide whether and under which service name spans leave."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", env_ignore_empty=True, frozen=True)

    sdk_disabled: str = ""
    traces_exporter: str = ""
    exporter_otlp_endpoint: str = ""
    exporter_otlp_traces_endpoint: str = ""
    service_name: str = ""


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable or flag."""


def load(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build settings from the environment, then apply non-None `overrides` (from flags)."""
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise SettingsError(f"invalid operator settings: {problems}") from None


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a validation error's location."""
    name = str(loc[0]) if loc else ""
    field = Settings.model_fields.get(name)
    if field is None:  # an alias such as VAULT_ADDR, or an unknown setting
        return name if name.isupper() else ENV_PREFIX + name.upper()
    return ENV_PREFIX + name.upper()
