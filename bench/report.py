"""The benchmark report: the machine, every figure, its baseline ratio and its target."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.stats import Summary

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    limit: str
    met: bool
    ratio: str = ""  # measured / limit, or the ratio to the baseline the limit is stated in


def machine() -> list[str]:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"^MemTotal:\s+(\d+) kB", meminfo.read_text(), re.MULTILINE)
        memory = f"{int(found.group(1)) / 1024 / 1024:.1f} GiB" if found else memory
    versions = ", ".join(
        f"{package} {metadata.version(package)}"
        for package in ("kopf", "kubernetes", "aiohttp", "slack-sdk")
    )
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores (nproc); memory {memory}; load average "
        f"at the start {os.getloadavg()[0]:.2f}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- kube-apiserver {apiserver_version()} + etcd 3.6 (local, `greenlight.devcluster`)",
        f"- {versions}",
    ]


def apiserver_version() -> str:
    from greenlight.devcluster.controlplane import find_assets

    try:
        out = subprocess.run(
            [str(find_assets() / "kube-apiserver"), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout
    except OSError:
        return "unknown"
    return out.strip().removeprefix("Kubernetes ").strip() or "unknown"


def row(what: str, summary: Summary, baseline: Summary | None = None) -> str:
    ratio = f"{summary.median / baseline.median:.2f}x" if baseline is not None else ""
    return (
        f"| {what} | {summary.median * 1000:.1f} | {summary.p99 * 1000:.1f} | "
        f"{summary.n} | {ratio} |"
    )


def header() -> list[str]:
    return [
        "| measurement | median ms | p99 ms | n | ratio to baseline (medians) |",
        "|---|---:|---:|---:|---:|",
    ]


def targets_table(targets: list[Target]) -> list[str]:
    lines = ["| target | measured | limit | ratio | met |", "|---|---|---|---:|---|"]
    lines += [
        f"| {t.what} | {t.measured} | {t.limit} | {t.ratio} | {'yes' if t.met else '**no**'} |"
        for t in targets
    ]
    return lines


def at_most(what: str, measured: float, limit: float, unit: str, digits: int = 1) -> Target:
    """A target `measured ≤ limit`; the ratio column is measured / limit."""
    ratio = f"{measured / limit:.2f}" if limit else ""
    return Target(
        what,
        f"{measured:.{digits}f} {unit}",
        f"≤ {limit:.{digits}f} {unit}",
        measured <= limit,
        ratio,
    )


def at_least(what: str, measured: float, limit: float, unit: str, digits: int = 0) -> Target:
    """A target `measured ≥ limit`; the ratio column is measured / limit."""
    ratio = f"{measured / limit:.2f}" if limit else ""
    return Target(
        what,
        f"{measured:.{digits}f} {unit}",
        f"≥ {limit:.{digits}f} {unit}",
        measured >= limit,
        ratio,
    )


def stamp(mode: str) -> str:
    return f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, mode `{mode}`."


def write(path: Path, block: list[str]) -> None:
    """Replace the results between the markers in `path` (the prose around them stays)."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    path.write_text(before + START + "\n" + "\n".join(block) + "\n" + END + after)
