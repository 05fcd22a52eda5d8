"""The controller's planning model (calibration.planning, from the calibrated values) against
the simulated lab's own optics (sim_backends.optics, from its truth): two implementations of
the heralding physics written independently, which meet here. Double excitation and the
detection window's share of the wavepacket included (pure code, no lab)."""

import math

import numpy as np
import pytest

from calibration.planning import barrett_kok, link_from_calibration, single_click
from sim_backends import optics
from sim_backends.optics import Detectors, NodeOptics

ETA, LIFETIME, DELAY, V, DARK_HZ = 3.5e-4, 12.0, 60.0, 0.9, 20.0


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
    node = {
        "detection_probability": ETA,
        "detection_window_start_ns": DELAY,
        "detection_window_ns": length,
        "photon_lifetime_ns": LIFETIME,
        "double_excitation": p_double,
        "init_fidelity": 1.0,
    }
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
