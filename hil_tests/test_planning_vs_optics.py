"""The controller's planning model (calibration.planning, from the calibrated values) against
the simulated lab's own optics (sim_backends.optics, from its truth): two implementations of
the heralding physics written independently, which meet here. Double excitation and the
detection window's share of the wavepacket included (pure code, no lab)."""

import math

import numpy as np
import pytest

from calibration.planning import (
    OPTICAL_PULSE_NS,
    barrett_kok,
    link_from_calibration,
    single_click,
    two_photon,
)
from sim_backends import optics
from sim_backends.optics import Detectors, NodeOptics

ETA, LIFETIME, DELAY, V, DARK_HZ = 3.5e-4, 12.0, 60.0, 0.9, 20.0


def calibrated(
    onset: float, start: float, length: float, p_double: float, eta=ETA, lifetime=LIFETIME
) -> dict:
    """A node's values as the routines store them (the whole wavepacket's efficiency)."""
    return {
        "detection_probability": eta,
        "detection_window_start_ns": start,
        "photon_onset_ns": onset,
        "detection_window_ns": length,
        "photon_lifetime_ns": lifetime,
        "double_excitation": p_double,
        "init_fidelity": 1.0,
    }


def pure(bright: float) -> np.ndarray:
    psi = np.array([math.sqrt(bright), math.sqrt(1 - bright)])
    return np.outer(psi, psi).astype(complex)


@pytest.mark.parametrize("p_double", [0.0, 0.04])
@pytest.mark.parametrize("window", [1.0, 3.0])  # x the routine's lifetime x ln 10
def test_planning_model_meets_the_simulators_optics(p_double, window):
    length = window * LIFETIME * math.log(10)
    nodes = [NodeOptics(ETA, LIFETIME, DELAY, p_double, 0.0) for _ in range(2)]
    detectors = Detectors((DARK_HZ, DARK_HZ), 0.05)
    windows = [(DELAY, length)] * 2
    node = calibrated(DELAY, DELAY, length, p_double)
    dark = {"dark_count_hz_psi_plus": DARK_HZ, "dark_count_hz_psi_minus": DARK_HZ}
    values = {"A": node, "B": node, "M": {**dark, "visibility": V, "phase_noise_deg": 0.0}}
    link, _ = link_from_calibration(values, ["A", "B"], "M")
    sim = optics.single_click(pure(0.1), pure(0.1), *nodes, detectors, V, 0.0, windows)
    plan = single_click(0.1, link)
    assert plan.fidelity == pytest.approx(
        optics.bell_fidelity(sim.states["psi_plus"], "psi_plus"), abs=2e-3
    )
    assert plan.p_success == pytest.approx(sim.p_success, rel=0.01)
    sim = optics.barrett_kok(pure(0.5), pure(0.5), *nodes, detectors, V, 0.0, windows)
    plan = barrett_kok(link)
    assert plan.fidelity == pytest.approx(
        optics.bell_fidelity(sim.states["psi_plus"], "psi_plus"), abs=2e-3
    )
    assert plan.p_success == pytest.approx(sim.p_success, rel=0.02)


@pytest.mark.parametrize("p_double", [0.0, 0.04])
def test_a_window_after_the_optical_pulse_as_both_see_it(p_double):
    """The routine opens the window when the pulse is over: early photons stay out."""
    length = LIFETIME * math.log(10)
    start = DELAY + OPTICAL_PULSE_NS
    nodes = [NodeOptics(ETA, LIFETIME, DELAY, p_double, 0.0) for _ in range(2)]
    node = calibrated(DELAY, start, length, p_double)
    dark = {"dark_count_hz_psi_plus": DARK_HZ, "dark_count_hz_psi_minus": DARK_HZ}
    values = {"A": node, "B": node, "M": {**dark, "visibility": V, "phase_noise_deg": 0.0}}
    link, _ = link_from_calibration(values, ["A", "B"], "M")
    detectors = Detectors((DARK_HZ, DARK_HZ), 0.05)
    sim = optics.single_click(pure(0.1), pure(0.1), *nodes, detectors, V, 0.0, [(start, length)])
    plan = single_click(0.1, link)
    assert plan.p_success == pytest.approx(sim.p_success, rel=0.01)
    assert plan.fidelity == pytest.approx(
        optics.bell_fidelity(sim.states["psi_plus"], "psi_plus"), abs=2e-3
    )


@pytest.mark.parametrize("p_double", [0.0, 0.01])
@pytest.mark.parametrize("dark_hz", [20.0, 2000.0])
def test_two_photon_planning_meets_the_simulators_optics(p_double, dark_hz):
    """The ions' photonic qubits, four detectors: the planner's p and F against the optics."""
    eta, lifetime, delay = 0.02, 8.0, 50.0
    length = lifetime * math.log(10)
    start = delay + OPTICAL_PULSE_NS
    nodes = [NodeOptics(eta, lifetime, delay, p_double, 0.0) for _ in range(2)]
    node = calibrated(delay, start, length, p_double, eta, lifetime)
    names = ("out1_h", "out1_v", "out2_h", "out2_v")
    dark = {f"dark_count_hz_{n}": dark_hz for n in names}
    values = {"A": node, "B": node, "M": {**dark, "visibility": V}}
    link, _ = link_from_calibration(values, ["A", "B"], "M")
    detectors = Detectors((dark_hz,) * 4, 0.05)
    ground = np.diag([1.0, 0.0]).astype(complex)
    sim = optics.two_photon(ground, ground, *nodes, detectors, V, 0.0, [(start, length)])
    plan = two_photon(link)
    assert plan.p_success == pytest.approx(sim.p_success, rel=0.02)
    simulated = sum(w * optics.bell_fidelity(sim.states[k], k) for k, w in sim.weights.items())
    assert plan.fidelity == pytest.approx(simulated, abs=5e-3)


def test_nodes_with_different_delays_count_in_each_others_windows():
    """The herald logic counts a click in any node's window: A's late photons and B's early
    ones land in the other's window; both implementations see the union."""
    length = LIFETIME * math.log(10)
    delays = {"A": 50.0, "B": 62.0}
    nodes = [NodeOptics(ETA, LIFETIME, delays[n], 0.04, 0.0) for n in ("A", "B")]
    windows = [(delays[n] + OPTICAL_PULSE_NS, length) for n in ("A", "B")]
    values = {
        n: calibrated(delays[n], delays[n] + OPTICAL_PULSE_NS, length, 0.04) for n in ("A", "B")
    }
    dark = {"dark_count_hz_psi_plus": DARK_HZ, "dark_count_hz_psi_minus": DARK_HZ}
    values["M"] = {**dark, "visibility": V, "phase_noise_deg": 0.0}
    link, _ = link_from_calibration(values, ["A", "B"], "M")
    detectors = Detectors((DARK_HZ, DARK_HZ), 0.05)
    sim = optics.single_click(pure(0.1), pure(0.1), *nodes, detectors, V, 0.0, windows)
    plan = single_click(0.1, link)
    assert plan.p_success == pytest.approx(sim.p_success, rel=0.01)
    assert plan.fidelity == pytest.approx(
        optics.bell_fidelity(sim.states["psi_plus"], "psi_plus"), abs=2e-3
    )
