"""LogQL and TraceQL parsed by Grafana's own grammars (@grafana/lezer-logql, -traceql).

The grammars are the npm packages Grafana's query editors use, pinned by
hack/queries/package-lock.json and installed with ``npm ci`` (``make tools`` does it; so does
the first call here when they are missing). One node process parses a whole batch.
"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[2]
QUERIES_DIR = REPO / "hack" / "queries"
Language = Literal["logql", "traceql"]

# What Grafana puts in place of its variables before a query reaches Loki or Tempo.
GRAFANA_VARIABLES = {
    "${__trace.traceId}": "4bf92f3577b34da6a3ce929d0e0e4736",
    "${__span.spanId}": "00f067aa0ba902b7",
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__auto": "1m",
    "$__range": "1h",
    "$namespace": "greenlight",
    "$workflow_id": "wf-1",
    "$workflow": "deploy",
    "$pod": "greenlight-0",
}


@dataclass(frozen=True)
class Verdict:
    language: Language
    query: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@functools.cache
def _installed() -> Path:
    if not (QUERIES_DIR / "node_modules" / "@grafana" / "lezer-logql").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=QUERIES_DIR,
            check=True,
            capture_output=True,
        )
    return QUERIES_DIR / "parse.mjs"


def substitute(query: str) -> str:
    """The query with Grafana's variables replaced (longest name first)."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        query = query.replace(name, GRAFANA_VARIABLES[name])
    return query


def parse(queries: list[tuple[Language, str]]) -> list[Verdict]:
    """Parse every ``(language, query)``; variables are substituted first, as Grafana does."""
    payload = [{"language": lang, "query": substitute(query)} for lang, query in queries]
    done = subprocess.run(
        ["node", str(_installed())],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    results = json.loads(done.stdout)
    return [
        Verdict(lang, query, None if result["ok"] else result["error"])
        for (lang, query), result in zip(queries, results, strict=True)
    ]
