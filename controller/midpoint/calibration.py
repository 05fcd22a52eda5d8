"""The midpoint routines' requests (detection window, dark counts, phase set point) served by
the one owner of the midpoint's instruments: never during a session, one armed acquisition
at a time (a second caller is told to wait)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from drivers.protocols import PhaseStabiliser, TimeTagger
from qnode.errors import QnodeError

InWorker = Callable[..., Awaitable[Any]]


class MidpointCalibration:
    def __init__(
        self,
        node: str,
        tagger: TimeTagger,
        stabiliser: PhaseStabiliser | None,
        detectors: dict[str, int],
    ) -> None:
        self.node = node
        self.tagger = tagger
        self.stabiliser = stabiliser
        self.detectors = detectors
        self.holder: str | None = None
        """Who armed the tagger's tag stream (None: nobody)."""

    async def handle(self, msg: dict, sender: str | None, in_worker: InWorker) -> dict:
        kind = msg["type"]
        if kind == "tags_start":
            if self.holder is not None:
                raise QnodeError(f"busy: the tagger is armed for {self.holder}")
            self.holder = str(msg.get("holder") or sender)
            await in_worker(self.tagger.start_tags)
            return {}
        if self.holder is not None and kind != "tags_stop":
            raise QnodeError(f"busy: the tagger is armed for {self.holder}")
        if kind == "tags_stop":
            if self.holder is None:
                raise QnodeError("the tagger is not armed")
            try:
                tags = await in_worker(self.tagger.stop_tags)
            finally:
                self.holder = None
            return {"tags": tags}
        if kind == "dark_tags":
            return {"tags": await in_worker(self.tagger.acquire_tags, float(msg["seconds"]))}
        if self.stabiliser is None:
            raise QnodeError(f"midpoint {self.node} has no phase stabiliser")
        if kind == "reference_counts":
            counts = await in_worker(
                self._reference_counts,
                self.stabiliser,
                float(msg["setpoint_deg"]),
                float(msg["seconds"]),
            )
            return {"counts": counts}
        await in_worker(self.stabiliser.set_reference, False)  # reference_off
        return {}

    def _reference_counts(
        self, stabiliser: PhaseStabiliser, setpoint_deg: float, seconds: float
    ) -> dict[str, int]:
        stabiliser.set_reference(True)
        stabiliser.set_setpoint(setpoint_deg)
        stabiliser.set_lock(True)
        self.tagger.set_integration(seconds)
        return {name: self.tagger.count(ch) for name, ch in self.detectors.items()}
