"""The fake Teams (tests/fakes/teams.py) on an event loop of its own, for synchronous tests.

End-to-end tests drive an operator in another process with kubectl and plain function calls;
`TeamsService` runs the fake's loop in a daemon thread so it answers the operator while the test
thread blocks, and offers blocking access: `run(coroutine)` and `read(function)` execute on the
fake's loop, so the test never touches the fake's state while the loop is changing it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.fakes.teams import FakeTeams

_T = TypeVar("_T")


class TeamsService:
    """`with TeamsService(workdir) as teams:`; `teams.fake` is the FakeTeams."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-teams", daemon=True
        )
        self._fake: FakeTeams | None = None

    @property
    def fake(self) -> FakeTeams:
        if self._fake is None:
            raise RuntimeError("the fake Teams is not running")
        return self._fake

    def __enter__(self) -> TeamsService:
        self._thread.start()
        self._fake = self.run(self._open())
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        try:
            if self._fake is not None:
                self.run(self._fake.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    async def _open(self) -> FakeTeams:
        return await FakeTeams(self._workdir).__aenter__()

    def run(self, work: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        """Run `work` on the fake's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def read(self, function: Callable[[FakeTeams], _T]) -> _T:
        """Call `function(fake)` on the fake's loop (inspection or scenario setup)."""

        async def call() -> _T:
            return function(self.fake)

        return self.run(call())
