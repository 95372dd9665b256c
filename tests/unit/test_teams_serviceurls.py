"""Where the bot's token may go (teams/serviceurls.py)."""

from __future__ import annotations

import pytest

from greenlight.adapters.teams.serviceurls import ServiceUrls, UntrustedServiceUrl

URLS = ServiceUrls(
    ["https://smba.trafficmanager.net/", "https://smba.infra.gov.teams.microsoft.us/teams"]
)


@pytest.mark.parametrize(
    "url",
    [
        "https://smba.trafficmanager.net/teams/",
        "https://smba.trafficmanager.net/emea/v3/conversations/19%3Aa%40thread.tacv2/activities",
        "https://SMBA.trafficmanager.net:443/amer/",
        "https://smba.infra.gov.teams.microsoft.us/teams/v3/conversations",
    ],
)
def test_urls_under_an_allowed_prefix_are_allowed(url: str) -> None:
    assert URLS.allows(url)
    assert URLS.check(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://smba.trafficmanager.net/teams/",
        "https://smba.trafficmanager.net.evil.example/teams/",
        "https://evil.example/smba.trafficmanager.net/",
        "https://smba.trafficmanager.net@evil.example/",
        "https://user:pw@smba.trafficmanager.net/",
        "https://smba.trafficmanager.net:8443/teams/",
        "https://smba.trafficmanager.net/teams/?redirect=https://evil.example/",
        "https://smba.trafficmanager.net/teams/#x",
        "https://smba.infra.gov.teams.microsoft.us/other/",
        "https://smba.infra.gov.teams.microsoft.us/teamsx/",
        "https://smba.trafficmanager.net/te ams/",
        "//smba.trafficmanager.net/",
        "",
        "https://smba.trafficmanager.net:notaport/",
    ],
)
def test_anything_else_is_refused(url: str) -> None:
    assert not URLS.allows(url)
    with pytest.raises(UntrustedServiceUrl):
        URLS.check(url)


@pytest.mark.parametrize(
    "prefix",
    ["http://smba.trafficmanager.net/", "https://a@b/", "https://smba.trafficmanager.net/?q", "x"],
)
def test_a_bad_prefix_is_a_configuration_error(prefix: str) -> None:
    with pytest.raises(ValueError, match="Bot Connector URL prefix"):
        ServiceUrls([prefix])


def test_at_least_one_prefix_is_required() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ServiceUrls([])
