"""The interferometer's phase lock: qnode's, around a plain piezo driver.

First the lock alone (controller/midpoint/phase_lock.py, sans I/O): fed the shares a model
fringe gives, no sockets. Then the whole midpoint against the simulated lab: a single-click
session holds the phase (the true fidelity from the simulator's ground truth), a piezo driver
that resets mid-session makes the next burst discard the heralds since the last good one,
and reference light left on ruins the heralds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.midpoint.phase_lock import (
    Fringe,
    LockSettings,
    corrected_voltage,
    phase_from_shares,
    run_burst,
    wrap_deg,
)

FRINGE = Fringe(deg_per_volt=14.0, contrast=0.95)
SETTINGS = LockSettings(low_v=0.0, high_v=75.0)


class ModelInterferometer:
    """psi_plus's share at a piezo voltage: 1/2 + C/2 cos(offset + k V), with binomial shot
    noise of `photons` per count and a phase noise of `noise_deg` per count."""

    def __init__(self, offset_deg, k=14.0, contrast=0.95, photons=2000, noise_deg=0.0, seed=1):
        self.offset_deg = offset_deg
        self.k = k
        self.contrast = contrast
        self.photons = photons
        self.noise_deg = noise_deg
        self.rng = np.random.default_rng(seed)
        self.counts = 0

    def phase(self, volts: float) -> float:
        return wrap_deg(self.offset_deg + self.k * volts)

    def share(self, volts: float) -> float:
        self.counts += 1
        phase = math.radians(self.phase(volts) + self.rng.normal(0.0, self.noise_deg))
        p = 0.5 + self.contrast / 2 * math.cos(phase)
        if not self.photons:
            return p
        return self.rng.binomial(self.photons, p) / self.photons


@pytest.mark.parametrize("offset", [-170.0, -90.0, -20.0, 0.0, 45.0, 120.0, 179.0])
def test_phase_from_two_counts_a_quarter_fringe_apart(offset):
    model = ModelInterferometer(offset, photons=0)
    here, quarter = model.share(30.0), model.share(30.0 + 90.0 / 14.0)
    true = model.phase(30.0)
    assert abs(wrap_deg(phase_from_shares(here, quarter, 1.0) - true)) < 1e-6
    below = model.share(30.0 - 90.0 / 14.0)
    assert abs(wrap_deg(phase_from_shares(here, below, -1.0) - true)) < 1e-6


@pytest.mark.parametrize("offset", [-175.0, -60.0, 10.0, 100.0, 170.0])
def test_a_burst_brings_the_fringe_top_onto_psi_plus(offset):
    model = ModelInterferometer(offset, noise_deg=4.0)
    result = run_burst(FRINGE, SETTINGS, 37.5, model.share)
    assert result.converged, result
    assert abs(model.phase(result.voltage_v)) < 6.0  # shot noise and the noise per count
    assert result.first_phase_deg == pytest.approx(model.phase(37.5), abs=8.0)
    assert SETTINGS.low_v <= result.voltage_v <= SETTINGS.high_v


def test_a_miscalibrated_fringe_still_converges_in_more_steps():
    model = ModelInterferometer(150.0, k=16.0)  # 14 deg/V calibrated, 16 true
    result = run_burst(FRINGE, SETTINGS, 37.5, model.share)
    assert result.converged and result.steps >= 2
    assert abs(model.phase(result.voltage_v)) < 15.0


def test_near_a_rail_the_correction_recentres_by_whole_fringes():
    period = FRINGE.volts_per_fringe
    volts = corrected_voltage(2.0, 60.0, FRINGE, SETTINGS)  # target 2 - 60/14 < 0 V
    assert SETTINGS.low_v + period / 4 <= volts <= SETTINGS.high_v - period / 4
    assert ((volts - (2.0 - 60.0 / 14.0)) / period) == pytest.approx(
        round((volts - (2.0 - 60.0 / 14.0)) / period), abs=1e-9
    )
    # well inside the range the nearest voltage is kept
    assert corrected_voltage(40.0, 28.0, FRINGE, SETTINGS) == pytest.approx(38.0)


def test_a_burst_starting_at_the_top_rail_probes_below_it():
    model = ModelInterferometer(-30.0)
    asked = []

    def share(volts):
        asked.append(volts)
        return model.share(volts)

    result = run_burst(FRINGE, SETTINGS, 75.0, share)
    assert result.converged
    assert all(SETTINGS.low_v <= v <= SETTINGS.high_v for v in asked)


def test_no_reference_light_is_no_lock_and_says_why():
    result = run_burst(FRINGE, SETTINGS, 37.5, lambda volts: 0.5)
    assert not result.converged
    assert "no reference fringe" in result.reason


def test_a_phase_that_will_not_settle_gives_up_with_the_reason():
    model = ModelInterferometer(0.0, noise_deg=120.0)  # a phase all over the place
    result = run_burst(FRINGE, LockSettings(0.0, 75.0, max_steps=3), 37.5, model.share)
    assert not result.converged
    assert "did not converge in 3 steps" in result.reason


def test_the_first_estimate_tells_drift_from_a_jump():
    settings = SETTINGS
    drifted = run_burst(FRINGE, settings, 37.5, ModelInterferometer(-14.0 * 37.5 + 8.0).share)
    assert not drifted.far_off(settings.jump_deg)
    jumped = run_burst(FRINGE, settings, 37.5, ModelInterferometer(-14.0 * 37.5 + 120.0).share)
    assert jumped.far_off(settings.jump_deg) and jumped.converged


def test_a_range_under_half_a_fringe_is_refused():
    with pytest.raises(ValueError, match="under half a fringe"):
        run_burst(FRINGE, LockSettings(0.0, 10.0), 5.0, lambda volts: 0.5)
