"""`free_port`: the ports servers started later in tests and `make run` listen on."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest

from greenlight.devcluster import controlplane
from greenlight.devcluster.controlplane import free_port


def test_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= port < low for port in ports), sorted(ports)[-3:]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", ports[-1]))  # free when handed out


def test_a_port_something_listens_on_or_already_handed_out_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ranges = tmp_path / "ip_local_port_range"
        ranges.write_text(f"{taken + 5000}\t65535\n")
        monkeypatch.setattr(controlplane, "_PORT_RANGE_FILE", ranges)
        monkeypatch.setattr(controlplane, "_LOWEST_LISTEN_PORT", taken)
        offsets = iter([0, 0, *range(1, 4000)])
        monkeypatch.setattr(secrets, "randbelow", lambda _: next(offsets))
        first = free_port()
        assert taken < first < taken + 4000
        offsets = iter([0, first - taken, *range(first - taken + 1, 4000)])
        second = free_port()
        assert second not in (taken, first)
        assert first < second < taken + 4000


def test_without_room_below_the_ephemeral_range_the_kernel_chooses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1024\t65535\n")
    monkeypatch.setattr(controlplane, "_PORT_RANGE_FILE", ranges)
    port = free_port()
    assert 1024 <= port <= 65535
