"""Memory decoherence of the simulated nodes against their ground truth.

NodePhysics directly (no sockets): pi pulses are square IQ pulses of the true Rabi frequency
played through `apply_iq`, free evolution is `advance`. Every shot re-initialises the memory
optically (which draws the bath afresh); the per-shot state is read from the register (an
expectation value, no projection noise), and the shots' mean is compared with the decay the
platform's truth predicts, within 5 standard errors of that mean plus a small allowance for
the pulses' own errors. Seeds are fixed and used nowhere else.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from sequences.program import assemble, encode
from sim_backends.instruments.sequencer import SimSequencer
from sim_backends.node import SimNode
from sim_backends.physics import (
    PLATFORMS,
    SY,
    NodePhysics,
    bath_correlation_time,
    draw_truth,
    ou_step_coefficients,
)
from sim_backends.register import QubitRegister

SX = np.array([[0, 1], [1, 0]], dtype=complex)
X_PHASE, Y_PHASE = 0.0, np.pi / 2
XY8 = [X_PHASE, Y_PHASE, X_PHASE, Y_PHASE, Y_PHASE, X_PHASE, Y_PHASE, X_PHASE]
PULSE_ALLOWANCE = 0.02
"""Finite pi pulses in a detuned bath are not perfect (a few 1e-4 each): the mean may differ
from the ideal decay by this much beyond its statistics."""


def make_node(platform: str, seed: int, name: str = "A", register=None) -> NodePhysics:
    rng = np.random.default_rng(seed)
    truth = draw_truth(platform, rng)
    register = register or QubitRegister([name])
    node = NodePhysics(name, truth, rng, register)
    node.ready = True
    node.drive.frequency_hz = truth.qubit_hz  # on resonance: only the bath detunes
    node.drive.power_dbm = node.platform.mw_reference_dbm
    node.drive.output = True
    return node


def pulse(node: NodePhysics, angle: float, phase: float) -> None:
    """A square pulse of rotation `angle` about (cos phase, sin phase, 0): one IQ sample of
    1 V (2 Vpp amplitude) lasting angle / (2 pi f_rabi)."""
    duration = angle / (2 * np.pi * node.truth.rabi_hz_per_v)
    node.apply_iq(np.array([np.cos(phase)]), np.array([np.sin(phase)]), 1 / duration, 2.0)


def pi_ns(node: NodePhysics) -> int:
    return round(1e9 / (2 * node.truth.rabi_hz_per_v))


def initialise(node: NodePhysics) -> None:
    """Optical pumping to |0> (a fresh bath), then pi/2 about X: the Bloch vector along -Y,
    of length 2 F_init - 1. Ready, as a passed CR / cooling check leaves it."""
    node.ready = True
    node.light["pump"] = 1.0
    node.advance(round(20 * node.platform.pump_time_ns))
    node.light["pump"] = 0.0
    pulse(node, np.pi / 2, X_PHASE)


def decoupled_hold(node: NodePhysics, total_ns: int, phases: list[float]) -> None:
    """Hold for total_ns with pi pulses about `phases` at CPMG timing (pulse centres at
    (k - 1/2) total / N); no pulses: free evolution."""
    n = len(phases)
    if n == 0:
        node.advance(total_ns)
        return
    tp = pi_ns(node)
    spacing = total_ns // n
    edge = spacing // 2 - tp // 2
    node.advance(edge)
    for k, phase in enumerate(phases):
        pulse(node, np.pi, phase)
        node.advance(spacing - tp if k < n - 1 else edge)


def minus_y(rho: np.ndarray) -> float:
    return float(-np.trace(rho @ SY).real)


def hold_shots(node: NodePhysics, total_ns: int, phases: list[float], shots: int) -> np.ndarray:
    values = np.empty(shots)
    for k in range(shots):
        initialise(node)
        decoupled_hold(node, total_ns, phases)
        values[k] = minus_y(node.register.reduced(node.name))
    return values


def assert_mean(values: np.ndarray, expected: float) -> None:
    mean = float(values.mean())
    se = float(values.std(ddof=1) / np.sqrt(len(values)))
    assert abs(mean - expected) < 5 * se + PULSE_ALLOWANCE, (mean, expected, se)


def contrast(truth) -> float:
    """The Bloch vector's length after optical initialisation."""
    return 2 * truth.init_fidelity - 1


def ou_phase_variance(truth, segments: list[tuple[float, float]]) -> float:
    """Var of the phase sum_i s_i int_{segment i} delta(t) dt of a stationary OU bath, for
    piecewise-constant signs s_i (the toggling frame of a pulse sequence), exactly:
    Var = sigma^2 tau^2 [sum_i 2 s_i^2 (x_i - 1 + e^{-x_i})
                         + 2 sum_{i<j} s_i s_j (1 - e^{-x_i})(1 - e^{-x_j}) e^{-gap_ij / tau}]
    with x_i = d_i / tau (series for x - 1 + e^{-x} at small x: the terms cancel to ~x^3)."""
    sigma2 = 2 / truth.t2star_s**2
    tau = truth.bath_tau_c_s
    signs = np.array([sign for sign, _ in segments])
    x = np.array([d for _, d in segments]) / tau
    ends = np.cumsum(x)
    starts = ends - x
    small = x < 1e-2
    xs = np.where(small, x, 0.0)
    diag = np.where(
        small,
        xs**2 / 2 - xs**3 / 6 + xs**4 / 24 - xs**5 / 120,
        x + np.expm1(-np.where(small, 0.0, x)),
    )
    e = -np.expm1(-x) * signs
    gaps = starts[None, :] - ends[:, None]
    cross = np.triu(np.outer(e, e) * np.exp(-np.clip(gaps, 0.0, None)), k=1)
    return float(sigma2 * tau**2 * (2 * np.sum(signs**2 * diag) + 2 * cross.sum()))


def cpmg_segments(t_s: float, n_pulses: int) -> list[tuple[float, float]]:
    """The toggling-frame signs of N instantaneous pi pulses at CPMG / XY-n timing."""
    if n_pulses == 0:
        return [(1.0, t_s)]
    edge = t_s / (2 * n_pulses)
    widths = [edge] + [2 * edge] * (n_pulses - 1) + [edge]
    return [((-1.0) ** k, w) for k, w in enumerate(widths)]


def hahn_expected(truth, t_s: float, n_pulses: int) -> float:
    """The OU bath's decay under N pi pulses at CPMG timing (exact), times the Markovian
    floor and T1, times the contrast of a state prepared by optical initialisation."""
    chi = ou_phase_variance(truth, cpmg_segments(t_s, n_pulses)) / 2
    return contrast(truth) * float(np.exp(-chi - t_s / truth.t2_s - t_s / truth.t1_s))


def slow_bath(truth, t_s: float, n_pulses: int) -> float:
    """The published form: exp(-(t / T2(N))^3), T2(N) = T2_hahn N^(2/3) (de Lange 2010)."""
    return float(np.exp(-((t_s / (truth.t2_hahn_s * n_pulses ** (2 / 3))) ** 3)))


# the exact OU step ----------------------------------------------------------------------------
def test_ou_step_coefficients_are_exact_across_the_series_switch():
    """Var(phi) and the conditional variance, from the series (small x) and the closed form
    (large x), agree where they meet and with the closed forms at high precision."""
    for x in (1e-2 * (1 - 1e-9), 1e-2 * (1 + 1e-9)):
        a, s_d, c, s_r = ou_step_coefficients(x)
        assert a == pytest.approx(np.exp(-x))
        assert s_d**2 == pytest.approx(1 - np.exp(-2 * x))
        var_phi = 2 * x - 3 + 4 * np.exp(-x) - np.exp(-2 * x)
        assert c**2 + s_r**2 == pytest.approx(var_phi, rel=1e-6)
    a, s_d, c, s_r = ou_step_coefficients(1e-9)  # a ns against a second: no cancellation
    assert (c**2 + s_r**2) == pytest.approx(2 / 3 * 1e-27, rel=1e-6)
    assert s_r**2 == pytest.approx(1 / 6 * 1e-27, rel=1e-6)


def test_ou_bath_is_stationary_and_integrates_exactly():
    """Stepping many small intervals or one big one gives the same law of the phase."""
    node = make_node("nv", 913_001)
    tau = node.truth.bath_tau_c_s
    sigma = np.sqrt(2) / node.truth.t2star_s
    t = 0.5 * tau
    one, many, ends = [], [], []
    for _ in range(3000):
        node._draw_bath()
        one.append(node._bath_step(t))
        ends.append(node.bath_detuning)
        node._draw_bath()
        many.append(sum(node._bath_step(t / 50) for _ in range(50)))
    # from a stationary start: Var(phi) = 2 sigma^2 tau^2 (t/tau - 1 + e^{-t/tau})
    var_phi = 2 * sigma**2 * tau**2 * (t / tau - 1 + np.exp(-t / tau))
    for sample in (one, many):
        assert np.var(sample) == pytest.approx(var_phi, rel=0.1)
    assert np.std(ends) == pytest.approx(sigma, rel=0.06)


def test_bath_correlation_time_reproduces_the_published_hahn_t2():
    truth = draw_truth("nv", np.random.default_rng(913_002))
    sigma2 = 2 / truth.t2star_s**2
    assert truth.bath_tau_c_s == pytest.approx(
        bath_correlation_time(truth.t2star_s, truth.t2_hahn_s)
    )
    # the slow-bath relation T2_hahn^3 = 12 tau_c / sigma^2 (de Lange 2010), to 1e-4 for an NV
    assert (12 * truth.bath_tau_c_s / sigma2) ** (1 / 3) == pytest.approx(truth.t2_hahn_s, rel=1e-4)
    for platform in ("nv", "ion"):
        p = PLATFORMS[platform]
        t = draw_truth(platform, np.random.default_rng(913_003))
        assert p.t2_hahn_s_range[0] <= t.t2_hahn_s <= p.t2_hahn_s_range[1]
        # a Hahn echo of length T2_hahn decays to exactly 1/e
        chi = ou_phase_variance(t, cpmg_segments(t.t2_hahn_s, 1)) / 2
        assert chi == pytest.approx(1.0, rel=1e-6)
        # the slow-bath limit holds over the storage times of interest
        assert t.bath_tau_c_s > 5 * t.t2_hahn_s


def test_nv_decoupling_follows_the_published_scaling():
    """For the NV (tau_c of seconds against ms), the exact OU decay is the slow-bath form
    exp(-(t / (T2_hahn N^(2/3)))^3)."""
    truth = draw_truth("nv", np.random.default_rng(913_004))
    for n, t_s, allowed in (
        (1, 1e-3, 0.002),
        (8, 4e-3, 0.002),
        (32, 10e-3, 0.005),
        (1024, 0.1, 0.03),
    ):
        exact = np.exp(-ou_phase_variance(truth, cpmg_segments(t_s, n)) / 2)
        assert exact == pytest.approx(slow_bath(truth, t_s, n), abs=allowed)


# NV -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_t2star", [0.5, 1.0, 1.5])
def test_nv_free_decay_is_gaussian_with_t2star(in_t2star):
    node = make_node("nv", 913_010)
    t_s = in_t2star * node.truth.t2star_s
    values = hold_shots(node, round(t_s * 1e9), [], 1500)
    assert_mean(values, contrast(node.truth) * float(np.exp(-(in_t2star**2))))


def test_nv_hahn_echo_at_1ms_decays_with_the_published_t2():
    node = make_node("nv", 913_011)
    values = hold_shots(node, 1_000_000, [Y_PHASE], 1500)
    expected = hahn_expected(node.truth, 1e-3, 1)
    assert 0.1 < expected < 0.6  # NV Hahn-echo T2 ~ 1 ms: clearly decayed at 1 ms
    assert_mean(values, expected)


def test_nv_hahn_echo_refocuses_the_quasi_static_bath_at_short_times():
    node = make_node("nv", 913_012)
    values = hold_shots(node, 20_000, [Y_PHASE], 300)  # 20 us: ~7 T2*
    assert values.mean() > 0.97 * contrast(node.truth)


def test_nv_xy8_outlives_the_hahn_echo_and_scales_with_the_number_of_pulses():
    node = make_node("nv", 913_013)
    xy8 = hold_shots(node, 1_000_000, XY8, 600)
    assert_mean(xy8, hahn_expected(node.truth, 1e-3, 8))
    hahn = hold_shots(node, 1_000_000, [Y_PHASE], 600)  # the same node, the same 1 ms
    assert_mean(hahn, hahn_expected(node.truth, 1e-3, 1))
    assert xy8.mean() > 0.9 > 0.6 > hahn.mean()
    # XY-8 x 4 (32 pulses) over 10 ms: T2(32) = 10 T2_hahn, so near exp(-1) again
    xy8x4 = hold_shots(node, 10_000_000, XY8 * 4, 800)
    expected = hahn_expected(node.truth, 10e-3, 32)
    assert 0.15 < expected < 0.7
    assert_mean(xy8x4, expected)


def test_nv_bell_pair_half_dephases_under_the_echo_on_its_own_factor():
    """A Phi+ pair in a two-node register; node A holds its half with a Hahn echo (pi about Y
    on A: Phi+ goes to a Bell state with <XX> = -1 times the coherence), node B idles off the
    clock. Only A's factor dephases: |<XX>| follows A's echo decay; B's reduced state and the
    ZZ correlation are untouched. The pair is ideal: no initialisation contrast."""
    register = QubitRegister(["A", "B"])
    node = make_node("nv", 913_014, "A", register)
    phi_plus = np.zeros((4, 4), dtype=complex)
    phi_plus[np.ix_([0, 3], [0, 3])] = 0.5
    xx = np.kron(SX, SX)
    zz = np.diag([1.0, -1.0, -1.0, 1.0])
    values, zzs = [], []
    for _ in range(1200):
        node._draw_bath()  # what A's optical initialisation before the herald did
        register.set_pair("A", "B", phi_plus)
        decoupled_hold(node, 1_000_000, [Y_PHASE])
        values.append(-float(np.trace(register.rho @ xx).real))  # Y on A flips XX's sign
        zzs.append(float(np.trace(register.rho @ zz).real))
    assert_mean(np.array(values), hahn_expected(node.truth, 1e-3, 1) / contrast(node.truth))
    assert np.mean(zzs) == pytest.approx(-1.0, abs=1e-3)  # Y on A flips ZZ; no T1 here
    assert np.allclose(register.reduced("B"), np.eye(2) / 2, atol=1e-9)


def test_nv_bell_pair_both_halves_dephase_independently():
    register = QubitRegister(["A", "B"])
    a = make_node("nv", 913_015, "A", register)
    b = make_node("nv", 913_016, "B", register)
    phi_plus = np.zeros((4, 4), dtype=complex)
    phi_plus[np.ix_([0, 3], [0, 3])] = 0.5
    xx = np.kron(SX, SX)
    values = []
    for _ in range(1200):
        a._draw_bath()
        b._draw_bath()
        register.set_pair("A", "B", phi_plus)
        decoupled_hold(a, 800_000, [Y_PHASE])
        decoupled_hold(b, 800_000, [Y_PHASE])
        values.append(float(np.trace(register.rho @ xx).real))  # Y on both: XX keeps
    expected = hahn_expected(a.truth, 0.8e-3, 1) * hahn_expected(b.truth, 0.8e-3, 1)
    expected /= contrast(a.truth) * contrast(b.truth)
    assert_mean(np.array(values), expected)


# ion ------------------------------------------------------------------------------------------
def test_ion_free_decay_and_echo_follow_its_truth():
    node = make_node("ion", 913_020)
    truth = node.truth
    ramsey = hold_shots(node, round(truth.t2star_s * 1e9), [], 1500)
    assert_mean(ramsey, contrast(truth) * float(np.exp(-1 - truth.t2star_s / truth.t2_s)))
    t_s = truth.t2_hahn_s
    echo = hold_shots(node, round(t_s * 1e9), [Y_PHASE], 1500)
    assert_mean(echo, hahn_expected(truth, t_s, 1))
    # decoupling: XY-8 x 4 keeps a good part of the coherence over 5 s, where a Hahn echo
    # keeps none (exp(-(5 s / T2_hahn)^3) < 1e-16)
    long = hold_shots(node, 5_000_000_000, XY8 * 4, 400)
    assert_mean(long, hahn_expected(truth, 5.0, 32))
    assert long.mean() > 0.5


# host latency through the sequencer ---------------------------------------------------------
def _sequencer_hold(wait_for_host: bool, seed: int) -> tuple[float, float]:
    """The real simulated sequencer (in-process, no pty) runs a program that holds an NV
    superposition across a WAIT_HERALD; the host writes the herald ~0.2 s of wall time after
    RUN, or before the program reaches the wait. Returns the time the memory's physics
    advanced (s) and the length of its transverse Bloch vector (the bath's phase is unitary
    per shot, so this is the Markovian decay alone: exp(-t / T2), deterministic)."""
    physics = make_node("nv", seed)
    node = SimNode("A", physics)  # no optics: every light is off
    seq = SimSequencer("A:sequencer", node, 1)
    program = assemble("WAIT 1000\nWAIT_HERALD r1, 2s\nEVENT 1, r1\nHALT")

    async def run() -> None:
        seq._load("", block=encode(program.instructions))
        seq._start()  # the program's task runs from the next await on
        if not wait_for_host:
            seq._herald("1")  # already written when the program gets there
        else:
            await asyncio.sleep(0.2)
            seq._herald("1")
        deadline = time.monotonic() + 5
        while seq.status != "HALTED":
            assert time.monotonic() < deadline, seq.status
            await asyncio.sleep(0.005)

    initialise(physics)
    node.now_ns = start_ns = physics.now_ns
    asyncio.run(run())
    node.advance(0)
    rho = physics.register.reduced("A")
    return (physics.now_ns - start_ns) * 1e-9, float(2 * abs(rho[0, 1]))


def test_host_latency_lets_the_memory_decay_in_wall_time():
    """While the sequencer waits for its host, its clock runs at wall speed and so does the
    memory's physics: 0.2 s of host latency costs the NV's Markovian exp(-0.2 s / T2) (and
    T1's exp(-t / T1))."""
    waited_s, coherence = _sequencer_hold(True, 913_030)
    truth = draw_truth("nv", np.random.default_rng(913_030))
    assert 0.19 < waited_s < 1.5
    c0 = contrast(truth)
    markov = np.exp(-waited_s / truth.t2_s - waited_s / truth.t1_s)
    assert coherence == pytest.approx(c0 * markov, rel=1e-6)
    assert coherence < 0.84
    quick_s, quick = _sequencer_hold(False, 913_031)
    assert quick_s == pytest.approx(1e-6)
    assert quick == pytest.approx(
        contrast(draw_truth("nv", np.random.default_rng(913_031))), abs=1e-5
    )
