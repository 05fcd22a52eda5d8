"""The network figures' computations (bench/network_figures.py) as pure code: the exact swap,
GHZ operation and teleportation on density matrices against closed forms written here (Dür
et al. 1999's Werner swap, Horodecki et al. 1999's (2F + 1)/3, a Pauli channel's 1 - 2/3 q),
the averaging over the second link's attempts against brute-force sums and against the
planning model's stored state, and the simulator's column read back from network session
files written with the node's own writer. No sockets, no daemons."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from bench import network_figures as nf
from bench.published import SETS, STATUSES
from calibration.planning import Memory, single_click, stored_state
from controller.data.networkfile import NetworkSessionFile
from controller.network.estimators import CARDINAL_STATES, GHZ_SETTINGS
from controller.network.pauli import werner_swap_fidelity

PSI_PLUS = nf.PSI_PLUS
PERFECT = nf.Terms(move=False, memory=False, ends=False, gate=False, readout=False)


def werner(fidelity: float) -> np.ndarray:
    p = (4 * fidelity - 1) / 3
    return p * np.outer(PSI_PLUS, PSI_PLUS).astype(complex) + (1 - p) * np.eye(4) / 4


def pairs_of(ab: np.ndarray, bc: np.ndarray) -> nf.Pairs:
    f = lambda rho: float(np.real(PSI_PLUS @ rho @ PSI_PLUS))  # noqa: E731
    return nf.Pairs(ab, bc, 1e-4, 1e-4, f(ab), f(ab), f(bc))


@pytest.fixture(scope="module")
def setup() -> nf.Setup:
    return nf.Setup.of(SETS["Pompili 2021"])


def test_every_published_value_has_a_source_and_a_known_status():
    for parameters in SETS.values():
        for name, value in parameters.items():
            assert value.status in STATUSES, name
            assert value.source, name


@pytest.mark.parametrize(("f1", "f2"), [(1.0, 1.0), (0.9, 0.8), (0.75, 0.6), (0.5, 0.5)])
def test_the_exact_swap_of_werner_pairs_is_the_werner_formula(setup, f1, f2):
    swapped = nf.swap(pairs_of(werner(f1), werner(f2)), setup, PERFECT)
    assert float(np.real(PSI_PLUS @ swapped @ PSI_PLUS)) == pytest.approx(
        werner_swap_fidelity(f1, f2), abs=1e-12
    )
    assert np.trace(swapped).real == pytest.approx(1.0)


def test_a_wrong_parity_is_a_wrong_frame(setup):
    """Perfect pairs, each parity misread with its error: F = P(both bits right)."""
    s = replace(setup, readout_f0=0.9, readout_f1=0.96, memory_readout_f=0.97)
    only_readout = replace(PERFECT, readout=True)
    f = nf.swap_fidelity(pairs_of(werner(1.0), werner(1.0)), s, only_readout)
    assert f == pytest.approx((1 - s.electron_error) * 0.97, abs=1e-12)


def test_the_gate_error_is_a_depolarising_channel_of_that_average_fidelity():
    """Average gate fidelity of rho -> depolarise(rho) over a 2-design: (d F_e + 1)/(d + 1)
    with F_e its entanglement fidelity, computed on a maximally entangled state of the pair
    with two reference qubits."""
    gate = 0.97
    bell = np.kron(np.array([1, 0, 0, 1]) / math.sqrt(2), np.array([1, 0, 0, 1]) / math.sqrt(2))
    # qubits (r1, s1, r2, s2) -> (r1, r2, s1, s2): the system pair adjacent
    order = np.transpose(bell.reshape([2] * 4), (0, 2, 1, 3)).reshape(16)
    rho = np.outer(order, order).astype(complex)
    out = nf.depolarise_pair(rho, 2, 4, gate)
    entanglement = float(np.real(order @ out @ order))
    assert (4 * entanglement + 1) / 5 == pytest.approx(gate, abs=1e-12)


def test_the_ghz_stabilisers_give_the_state_fidelity_and_perfect_pairs_give_one(setup):
    perfect = pairs_of(werner(1.0), werner(1.0))
    assert nf.ghz_fidelity(perfect, setup, PERFECT) == pytest.approx(1.0)
    for f1, f2 in ((0.9, 0.8), (0.7, 0.95)):
        pairs = pairs_of(werner(f1), werner(f2))
        rho = nf.ghz_state(pairs, setup, PERFECT)
        assert nf.ghz_fidelity(pairs, setup, PERFECT) == pytest.approx(
            float(np.real(nf.GHZ @ rho @ nf.GHZ)), abs=1e-12
        )
    assert len(GHZ_SETTINGS) == 5


def test_readout_contrast_scales_each_stabiliser(setup):
    """Perfect pairs: every signed stabiliser is +1, scaled by its qubits' contrasts (A, C:
    the electron's ce, B: the memory's cm); the GHZ operation's own electron readout errs
    with e and then leaves X on C, which flips the stabilisers with Z or Y on C (ZIZ, IZZ,
    XYY, YXY)."""
    s = replace(setup, readout_f0=0.9, readout_f1=0.98, memory_readout_f=0.95)
    pairs = pairs_of(werner(1.0), werner(1.0))
    measured = nf.ghz_fidelity(pairs, s, replace(PERFECT, readout=True))
    ce, cm, e = s.electron_contrast, 2 * s.memory_readout_f - 1, s.electron_error
    good = 1 + ce * cm + ce * ce + cm * ce + 4 * ce * cm * ce
    flipped = 1 + ce * cm - ce * ce - cm * ce + (1 - 1 - 1 + 1) * ce * cm * ce
    assert measured == pytest.approx(((1 - e) * good + e * flipped) / 8, abs=1e-12)


@pytest.mark.parametrize("fidelity", [1.0, 0.9, 0.7, 0.5])
def test_teleportation_through_a_werner_pair_is_two_f_plus_one_over_three(setup, fidelity):
    assert nf.teleport_fidelity(werner(fidelity), setup, PERFECT) == pytest.approx(
        (2 * fidelity + 1) / 3, abs=1e-12
    )


def test_teleportation_with_misread_parities_is_a_pauli_channel(setup):
    """A perfect resource; a Pauli error with probability q_P costs 2/3 of it on average over
    the cardinal states; the receiver's contrast c scales the rest: (1 + c (2F - 1))/2."""
    s = replace(setup, readout_f0=0.92, readout_f1=0.99, memory_readout_f=0.96)
    ez, ex = s.electron_error, 1 - s.memory_readout_f
    f = 1 - 2 / 3 * (ez + ex - ez * ex)
    expected = (1 + s.electron_contrast * (2 * f - 1)) / 2
    got = nf.teleport_fidelity(werner(1.0), s, replace(PERFECT, readout=True))
    assert got == pytest.approx(expected, abs=1e-12)
    assert len(CARDINAL_STATES) == 6


def test_the_mean_over_the_attempts_is_the_brute_force_sum():
    p, r = 3e-3, 0.9995
    for cutoff in (1, 10, 450, 5000):
        n = np.arange(1, cutoff + 1)
        weights = p * (1 - p) ** (n - 1)
        assert nf.mean_power(p, r, cutoff) == pytest.approx(
            float(np.sum(weights * r**n) / np.sum(weights)), rel=1e-10
        )
        attempts = np.sum(weights * n) + (1 - np.sum(weights)) * cutoff
        assert nf.mean_attempts(p, cutoff) == pytest.approx(float(attempts), rel=1e-10)
    n = np.arange(1, 200000)
    assert nf.mean_power(p, r, math.inf) == pytest.approx(
        float(np.sum(p * (1 - p) ** (n - 1) * r**n)), rel=1e-8
    )


def test_the_stored_pair_is_the_planning_models_at_a_fixed_number_of_attempts():
    """With one attempt count (p = 1 at the cut-off: n = cutoff surely) the benchmark's
    dephasing of the moved pair is calibration.planning.stored_state's."""
    memory = Memory(1400.0, 0.5, 1.0, 0.94)
    s = replace(nf.Setup.of(SETS["Pompili 2021"]), memory=memory)
    herald = single_click(s.alpha_ab, nf.hardware_link(s.phase_ab_deg))
    ab, _ = nf.link_pair(s.alpha_ab, s.alpha_ab, s.phase_ab_deg)
    n = 300
    per = nf.memory_attempt_decay(s.alpha_bc, memory) * math.exp(-s.attempt_s / memory.t2_s)
    ours = nf.dephase(stored_state(ab, memory, qubit=1), 1, per**n, 2)
    theirs = stored_state(ab, memory, [(n, s.alpha_bc)], n * s.attempt_s, qubit=1)
    assert np.allclose(ours, theirs, atol=1e-12)
    assert herald.p_success > 0


def test_the_fitted_phase_noise_gives_the_published_link_fidelity(setup):
    parameters = SETS["Pompili 2021"]
    for alpha, phase, key in (
        (setup.alpha_ab, setup.phase_ab_deg, "link_fidelity_ab"),
        (setup.alpha_bc, setup.phase_bc_deg, "link_fidelity_bc"),
    ):
        assert 0 < phase < nf.MAX_PHASE_DEG
        f = single_click(alpha, nf.hardware_link(phase)).fidelity
        assert f == pytest.approx(parameters[key].value, abs=1e-9)


def test_each_mechanism_costs_fidelity_and_the_benchmark_reports_every_set(tmp_path):
    result = nf.run(plot_path=tmp_path / "cutoffs.png")
    assert result["plot"] is None or (tmp_path / "cutoffs.png").stat().st_size > 0
    names = {s["set"] for s in result["sets"]}
    assert names == set(SETS)
    for s in result["sets"]:
        for row in s["rows"]:
            values = [v for _, v in row["steps"]]
            assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values))
            assert row["simulator"] is None  # no session files given: "not yet"
            assert row["difference"] == pytest.approx(row["model"] - row["paper"])
    for key in ("beyond", "beyond_short_memory"):
        policy = result[key]["policy"]
        cutoffs = [p["cutoff"] for p in policy]
        assert cutoffs == sorted(cutoffs, reverse=True)  # a higher minimum cuts off sooner
        fidelities = [p["fidelity"] for p in policy]
        assert fidelities == sorted(fidelities)  # and delivers better pairs
    # the policy follows the memory: a worse memory, a sooner cut-off for the same minimum
    long, short = result["beyond"]["policy"], result["beyond_short_memory"]["policy"]
    assert all(a["cutoff"] > b["cutoff"] for a, b in zip(long, short, strict=True))


def _file(tmp_path, application: str) -> NetworkSessionFile:
    return NetworkSessionFile(
        tmp_path / f"{application}.h5",
        session=application,
        node="B",
        role="repeater",
        application=application,
        request={},
        software_version="test",
    )


def test_the_simulator_column_reads_the_network_session_files(tmp_path):
    """Perfect results give 1; one flipped result per basis moves the figure by the known
    amount; discarded pairs are not counted."""
    entangle = _file(tmp_path, "entangle")
    sign = {"X": 1, "Y": 1, "Z": -1}
    for k in range(30):
        basis = "XYZ"[k % 3]
        pair = f"p{k}"
        entangle.record(pair, "delivered", link_pairs=("a", "b"))
        second = sign[basis] if k >= 3 else -sign[basis]  # the first of each basis wrong
        entangle.measured(pair, first=(basis, 1), second=(basis, second))
    entangle.record("lost", "discarded", link_pairs=("c", "d"), cause="cutoff", reason="x")
    entangle.close("completed")
    ghz = _file(tmp_path, "ghz")
    for k, setting in enumerate([s for s in GHZ_SETTINGS for _ in range(4)]):
        signs = {
            "ZZZ": (1, 1, 1),
            "XXX": (1, 1, 1),
            "XYY": (1, 1, -1),
            "YXY": (1, 1, -1),
            "YYX": (1, -1, 1),
        }[setting]
        shot = f"g{k}"
        ghz.record(shot, "delivered", link_pairs=("a", "b"))
        ghz.measured(
            shot,
            first=(setting[0], signs[0]),
            repeater=(setting[1], signs[1]),
            second=(setting[2], signs[2]),
        )
    ghz.close("completed")
    teleport = _file(tmp_path, "teleport")
    for k, (state, (basis, good)) in enumerate(
        [item for item in CARDINAL_STATES.items() for _ in range(5)]
    ):
        pair = f"t{k}"
        teleport.record(pair, "delivered", link_pairs=("a", "b"), state=state)
        teleport.measured(pair, state=state, second=(basis, good))
    teleport.close("completed")
    got = nf.measured_figures([entangle.path, ghz.path, teleport.path])
    # each basis: 10 pairs, one wrong: mean 0.8; F = (1 + 3 x 0.8)/4
    assert got["swap_fidelity"] == pytest.approx((1 + 3 * 0.8) / 4)
    assert got["ghz_fidelity"] == pytest.approx(1.0)
    assert got["teleport_fidelity"] == pytest.approx(1.0)
    assert nf.measured_figures([]) == {}


def test_the_feed_forward_latency_is_read_from_the_recorded_time_stamps(tmp_path):
    """bench/network_daemons.py's latency: each end's frame-applied stamp minus the midpoint's
    herald of the second link pair (matched by the link pair's shot and attempt), and the
    stages, from files written by the nodes' own writer; p50/p99 as numpy's percentiles of
    those differences; a discarded pair, a pair with no herald and an unmeasured stamp are
    left out."""
    from bench.network_daemons import feedforward_latencies, herald_row, percentiles
    from controller.data.networkfile import read_network_session
    from controller.data.sessionfile import HERALD_ROW

    rng = np.random.default_rng(7)
    count = 40
    heralds = np.zeros(count + 1, dtype=HERALD_ROW)
    files = {
        end: NetworkSessionFile(
            tmp_path / f"{end}.h5",
            session="s",
            node=end,
            role="end",
            application="entangle",
            request={},
            software_version="test",
        )
        for end in "AC"
    }
    expected: dict[str, list[float]] = {"A": [], "C": []}
    stages: dict[str, list[float]] = {"to_bsm": [], "to_delivery": []}
    delivered_at: dict[str, float] = {}
    for k in range(count):
        t_herald = 1000.0 + 10 * k
        # the midpoint's row: a shot and attempt other than k's neighbours', so a mismatch
        # on either would be seen
        heralds[k] = (k + 1, 3 * k, 5000 + k, 17 * k + 1, 1, t_herald, t_herald)
        link_second = f"m2s:{3 * k}:{17 * k + 1}"
        t_delivered = t_herald + rng.uniform(0.01, 0.05)
        t_bsm = t_delivered + rng.uniform(0.1, 0.3)
        applied = (t_bsm + rng.uniform(1e-4, 2e-3), t_bsm + rng.uniform(1e-4, 8e-3))
        delivered_at[link_second] = t_delivered
        for end, index in (("A", 0), ("C", 1)):
            files[end].record(
                f"p{k}",
                "delivered",
                link_pairs=(f"m1s:{k}:1", link_second),
                t_bsm=t_bsm,
                applied=(applied[0], None) if end == "A" else (None, applied[1]),
            )
            expected[end].append(applied[index] - t_herald)
        stages["to_bsm"].append(t_bsm - t_herald)
        stages["to_delivery"].append(t_delivered - t_herald)
    # left out: a discarded pair, a pair M2 has no herald of, a frame not applied (NaN)
    heralds[count] = (count + 1, 999, 9999, 5, 1, 1.0, 1.0)
    files["A"].record("lost", "discarded", link_pairs=("m1s:0:1", "m2s:999:5"), cause="timeout")
    files["A"].record("unknown", "delivered", link_pairs=("m1s:0:1", "m2s:77:77"), t_bsm=5.0)
    files["C"].record("open", "delivered", link_pairs=("m1s:0:1", "m2s:0:1"), t_bsm=1000.5)
    for f in files.values():
        f.close("completed")
    rows = {end: read_network_session(tmp_path / f"{end}.h5")["pairs"] for end in "AC"}

    def sent(pair_id: str) -> float | None:
        row = herald_row(pair_id, heralds)
        return None if row is None else float(row["t_sent"])

    assert herald_row("m2s:3:18", heralds)["seq"] == 2
    assert herald_row("m2s:3:17", heralds) is None  # same shot, other attempt
    latencies = feedforward_latencies(rows, ("A", "C"), sent, delivered_at.get)
    for end in "AC":
        got = latencies[end]
        np.testing.assert_allclose(got["herald_to_applied"], expected[end], atol=1e-9)
        np.testing.assert_allclose(got["herald_to_bsm"], stages["to_bsm"], atol=1e-9)
        np.testing.assert_allclose(
            got["herald_to_delivered_at_b"], stages["to_delivery"], atol=1e-9
        )
        np.testing.assert_allclose(
            got["herald_to_bsm"] + got["bsm_to_applied"], expected[end], atol=1e-9
        )
        p = percentiles(got["herald_to_applied"])
        ordered = np.sort(expected[end])
        assert p["n"] == count and p["max"] == pytest.approx(ordered[-1])
        # 40 values: p50 halfway between the 20th and 21st, p99 at 0.61 of the way from the
        # 39th to the 40th (numpy's linear rule: rank 0.99 x 39 = 38.61, zero-based)
        assert p["p50"] == pytest.approx((ordered[19] + ordered[20]) / 2)
        assert p["p99"] == pytest.approx(ordered[38] + 0.61 * (ordered[39] - ordered[38]))
    assert percentiles(np.array([]))["n"] == 0


def test_the_published_run_s_truth_figures_fill_the_simulator_column():
    """controller.harness.published_network's summary: the paper's outcome-00 swap is the
    swaps after which the ends correct nothing (frame I, I), the any-outcome one all swaps,
    the GHZ fidelity (1 + the seven stabilisers' means) / 8; network_figures puts them in the
    simulator's column beside the paper's."""
    from controller.harness.published_network import Figures

    figures = Figures()
    for frame, fidelity, attempts in (
        (["I", "I"], 0.6, 100),
        (["Z", "I"], 0.4, 3000),
        (["I", "I"], 0.5, 200),
        (["Z", "X"], 0.3, 4000),
    ):
        figures.swaps.append(
            {"bell_state": "?", "frame": frame, "fidelity": fidelity, "bc_attempts": attempts}
        )
    stabilisers = [s for terms in GHZ_SETTINGS.values() for s, _ in terms]
    figures.ghz = {s: [0.5, 0.3] for s in stabilisers}
    figures.ghz_attempts = [10, 20]
    summary = figures.summary()
    assert summary["swap_fidelity"] == pytest.approx(0.55)
    assert summary["swap_fidelity_any_outcome"] == pytest.approx(0.45)
    assert summary["swap_fidelity_fewer_attempts"] == pytest.approx(0.55)
    assert summary["swap_fidelity_more_attempts"] == pytest.approx(0.35)
    assert len(stabilisers) == 7 and summary["ghz_fidelity"] == pytest.approx((1 + 7 * 0.4) / 8)
    result = nf.run(simulated=summary)
    rows = {r["figure"]: r["simulator"] for s in result["sets"] for r in s["rows"]}
    assert rows["swap_fidelity"] == pytest.approx(0.55)
    assert rows["ghz_fidelity"] == pytest.approx(0.475)
    assert rows["teleport_fidelity"] is None  # not measured: "not yet"
