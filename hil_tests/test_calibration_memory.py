"""The 13C memory's calibration routines.

On the controller's model (no lab): each routine runs its sequences, compiled, on an electron
and a 13C under H = omega_L I_z + |1><1| (A_par I_z + A_perp I_x) (the replay of
test_compiler_memory), with each shot's readout drawn from the model's P(bright); the fitted
values are compared with the model's own (its couplings, the resonance they imply, the pulse
count its gate needs, the decay of a stored state under attempts). This shows the
acquisitions and fits find what the physics they were written from implies; the simulator's
13C (written independently from the same papers) is the other check."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from calibration.fits import (
    FitFailed,
    fit_attempt_decay,
    fit_dips,
    fit_gate,
    resonance_order,
)
from calibration.graph import ROUTINES, plan, run_graph, run_routine
from calibration.planning import memory_coherence, memory_from_calibration, memory_phase_deg
from calibration.routine import SKIPPED, UPDATED, bright_fraction
from calibration.routines import memory as memory_routines
from calibration.routines.memory import (
    ATTEMPTS,
    DEPHASING_ALPHA,
    attempt_block,
    dephasing_sequence,
)
from controller.data.params import ParameterStore
from controller.node.runtime import hardware_of
from controller.operator.calibration_access import ClientNodeAccess
from controller.operator.client import NodeClient
from hil_tests.test_compiler_memory import (
    A_PAR,
    A_PERP,
    F_1,
    F_L,
    HW,
    NO_MEMORY,
    PARAMS,
    compiled,
    free_evolution,
    nucleus_of,
    replay,
)
from sequences.compiler import compile_sequence
from sequences.memory import MemoryGate, MemoryInit, MemoryReadout, SwapToMemory, gate_pulses_near
from sequences.operations import (
    CRCheck,
    MwPulse,
    Readout,
    Sequence,
    SpinInit,
    Sweep,
    pi_half_pulse,
    pi_pulse,
)

BASE = {k: v for k, v in PARAMS.items() if not k.startswith("c13_")}
BASE["readout_threshold"] = 1.0


class ModelNode:
    """A NodeAccess whose runs are replayed on the model: counts are 1 (bright) with the
    model's P(|0>) at the readout, else 0; every shot's check passes."""

    node, platform, awg_peak_v = "A", "nv", 1.0
    midpoint = link = plot_dir = None

    def __init__(self, memories=("c13",), seed=7, stored=None):
        self.memories = memories
        self.hw = HW if memories else NO_MEMORY
        self.rng = np.random.default_rng(seed)
        self.store: dict[str, float] = dict(stored or {})

    def values(self):
        return {**BASE, **self.store}

    def stored(self, name):
        return self.store.get(name)

    def record(self, name, value, **_):
        self.store[name] = value

    def annotate(self, *_):
        pass

    def run(self, sequence, sweep):
        points = sweep.points()
        probabilities = []
        for point in points:
            c = compile_sequence(sequence, self.values(), self.hw, point)
            probabilities.append(replay(c)[1])
        p = np.array(probabilities)  # (points, readouts)
        shots = sequence.shots
        counts = (self.rng.random((len(points), shots, p.shape[1])) < p[:, None, :]).astype(int)
        return SimpleNamespace(
            run_id=None,
            status="completed",
            file=None,
            axes={a.name: (np.array(a.values), a.unit) for a in sweep.axes},
            counts=counts,
            valid=np.ones((len(points), shots), bool),
            check_counts=np.zeros((len(points), shots), int),
            readouts=["readout"],
        )


def mean_precession() -> float:
    return (F_L + F_1) / 2


def resonance_ns(k: int) -> float:
    """The model's resonance k: where one unit tau - pi - 2 tau - pi - tau turns the nucleus
    about opposite axes for the electron's two states (Taminiau et al. 2012); near
    (2k - 1) / (2 (f_0 + f_1)), shifted by A_perp's higher orders."""
    h0 = 2 * np.pi * F_L * np.diag([0.5, -0.5])
    h1 = 2 * np.pi * np.array([[(F_L + A_PAR) / 2, A_PERP / 2], [A_PERP / 2, -(F_L + A_PAR) / 2]])

    def evolve(h, t):
        e, v = np.linalg.eigh(h)
        return v @ np.diag(np.exp(-1j * e * t)) @ v.conj().T

    def axis(u):
        # u = cos(a/2) - i sin(a/2) n.sigma
        n = np.array(
            [-np.imag(u[0, 1] + u[1, 0]), np.real(u[1, 0] - u[0, 1]), -np.imag(u[0, 0] - u[1, 1])]
        )
        return n / np.linalg.norm(n)

    def alignment(tau_ns):
        t = tau_ns * 1e-9
        v0 = evolve(h0, t) @ evolve(h1, 2 * t) @ evolve(h0, t)
        v1 = evolve(h1, t) @ evolve(h0, 2 * t) @ evolve(h1, t)
        return float(axis(v0) @ axis(v1))

    guess = (2 * k - 1) / (4 * mean_precession()) * 1e9
    return float(minimize_scalar(alignment, bounds=(guess - 30, guess + 30), method="bounded").x)


def model_pi2_pulses(tau_ns: float) -> float:
    """The pulse count at which the model's gate at `tau_ns` leaves nucleus |0> half
    populated (interpolated between even counts)."""
    start = np.kron(np.diag([1, 0]), np.diag([1, 0]))
    previous = (0, 1.0)
    for n in range(4, 200, 4):
        params = {**BASE, "c13_tau_ns": tau_ns, "c13_n_pulses": n}
        rho, _ = replay(compile_sequence(Sequence("g", (MemoryGate(),), 1), params, HW), start)
        population = float(np.real(nucleus_of(rho)[0, 0]))
        if population < 0.5:
            n0, p0 = previous
            return n0 + (p0 - 0.5) / (p0 - population) * (n - n0)
        previous = (n, population)
    raise AssertionError("the model's gate never reaches pi/2")


# ---- the routines on the model ---------------------------------------------------------------
def test_spectroscopy_finds_the_resonances_the_couplings_imply():
    node = ModelNode()
    outcome = run_routine(node, ROUTINES["c13_spectroscopy"], True, None)
    assert outcome.verdict == UPDATED, outcome.reason
    tau = node.store["c13_tau_ns"]
    k = round((4 * tau * 1e-9 * mean_precession() + 1) / 2)
    assert k in (2, 3, 4)  # the resonances within the default 1-4 us search
    sigma = float(outcome.reason.split("+-")[1].split("ns")[0])
    # within 3 sigma of the fit, plus the clock grid the gate's spacing 2 tau is put on
    assert abs(tau - resonance_ns(k)) < 3 * sigma + 2.0, (tau, resonance_ns(k), sigma)
    assert node.store["c13_larmor_hz"] == pytest.approx(mean_precession(), rel=0.005)


def test_gate_finds_the_pulse_count_of_the_conditional_pi_half():
    tau = resonance_ns(3)
    node = ModelNode(stored={"c13_tau_ns": tau})
    outcome = run_routine(node, ROUTINES["c13_gate"], True, None)
    assert outcome.verdict == UPDATED, outcome.reason
    fitted = float(outcome.reason.split("fit ")[1].split(" +-")[0])
    sigma = float(outcome.reason.split("+- ")[1].rstrip(")"))
    truth = model_pi2_pulses(tau)
    assert abs(fitted - truth) < 3 * sigma + 1, (fitted, truth, sigma)
    assert node.store["c13_n_pulses"] % 4 == 2
    assert abs(node.store["c13_n_pulses"] - truth) <= 2 + 3 * sigma


def calibrated(k: int = 3) -> dict[str, float]:
    tau = resonance_ns(k)
    n = 2 * round(model_pi2_pulses(tau) / 2)
    return {
        "c13_tau_ns": tau,
        "c13_n_pulses": n,
        "c13_larmor_hz": mean_precession(),
        "c13_omega1_hz": mean_precession(),
    }


def test_ramsey_tells_the_two_precession_frequencies_apart():
    node = ModelNode(stored=calibrated())
    outcome = run_routine(node, ROUTINES["c13_ramsey"], True, None)
    assert outcome.verdict == UPDATED, outcome.reason
    errors = [
        float(part.split("+-")[1].split("kHz")[0]) * 1e3 for part in outcome.reason.split(",")
    ]
    assert node.store["c13_larmor_hz"] == pytest.approx(F_L, abs=3 * errors[0] + 1.0)
    assert node.store["c13_omega1_hz"] == pytest.approx(F_1, abs=3 * errors[1] + 1.0)


def model_bloch_after(attempts: int, values: dict[str, float]) -> complex:
    """The model's exact <X> + i<Y> of the stored |+x> after `attempts` attempts."""
    components = []
    for basis in ("x", "y"):
        seq = dephasing_sequence("nv", values, attempts, basis)
        c = compile_sequence(seq, values, HW)
        components.append(2 * replay(c)[1][0] - 1)
    return complex(*components)


def test_dephasing_per_attempt_fits_the_models_exact_points():
    """The routine on the model (shot noise of 200 shots) finds the N_1/e and the phase per
    attempt that the same fits find on the model's exact, noise-free points, within 3 sigma.
    (The model's field is low, 0.04 T, with A_perp / omega_L ~ 0.14: its per-attempt channel
    also tilts the stored state out of the x-y plane, so its decay is not a clean exponential
    to compare a formula with; the simulator's, at 0.19 T, is: test_calibration_memory_sim.)"""
    values = {**BASE, **calibrated(), "c13_larmor_hz": F_L, "c13_omega1_hz": F_1}
    node = ModelNode(stored={k: v for k, v in values.items() if k.startswith("c13_")})
    outcome = run_routine(node, ROUTINES["c13_dephasing"], True, None)
    assert outcome.verdict == UPDATED, outcome.reason
    assert node.store["c13_n_1e_alpha"] == DEPHASING_ALPHA
    fitted, sigma = (
        float(x) for x in outcome.reason.split("N_1/e ")[1].split(" attempts")[0].split(" +- ")
    )
    attempts = np.array(ATTEMPTS, float)
    exact = np.array([model_bloch_after(n, values) for n in ATTEMPTS])
    shot_sigma = np.full(len(exact), 2 * math.sqrt(0.25 / memory_routines.DEPHASING_SHOTS))
    decay = fit_attempt_decay(attempts, np.abs(exact), shot_sigma)
    assert abs(fitted - decay.params["n_1e"]) < 3 * sigma, (fitted, decay.params, sigma)
    _, slope, _, _ = memory_routines.phase_per_attempt(attempts, exact.real, exact.imag, shot_sigma)
    per = node.store["c13_phase_per_attempt_deg"]
    per_sigma = node.store["c13_phase_per_attempt_sigma_deg"]
    # the model's turn per attempt is not a pure rotation (its tilted |1> axis), so the
    # points do not lie on one line: the noisy and the exact fits may differ by a turn of the
    # last point's branch, 360 deg over the last point's attempts, beyond their 3 sigma
    branch = 360 / ATTEMPTS[-1]
    assert abs(per - math.degrees(slope)) < 3 * per_sigma + branch, (per, slope, per_sigma)
    assert abs(math.degrees(slope)) > 10 * per_sigma  # a phase the routine resolves
    assert len(attempt_block(values)) == 5  # pump, alpha, optical pi, echo, window


def test_phase_unwrapping_follows_several_turns():
    """A Bloch vector turning by 1.7 deg an attempt (12 turns by 2560 attempts) and
    decaying, with shot noise of 200 shots: the fitted turn within 3 sigma of the truth."""
    rng = np.random.default_rng(11)
    attempts = np.array(ATTEMPTS, float)
    truth = math.radians(1.7)
    vector = 0.8 * np.exp(-attempts / 2000) * np.exp(1j * (0.4 + truth * attempts))
    shots = 200
    x = 2 * rng.binomial(shots, (1 + vector.real) / 2) / shots - 1
    y = 2 * rng.binomial(shots, (1 + vector.imag) / 2) / shots - 1
    sigma = np.full(len(attempts), 2 * math.sqrt(0.25 / shots))
    _, slope, slope_sigma, _ = memory_routines.phase_per_attempt(attempts, x, y, sigma)
    assert abs(slope - truth) < 3 * slope_sigma, (slope, truth, slope_sigma)
    with pytest.raises(FitFailed, match="keep a phase"):
        memory_routines.phase_per_attempt(attempts, 0 * x, 0 * y, sigma)


# ---- the graph --------------------------------------------------------------------------------
def test_the_memory_routines_join_the_graph_of_a_node_with_a_memory_only():
    assert "c13_spectroscopy" not in plan()
    assert plan(memory=True)[-6:] == [
        "c13_spectroscopy",
        "c13_gate",
        "c13_ramsey",
        "c13_dephasing",
        "c13_move",
        "c13_t2",
    ]
    assert plan(["c13_gate"]) == ["esr", "rabi", "ramsey", "c13_spectroscopy", "c13_gate"]
    for name in plan(memory=True)[-6:]:
        assert ROUTINES[name].platforms == ("nv",)
        assert all(u.startswith("c13_") for u in ROUTINES[name].updates)


def test_a_node_without_memories_is_told_why_nothing_runs():
    node = ModelNode(memories=())
    outcomes = run_graph(node, ["c13_gate"])
    # esr, rabi, ramsey run (on the model their fits may fail: not the point here); the
    # memory routines are skipped with the reason
    memory = {o.routine: o for o in outcomes if o.routine.startswith("c13_")}
    assert set(memory) == {"c13_spectroscopy", "c13_gate"}
    assert all(o.verdict == SKIPPED for o in memory.values())
    assert all("no 13C memory" in o.reason for o in memory.values())


# ---- the fits alone ---------------------------------------------------------------------------
def test_resonance_order_from_evenly_spaced_dips():
    mean = 460e3
    centres = [(2 * k - 1) / (4 * mean) * 1e9 for k in (2, 3, 5)]  # k=4 missing
    found, orders = resonance_order(centres)
    assert found == pytest.approx(mean, rel=1e-9)
    assert orders == [2, 3, 5]
    with pytest.raises(FitFailed, match="need two"):
        resonance_order(centres[:1])
    with pytest.raises(FitFailed, match="not evenly spaced"):
        resonance_order([1000.0, 2000.0, 2700.0])


def test_fit_dips_finds_each_dip_and_not_the_noise():
    rng = np.random.default_rng(3)
    tau = np.arange(1000.0, 4000.0, 8.0)
    truth = 0.9 - 0.3 * np.exp(-((tau - 1630) ** 2) / (2 * 12**2))
    truth -= 0.25 * np.exp(-((tau - 2720) ** 2) / (2 * 12**2))
    shots = 400
    bright = rng.binomial(shots, truth) / shots
    noise = math.sqrt(0.25 / shots)
    dips = fit_dips(tau, bright, noise)
    assert [round(d.params["centre_ns"] / 10) * 10 for d in dips] == [1630, 2720]
    for d, centre in zip(dips, (1630, 2720), strict=True):
        assert abs(d.params["centre_ns"] - centre) < 3 * d.errors["centre_ns"] + 0.5


def test_fit_gate_recovers_the_pulse_count():
    rng = np.random.default_rng(5)
    n = np.arange(4, 164, 4, dtype=float)
    truth = 0.5 + 0.42 * np.cos(np.pi / 2 * n / 51.0)
    shots = 400
    fit = fit_gate(n, rng.binomial(shots, truth) / shots)
    # sigma of the fitted count from the curvature: 3 sigma holds the truth
    assert abs(fit.params["n_pi2"] - 51.0) < 3 * fit.errors["n_pi2"]


def test_compiled_memory_sequences_need_the_memory():
    with pytest.raises(Exception, match="not a memory qubit"):
        compiled(MemoryGate(), hw=NO_MEMORY)


# ---- against the simulator's 13C ----------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
SEED = 1
"""A seed whose 13C couples strongly enough (A_perp ~ 28 kHz at ~0.19 T) for gates of ~130
pulses: the simulator's shots cost ~0.3 ms of CPU per pulse."""


def grid_resonance(memory: dict) -> float:
    """The truth's resonance (the controller's model of it) nearest the 2 ns grid, tau of
    1.5-2.5 us: the one a 4 ns clock plays best."""
    f_l, a_par, a_perp = memory["larmor_hz"], memory["a_par_hz"], memory["a_perp_hz"]
    mean = (f_l + math.hypot(f_l + a_par, a_perp)) / 2
    taus = [(2 * k - 1) / (4 * mean) * 1e9 for k in range(1, 200)]
    taus = [t for t in taus if 1500 <= t <= 2500]
    return min((2 * round(t / 2) for t in taus), key=lambda g: min(abs(g - t) for t in taus))


def values_pi(node) -> float:
    return node.values()["pi_amplitude_v"]


@pytest.fixture
def memory_lab(own_lab, tmp_path):
    """The two-node lab with a 13C memory on A and B, its own simulator and daemons, the
    electrons calibrated from the truth: (node A's calibration access, store, memory truth)."""
    text = (ROOT / "labs" / "sim_two_node.toml").read_text()
    text = text.replace('platform = "nv"\n', 'platform = "nv"\nmemories = ["c13"]\n')
    text = text.replace('data_dir = "../data"', f'data_dir = "{tmp_path / "data"}"')
    lab_file = tmp_path / "sim_two_node_c13.toml"
    lab_file.write_text(text)
    lab, sim = own_lab(lab_file, SEED)
    store = ParameterStore(lab.data_dir / "params.sqlite")
    client = NodeClient.for_lab(lab, "A", timeout_s=900)
    access = ClientNodeAccess.for_lab(lab, "A", client, store)
    yield access, store, sim.truth("A")["memories"]["c13"], hardware_of(lab, "A")
    client.close()
    store.close()


@pytest.mark.slow_sim
@pytest.mark.timeout(1500)
def test_gate_and_a_stored_state_on_the_simulators_13c(memory_lab, monkeypatch):
    """c13_gate on the simulator finds the pulse count the controller's model gives for the
    truth's couplings (within 3 sigma of its fit, plus the model's own step of 2); a state
    stored with it and read back reads what the model predicts through the electron's
    readout (its bright fractions of prepared |0> and |1>, measured here): within 3 sigma of
    the shots (a few hundred: ~0.03) plus 0.05 for what the model leaves out (the electron's
    decoherence and initialisation error over ~1 ms of pulses)."""
    node, store, memory, hw = memory_lab
    f_1 = math.hypot(memory["larmor_hz"] + memory["a_par_hz"], memory["a_perp_hz"])
    tau = grid_resonance(memory)
    for name, value in (
        ("c13_tau_ns", tau),
        ("c13_larmor_hz", memory["larmor_hz"]),
        ("c13_omega1_hz", f_1),
    ):
        store.set_manual("A", name, value, "from the simulator's truth (test)")
    free = free_evolution(memory["larmor_hz"], memory["a_par_hz"], memory["a_perp_hz"])

    # the model's pulse count at this tau
    start = np.kron(np.diag([1, 0]), np.diag([1, 0]))
    model = None
    previous = (0, 1.0)
    for n in range(4, 400, 2):
        params = {**node.values(), "c13_n_pulses": n}
        c = compile_sequence(Sequence("g", (MemoryGate(),), 1), params, hw)
        rho, _ = replay(c, start, free, values_pi(node), hw)
        population = float(np.real(nucleus_of(rho)[0, 0]))
        if population < 0.5:
            n0, p0 = previous
            model = n0 + (p0 - 0.5) / (p0 - population) * (n - n0)
            break
        previous = (n, population)
    assert model is not None

    monkeypatch.setattr(memory_routines, "GATE_SHOTS", 100)
    outcome = run_routine(node, ROUTINES["c13_gate"], True, None)
    assert outcome.verdict == UPDATED, outcome.reason
    fitted = float(outcome.reason.split("fit ")[1].split(" +-")[0])
    sigma = float(outcome.reason.split("+- ")[1].rstrip(")"))
    assert abs(fitted - model) < 3 * sigma + 2, (fitted, model, sigma)

    values = node.values()
    shots = 200
    threshold = values["readout_threshold"]
    # the electron's own readout, measured: P(bright) of prepared |0> and of prepared |1>
    bright_of = []
    for flip in ((), (pi_pulse(),)):
        ops = (CRCheck(), SpinInit(), *flip, Readout())
        acq = node.run(Sequence("reference", ops, shots), Sweep())
        bright_of.append(float(bright_fraction(acq, threshold)[0]))
    for prep, basis in (
        (MwPulse(values["pi_amplitude_v"], values["pi_duration_ns"]), "z"),
        (MwPulse(values["pi2_amplitude_v"], values["pi_duration_ns"], 90.0), "x"),
    ):
        ops = (CRCheck(), MemoryInit(), prep, SwapToMemory(), MemoryReadout(basis=basis))
        sequence = Sequence("store_and_read", ops, shots)
        acq = node.run(sequence, Sweep())
        measured = float(bright_fraction(acq, threshold)[0])
        c = compile_sequence(sequence, values, hw)
        p = replay(c, None, free, values["pi_amplitude_v"], hw)[1][-1]
        expected = bright_of[0] * p + bright_of[1] * (1 - p)
        kept = max(int(acq.valid.sum()), 1)
        shot_sigma = math.sqrt(max(expected * (1 - expected), 0.01) / kept)
        assert abs(measured - expected) < 3 * shot_sigma + 0.05, (basis, measured, expected)


def model_pulse_count(node, hw, free) -> int:
    """The even pulse count of the conditional pi/2 at the stored tau, on the model."""
    start = np.kron(np.diag([1, 0]), np.diag([1, 0]))
    for n in range(4, 400, 2):
        params = {**node.values(), "c13_n_pulses": n}
        c = compile_sequence(Sequence("g", (MemoryGate(),), 1), params, hw)
        rho, _ = replay(c, start, free, values_pi(node), hw)
        if float(np.real(nucleus_of(rho)[0, 0])) < 0.5:
            return gate_pulses_near(n)
    raise AssertionError("the model's gate never reaches pi/2")


@pytest.mark.slow_sim
@pytest.mark.timeout(1500)
def test_ramsey_on_the_simulators_13c_finds_its_two_frequencies(memory_lab, monkeypatch):
    """With the gate from the truth's couplings (as c13_gate finds it: the test above), the
    nuclear Ramsey's omega_0 and omega_1 within 3 sigma of the truth's omega_L and
    sqrt((omega_L + A_par)^2 + A_perp^2). Fewer points and shots than the routine's own
    (41 x 30 a branch; ~0.2 s of simulator CPU a shot): sigma ~10 kHz, still a fifth of the
    two frequencies' difference (A_par)."""
    node, store, memory, hw = memory_lab
    f_1 = math.hypot(memory["larmor_hz"] + memory["a_par_hz"], memory["a_perp_hz"])
    mean = (memory["larmor_hz"] + f_1) / 2
    store.set_manual("A", "c13_tau_ns", grid_resonance(memory), "truth (test)")
    for name in ("c13_larmor_hz", "c13_omega1_hz"):  # as c13_spectroscopy leaves them
        store.set_manual("A", name, mean, "truth (test)")
    free = free_evolution(memory["larmor_hz"], memory["a_par_hz"], memory["a_perp_hz"])
    store.set_manual("A", "c13_n_pulses", model_pulse_count(node, hw, free), "model (test)")
    monkeypatch.setattr(memory_routines, "RAMSEY_POINTS", 41)
    monkeypatch.setattr(memory_routines, "RAMSEY_SHOTS", 30)
    outcome = run_routine(node, ROUTINES["c13_ramsey"], True, None)
    assert outcome.verdict == UPDATED, outcome.reason
    errors = [
        float(part.split("+-")[1].split("kHz")[0]) * 1e3 for part in outcome.reason.split(",")
    ]
    values = node.values()
    assert abs(values["c13_larmor_hz"] - memory["larmor_hz"]) < 3 * errors[0], outcome.reason
    assert abs(values["c13_omega1_hz"] - f_1) < 3 * errors[1], outcome.reason


def test_move_fidelity_is_the_models_round_trip_halved():
    """On the model (a perfect readout): the six states' round-trip fidelity from the
    model's exact states, and the move fidelity that implies, within 3 sigma of the shots."""
    values = {**BASE, **calibrated(), "c13_larmor_hz": F_L, "c13_omega1_hz": F_1}
    node = ModelNode(stored={k: v for k, v in values.items() if k.startswith("c13_")})
    outcome = run_routine(node, ROUTINES["c13_move"], True, None)
    assert outcome.verdict == UPDATED, outcome.reason
    exact = []
    for state, (_, _, sign) in memory_routines.CARDINAL_STATES.items():
        seq = memory_routines.move_sequence("nv", state, 1)
        p_plus = replay(compile_sequence(seq, values, HW))[1][-1]
        exact.append(p_plus if sign > 0 else 1 - p_plus)
    round_trip = (4 * (3 * float(np.mean(exact)) - 1) / 2 - 1) / 3
    truth = (1 + 3 * math.sqrt(round_trip)) / 4
    sigma = float(outcome.reason.split("fidelity ")[1].split("+- ")[1])
    assert abs(node.store["c13_move_fidelity"] - truth) < 3 * sigma, (outcome.reason, truth)
    assert 0.9 < truth < 1.0  # the model's transfers are good: the test sees a real number


# ---- coherence under decoupling (c13_t2) ------------------------------------------------------
def test_the_echo_keeps_a_stored_state_on_the_model():
    """The model has no bath: its echo, at any free time, returns the stored |+x> with the
    sign and nearly the length a plain store and read gives (within 0.1: the nuclear pi's
    ~2 x 50 pulses at the model's low field, where the electron's |1> axis is tilted by
    A_perp / omega_1 ~ 0.13, cost ~0.09; were the pi's axis not the state's, the echo would
    read -0.9)."""
    values = {**BASE, **calibrated(), "c13_larmor_hz": F_L, "c13_omega1_hz": F_1}
    plain = (MemoryInit(), pi_half_pulse(90.0), SwapToMemory(), MemoryReadout(basis="x"))
    stored = 2 * replay(compile_sequence(Sequence("s", plain, 1), values, HW))[1][0] - 1
    for total in (0.002, 0.5):
        seq = memory_routines.echo_sequence("nv", total, 1)
        c = compile_sequence(seq, values, HW)
        x = 2 * replay(c)[1][0] - 1
        assert abs(x - stored) < 0.1, (total, x, stored)
    assert stored > 0.9


def test_fit_echo_decay_recovers_t2_and_its_exponent():
    """A stretched echo (T2 0.6 s, exponent 2.5, amplitude 0.85) at the routine's times, 200
    shots a point: T2 within 3 sigma of the fit."""
    rng = np.random.default_rng(21)
    times = np.array(memory_routines.ECHO_TIMES_S)
    truth = memory_routines.echo_decay(times, 0.85, 0.6, 2.5)
    shots = 200
    x = 2 * rng.binomial(shots, (1 + truth) / 2) / shots - 1
    sigma = np.full(len(times), 2 * math.sqrt(0.25 / shots))
    fit = memory_routines.fit_echo_decay(times, x, sigma)
    assert abs(fit.params["t2_s"] - 0.6) < 3 * fit.errors["t2_s"], fit.params


# ---- the planning model reads the phase per attempt -------------------------------------------
def test_the_planning_model_gives_the_phase_after_n_attempts_at_the_calibrated_alpha():
    """memory_from_calibration reads c13_phase_per_attempt_deg when stored (not required:
    the fidelities assume the known phase undone); memory_phase_deg sums it over blocks at
    the calibrated alpha and refuses another alpha (the phase is not proportional to alpha)."""
    values = {
        "c13_n_1e_at_alpha": 1300.0,
        "c13_n_1e_alpha": 0.1,
        "c13_t2_s": 0.8,
        "c13_move_fidelity": 0.95,
    }
    memory = memory_from_calibration(values, "A")
    assert memory.phase_per_attempt_deg is None
    with pytest.raises(ValueError, match="not calibrated"):
        memory_phase_deg([(10, 0.1)], memory)
    memory = memory_from_calibration({**values, "c13_phase_per_attempt_deg": -0.52}, "A")
    assert memory_phase_deg([(100, 0.1), (250, 0.1)], memory) == pytest.approx(-0.52 * 350)
    assert memory_phase_deg([(0, 0.3)], memory) == 0.0
    with pytest.raises(ValueError, match=r"calibrated at alpha 0\.1"):
        memory_phase_deg([(100, 0.05)], memory)
    # the fidelity formulas are those without the phase
    assert memory_coherence([(1300, 0.1)], 0.0, memory) == pytest.approx(math.exp(-1), rel=1e-9)


def test_the_decay_fit_starts_inside_its_bounds_when_noise_lengthens_the_first_point():
    """With tens of shots a point, the noise-corrected length of the first point can exceed
    1.3 (X and Y both read ~0.95 by chance): the fit still runs (its start is clipped to its
    bounds) rather than failing on its own initial guess."""
    attempts = np.array([0, 100, 200, 400, 800, 1600], float)
    values = np.array([1.38, 0.85, 0.75, 0.55, 0.35, 0.1])
    fit = fit_attempt_decay(attempts, values, np.full(6, 0.1))
    assert 200 < fit.params["n_1e"] < 2000, fit.params
