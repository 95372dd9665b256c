"""Which Bot Connector endpoints may receive the bot's token.

An activity names its own `serviceUrl`, the endpoint the bot answers to. Greenlight sends its
access token only to a URL that (1) equals the `serviceurl` claim of the activity's verified
Bot Framework token (auth.py) and (2) lies under one of the configured prefixes
(GREENLIGHT_TEAMS_SERVICE_URLS; default the public cloud's https://smba.trafficmanager.net/).
A prefix matches on scheme (https only), exact host, port, and path prefix; user info, queries
and fragments are refused, so `https://smba.trafficmanager.net.evil.example/` or
`https://smba.trafficmanager.net@evil.example/` never match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit


class UntrustedServiceUrl(ValueError):
    """The URL is not one the bot's token may be sent to."""


@dataclass(frozen=True)
class _Prefix:
    host: str
    port: int
    path: str


class ServiceUrls:
    """The allow-list of Bot Connector URL prefixes."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        """Raises ValueError naming a prefix that is not an https URL without query or user."""
        self._prefixes = tuple(_prefix(text) for text in prefixes)
        if not self._prefixes:
            raise ValueError("at least one Bot Connector URL prefix is required")

    def allows(self, url: str) -> bool:
        try:
            parts = _parts(url)
        except ValueError:
            return False
        host, port, path = parts
        return any(
            host == p.host and port == p.port and path.startswith(p.path) for p in self._prefixes
        )

    def check(self, url: str) -> str:
        """`url` itself when allowed; raises UntrustedServiceUrl otherwise."""
        if not self.allows(url):
            raise UntrustedServiceUrl(
                f"{url[:200]!r} is not under an allowed Bot Connector URL "
                "(GREENLIGHT_TEAMS_SERVICE_URLS)"
            )
        return url


def _prefix(text: str) -> _Prefix:
    try:
        host, port, path = _parts(text)
    except ValueError as exc:
        raise ValueError(f"Bot Connector URL prefix {text!r}: {exc}") from None
    return _Prefix(host, port, path if path.endswith("/") else path + "/")


def _parts(url: str) -> tuple[str, int, str]:
    if len(url) > 2048 or not url.isascii() or any(c.isspace() for c in url):
        raise ValueError("not a plain ASCII URL")
    parts: SplitResult = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not carry user information")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("must not carry a query or fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("has no host")
    port = parts.port or 443
    return host, port, parts.path or "/"
