"""The node as its link layer sees it: controller.link.node_view.NodeView over the node's
runtime, parameter store and run worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from controller.data.params import ParameterStore
from controller.labconfig import LabConfig
from controller.node.runtime import NodeRuntime, PreparedRun, RunProgress
from controller.node.worker import RunWorker
from sequences.operations import Sequence, Sweep


class LinkPort:
    def __init__(
        self, lab: LabConfig, runtime: NodeRuntime, store: ParameterStore, worker: RunWorker
    ) -> None:
        self._lab = lab
        self._runtime = runtime
        self._store = store
        self._worker = worker

    @property
    def name(self) -> str:
        return self._runtime.node

    @property
    def platform(self) -> str:
        return self._runtime.platform

    @property
    def data_dir(self) -> Path:
        return self._lab.data_dir

    def parameters(self, station: str) -> dict[str, float]:
        return self._store.station_values(station, self._lab.nodes[station].memory_platform)

    def snapshot(self) -> dict[str, dict]:
        return self._store.snapshot(self.name, self.platform)

    def lab_text(self) -> str:
        return self._runtime.lab_text

    def busy_with(self) -> str | None:
        run = self._runtime.run_progress
        if self._runtime.state == "busy" and run is not None:
            return f"run {run.run_id}"
        return None

    async def prepare(self, sequence: Sequence) -> PreparedRun:
        return await asyncio.get_running_loop().run_in_executor(
            None, self._runtime.prepare, sequence, Sweep(), self.data_dir
        )

    async def execute(self, run: PreparedRun, on_events: Callable[[list], None]) -> RunProgress:
        return await self._worker.execute(run, on_events)

    def abort(self) -> None:
        self._runtime.abort_event.set()

    def send_herald(self, outcome: str, port: int = 0) -> None:
        with self._runtime.sequencer() as sequencer:
            sequencer.send_herald(outcome, port)
        self._runtime.fed_at = time.monotonic()
