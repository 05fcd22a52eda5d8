"""The 13C memory qubit of the simulator against the papers' formulas (no sockets).

NodePhysics of an NV node with `memories=["c13"]`: its register holds the electron "B" and the
nucleus "B.c13". States are read from the register (expectation values); every expected number
is computed here from the papers' formulas or from the model's definition with rotations of
our own (Rodrigues), never read from the simulator. Seeds are fixed and used nowhere else.

Bloch vectors: x = 2 Re rho01, y = -2 Im rho01, z = rho00 - rho11; the nucleus's |0> has
I_z = +1/2. H = omega_L I_z + |1><1| (A_par I_z + A_perp I_x) (Taminiau et al. PRL 2012).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sim_backends.lab import SimLab
from sim_backends.node import SimNode
from sim_backends.physics import NodePhysics, draw_truth
from sim_backends.register import QubitRegister

ROOT = Path(__file__).resolve().parents[1]
X_PHASE, Y_PHASE = 0.0, math.pi / 2
PI_NS = 50
"""Pulse length: the drive amplitude is set so that a pi pulse lasts exactly 50 ns, which keeps
every free interval an integer number of ns (the node's clock)."""
PLUS = np.full((2, 2), 0.5, dtype=complex)
KET0 = np.diag([1.0, 0.0]).astype(complex)
KET1 = np.diag([0.0, 1.0]).astype(complex)


def make_node(seed: int, init_fidelity: float | None = None) -> NodePhysics:
    """An NV node with one 13C; init_fidelity 1 pins a perfect spin pump (no back-pumping)."""
    rng = np.random.default_rng(seed)
    truth = draw_truth("nv", rng)
    if init_fidelity is not None:
        truth = replace(truth, init_fidelity=init_fidelity)
    node = NodePhysics("B", truth, rng, QubitRegister(["B"]), memories=["c13"])
    node.ready = True
    # never ionised by the light here (a CR check would catch it; not what these tests test)
    node.platform = replace(node.platform, loss_time_ns=1e30)
    node.drive.frequency_hz = truth.qubit_hz  # the centre of the hyperfine-split line
    node.drive.power_dbm = node.platform.mw_reference_dbm
    node.drive.output = True
    return node


def set_state(node: NodePhysics, electron: np.ndarray, nucleus: np.ndarray) -> None:
    assert node.register.names == ["B", "B.c13"]
    node.register.rho = np.kron(electron, nucleus).astype(complex)


def pulse(node: NodePhysics, angle: float, phase: float, pi_ns: float = PI_NS) -> None:
    """A square pulse about (cos phase, sin phase, 0), amplitude set so that pi takes pi_ns."""
    volts = 1.0 / (2 * node.truth.rabi_hz_per_v * pi_ns * 1e-9)
    duration = angle / math.pi * pi_ns * 1e-9
    node.apply_iq(np.array([math.cos(phase)]), np.array([math.sin(phase)]), 1 / duration, 2 * volts)


def bloch(rho: np.ndarray) -> np.ndarray:
    return np.array([2 * rho[0, 1].real, -2 * rho[0, 1].imag, (rho[0, 0] - rho[1, 1]).real])


def rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix (right-handed) by angle about axis: what exp(-i angle n.sigma/2) does
    to a Bloch vector."""
    n = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def nuclear_axes(m) -> tuple[np.ndarray, float, np.ndarray, float]:
    """(axis, frequency) with the electron in |0> and in |1>: z at omega_L; (A_perp, 0,
    omega_L + A_par) at omega_1 = sqrt((omega_L + A_par)^2 + A_perp^2)."""
    omega_l = 2 * math.pi * m["larmor_hz"]
    a_par, a_perp = 2 * math.pi * m["a_par_hz"], 2 * math.pi * m["a_perp_hz"]
    omega_1 = math.hypot(omega_l + a_par, a_perp)
    return np.array([0, 0, 1.0]), omega_l, np.array([a_perp, 0, omega_l + a_par]), omega_1


def memory_truth(node: NodePhysics) -> dict:
    return node.truth.as_dict()["memories"]["c13"]


# ---------------------------------------------------------------------------------- truth
def test_memory_truth_is_drawn_in_its_ranges_and_reported():
    node = make_node(101)
    m = memory_truth(node)
    assert 0.18 < m["field_t"] < 0.20
    assert m["larmor_hz"] == pytest.approx(10.705e6 * m["field_t"])
    assert 20e3 <= abs(m["a_par_hz"]) <= 60e3 and 15e3 <= m["a_perp_hz"] <= 45e3
    assert 5e-3 < m["t2star_s"] < 20e-3 and m["t2_hahn_s"] > 0.1 and m["t1_s"] > 3600
    # the electron's own truth is what draw_truth gave (the memory draws from its own stream)
    rng = np.random.default_rng(101)
    assert node.truth.qubit_hz == draw_truth("nv", rng).qubit_hz


def test_two_node_lab_draws_the_same_truth_as_before_memories():
    """Values pinned from the simulator before memory qubits existed (seed 20261130)."""
    lab = tomllib.loads((ROOT / "labs" / "sim_two_node.toml").read_text())
    sim = SimLab(lab, 20261130, Path("unused"), Path("unused") / "map.json")
    assert sim.register.names == ["A", "B"]
    a, b = sim.truth("A"), sim.truth("B")
    assert "memories" not in a
    assert a["qubit_hz"] == 2837729316.23374
    assert a["rabi_hz_per_v"] == 8057031.868463215
    assert a["t2_hahn_s"] == 0.0009050566362812368
    assert a["init_fidelity"] == 0.9954532911439845
    assert b["qubit_hz"] == 2850764346.7050576
    assert b["check_mean"] == 26.82194409379379
    assert b["readout_flip_ns"] == 16171.410592477687
    # and the node's generator continues where it did
    assert sim.nodes["A"].physics.rng.random() == 0.3411766670610551


def test_three_node_lab_has_a_memory_qubit_per_node():
    lab = tomllib.loads((ROOT / "labs" / "sim_three_node.toml").read_text())
    sim = SimLab(lab, 5, Path("unused"), Path("unused") / "map.json")
    assert sorted(sim.register.names) == ["A", "A.c13", "B", "B.c13", "C", "C.c13"]
    memories = {n: sim.truth(n)["memories"]["c13"] for n in "ABC"}
    assert len({m["a_par_hz"] for m in memories.values()}) == 3  # each its own spin
    assert np.allclose(sim.register.reduced("B.c13"), np.eye(2) / 2)  # mixed at power-on


# ------------------------------------------------------------------------ precession
@pytest.mark.parametrize("electron", [0, 1])
def test_nuclear_ramsey_precesses_at_omega_l_and_omega_1(electron):
    """Nucleus from +x, electron held in |0> or |1>: the Bloch vector follows the rotation
    about z at omega_L, or about the tilted axis at omega_1, over 40 us (the nuclear bath,
    ~1/T2* ~ 1e2 rad/s, adds < 0.01 rad in that time)."""
    node = make_node(102)
    m = memory_truth(node)
    axis0, omega_l, axis1, omega_1 = nuclear_axes(m)
    axis, omega = (axis0, omega_l) if electron == 0 else (axis1, omega_1)
    set_state(node, KET0 if electron == 0 else KET1, PLUS)
    start = np.array([1.0, 0, 0])
    for step in range(1, 41):
        node.advance(1000)
        expected = rodrigues(axis, omega * step * 1e-6) @ start
        got = bloch(node.register.reduced("B.c13"))
        assert np.allclose(got, expected, atol=0.02), (step, got, expected)


def test_nuclear_ramsey_averaged_over_repumps_decays_with_t2star():
    """Each green charge repump draws the nuclear bath afresh (docs/simulation.md): a Ramsey at
    t = T2* averaged over 2000 repumped runs is exp(-(t/T2*)^2) = 1/e. Per run the coherence
    is cos(phi), phi Gaussian; its spread is at most 0.5, so the mean's sigma is at most
    sqrt(0.5 / 2000) = 0.016; asserted within 4 sigma (0.064)."""
    node = make_node(110)
    m = memory_truth(node)
    t_ns = round(m["t2star_s"] * 1e9)
    omega_l = 2 * math.pi * m["larmor_hz"]
    runs, values = 2000, []
    for _ in range(runs):
        node.light["repump"] = 1.0
        node.advance(50 * node.platform.recovery_time_ns)  # the repump surely happens
        node.light["repump"] = 0.0
        set_state(node, KET0, PLUS)
        node.advance(t_ns)
        rho01 = node.register.reduced("B.c13")[0, 1]
        values.append((rho01 / (0.5 * np.exp(-1j * omega_l * t_ns * 1e-9))).real)
    assert np.mean(values) == pytest.approx(math.exp(-1), abs=4 * math.sqrt(0.5 / runs))


# -------------------------------------------------------------- dynamical decoupling
def xy_sequence(node: NodePhysics, tau_ns: int, pulses: int) -> None:
    """(tau - pi - tau)^N with XY phases: pulse centres 2 tau apart, tau from the edges."""
    phases = [X_PHASE, Y_PHASE] * (pulses // 2)
    node.advance(tau_ns - PI_NS // 2)
    for k, phase in enumerate(phases):
        pulse(node, math.pi, phase)
        node.advance(2 * tau_ns - PI_NS if k < pulses - 1 else tau_ns - PI_NS // 2)


def taminiau_coherence(m: dict, tau_s: float, pulses: int) -> float:
    """Electron coherence M after N pulses, nucleus unpolarised (Taminiau et al. PRL 109,
    137602 (2012), eqs. 2-3): M = 1 - (1 - n0.n1) sin^2(N phi / 2),
    cos phi = cos a cos b - m_z sin a sin b,
    1 - n0.n1 = m_x^2 (1 - cos a)(1 - cos b) / (1 + cos phi),
    a = omega_L tau, b = omega_1 tau, m_z = (A_par + omega_L)/omega_1, m_x = A_perp/omega_1."""
    _, omega_l, axis1, omega_1 = nuclear_axes(m)
    a, b = omega_l * tau_s, omega_1 * tau_s
    m_z, m_x = axis1[2] / omega_1, axis1[0] / omega_1
    cos_phi = math.cos(a) * math.cos(b) - m_z * math.sin(a) * math.sin(b)
    one_minus = m_x**2 * (1 - math.cos(a)) * (1 - math.cos(b)) / (1 + cos_phi)
    phi = math.acos(max(-1.0, min(1.0, cos_phi)))
    return 1 - one_minus * math.sin(pulses * phi / 2) ** 2


def resonance_tau(m: dict, k: int) -> float:
    """tau_k = (2k - 1) pi / (2 omega_L + A_par) (Taminiau 2012)."""
    return (2 * k - 1) * math.pi / (2 * 2 * math.pi * m["larmor_hz"] + 2 * math.pi * m["a_par_hz"])


def electron_coherence_after(node: NodePhysics, tau_ns: int, pulses: int) -> float:
    set_state(node, PLUS, np.eye(2) / 2)
    xy_sequence(node, tau_ns, pulses)
    return bloch(node.register.reduced("B"))[0]


def deep_dip_pulses(m: dict, k: int) -> int:
    """The number of pulses that makes the k-th dip deepest: N phi / 2 near pi/2 mod pi (phi,
    the formula's, is close to pi at resonance); whole XY-4 units, the identity on the
    electron."""
    _, omega_l, axis1, omega_1 = nuclear_axes(m)
    tau = resonance_tau(m, k)
    a, b = omega_l * tau, omega_1 * tau
    cos_phi = math.cos(a) * math.cos(b) - axis1[2] / omega_1 * math.sin(a) * math.sin(b)
    return 4 * max(1, round(math.pi / (4 * (math.pi - math.acos(cos_phi)))))  # XY-4 units


def test_dd_electron_coherence_dips_at_the_resonances_and_nowhere_else():
    """XY-N on the electron (nucleus mixed), N chosen for a deep k = 10 dip: around tau_k the
    coherence follows Taminiau's formula (dip depth included), is lowest at tau_k, and is near
    1 halfway between resonances. Allowance 0.03: finite 50 ns pulses and the electron's bath
    (under N ~ 1e2 pulses its T2 is tens of ms, the sequence ~1 ms)."""
    node = make_node(103)
    m = memory_truth(node)
    k = 10
    pulses = deep_dip_pulses(m, k)
    tau_k = resonance_tau(m, k)
    taus = [round(tau_k * 1e9) + d for d in range(-8, 9)]
    got = np.array([electron_coherence_after(node, t, pulses) for t in taus])
    expected = np.array([taminiau_coherence(m, t * 1e-9, pulses) for t in taus])
    assert np.allclose(got, expected, atol=0.03), np.c_[taus, got, expected]
    assert expected.min() < 0.0  # a real dip to look for
    assert abs(taus[int(np.argmin(got))] - tau_k * 1e9) <= 1.5  # at tau_k (grid step 1 ns)
    between = round(0.5 * (resonance_tau(m, k) + resonance_tau(m, k + 1)) * 1e9)
    far = electron_coherence_after(node, between, pulses)
    assert far > 0.95
    assert far == pytest.approx(taminiau_coherence(m, between * 1e-9, pulses), abs=0.03)


def test_resonant_dd_gate_turns_the_nucleus_in_opposite_senses():
    """At tau_k the nucleus turns about n0 with the electron in |0> and about n1 ~ -n0 with it
    in |1>: from z, the two Bloch vectors share their z and have opposite transverse parts
    (Taminiau et al., Nat. Nanotechnol. 9, 171 (2014)). Expected vectors: the unit rotations
    R0 = Rz(a) R1(2b) Rz(a), R1 = R1(b) Rz(2a) R1(b) composed here, N / 2 units."""
    node = make_node(104)
    m = memory_truth(node)
    axis0, omega_l, axis1, omega_1 = nuclear_axes(m)
    tau_ns = round(resonance_tau(m, 12) * 1e9)
    tau = tau_ns * 1e-9
    r0 = rodrigues(axis0, omega_l * tau) @ rodrigues(axis1, 2 * omega_1 * tau)
    r0 = r0 @ rodrigues(axis0, omega_l * tau)
    r1 = rodrigues(axis1, omega_1 * tau) @ rodrigues(axis0, 2 * omega_l * tau)
    r1 = r1 @ rodrigues(axis1, omega_1 * tau)
    unit_angle = math.acos((np.trace(r0) - 1) / 2)
    pulses = 2 * max(1, round((math.pi / 2) / unit_angle))  # about a quarter turn
    z = np.array([0, 0, 1.0])
    results = []
    for electron, rotation in ((KET0, r0), (KET1, r1)):
        set_state(node, electron, KET0)
        xy_sequence(node, tau_ns, pulses)
        got = bloch(node.register.reduced("B.c13"))
        expected = np.linalg.matrix_power(rotation, pulses // 2) @ z
        assert np.allclose(got, expected, atol=0.03), (got, expected)
        results.append(got)
    v0, v1 = results
    assert v0[2] == pytest.approx(v1[2], abs=0.03)
    t0, t1 = v0[:2], v1[:2]
    assert np.linalg.norm(t0) > 0.5
    assert t0 @ t1 < -0.95 * np.linalg.norm(t0) * np.linalg.norm(t1)  # opposite senses


# ------------------------------------------------------------- dephasing per attempt
PUMP_NS = 3000  # ten pump time constants: the reset has happened (e^-10)
SHORT_PI_NS = 2.0


def pump(node: NodePhysics, ns: int = PUMP_NS) -> None:
    node.light["pump"] = 1.0
    node.advance(ns)
    node.light["pump"] = 0.0


def test_pump_channel_is_the_average_over_the_random_reset_time():
    """Electron |1>, nucleus +x, a perfect pump on for 3 us: the nucleus's Bloch vector is the
    average over reset times t ~ Exp(gamma) of precession about n1 for t, then about z
    (gamma = 1 / 300 ns), plus the nuclear bath's turn about z (its hidden detuning, constant
    over 3 us). Sampled here: 100000 draws, the sample mean's sigma from the draws; the
    simulator within 4 sigma + 1e-5."""
    node = make_node(105, init_fidelity=1.0)
    m = memory_truth(node)
    axis0, omega_l, axis1, _ = nuclear_axes(m)
    bath = node.memories[0].detuning
    tilted = axis1 + np.array([0, 0, bath])  # the bath detunes the nucleus in both states
    set_state(node, KET1, PLUS)
    pump(node)
    got = bloch(node.register.reduced("B.c13"))
    total = PUMP_NS * 1e-9
    gamma = 1 / (node.platform.pump_time_ns * 1e-9)
    times = np.minimum(np.random.default_rng(1).exponential(1 / gamma, 100_000), total)
    start = np.array([1.0, 0, 0])
    samples = np.array(
        [
            rodrigues(axis0, (omega_l + bath) * (total - t))
            @ rodrigues(tilted, float(np.linalg.norm(tilted)) * t)
            @ start
            for t in times
        ]
    )
    mean, sigma = samples.mean(axis=0), samples.std(axis=0) / math.sqrt(len(samples))
    assert np.all(np.abs(got - mean) < 4 * sigma + 1e-5), (got, mean, sigma)


def attempt(node: NodePhysics, theta: float, flip: bool) -> None:
    """One entanglement attempt as the memory sees it: bright-state population alpha
    (cos^2(theta/2)), the optical pi pulse whose lost photon takes the electron's coherence,
    with `flip` a microwave pi pulse (so that only the bright part, now in |1>, needs the
    stochastic reset), and the spin pump. The pulses are short (2 ns): with the electron in
    |1> during a pulse the nucleus turns by about dw t, a deterministic phase between the
    branches that the reset formula leaves out (with 50 ns pulses ~10 % of the loss at
    alpha = 0.05; docs/simulation.md)."""
    pulse(node, theta, X_PHASE, pi_ns=SHORT_PI_NS)
    node.optical_excitation()
    if flip:
        pulse(node, math.pi, X_PHASE, pi_ns=SHORT_PI_NS)
    pump(node)


def reset_average(m: dict, gamma: float) -> complex:
    """g1: the factor on the memory's coherence rho01 (relative to precession at omega_L) when
    the electron leaves |1> at t ~ Exp(gamma): E[u00(t) conj(u11(t)) e^{i omega_L t}] for the
    precession U1(t) about the tilted axis (cos of its tilt k = (omega_L + A_par)/omega_1):
      g1 = (1+k)^2/4 gamma/(gamma + i dw) + (1-k^2)/2 gamma/(gamma - i omega_L)
           + (1-k)^2/4 gamma/(gamma - i (omega_L + omega_1)),   dw = omega_1 - omega_L
    (docs/simulation.md; the first term alone when A_perp -> 0)."""
    _, omega_l, axis1, omega_1 = nuclear_axes(m)
    k = axis1[2] / omega_1
    dw = omega_1 - omega_l
    return (
        (1 + k) ** 2 / 4 * gamma / (gamma + 1j * dw)
        + (1 - k**2) / 2 * gamma / (gamma - 1j * omega_l)
        + (1 - k) ** 2 / 4 * gamma / (gamma - 1j * (omega_l + omega_1))
    )


def per_attempt_factor(node: NodePhysics, alpha: float, flip: bool) -> float:
    """|c| = |1 - p1 + p1 g1|, p1 the electron's |1> population entering the reset: the
    emission took its coherence, so p1 = alpha with the pi pulse before the reset, and
    1 - alpha without it (docs/simulation.md)."""
    gamma = 1 / (node.platform.pump_time_ns * 1e-9)
    p1 = alpha if flip else 1 - alpha
    return abs(1 - p1 + p1 * reset_average(memory_truth(node), gamma))


@pytest.mark.parametrize("flip", [True, False], ids=["pi-before-reset", "reset-only"])
@pytest.mark.parametrize("alpha", [0.05, 0.15, 0.3, 0.5])
def test_memory_dephasing_per_attempt_matches_the_formula(alpha, flip):
    """300 attempts (perfect pump) with the nucleus stored along x: its Bloch vector's length is
    |c|^300. The channel is averaged, so no shot noise; the nuclear bath only turns the vector.
    Allowance 1e-3 + 2 % of the loss: the 2 ns pulses' own phases and the part of the channel
    that does not commute with the precession (averaged away over attempts only
    approximately)."""
    node = make_node(106, init_fidelity=1.0)
    set_state(node, KET0, PLUS)
    theta = 2 * math.acos(math.sqrt(alpha))
    attempts = 300
    for _ in range(attempts):
        attempt(node, theta, flip)
    length = float(np.linalg.norm(bloch(node.register.reduced("B.c13"))[:2]))
    expected = per_attempt_factor(node, alpha, flip) ** attempts
    assert length == pytest.approx(expected, abs=1e-3 + 0.02 * (1 - expected))
    assert expected < 0.97  # the effect is there to be seen


def test_dephasing_per_attempt_grows_with_alpha_when_only_the_bright_part_is_reset():
    """Kalb et al. 2018: more loss per attempt the larger alpha, with the pi pulse before the
    reset; resetting the whole dark part instead loses more, and more the smaller alpha."""
    node = make_node(107)
    alphas = (0.05, 0.1, 0.2, 0.4)
    flipped = [per_attempt_factor(node, a, True) for a in alphas]
    reset_only = [per_attempt_factor(node, a, False) for a in alphas]
    assert all(a > b for a, b in itertools.pairwise(flipped))
    assert all(a < b for a, b in itertools.pairwise(reset_only))
    assert all(f > r for f, r in zip(flipped, reset_only, strict=True))


def test_fast_forwarded_attempts_dephase_the_memory_as_stepped_ones():
    """SimNode.fast_forward of an attempt loop: the memory gets the stepped body's pump factors
    N times over, as N stepped attempts would give: to 1e-3 + 1 % of the loss (the forwarded
    factor keeps only the part of the channel that commutes with the precession; the pulses'
    own small electron-nuclear phases are not repeated)."""
    alpha, runs = 0.2, 200
    theta = 2 * math.acos(math.sqrt(alpha))
    lengths = []
    for fast in (False, True):
        physics = make_node(108)
        f = physics.truth.init_fidelity
        set_state(physics, np.diag([f, 1 - f]), PLUS)
        if fast:
            node = SimNode("B", physics)
            node.now_ns = physics.now_ns
            since = physics.now_ns
            node.excitations.append((since, 1.0))
            node._exposure_at = {since: physics.exposure_ns}
            attempt(physics, theta, flip=True)
            node.now_ns = physics.now_ns
            assert node.fast_forward(runs - 1, physics.now_ns - since, since)
        else:
            for _ in range(runs):
                attempt(physics, theta, flip=True)
        lengths.append(float(np.linalg.norm(bloch(physics.register.reduced("B.c13"))[:2])))
    stepped, forwarded = lengths
    assert stepped < 0.99
    assert forwarded == pytest.approx(stepped, abs=1e-3 + 0.01 * (1 - stepped))


# ------------------------------------------------------------------------ readout
def test_electron_readout_leaves_the_nucleus_in_the_correlated_state():
    """Electron and nucleus in (|00> + |11>)/sqrt 2: a readout projects the electron and the
    nucleus with it, whatever the readout light does to the electron afterwards."""
    node = make_node(109)
    bell = np.zeros((4, 4), dtype=complex)
    bell[0, 0] = bell[0, 3] = bell[3, 0] = bell[3, 3] = 0.5
    for _ in range(20):
        node.register.rho = bell.copy()
        node.light["readout"] = 1.0
        node.count(node.truth.readout_window_ns)
        node.light["readout"] = 0.0
        z = bloch(node.register.reduced("B.c13"))[2]
        assert abs(z) > 0.999
