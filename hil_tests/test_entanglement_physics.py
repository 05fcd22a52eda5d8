"""Heralded entanglement between A and B in the simulated lab, through both node daemons:
the shared sync, attempt loops drawn at once, the joint state in the register."""

import math

import numpy as np
import pytest

from controller.data.params import ParameterStore
from controller.midpoint.calibration import LockLight
from controller.midpoint.phase_lock import COUNT_S, Fringe, LockSettings, run_burst, share_of
from sequences.operations import (
    CRCheck,
    EntanglementAttempt,
    Readout,
    Sequence,
    SpinInit,
    Sweep,
    WaitSync,
)
from sim_backends import optics
from sim_backends.optics import Detectors, NodeOptics

pytestmark = pytest.mark.usefixtures("sim")
ALPHA = 0.1
DETECTORS = {"psi_plus": 1, "psi_minus": 2}
SYNC_WAIT_NS = 10**10
"""The sync wait runs in wall time while the partner node catches up: on a loaded machine 1 s
(the default) may pass, and the shot would have no herald."""
SHOTS = 400  # enough that the ZZ anticorrelation below is many sigma from chance
KEEP = 0.9  # the windows below hold 90 % of each node's photons


def pure(bright: float) -> np.ndarray:
    psi = np.array([math.sqrt(bright), math.sqrt(1 - bright)])
    return np.outer(psi, psi).astype(complex)


def ideal_herald(protocol: str, m: dict, alphas: dict, phase_rad: float, sim):
    """The simulator's own optics from pure states with these bright populations."""
    nodes = [
        NodeOptics(
            m["eta"][n],
            m["lifetime_ns"][n],
            m["delay_ns"][n],
            m["p_double"][n],
            m["pi_pulse_error"][n],
        )
        for n in ("A", "B")
    ]
    detectors = Detectors((m["dark_count_hz"]["1"], m["dark_count_hz"]["2"]), m["jitter_ns"])
    draw = optics.barrett_kok if protocol == "barrett_kok" else optics.single_click
    windows = herald_windows(sim)
    a, b = pure(alphas["A"]), pure(alphas["B"])
    return draw(a, b, *nodes, detectors, m["visibility"], phase_rad, windows)


def ideal_single_click(m: dict, alphas: dict, phase_rad: float, sim, outcome: str) -> float:
    """Of this outcome's state (its detector's own dark counts)."""
    herald = ideal_herald("single_click", m, alphas, phase_rad, sim)
    return optics.bell_fidelity(herald.states[outcome], outcome)


def herald_windows(sim) -> list[tuple[float, float]]:
    """What the midpoint sets from the calibrated windows: each node's photons from their
    onset, lifetime x ln 10 long."""
    m = sim.truth("M")
    return [(m["delay_ns"][n], m["lifetime_ns"][n] * math.log(10)) for n in ("A", "B")]


def calibrate_from_truth(data_dir, sim, node: str) -> None:
    """What calibration finds, taken from the truth to keep this test about entanglement."""
    truth = sim.truth(node)
    pi_v = 1 / (2 * 100e-9 * truth["rabi_hz_per_v"])
    # from the bright |0> after spin init, leave alpha in the bright state: cos^2(theta/2) = alpha
    alpha_v = pi_v * 2 * math.acos(math.sqrt(ALPHA)) / math.pi
    with ParameterStore(data_dir / "params.sqlite") as store:
        for name, value in (
            ("mw_frequency_hz", truth["qubit_hz"]),
            ("pi_amplitude_v", pi_v),
            ("alpha_amplitude_v", alpha_v),
            ("readout_duration_ns", 12_000.0),
        ):
            store.set_manual(node, name, value, "test: from the simulator's truth")


def test_single_click_heralds_anticorrelated_pairs(start_daemon, data_dir, sim, lab, resources):
    for node in ("A", "B"):
        calibrate_from_truth(data_dir, sim, node)
    daemons = {node: start_daemon(node) for node in ("A", "B")}
    tagger = lab.make_driver("M", "tagger", resources)
    piezo = lab.make_driver("M", "piezo", resources)
    reference = lab.make_driver("M", "reference_laser", resources)
    herald = lab.make_driver("M", "herald", resources)  # the sync output, the windows
    sequence = Sequence(
        "entangle_zz",
        (
            CRCheck(),
            WaitSync(SYNC_WAIT_NS),
            EntanglementAttempt(max_attempts=10**6),
            SpinInit(0),
            Readout(),
        ),
        SHOTS,
    )
    before = len(sim.heralds())
    with tagger, herald, piezo, reference:
        # single-click wants the interferometer phase where the reference fringe puts its
        # light on psi_plus: one burst of the midpoint's lock (the fringe from the truth),
        # the reference light off again before any attempt; the phase drifts from there, and
        # each herald is judged at its own true phase below
        truth = sim.truth("M")
        fringe = Fringe(truth["piezo_deg_per_volt"], truth["reference_visibility"])

        light = LockLight(tagger, piezo, reference, list(DETECTORS.values()))  # as the midpoint

        def share_at(volts: float) -> float:
            counts = light.counts_at(volts, COUNT_S)
            return share_of({n: counts[ch] for n, ch in DETECTORS.items()}, list(DETECTORS))

        for channel in DETECTORS.values():
            tagger.set_enabled(channel, True)
        light.prepare()  # constant power at the reference power
        light.on()
        try:
            locked = run_burst(fringe, LockSettings(*piezo.limits["voltage_v"]), 37.5, share_at)
            piezo.set_voltage(locked.voltage_v)
        finally:
            light.off()
        assert locked.converged, locked
        herald.set_herald_windows(herald_windows(sim))
        herald.set_sync_auto(True)
        try:
            runs = {n: d.client.start(sequence, Sweep()) for n, d in daemons.items()}
            done = {n: daemons[n].client.wait(r["run_id"], timeout_s=120) for n, r in runs.items()}
        finally:
            herald.set_sync_auto(False)
            piezo.safe_state()
    assert all(run["status"] == "completed" for run in done.values()), done
    data = {n: daemons[n].client.result(runs[n]["run_id"]) for n in daemons}
    heralds = sim.heralds()[before:]
    assert len(heralds) == SHOTS  # every shot heralded, as the ground truth says
    attempts = np.array([h["attempts"] for h in heralds])
    p = heralds[0]["p_success"]
    eta = np.mean(list(sim.truth("M")["eta"].values()))
    assert p == pytest.approx(2 * ALPHA * eta * KEEP, rel=0.2)
    # attempts to a herald are geometric, each with its own p (a memory that lost its charge
    # state halves it): attempts x p has mean 1 and sd ~1, so 4 sigma of the mean of 40 draws
    scaled = attempts * np.array([h["p_success"] for h in heralds])
    assert scaled.mean() == pytest.approx(1.0, abs=4 / math.sqrt(SHOTS))
    bright = {n: data[n].counts[0, :, 0] >= 1 for n in data}
    valid = data["A"].valid[0] & data["B"].valid[0]
    anti = np.mean(bright["A"][valid] != bright["B"][valid])
    # psi+/- in ZZ: one bright, one dark (F ~ 1 - alpha, readout errors): about 0.8; two
    # uncorrelated memories give 0.5, which over SHOTS shots stays under 0.5 + 4 sd = 0.6
    assert anti > 0.6
    # with the phase stabilised the delivered states keep their coherence. A memory that lost its
    # charge state (ionised in its CR check) is dark: the herald came from the other alone.
    m = sim.truth("M")
    both_bright = [h for h in heralds if min(h["alphas"].values()) > 0]
    assert len(both_bright) >= 0.8 * len(heralds)
    for h in both_bright:
        assert not h["reference_light"]
        assert h["alpha"] == pytest.approx(ALPHA, abs=0.03)  # what the alpha pulse made
        # the simulator's optics from ideal alpha states (double excitation, pi-pulse error,
        # dark counts in the windows included): at best with no phase error at all; at this
        # herald's interferometer phase, less what the memories' real states cost (the spin
        # pump's error, the spin bath turning each node's phase a little, which may also
        # undo some of the interferometer's)
        best = ideal_single_click(m, h["alphas"], 0.0, sim, h["outcome"])
        phase = math.radians(h["phase_deg"])
        at_phase = ideal_single_click(m, h["alphas"], phase, sim, h["outcome"])
        # a long herald (CI: 0.071 under after 61524 attempts): the bath wandered longer
        assert at_phase - 0.09 < h["fidelity"] <= best + 0.002, (h, at_phase, best)
    for h in heralds:
        if min(h["alphas"].values()) == 0:
            # a memory dark (it lost its charge state): |10> or |01> from the other's photon
            # (F 1/2), or, when no photon could have come (both dark, or the other lost its
            # charge state after its alpha pulse: rare), a dark count's herald on |11> (F 0)
            assert h["fidelity"] <= 0.505, h
            assert h["fidelity"] > 0.45 or h["fidelity"] < 0.005, h


def test_barrett_kok_heralds_through_both_rounds(start_daemon, data_dir, sim, lab, resources):
    for node in ("A", "B"):
        calibrate_from_truth(data_dir, sim, node)
        with ParameterStore(data_dir / "params.sqlite") as store:
            truth = sim.truth(node)
            pi_v = 1 / (2 * 100e-9 * truth["rabi_hz_per_v"])
            store.set_manual(node, "pi2_amplitude_v", pi_v / 2, "test: from the truth")
    daemons = {node: start_daemon(node) for node in ("A", "B")}
    herald = lab.make_driver("M", "herald", resources)  # the herald logic: sync output, windows
    attempt = EntanglementAttempt("barrett_kok", max_attempts=2**31)
    sequence = Sequence(
        "bk_zz", (CRCheck(), WaitSync(SYNC_WAIT_NS), attempt, SpinInit(0), Readout()), SHOTS
    )
    before = len(sim.heralds())
    with herald:
        herald.set_herald_windows(herald_windows(sim))
        herald.set_sync_auto(True)  # Barrett-Kok needs no phase lock
        try:
            runs = {n: d.client.start(sequence, Sweep()) for n, d in daemons.items()}
            done = {n: daemons[n].client.wait(r["run_id"], timeout_s=120) for n, r in runs.items()}
        finally:
            herald.set_sync_auto(False)
    assert all(run["status"] == "completed" for run in done.values()), done
    heralds = sim.heralds()[before:]
    assert len(heralds) == SHOTS and all(h["protocol"] == "barrett_kok" for h in heralds)
    eta = sim.truth("M")["eta"]
    # eta_A eta_B / 2 of the photons in the windows, and a little more from double excitation
    assert heralds[0]["p_success"] == pytest.approx(eta["A"] * eta["B"] * KEEP**2 / 2, rel=0.2)
    ideal = ideal_herald("barrett_kok", sim.truth("M"), {"A": 0.5, "B": 0.5}, 0.0, sim)
    assert heralds[0]["p_success"] == pytest.approx(ideal.p_success, rel=0.05)
    v = sim.truth("M")["visibility"]
    # (1 + V) / 2 from ideal pi/2 pulses and single photons; double excitation (a photon too
    # many marks its node) and dark counts take some of it, as the simulator's optics say for
    # ideal states; the memories' real states can only lower that. A memory that lost its
    # charge state before the attempts emits nothing: such heralds (a dark count in one
    # round) carry no entanglement; the others:
    entangled = [h for h in heralds if min(h["alphas"].values()) > 0]
    assert len(entangled) >= 0.8 * len(heralds)
    for h in entangled:
        best = optics.bell_fidelity(ideal.states[h["outcome"]], h["outcome"])
        assert (1 + v) / 2 - 0.1 < best < (1 + v) / 2
        assert best - 0.05 < h["fidelity"] <= best + 0.002, (h, best)
    data = {n: daemons[n].client.result(runs[n]["run_id"]) for n in daemons}
    bright = {n: data[n].counts[0, :, 0] >= 1 for n in data}
    valid = data["A"].valid[0] & data["B"].valid[0]
    anti = np.mean(bright["A"][valid] != bright["B"][valid])
    assert anti > 0.6  # as the single-click test: about 0.8, chance stays under 0.6
