"""What calibration would find, taken from the simulator's hidden truth, for work that is about
something else (entanglement tests, the benchmarks, the fault soak) and must not spend minutes
calibrating. Only the simulated lab has a truth to take it from.

Per link, as the routines store it (docs/calibration.md, "Per-link values"): each node's own
values (qubit, readout, initialisation) once; its photons at a midpoint (window, detection
probability, lifetime, double excitation) as its own for a node with one link, under the
midpoint as <node>_<name> for a node with several; each midpoint's detectors, visibility and
interferometer under the midpoint."""

from __future__ import annotations

import math
from collections.abc import Collection

from calibration.planning import OPTICAL_PULSE_NS, link_parameter
from controller.data.params import ParameterStore
from controller.labconfig import LabConfig
from controller.link.plan import alpha_amplitude
from sequences.parameters import PARAMETERS

DEFAULT_DETECTORS = {"psi_plus": 1, "psi_minus": 2}


def pi_amplitude(truth: dict, platform: str = "nv") -> float:
    """At the platform's default pi-pulse length."""
    duration_s = PARAMETERS["pi_duration_ns"].default_for(platform) * 1e-9
    return 1 / (2 * duration_s * truth["rabi_hz_per_v"])


def truth_links(sim) -> dict[str, list[str]]:
    """midpoint -> the nodes whose photons it detects, from the truth (a midpoint's truth
    holds each of its nodes' detection probability)."""
    return {name: list(t["eta"]) for name, t in sim.truth().items() if "eta" in t}


def node_values(truth: dict, platform: str, alpha: float | None) -> dict[str, float]:
    """A node's own values: its qubit, readout and initialisation (one set, whatever its
    links)."""
    pi_v = pi_amplitude(truth, platform)
    values = {
        "mw_frequency_hz": truth["qubit_hz"],
        "pi_amplitude_v": pi_v,
        "pi2_amplitude_v": pi_v / 2,
        "init_fidelity": truth["init_fidelity"],
        # the error the readout routine reports from 8000 shots (the planner's margin)
        "init_fidelity_sigma": 0.001,
    }
    if platform == "nv":
        values["readout_duration_ns"] = 12_000.0
    if alpha is not None:
        values["alpha_amplitude_v"] = alpha_amplitude(pi_v, alpha)
    return values


def photon_values(m: dict, node: str) -> dict[str, float]:
    """A node's photons at a midpoint (its truth `m`): the window (opening when the optical
    pulse is over, holding 90 % of the photons after it, as the routine sets it), the whole
    wavepacket's detection probability, the lifetime and double excitation."""
    return {
        "detection_probability": m["eta"][node],
        "detection_window_start_ns": m["delay_ns"][node] + OPTICAL_PULSE_NS,
        "photon_onset_ns": m["delay_ns"][node],
        "detection_window_ns": m["lifetime_ns"][node] * math.log(10),
        "photon_lifetime_ns": m["lifetime_ns"][node],
        "double_excitation": m["p_double"][node],
        # the error the routine reports from ~2000 photons (the planner's margin)
        "double_excitation_sigma": 0.013,
    }


def calibrate_nodes_from_truth(
    data_dir,
    sim,
    nodes=("A", "B"),
    alpha: float | None = None,
    platform: str = "nv",
    detectors: dict[str, int] | None = None,
    lab: LabConfig | None = None,
    midpoints: Collection[str] | None = None,
):
    """Qubit and readout of the memory nodes, their spin initialisation; per link (every
    midpoint that detects one of `nodes`) their detection windows and efficiencies (the whole
    wavepacket's, as the routine measures it), photon lifetimes and double excitation, and
    the midpoint's dark counts (per detector: the lab's channel map with `lab`, else
    `detectors`, default psi_plus 1, psi_minus 2), visibility and set point. `midpoints`:
    only their links (default: every link of `nodes`)."""
    links = truth_links(sim)
    reach = {n: [mid for mid, ends in links.items() if n in ends] for n in nodes}
    chosen = {n: [m for m in reach[n] if midpoints is None or m in midpoints] for n in nodes}
    with ParameterStore(data_dir / "params.sqlite") as store:

        def keep(station: str, name: str, value: float) -> None:
            store.set_manual(station, name, value, "test: from the simulator's truth")

        for node in nodes:
            for name, value in node_values(sim.truth(node), platform, alpha).items():
                keep(node, name, value)
            for midpoint in chosen[node]:
                photons = photon_values(sim.truth(midpoint), node)
                for name, value in photons.items():
                    if len(reach[node]) == 1:  # one link: the node's own values
                        keep(node, name, value)
                    else:
                        keep(midpoint, link_parameter(node, name), value)
        for midpoint in sorted({mid for mids in chosen.values() for mid in mids}):
            channels = detectors or DEFAULT_DETECTORS
            if lab is not None and midpoint in lab.nodes:
                channels = dict(lab.nodes[midpoint].channels.detectors) or channels
            midpoint_from_truth(store, midpoint, sim.truth(midpoint), channels)


def midpoint_from_truth(store: ParameterStore, name: str, m: dict, detectors: dict) -> None:
    """A midpoint's own values: dark counts per detector, the visibility, the interferometer's
    fringe against the piezo (the phase lock's) and the phase noise the heralds see between
    its bursts."""
    for detector, channel in detectors.items():
        rate = m["dark_count_hz"][str(channel)]
        store.set_manual(name, f"dark_count_hz_{detector}", rate, "test: from the truth")
    for key, value in (
        ("visibility", m["visibility"]),
        ("visibility_sigma", 0.02),  # the routine's typical error
        ("piezo_deg_per_volt", m["piezo_deg_per_volt"]),
        ("fringe_contrast", m["reference_visibility"]),
        ("phase_setpoint_deg", 0.0),  # the lock holds the fringe's top on psi_plus
        ("phase_noise_deg", m["phase_noise_deg"]),
    ):
        store.set_manual(name, key, value, "test: from the truth")


def calibrate_links_from_truth(
    lab: LabConfig, sim, links: list[str] | None = None, alpha: float | None = None
) -> None:
    """The lab's links (all, or those named) from the truth: each end node and each link's
    midpoint, per link as the routines store them."""
    chosen = lab.all_links if links is None else {k: lab.all_links[k] for k in links}
    nodes = sorted({n for link in chosen.values() for n in link.nodes})
    platform = lab.nodes[nodes[0]].platform or "nv" if nodes else "nv"
    stations = [link.midpoint for link in chosen.values()]
    calibrate_nodes_from_truth(
        lab.data_dir, sim, nodes, alpha, platform, lab=lab, midpoints=stations
    )


def attempt_channel_from_truth(
    memory: dict, node_truth: dict, values: dict, alpha: float, window_ns: float
):
    """One echoed single-click attempt at `alpha` as the link plays it (compiler.attempt: the
    pump, the pad to whole Larmor periods, the alpha pulse, the optical pi pulse, the echo, the
    herald wait `window_ns`, on the 4 ns grid), composed on the electron and the 13C with the
    papers' Hamiltonian (Taminiau et al. 2012; the pump's random reset time, Kalb et al.,
    PRA 97, 062330 (2018): sim_backends.nuclear's channels): (the 16 x 16 superoperator on the
    electron-13C density matrix, the attempt's length in ns)."""
    import numpy as np

    from sim_backends import nuclear
    from sim_backends.physics import PLATFORMS

    truth = nuclear.MemoryTruth(**memory)
    operators = nuclear.JointOperators([truth])

    def grid(ns: float) -> int:
        return round(ns / 4) * 4

    def channel(u: np.ndarray) -> np.ndarray:
        return nuclear.kron2(u, u.conj())

    def free(ns: int) -> np.ndarray:
        return channel(nuclear.free_propagator([truth], [0.0], 0.0, ns * 1e-9))

    def pulse(angle: float, ns: int) -> np.ndarray:
        rate = np.array([angle / (ns * 1e-9)])
        return channel(operators.pulse([0.0], 0.0, rate, np.zeros(1), np.array([ns * 1e-9])))

    pump_ns, pi_ns = grid(values["spin_pump_duration_ns"]), grid(values["pi_duration_ns"])
    excite_ns, wait_ns = grid(values["excitation_duration_ns"]), grid(window_ns)
    unpadded = pump_ns + 2 * pi_ns + excite_ns + wait_ns
    period_ns = 1e9 / memory["larmor_hz"]
    pad = min(
        range(0, grid(period_ns) + 4, 4),
        key=lambda p: abs((unpadded + p) - round((unpadded + p) / period_ns) * period_ns),
    )
    rate = 1 / (PLATFORMS["nv"].pump_time_ns * 1e-9)
    steps = [
        free(wait_ns),  # the previous attempt's herald wait, then this attempt
        nuclear.pump_superoperator([truth], rate, node_truth["init_fidelity"], pump_ns * 1e-9),
        free(pad),
        pulse(2 * math.acos(math.sqrt(alpha)), pi_ns),
        free(excite_ns),
        pulse(math.pi, pi_ns),
    ]
    attempt = np.eye(16, dtype=complex)
    for step in steps:
        attempt = step @ attempt
    return attempt, unpadded + pad


def _stored_coherences(attempt, attempts: int):
    """The stored +x's coherence rho01 of the 13C after each of `attempts` attempts (the
    electron starts in |0>)."""
    import numpy as np

    rho = np.kron(np.diag([1.0, 0.0]), np.full((2, 2), 0.5)).astype(complex).reshape(-1)
    out = np.empty(attempts, dtype=complex)
    for n in range(attempts):
        rho = attempt @ rho
        out[n] = np.einsum("iaib->ab", rho.reshape(2, 2, 2, 2))[0, 1]
    return out


def phase_per_attempt_from_truth(
    memory: dict, node_truth: dict, values: dict, alpha: float, window_ns: float
) -> float:
    """The stored state's mean turn per echoed single-click attempt at `alpha` (degrees,
    frame_deg's convention: ahead of the frame positive), what c13_dephasing would measure
    (it takes ~8 min on the simulator and does not resolve N_1/e there:
    test_calibration_memory_sim): the attempt of attempt_channel_from_truth, repeated, the
    stored +x's angle after each attempt against free precession at omega_L. The whole
    channel, not the electron's mean time in |1> alone (attempt_factor: -1.04 deg on the
    cavity lab's B where this gives -1.18 and the simulator turned by -1.27): with the period
    a whole number of Larmor periods the A_perp-tilted axis's kicks add up from attempt to
    attempt."""
    import numpy as np

    attempt, length_ns = attempt_channel_from_truth(memory, node_truth, values, alpha, window_ns)
    coherences = _stored_coherences(attempt, 200)
    n = np.arange(1, 201)
    # x + iy = 2 conj(rho01); the frame turns with omega_L over the attempts' time
    precessed = 2 * math.pi * memory["larmor_hz"] * n * length_ns * 1e-9
    unwrapped = np.unwrap(-np.angle(coherences) - precessed)
    return math.degrees((unwrapped[-1] - unwrapped[9]) / (len(unwrapped) - 10))


def memory_n_1e_from_truth(
    memory: dict,
    node_truth: dict,
    values: dict,
    alpha: float,
    window_ns: float,
    limit: int = 200_000,
) -> float:
    """Attempts after which a stored +x keeps 1/e of its coherence (|rho01| from 1/2), the
    figure c13_dephasing's N_1/e stands for, from attempt_channel_from_truth; a steady turn
    (phase_per_attempt_from_truth, fed forward by the link) does not count. `limit` when it
    keeps more than 1/e so long. The memory's T2 between attempts is not in it."""
    import numpy as np

    attempt, _ = attempt_channel_from_truth(memory, node_truth, values, alpha, window_ns)
    # in chunks of doubling size: the coherence's length is monotone, so the chunk that
    # crosses 1/e is found by squaring the channel, then searched attempt by attempt
    rho = np.kron(np.diag([1.0, 0.0]), np.full((2, 2), 0.5)).astype(complex).reshape(-1)
    done, step, power = 0, 1, attempt
    target = 0.5 / math.e

    def length(state) -> float:
        return float(abs(np.einsum("iaib->ab", state.reshape(2, 2, 2, 2))[0, 1]))

    while done < limit:
        after = power @ rho
        if length(after) < target:
            break
        rho, done = after, done + step
        power, step = power @ power, step * 2
    else:
        return float(limit)
    for n in range(step):
        rho = attempt @ rho
        if length(rho) < target:
            return float(min(limit, done + n + 1))
    return float(min(limit, done + step))


def ranked_resonances(memory: dict) -> list[float]:
    """The memory's DD resonances tau_k = (2k - 1) / (4 f_mean) of 1-4 us (Taminiau et al.,
    PRL 109, 137602 (2012)), each on the 2 ns grid, ranked by the grid's error times the order
    k: over a gate's pulses the nucleus drifts from the resonance by that much a period, which
    tilts the gate's axis (what a c13_gate scan would find best first)."""
    f_l, a_par, a_perp = memory["larmor_hz"], memory["a_par_hz"], memory["a_perp_hz"]
    mean = (f_l + math.hypot(f_l + a_par, a_perp)) / 2
    ranked = []
    for order in range(1, 40, 2):
        tau = order / (4 * mean) * 1e9
        if 1000 <= tau <= 4000:
            grid = 2 * round(tau / 2)
            ranked.append((abs(grid - tau) * order, float(grid)))
    return [grid for _, grid in sorted(ranked)]
