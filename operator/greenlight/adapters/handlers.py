"""The kopf handlers: thin. Every watch event goes to the converger, which decides whether
there is anything to do; deletes included.

`on.event` rather than kopf's change-detecting handlers (create/update/resume): the reconciler is
level-triggered and needs no diff, so kopf keeps no bookkeeping on the objects — no
last-handled-configuration or progress annotations (which any patcher could corrupt, and which
would copy the plan), no extra PATCH per event, and deletes arrive as DELETED events.
"""

from __future__ import annotations

from typing import Any

import kopf

from greenlight.adapters.converge import Converger
from greenlight.core.model import GROUP, PLURAL, VERSION


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_request_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    converger: Converger = memo["converger"]
    await converger.on_event(event.get("type"), body)
