"""The interferometer's phase lock, sans I/O: qnode's, around a plain piezo driver.

Labs stabilise a single-click interferometer in bursts between heralding periods (Humphreys
et al., Nature 558, 268 (2018), SI; Pompili et al., Science 372, 259 (2021), SI): the
attempts pause, reference light goes through the interferometer, the detectors' counts say
the phase, a fibre stretcher's piezo corrects it, the light goes off and the attempts go on.
The phase then moves on (the fibres' drift, fast noise no correction can follow) until the
next burst.

Here the burst is a generator: it yields the piezo voltage at which it wants the next count
of the reference light and is sent psi_plus's share of that count; it returns a
`BurstResult`. The I/O (midpoint daemon, midpoint calibration) sets the voltage, counts the
two detectors and sends the share; tests feed it a model interferometer, no sockets.

Phase from two counts: psi_plus's share is s(V) = 1/2 + (C/2) cos(phi + k V), C the fringe
contrast, k the stretcher's degrees per volt (both calibrated by the `phase_fringe`
routine). At V, 2 s - 1 = C cos(phi); a quarter fringe away (+-90 deg / k), 2 s - 1 = -+C
sin(phi): phi = atan2 of the two, whatever C is (C only checks that there is a fringe). The
target is phi = 0: the fringe's top on psi_plus, the phase the heralded states refer to. The
correction moves the piezo by -phi / k; near a rail of the lab's range it moves a whole fringe
(360 / k) further toward the middle instead. The burst repeats (count, correct) until the
phase found is within the tolerance, or gives up after `max_steps`.

A burst's first estimate says how far the phase went since the last one: beyond `jump_deg`
it did not drift there (a piezo driver that reset to 0 V, a knocked fibre), and the heralds
since the last good burst were made at an unknown phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass

QUARTER_DEG = 90.0
DEFAULT_INTERVAL_S = 0.1
"""Between bursts. The fibres drift as a random walk (the simulated lab's 15 deg in a second,
docs/simulation.md): over an interval T a herald sees on average D^2 T / 2 of drift variance,
3.4 deg rms at 0.1 s, against a fast phase noise of 8-15 deg that no burst removes: it adds
less than 10 % to the spread the heralds see. Longer intervals cost fidelity, shorter ones
time (each burst pauses the attempts for a few milliseconds of I/O). The midpoint parameter
`phase_lock_interval_s` replaces it."""
COUNT_S = 0.01
"""One count of the reference light: ~2000 photons at ~2e5 /s (1.3 deg of shot noise in the
phase), and 20 correlation times of the fast noise, which it averages to a third."""
TOLERANCE_DEG = 15.0
"""A burst ends once the phase it finds is this close to the target: about twice the
estimate's own spread (the fast noise averaged over a count, and shot noise)."""
JUMP_DEG = 45.0
"""A burst that first finds the phase further off than this saw a jump, not drift: drift over
an interval and the estimate's noise are under 10 deg (4 sigma of them is under 45)."""
MAX_STEPS = 6
MIN_PHOTONS = 50
"""A count with fewer photons has no phase in it: the reference light is not arriving."""
RAIL_MARGIN_FRINGE = 0.25
"""A corrected voltage closer to a rail than this share of a fringe re-centres by whole
fringes (the next correction must have room either way)."""


@dataclass(frozen=True)
class Fringe:
    """The reference light's fringe against the piezo voltage (the `phase_fringe` routine)."""

    deg_per_volt: float
    contrast: float

    @property
    def volts_per_fringe(self) -> float:
        return 360.0 / self.deg_per_volt


@dataclass(frozen=True)
class LockSettings:
    low_v: float
    high_v: float
    tolerance_deg: float = TOLERANCE_DEG
    jump_deg: float = JUMP_DEG
    max_steps: int = MAX_STEPS
    min_contrast: float = 0.3
    target_deg: float = 0.0
    """The phase to hold: 0 puts the fringe's top on psi_plus (the midpoint parameter
    `phase_setpoint_deg` moves it, e.g. for a known phase between reference and photons)."""


@dataclass(frozen=True)
class BurstResult:
    converged: bool
    voltage_v: float
    """Where the burst leaves the piezo (the lock point when converged)."""
    first_phase_deg: float
    """How far from the target the burst found the phase before correcting anything: how far
    it went since the last burst."""
    phase_deg: float
    """The last such distance found (within the tolerance when converged)."""
    steps: int
    reason: str = ""

    def far_off(self, jump_deg: float) -> bool:
        return abs(self.first_phase_deg) > jump_deg


def wrap_deg(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


def phase_from_shares(share_here: float, share_quarter: float, quarter_sign: float) -> float:
    """The phase (deg) at the voltage of `share_here`, from psi_plus's share there and a
    quarter fringe away (quarter_sign +1: +90 deg of piezo, -1: -90 deg)."""
    cos_part = 2.0 * share_here - 1.0
    sin_part = -quarter_sign * (2.0 * share_quarter - 1.0)
    return math.degrees(math.atan2(sin_part, cos_part))


def fringe_amplitude(share_here: float, share_quarter: float) -> float:
    """C from the two shares (C cos phi, C sin phi): a check that light and fringe are there."""
    return math.hypot(2.0 * share_here - 1.0, 2.0 * share_quarter - 1.0)


def quarter_voltage(volts: float, fringe: Fringe, settings: LockSettings) -> tuple[float, float]:
    """The probe a quarter fringe from `volts` inside the lab's range, and its sign."""
    quarter = QUARTER_DEG / fringe.deg_per_volt
    if volts + quarter <= settings.high_v:
        return volts + quarter, 1.0
    return volts - quarter, -1.0


def corrected_voltage(volts: float, phase_deg: float, fringe: Fringe, settings: LockSettings):
    """The voltage that brings `phase_deg` (at `volts`) to 0: the nearest, or whole fringes
    toward the middle of the range when that one is near a rail."""
    period = fringe.volts_per_fringe
    target = volts - phase_deg / fringe.deg_per_volt
    margin = RAIL_MARGIN_FRINGE * period
    low, high = settings.low_v, settings.high_v
    if low + margin <= target <= high - margin:
        return target
    middle = (low + high) / 2
    candidates = [target + n * period for n in range(-8, 9)]
    inside = [v for v in candidates if low <= v <= high]
    if not inside:
        raise ValueError(
            f"the lab's piezo range {low:g}..{high:g} V holds no point of the fringe's top "
            f"({period:.1f} V per fringe)"
        )
    return min(inside, key=lambda v: abs(v - middle))


def burst(
    fringe: Fringe, settings: LockSettings, start_v: float
) -> Generator[float, float, BurstResult]:
    """One stabilisation burst from `start_v`: yields each voltage to count at, is sent
    psi_plus's share of that count, returns the result."""
    if fringe.volts_per_fringe * 0.5 > settings.high_v - settings.low_v:
        raise ValueError(
            f"the lab's piezo range {settings.low_v:g}..{settings.high_v:g} V is under half a "
            f"fringe ({fringe.volts_per_fringe:.1f} V per fringe): no lock"
        )
    volts = min(max(start_v, settings.low_v), settings.high_v)
    first: float | None = None
    phase = float("nan")
    for step in range(1, settings.max_steps + 1):
        here = yield volts
        probe, sign = quarter_voltage(volts, fringe, settings)
        quarter = yield probe
        amplitude = fringe_amplitude(here, quarter)
        if not amplitude >= settings.min_contrast * fringe.contrast:  # (NaN: no light)
            return BurstResult(
                False,
                volts,
                first if first is not None else phase,
                phase,
                step,
                f"no reference fringe: amplitude {amplitude:.2f} against a calibrated "
                f"contrast {fringe.contrast:.2f}, or under {MIN_PHOTONS} photons a count "
                "(is the reference light reaching the detectors?)",
            )
        phase = wrap_deg(phase_from_shares(here, quarter, sign) - settings.target_deg)
        if first is None:
            first = phase
        volts = corrected_voltage(volts, phase, fringe, settings)
        if abs(phase) <= settings.tolerance_deg:
            # close: the last (small, unbiased) correction is applied without another look
            return BurstResult(True, volts, first, phase, step)
    assert first is not None
    return BurstResult(
        False,
        volts,
        first,
        phase,
        settings.max_steps,
        f"the phase lock did not converge in {settings.max_steps} steps (last phase "
        f"{phase:.0f} deg, tolerance {settings.tolerance_deg:g} deg)",
    )


def run_burst(
    fringe: Fringe, settings: LockSettings, start_v: float, share_at: Callable[[float], float]
) -> BurstResult:
    """Drive a burst with `share_at(volts)`: set the piezo, count, return psi_plus's share."""
    steps = burst(fringe, settings, start_v)
    volts = next(steps)
    while True:
        try:
            volts = steps.send(share_at(volts))
        except StopIteration as done:
            return done.value


def share_of(counts: dict[str, int], detectors: list[str]) -> float:
    """psi_plus's share of a count (the first two detectors: psi_plus, psi_minus); NaN
    below MIN_PHOTONS (no reference light to speak of)."""
    first, second = (counts[name] for name in detectors[:2])
    if first + second < MIN_PHOTONS:
        return float("nan")
    return first / (first + second)
