"""The midpoint routines' requests (detection window, dark counts, the interferometer's fringe
and phase noise) served by the one owner of the midpoint's instruments: never during a
session, one armed acquisition at a time (a second caller is told to wait)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from controller.midpoint.phase_lock import (
    COUNT_S,
    Fringe,
    LockSettings,
    run_burst,
    share_of,
)
from drivers.protocols import Laser, PhaseStabiliser, TimeTagger
from qnode.errors import QnodeError

InWorker = Callable[..., Awaitable[Any]]
LockSetup = Callable[[], tuple[Fringe, LockSettings, float]]
SAMPLES_PER_BURST = 5
"""Phase samples taken at random times between two bursts (the heralds' times)."""


class MidpointCalibration:
    def __init__(
        self,
        node: str,
        tagger: TimeTagger,
        piezo: PhaseStabiliser | None,
        reference: Laser | None,
        detectors: dict[str, int],
        lock_setup: LockSetup,
    ) -> None:
        self.node = node
        self.tagger = tagger
        self.piezo = piezo
        self.reference = reference
        self.detectors = detectors
        self.lock_setup = lock_setup
        self.holder: str | None = None
        """Who armed the tagger's tag stream (None: nobody)."""
        self.rng = np.random.default_rng()

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
        if self.piezo is None or self.reference is None:
            raise QnodeError(
                f"midpoint {self.node} has no piezo driver and reference laser for the "
                "interferometer"
            )
        if kind == "fringe_sweep":
            return await in_worker(self._fringe_sweep, int(msg["points"]), float(msg["seconds"]))
        if kind == "lock_samples":
            counts = await in_worker(
                self._lock_samples,
                float(msg["offset_deg"]),
                float(msg["seconds"]),
                int(msg["samples"]),
            )
            return {"counts": counts}
        raise QnodeError(f"unknown calibration request {kind!r}")

    def _count(self, seconds: float) -> dict[str, int]:
        """The detectors' counts over one period of `seconds` that starts now: the counters
        restarted (a continuously counting unit would otherwise report a period from before
        the piezo moved) and read together, one period for all."""
        self.tagger.set_integration(seconds)
        counts = self.tagger.counts(list(self.detectors.values()))
        return {name: counts[ch] for name, ch in self.detectors.items()}

    def _fringe_sweep(self, points: int, seconds: float) -> dict:
        """The reference light's counts at `points` voltages across the lab's piezo range,
        up and back down (2 x points counts: the fibres' drift during the sweep tilts the two
        directions' phase slopes oppositely)."""
        assert self.piezo is not None and self.reference is not None
        if not 3 <= points <= 1000:
            raise QnodeError(f"a fringe sweep takes 3..1000 points, not {points}")
        low, high = self.piezo.limits["voltage_v"]
        up = np.linspace(low, high, points)
        voltages = np.concatenate([up, up[::-1]])
        counts = []
        self.reference.set_enabled(True)
        try:
            for volts in voltages:
                self.piezo.set_voltage(float(volts))
                counts.append(self._count(seconds))
        finally:
            self.reference.set_enabled(False)
            self.piezo.set_voltage(low)
        return {"voltages": voltages.tolist(), "counts": counts}

    def _lock_samples(self, offset_deg: float, seconds: float, samples: int) -> list:
        """The phase at heralding times under the session's schedule: a burst locks, then
        counts of `seconds` at random times before the next burst, each `offset_deg` of piezo
        from the lock point (0: the fringe's top, 90: quadrature); the light is on only for
        the burst and the counts (in a session the attempts run in between)."""
        assert self.piezo is not None and self.reference is not None
        if not 1 <= samples <= 10_000:
            raise QnodeError(f"1..10000 samples, not {samples}")
        fringe, settings, interval = self.lock_setup()
        names = list(self.detectors)
        piezo, reference = self.piezo, self.reference
        offset_v = offset_deg / fringe.deg_per_volt
        volts = (settings.low_v + settings.high_v) / 2
        counts: list[dict[str, int]] = []

        def share_at(v: float) -> float:
            piezo.set_voltage(v)
            return share_of(self._count(COUNT_S), names)

        try:
            while len(counts) < samples:
                reference.set_enabled(True)
                result = run_burst(fringe, settings, volts, share_at)
                reference.set_enabled(False)
                if not result.converged:
                    raise QnodeError(f"the phase lock failed: {result.reason}")
                volts = result.voltage_v
                piezo.set_voltage(volts)
                started = time.monotonic()
                probe = min(max(volts + offset_v, settings.low_v), settings.high_v)
                times = np.sort(self.rng.uniform(0.0, interval, SAMPLES_PER_BURST))
                for at in times[: samples - len(counts)]:
                    time.sleep(max(0.0, started + at - time.monotonic()))
                    piezo.set_voltage(probe)
                    reference.set_enabled(True)
                    counts.append(self._count(seconds))
                    reference.set_enabled(False)
                    piezo.set_voltage(volts)
                time.sleep(max(0.0, started + interval - time.monotonic()))
        finally:
            reference.set_enabled(False)
        return counts
