"""What calibration would find, taken from the simulator's hidden truth, for work that is about
something else (entanglement tests, the benchmarks, the fault soak) and must not spend minutes
calibrating. Only the simulated lab has a truth to take it from."""

from __future__ import annotations

import math

from calibration.planning import OPTICAL_PULSE_NS
from controller.data.params import ParameterStore
from controller.link.plan import alpha_amplitude
from sequences.parameters import PARAMETERS


def pi_amplitude(truth: dict, platform: str = "nv") -> float:
    """At the platform's default pi-pulse length."""
    duration_s = PARAMETERS["pi_duration_ns"].default_for(platform) * 1e-9
    return 1 / (2 * duration_s * truth["rabi_hz_per_v"])


def calibrate_nodes_from_truth(
    data_dir,
    sim,
    nodes=("A", "B"),
    alpha: float | None = None,
    platform: str = "nv",
    detectors: dict[str, int] | None = None,
):
    """Qubit and readout of the memory nodes, their spin initialisation, detection windows and
    efficiencies (the whole wavepacket's, as the routine measures it), photon lifetimes and
    double excitation, the midpoint's dark counts (per detector of `detectors`, the midpoint's
    channel map; default psi_plus 1, psi_minus 2), visibility and set point."""
    m = sim.truth("M")
    with ParameterStore(data_dir / "params.sqlite") as store:
        for node in nodes:
            truth = sim.truth(node)
            pi_v = pi_amplitude(truth, platform)
            values = {
                "mw_frequency_hz": truth["qubit_hz"],
                "pi_amplitude_v": pi_v,
                "pi2_amplitude_v": pi_v / 2,
                "detection_probability": m["eta"][node],
                # the window opens when the optical pulse is over, as the routine sets it
                "detection_window_start_ns": m["delay_ns"][node] + OPTICAL_PULSE_NS,
                "photon_onset_ns": m["delay_ns"][node],
                "detection_window_ns": m["lifetime_ns"][node] * math.log(10),
                "photon_lifetime_ns": m["lifetime_ns"][node],
                "double_excitation": m["p_double"][node],
                "init_fidelity": truth["init_fidelity"],
                # the errors the routines report for such values (detection_window from
                # ~2000 photons, readout from 8000 shots), which the planner's margin uses
                "double_excitation_sigma": 0.013,
                "init_fidelity_sigma": 0.001,
            }
            if platform == "nv":
                values["readout_duration_ns"] = 12_000.0
            if alpha is not None:
                values["alpha_amplitude_v"] = alpha_amplitude(pi_v, alpha)
            for name, value in values.items():
                store.set_manual(node, name, value, "test: from the simulator's truth")
        for name, detector in (detectors or {"psi_plus": 1, "psi_minus": 2}).items():
            rate = m["dark_count_hz"][str(detector)]
            store.set_manual("M", f"dark_count_hz_{name}", rate, "test: from the truth")
        store.set_manual("M", "visibility", m["visibility"], "test: from the truth")
        store.set_manual("M", "visibility_sigma", 0.02, "test: the routine's typical error")
        # the interferometer's fringe against the piezo (the phase lock's), and the phase
        # noise the heralds see between its bursts
        for name, value in (
            ("piezo_deg_per_volt", m["piezo_deg_per_volt"]),
            ("fringe_contrast", m["reference_visibility"]),
            ("phase_setpoint_deg", 0.0),  # the lock holds the fringe's top on psi_plus
        ):
            store.set_manual("M", name, value, "test: from the truth")
        store.set_manual("M", "phase_noise_deg", m["phase_noise_deg"], "test: from the truth")
