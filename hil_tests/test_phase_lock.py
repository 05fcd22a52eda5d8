"""The interferometer's phase lock: qnode's, around a plain piezo driver.

First the lock alone (controller/midpoint/phase_lock.py, sans I/O): fed the shares a model
fringe gives, no sockets. Then the whole midpoint against the simulated lab: a single-click
session holds the phase (the true fidelity from the simulator's ground truth), a piezo driver
that resets mid-session makes the next burst discard the heralds since the last good one,
and reference light left on ruins the heralds.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from calibration.graph import ROUTINES, run_routine
from calibration.routine import UPDATED
from controller.data.params import ParameterStore
from controller.harness.truth_calibration import calibrate_nodes_from_truth
from controller.labconfig import DEFAULT_LAB, load_lab, midpoint_name
from controller.midpoint import calibration as lock_io
from controller.midpoint.calibration import REFERENCE_POWER_W, LockLight, probe_voltage
from controller.midpoint.daemon import piezo_reset
from controller.midpoint.phase_lock import (
    Fringe,
    LockSettings,
    corrected_voltage,
    phase_from_shares,
    run_burst,
    share_of,
    wrap_deg,
)
from controller.operator.calibration_access import ClientNodeAccess, DaemonMidpointAccess
from controller.operator.client import NodeRequestError
from hil_tests.test_link_physics import delivered_heralds
from qnode.errors import LabConfigError, LimitError, QnodeError
from sequences.operations import (
    CRCheck,
    EntanglementAttempt,
    Readout,
    Sequence,
    SpinInit,
    Sweep,
    WaitSync,
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


def test_a_piezo_reset_is_told_from_a_measured_read_back():
    """A unit reads its output back measured, a few tenths of a volt off (the recorded
    MDT693B: 0.21-0.24 V): no reset; back at 0 V from a lock point volts away: a reset."""
    assert not piezo_reset(37.5 + 0.24, 37.5, FRINGE)
    assert not piezo_reset(37.5 - 0.4, 37.5, FRINGE)
    assert piezo_reset(0.22, 37.5, FRINGE)
    assert piezo_reset(0.22, 2.0, FRINGE)  # a lock point 2 V from 0 V still tells
    # a stretcher of 2 deg/V: 10 deg of phase is 5 V, the tolerance grows with it
    assert not piezo_reset(33.0, 37.5, Fringe(2.0, 0.95))


@pytest.mark.parametrize(
    ("volts", "offset", "expected"), [(40.0, 12.0, 52.0), (70.0, 12.0, 58.0), (5.0, -12.0, 17.0)]
)
def test_a_probe_that_does_not_fit_goes_the_other_way_never_clamped(volts, offset, expected):
    assert probe_voltage(volts, offset, 0.0, 75.0) == pytest.approx(expected)


def test_a_probe_that_fits_neither_way_is_an_error():
    with pytest.raises(QnodeError, match="fits neither way"):
        probe_voltage(10.0, 30.0, 0.0, 35.0)


@pytest.mark.parametrize(
    "counts", [{"psi_plus": 0, "psi_minus": 0}, {"psi_plus": 300, "psi_minus": 300}]
)
def test_no_reference_light_is_no_lock_and_says_why(counts):
    """Dark (a few dark counts: no share at all) or light without a fringe (no contrast)."""
    share = share_of(counts, ["psi_plus", "psi_minus"])
    result = run_burst(FRINGE, SETTINGS, 37.5, lambda volts: share)
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


# the whole midpoint against the simulated lab ------------------------------------------------
def session_truth(stations, sim, pairs: int, **kw):
    a, b = stations["A"].client, stations["B"].client
    before = len(sim.heralds())
    started = a.entangle(pairs, "single_click", deadline_s=200, delivery="verify", **kw)
    summary = a.wait_session(started["session"], timeout_s=250)
    data = {"A": a.session_data(started["session"]), "B": b.session_data(started["session"])}
    return summary, data, sim.heralds()[before:]


@pytest.mark.timeout(300)
def test_a_single_click_session_holds_the_phase(stations, sim):
    m = sim.truth("M")
    summary, data, truth = session_truth(stations, sim, 300, fidelity_min=0.8)
    assert summary["state"] == "completed", summary
    delivered = delivered_heralds(data, truth)
    assert len(delivered) == 300
    phases = np.array([h["phase_deg"] for h in delivered])
    # held at the fringe's top: the fast noise (the truth's spread), plus the drift since a
    # burst and a burst's own error, and nothing near a quarter turn. The drift and a burst's
    # error are shared by every herald until the next burst (15 deg per root second of wall
    # time: ~5 deg over 0.1 s, more on a loaded machine), so the mean's spread is that over
    # the root of the bursts, not the fast noise over root 300: 4.7 deg seen once in CI; a
    # lost lock would put it tens of degrees off
    assert abs(np.mean(phases)) < 10.0
    assert m["phase_noise_deg"] * 0.8 < np.std(phases) < m["phase_noise_deg"] * 1.4
    assert np.max(np.abs(phases)) < 70.0
    assert not any(h["reference_light"] for h in truth)
    assert np.mean([h["fidelity"] for h in delivered]) >= 0.8  # the true states, as asked
    status = stations["M"].client.status()
    assert status["relocks"] == 0
    assert not any("interferometer" in r for r in summary["stats"]["reasons"])


def test_reference_light_left_on_ruins_the_heralds(start_daemon, data_dir, sim, lab, resources):
    calibrate_nodes_from_truth(data_dir, sim, alpha=0.1)
    for name in ("laser_green", "laser_red"):  # left in constant current by another program
        with lab.make_driver("A", name, resources) as laser:
            laser._set("ci")
    daemons = {node: start_daemon(node) for node in ("A", "B")}
    herald = lab.make_driver("M", "herald", resources)  # the herald logic: sync output, windows
    reference = lab.make_driver("M", "reference_laser", resources)
    m = sim.truth("M")
    windows = [(m["delay_ns"][n], m["lifetime_ns"][n] * math.log(10)) for n in ("A", "B")]
    sequence = Sequence(
        "entangle_zz",
        (CRCheck(), WaitSync(), EntanglementAttempt(max_attempts=10**6), SpinInit(0), Readout()),
        20,
    )
    before = len(sim.heralds())
    with herald, reference:
        herald.set_herald_windows(windows)
        reference.set_constant_power()
        reference.set_power(REFERENCE_POWER_W)
        reference.set_enabled(True)  # forgotten after a stabilisation
        time.sleep(0.05)  # emitting fully
        herald.set_sync_auto(True)
        try:
            runs = {n: d.client.start(sequence, Sweep()) for n, d in daemons.items()}
            for n, r in runs.items():
                assert daemons[n].client.wait(r["run_id"], timeout_s=120)["status"] == "completed"
        finally:
            herald.set_sync_auto(False)
            reference.safe_state()
    heralds = sim.heralds()[before:]
    for name in ("laser_green", "laser_red"):  # the node put them back in constant power
        assert sim.state(f"A.{name}")["run_mode"] == 1
    assert len(heralds) == 20 and all(h["reference_light"] for h in heralds)
    # its photons click in the windows far more often than a node's photon does: the
    # heralds come fast and carry next to no entanglement
    eta = np.mean(list(m["eta"].values()))
    assert np.mean([h["p_success"] for h in heralds]) > 10 * 2 * 0.1 * eta
    assert np.mean([h["fidelity"] for h in heralds]) < 0.6


@pytest.mark.timeout(300)
def test_fringe_and_phase_noise_calibrate_against_the_truth(start_daemon, data_dir, sim, lab):
    start_daemon("M")
    a = start_daemon("A")
    m = sim.truth("M")
    with ParameterStore(data_dir / "params.sqlite") as store:
        midpoint = DaemonMidpointAccess(lab, store, "test")
        access = ClientNodeAccess.for_lab(lab, "A", a.client, store, midpoint)
        fringe = run_routine(access, ROUTINES["phase_fringe"], True, None)
        assert fringe.verdict == UPDATED, fringe.reason
        values = store.values("M")
        assert values["piezo_deg_per_volt"] == pytest.approx(m["piezo_deg_per_volt"], rel=0.03)
        # a count of 10 ms averages the fast noise: the contrast the lock sees, a little
        # under the reference light's visibility
        assert 0.8 * m["reference_visibility"] < values["fringe_contrast"]
        assert values["fringe_contrast"] <= m["reference_visibility"] + 0.02
        noise = run_routine(access, ROUTINES["phase_noise"], True, None)
        assert noise.verdict == UPDATED, noise.reason
        # what the heralds see between bursts: the fast noise, a burst's error, the drift
        measured = store.values("M")["phase_noise_deg"]
        assert m["phase_noise_deg"] * 0.85 < measured < m["phase_noise_deg"] * 1.4
        in_spec, why = ROUTINES["phase_fringe"].quick_check(access)
        assert in_spec, why
        midpoint.close()


def test_a_lab_with_a_piezo_but_no_reference_laser_is_refused(tmp_path):
    text = DEFAULT_LAB.read_text()
    start = text.index("[nodes.M.instruments.reference_laser]")
    end = text.index("\n[", start + 1)
    path = tmp_path / "lab.toml"
    path.write_text(text[:start] + text[end + 1 :])
    with pytest.raises(LabConfigError, match="needs the reference laser"):
        load_lab(path)


@pytest.mark.timeout(300)
def test_a_lock_that_cannot_find_the_fringe_stops_with_the_reason_and_safe_state(
    stations, sim, data_dir, lab
):
    """A fringe calibrated far above what the light gives (as if the reference light were
    mostly lost): no burst accepts it, the session does not start, and the midpoint leaves the
    reference light off and the piezo at 0 V."""
    with ParameterStore(data_dir / "params.sqlite") as store:
        store.set_manual("M", "fringe_contrast", 5.0, "test: a fringe no light can show")
    a = stations["A"].client
    with pytest.raises(NodeRequestError, match="could not be stabilised: no reference fringe"):
        summary = a.entangle(10, "single_click", deadline_s=30)
        a.wait_session(summary["session"], timeout_s=60)
    midpoint = midpoint_name(lab)
    assert sim.state(f"{midpoint}.reference_laser")["enabled"] is False
    assert sim.state(f"{midpoint}.piezo")["voltage_v"] == 0.0
    status = stations["M"].client.status()
    assert "could not be stabilised" in status["fault_reason"]


# the lock's I/O around the reference laser ----------------------------------------------------
def test_the_reference_is_set_to_constant_power_at_its_power_and_checked(lab, resources, sim):
    """Whatever the laser held (here constant current, as another program may leave it),
    the lock's light runs in constant power at the midpoint's power, read back."""
    reference = lab.make_driver(midpoint_name(lab), "reference_laser", resources)
    with reference:
        reference._set("ci")
        reference._set("slc 50")
        light = LockLight(None, None, reference, [1, 2], power_w=0.0004)  # type: ignore[arg-type]
        light.prepare()
        state = sim.state(reference.name)
        assert state["run_mode"] == 1 and state["power_w"] == pytest.approx(0.0004)
        with pytest.raises(LimitError, match="power_w"):  # above the lab file's limit
            LockLight(None, None, reference, [1, 2], power_w=0.005).prepare()  # type: ignore[arg-type]


def test_the_light_is_counted_only_once_the_laser_emits_it(lab, resources, sim):
    """A 04-01 (a DPSS laser, turning on over a few hundred ms in the simulated lab): on()
    comes back only once it emits 90 % of its power."""
    laser = lab.make_driver("A", "laser_red", resources)
    with laser:
        light = LockLight(None, None, laser, [1, 2], power_w=0.0005)  # type: ignore[arg-type]
        light.prepare()
        started = time.monotonic()
        try:
            light.on()
            elapsed = time.monotonic() - started
            assert sim.state(laser.name)["emitted_w"] >= 0.9 * 0.0005
            assert elapsed > 0.15  # 2.3 time constants of 0.1 s
        finally:
            light.off()


class DarkLaser:
    """A laser that answers but never emits (an interlock, a fault)."""

    def set_enabled(self, on: bool) -> None:
        self.on = on

    def measured_power(self) -> float:
        return 0.0


def test_a_laser_that_never_emits_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(lock_io, "EMISSION_TIMEOUT_S", 0.05)
    light = LockLight(None, None, DarkLaser(), [1, 2], power_w=0.0005)  # type: ignore[arg-type]
    with pytest.raises(QnodeError, match=r"emits 0.000 mW of its 0.500 mW 0.05 s after"):
        light.on()


class RecordingPiezo:
    def __init__(self, log: list) -> None:
        self.log = log

    def set_voltage(self, volts: float) -> None:
        self.log.append(("piezo", time.monotonic(), volts))


class RecordingTagger:
    def __init__(self, log: list) -> None:
        self.log = log

    def fresh_counts(self, channels: list[int], seconds: float) -> dict[int, int]:
        self.log.append(("count", time.monotonic(), seconds))
        return dict.fromkeys(channels, 100)


def test_a_count_starts_only_after_the_piezo_settled():
    """The stretcher follows the high voltage mechanically: the count's light is taken only
    `settle_s` after the move (fresh_counts: light that all came after the call)."""
    log: list = []
    light = LockLight(
        RecordingTagger(log),  # type: ignore[arg-type]
        RecordingPiezo(log),  # type: ignore[arg-type]
        DarkLaser(),  # type: ignore[arg-type]
        [1, 2],
        settle_s=0.02,
    )
    assert light.counts_at(12.5, 0.01) == {1: 100, 2: 100}
    (what_first, moved, volts), (what_then, counted, seconds) = log
    assert (what_first, volts, what_then, seconds) == ("piezo", 12.5, "count", 0.01)
    assert counted - moved >= 0.02
