"""The node's one run worker: runs execute there, one at a time, so the daemon's loop stays
free for status and abort; the daemon waits for the current run before it shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from controller.node.runtime import NodeRuntime, PreparedRun, RunProgress


class RunWorker:
    def __init__(self, runtime: NodeRuntime) -> None:
        self._runtime = runtime
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"node-{runtime.node}")
        self._current: asyncio.Future | None = None

    def start(
        self, run: PreparedRun, on_events: Callable[[list], None] | None = None
    ) -> asyncio.Future[RunProgress]:
        self._current = asyncio.get_running_loop().run_in_executor(
            self._executor, self._runtime.execute, run, None, on_events
        )
        return self._current

    async def execute(
        self, run: PreparedRun, on_events: Callable[[list], None] | None = None
    ) -> RunProgress:
        return await self.start(run, on_events)

    async def in_worker(self, fn: Callable, *args):
        """Blocking instrument work in the worker thread (between runs)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def finish(self, grace_s: float) -> None:
        """Wait (up to grace_s) for the current run to close its file, then stop."""
        if self._current is not None and not self._current.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._current), grace_s)
        self._executor.shutdown(wait=False, cancel_futures=True)
