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

REFERENCE_POWER_W = 0.0005
"""The reference laser's power for the lock unless the midpoint parameter
`reference_power_w` says otherwise; the lab file's `power_w` limit caps either."""
SETTLE_S = 0.002
"""After a piezo move, before counting (the stretcher responds mechanically); the midpoint
parameter `piezo_settle_s` replaces it."""
EMISSION_SHARE = 0.9
"""The reference light counts once the laser emits this share of its set point."""
EMISSION_TIMEOUT_S = 1.0
EMISSION_POLL_S = 0.001
POWER_TOLERANCE = 0.01

InWorker = Callable[..., Awaitable[Any]]
LockSetup = Callable[[], tuple[Fringe, LockSettings, float]]
SAMPLES_PER_BURST = 5
"""Phase samples taken at random times between two bursts (the heralds' times)."""


class LockLight:
    """The lock's I/O around the reference laser, the piezo and the counters, as a lab needs
    it on real hardware: the laser in constant power at the lab-limited power, checked; the
    light counted only once the laser emits it; every count of light that arrived after the
    piezo moved and settled."""

    def __init__(
        self,
        tagger: TimeTagger,
        piezo: PhaseStabiliser,
        reference: Laser,
        channels: list[int],
        power_w: float = REFERENCE_POWER_W,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.tagger, self.piezo, self.reference = tagger, piezo, reference
        self.channels = channels
        self.power_w = power_w
        self.settle_s = settle_s

    def prepare(self) -> None:
        """Constant power at `power_w` (the driver refuses a power outside the lab's limit),
        read back: before the first `l1`, whatever the laser held before."""
        laser = self.reference
        laser.set_constant_power()
        laser.set_power(self.power_w)
        held = laser.power()
        if abs(held - self.power_w) > POWER_TOLERANCE * self.power_w + 1e-6:
            raise QnodeError(
                f"the reference laser holds {held * 1e3:.3f} mW after being set to "
                f"{self.power_w * 1e3:.3f} mW"
            )

    def on(self) -> None:
        """Emission on, and back only once the laser emits EMISSION_SHARE of its set point
        (a laser ramps up after it is turned on); an error after EMISSION_TIMEOUT_S."""
        laser = self.reference
        laser.set_enabled(True)
        deadline = time.monotonic() + EMISSION_TIMEOUT_S
        while True:
            emitted = laser.measured_power()
            if emitted >= EMISSION_SHARE * self.power_w:
                return
            if time.monotonic() > deadline:
                raise QnodeError(
                    f"the reference laser emits {emitted * 1e3:.3f} mW of its "
                    f"{self.power_w * 1e3:.3f} mW {EMISSION_TIMEOUT_S:g} s after it was "
                    "turned on (interlock, fault, or a laser still warming up?)"
                )
            time.sleep(EMISSION_POLL_S)

    def off(self) -> None:
        self.reference.set_enabled(False)

    def counts_at(self, volts: float, seconds: float) -> dict[int, int]:
        """The piezo at `volts`, settled, then counts of light that all came after."""
        self.piezo.set_voltage(volts)
        time.sleep(self.settle_s)
        return self.tagger.fresh_counts(self.channels, seconds)


def probe_voltage(volts: float, offset_v: float, low: float, high: float) -> float:
    """`offset_v` from the lock point inside the lab's range: the far side of the lock point
    when this side does not fit (180 deg is the same phase either way, and +-90 deg spreads
    the same); an error when neither does, never a silently clamped probe."""
    for probe in (volts + offset_v, volts - offset_v):
        if low <= probe <= high:
            return probe
    raise QnodeError(
        f"a probe {offset_v:+.2f} V from the lock point {volts:.2f} V fits neither way in the "
        f"lab's piezo range {low:g}..{high:g} V"
    )


class MidpointCalibration:
    def __init__(
        self,
        node: str,
        tagger: TimeTagger,
        piezo: PhaseStabiliser | None,
        reference: Laser | None,
        detectors: dict[str, int],
        lock_setup: LockSetup,
        lock_light: Callable[[], LockLight],
    ) -> None:
        self.node = node
        self.tagger = tagger
        self.piezo = piezo
        self.reference = reference
        self.detectors = detectors
        self.lock_setup = lock_setup
        self.lock_light = lock_light
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
        """The detectors' counts over one whole counter period of `seconds` that began after
        this call (the driver waits for it), read together, one period for all: the phase
        noise's short counts."""
        self.tagger.set_integration(seconds)
        counts = self.tagger.counts(list(self.detectors.values()))
        return {name: counts[ch] for name, ch in self.detectors.items()}

    def _named(self, counts: dict[int, int]) -> dict[str, int]:
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
        light = self.lock_light()
        try:
            light.prepare()
            light.on()
            for volts in voltages:
                counts.append(self._named(light.counts_at(float(volts), seconds)))
        finally:
            light.off()
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
        piezo = self.piezo
        light = self.lock_light()
        offset_v = offset_deg / fringe.deg_per_volt
        volts = (settings.low_v + settings.high_v) / 2
        counts: list[dict[str, int]] = []

        def share_at(v: float) -> float:
            return share_of(self._named(light.counts_at(v, COUNT_S)), names)

        light.prepare()
        try:
            while len(counts) < samples:
                light.on()
                result = run_burst(fringe, settings, volts, share_at)
                light.off()
                if not result.converged:
                    raise QnodeError(f"the phase lock failed: {result.reason}")
                volts = result.voltage_v
                piezo.set_voltage(volts)
                started = time.monotonic()
                probe = probe_voltage(volts, offset_v, settings.low_v, settings.high_v)
                times = np.sort(self.rng.uniform(0.0, interval, SAMPLES_PER_BURST))
                for at in times[: samples - len(counts)]:
                    time.sleep(max(0.0, started + at - time.monotonic()))
                    piezo.set_voltage(probe)
                    time.sleep(light.settle_s)
                    light.on()
                    counts.append(self._count(seconds))
                    light.off()
                    piezo.set_voltage(volts)
                time.sleep(max(0.0, started + interval - time.monotonic()))
        finally:
            light.off()
        return counts
