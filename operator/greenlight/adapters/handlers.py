"""The kopf handlers: thin. Each one hands the object to the reconciler and maps its failures
onto kopf's retry mechanism."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from greenlight.adapters import reconciler
from greenlight.adapters.runtime import Runtime
from greenlight.core.model import GROUP, PLURAL, VERSION


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_request(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    reason: str,
    **_: Any,
) -> None:
    """Creation, a decision annotation, or a restart: bring the status up to date."""
    runtime: Runtime = memo["runtime"]
    try:
        await reconciler.reconcile(runtime, str(namespace), str(name), _plain(body), cause=reason)
    except reconciler.RetryLater as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A mutable deep copy of kopf's read-only body view."""
    return copy.deepcopy(dict(body))
