"""The link layer's memory as pure code (controller/link/memory.py) and the planning model of a
memory qubit (calibration/planning.py): delivery into a memory qubit, the cut-off, the attempt
budget, and the model's limits and its agreement with Kalb et al. 2018's Eq. (2). No sockets,
no simulator: every expected number is computed here from the documented formula."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from calibration.planning import (
    Memory,
    attempts_before,
    bell_state,
    fidelity,
    memory_attempt_decay,
    memory_coherence,
    memory_from_calibration,
    memory_n_1e,
    stored_fidelity,
    stored_state,
)
from controller.labconfig import load_lab
from controller.link.memory import CUT_OFF, UNBOUNDED, Discard, Move, NodeMemory, Refused
from qnode.errors import QnodeError

LABS = Path(__file__).resolve().parent.parent / "labs"

# an NV memory as the calibration would store it: N_1/e 1000 attempts at alpha 0.05, T2 1 s
# under decoupling, a move that keeps 0.98 of a perfect pair
MEMORY = Memory(n_1e_at_alpha=1000.0, alpha_ref=0.05, t2_s=1.0, move_fidelity=0.98)
LAM = (4 * 0.98 - 1) / 3  # the move's depolarising parameter: F_m = lam + (1 - lam)/4


def expected(f0: float, blocks: list[tuple[int, float]], seconds: float) -> float:
    """The documented formula, written out independently of the module: a psi+/psi- pair
    (P = 1) through the move, then the memory half's coherence
    d = prod (1 - alpha k)^n x e^(-t/T2), with k = (1 - e^(-1/N_1e)) / alpha_ref."""
    k = (1 - math.exp(-1 / 1000.0)) / 0.05
    d = math.exp(-seconds / 1.0)
    for n, alpha in blocks:
        d *= (1 - alpha * k) ** n
    f = LAM * f0 + (1 - LAM) / 4
    p = LAM + (1 - LAM) / 2
    return p / 2 + (f - p / 2) * d


def node_b() -> NodeMemory:
    """B of the three-node lab: electron "B", memory "B.c13", links AB (peer A), BC (peer C)."""
    return NodeMemory.for_node(load_lab(LABS / "sim_three_node.toml"), "B", MEMORY)


def herald_ab(b: NodeMemory, now: float = 0.0, f0: float = 0.85, fmin: float = 0.7) -> str:
    b.on_heralded(
        link="AB",
        pair_id="s1:7:120",
        outcome="psi_plus",
        fidelity=f0,
        fidelity_min=fmin,
        now=now,
    )
    return "s1:7:120"


# the planning model ----------------------------------------------------------------------------
def test_a_fresh_stored_pair_has_the_moves_fidelity():
    """n = 0, t = 0: F0 through the move's depolarising channel, lam F0 + (1 - lam)/4; a perfect
    pair keeps exactly the move's fidelity."""
    assert stored_fidelity(1.0, MEMORY) == pytest.approx(0.98, abs=1e-12)
    assert stored_fidelity(0.85, MEMORY) == pytest.approx(LAM * 0.85 + (1 - LAM) / 4, abs=1e-12)
    perfect_move = Memory(1000.0, 0.05, 1.0, 1.0)
    assert stored_fidelity(0.85, perfect_move) == pytest.approx(0.85, abs=1e-12)


def test_a_pair_dephased_without_end_is_a_coin():
    """n -> infinity: 1/2 for a psi+/psi- pair after a perfect move (P/2 in general: after the
    0.98 move, P = lam + (1 - lam)/2)."""
    perfect_move = Memory(1000.0, 0.05, 1.0, 1.0)
    assert stored_fidelity(0.9, perfect_move, [(10**7, 0.05)]) == pytest.approx(0.5, abs=1e-9)
    assert stored_fidelity(0.9, MEMORY, [(10**7, 0.05)]) == pytest.approx(
        (LAM + (1 - LAM) / 2) / 2, abs=1e-9
    )
    assert stored_fidelity(0.9, perfect_move, [], 1e3) == pytest.approx(0.5, abs=1e-9)


def test_the_fidelity_falls_with_every_attempt_and_faster_at_larger_alpha():
    values = [stored_fidelity(0.85, MEMORY, [(n, 0.05)]) for n in range(0, 5000, 250)]
    assert all(a > b for a, b in itertools.pairwise(values))
    by_alpha = [stored_fidelity(0.85, MEMORY, [(500, a)]) for a in (0.01, 0.03, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in itertools.pairwise(by_alpha))
    assert stored_fidelity(0.85, MEMORY, [], 0.5) < stored_fidelity(0.85, MEMORY, [], 0.1)


def test_n_1e_is_the_calibrated_one_at_its_alpha_and_inverse_in_alpha():
    """The calibrated point is reproduced, and N_1/e scales as 1/alpha (for small alpha k)."""
    assert memory_n_1e(0.05, MEMORY) == pytest.approx(1000.0, rel=1e-9)
    assert memory_n_1e(0.1, MEMORY) == pytest.approx(500.0, rel=1e-3)
    assert memory_n_1e(0.025, MEMORY) == pytest.approx(2000.0, rel=1e-3)
    assert memory_n_1e(0.0, MEMORY) == math.inf
    assert memory_coherence([(1000, 0.05)], 0.0, MEMORY) == pytest.approx(math.exp(-1), rel=1e-9)


def test_the_formula_matches_the_density_matrix():
    """stored_fidelity's scalar formula against the channels applied to a 4x4 psi+/psi-
    mixture, on either node's half, after attempts at two alphas and 20 ms."""
    rho = 0.85 * bell_state("psi_plus") + 0.15 * bell_state("psi_minus")
    blocks = [(300, 0.05), (200, 0.1)]
    for qubit in (0, 1):
        state = stored_state(rho, MEMORY, blocks, 0.02, qubit=qubit)
        assert np.trace(state).real == pytest.approx(1.0)
        assert fidelity(state, "psi_plus") == pytest.approx(expected(0.85, blocks, 0.02))
    assert stored_fidelity(0.85, MEMORY, blocks, 0.02) == pytest.approx(
        expected(0.85, blocks, 0.02), abs=1e-12
    )


def test_a_single_click_pair_decays_to_half_its_heralded_population():
    """A pair with |00> population (single-click: both nodes bright) ends at P/2 < 1/2; the
    scalar formula with its parity agrees with the density matrix."""
    rho = 0.9 * bell_state("psi_plus") + 0.1 * np.diag([1.0, 0, 0, 0]).astype(complex)
    f0 = fidelity(rho, "psi_plus")
    state = stored_state(rho, MEMORY, [(800, 0.05)], 0.01)
    assert fidelity(state, "psi_plus") == pytest.approx(
        stored_fidelity(f0, MEMORY, [(800, 0.05)], 0.01, parity=0.9), abs=1e-12
    )
    gone = Memory(1000.0, 0.05, 1.0, 1.0)
    assert stored_fidelity(f0, gone, [(10**7, 0.05)], parity=0.9) == pytest.approx(0.45)


def test_kalb_2018_equation_2_with_the_groups_analysis_parameters():
    """Kalb et al., PRA 97, 062330 (2018), Eq. (2) (from Blok et al., Faraday Discuss. 184, 173
    (2015)): the coherence after N attempts is (1 - p + p e^(-(2 pi dw tau)^2/2))^N, and
    N_1/e = -1/ln(1 - p + p e^(...)). With the parameters of the group's published analysis
    code (coupling dw = 80 kHz, mean reset time tau = 220 ns, p = 0.5 of attempts disturbing
    the electron; nobbok/NuclearSpinSimulation, parameters.py): N_1/e = 328 attempts. A memory
    calibrated at that point (alpha_ref = p) must reproduce the paper's curve at every N."""
    k = 1 - math.exp(-((2 * math.pi * 80e3 * 220e-9) ** 2) / 2)
    per_attempt = 1 - 0.5 + 0.5 * math.exp(-((2 * math.pi * 80e3 * 220e-9) ** 2) / 2)
    n_1e = -1 / math.log(per_attempt)
    assert n_1e == pytest.approx(328, abs=1)
    memory = Memory(n_1e_at_alpha=n_1e, alpha_ref=0.5, t2_s=1.0, move_fidelity=1.0)
    assert memory.attempt_dephasing == pytest.approx(k, rel=1e-9)
    for n in (10, 100, 328, 2000):
        assert memory_coherence([(n, 0.5)], 0.0, memory) == pytest.approx(per_attempt**n)
        # the carbon's own fidelity in that code is C/2 + 1/2; the Bell pair's is the same
        assert stored_fidelity(1.0, memory, [(n, 0.5)]) == pytest.approx(per_attempt**n / 2 + 0.5)


def test_the_memory_comes_from_its_calibrated_names_or_is_refused():
    values = {
        "c13_n_1e_at_alpha": 1000.0,
        "c13_n_1e_alpha": 0.05,
        "c13_t2_s": 1.0,
        "c13_move_fidelity": 0.98,
    }
    assert memory_from_calibration(values, "B") == MEMORY
    with pytest.raises(QnodeError, match=r"B\.c13_t2_s, B\.c13_move_fidelity"):
        memory_from_calibration({"c13_n_1e_at_alpha": 1000.0, "c13_n_1e_alpha": 0.05}, "B")
    with pytest.raises(QnodeError, match=r"move's fidelity 0\.1"):
        memory_from_calibration({**values, "c13_move_fidelity": 0.1}, "B")
    with pytest.raises(ValueError, match="k > 1"):
        Memory(n_1e_at_alpha=0.5, alpha_ref=0.05, t2_s=1.0, move_fidelity=0.98)


def test_the_attempt_budget_is_the_exact_crossing():
    """attempts_before: the last m with F(m) >= minimum; F(m + 1) is below. Computed here from
    the formula, with each attempt taking 10 us of storage time too."""
    f0, fmin, alpha, attempt_s = 0.85, 0.7, 0.05, 10e-6
    m = attempts_before(fmin, f0, MEMORY, alpha, attempt_s=attempt_s)
    assert expected(f0, [(m, alpha)], m * attempt_s) >= fmin
    assert expected(f0, [(m + 1, alpha)], (m + 1) * attempt_s) < fmin
    # closed form: ln((fmin - P/2) / (F - P/2)) / ln(c e^(-attempt_s/T2))
    p = LAM + (1 - LAM) / 2
    f = LAM * f0 + (1 - LAM) / 4
    per = memory_attempt_decay(alpha, MEMORY) * math.exp(-attempt_s)
    assert m == math.floor(math.log((fmin - p / 2) / (f - p / 2)) / math.log(per))
    assert attempts_before(0.99, f0, MEMORY, alpha) == 0  # under it already
    assert attempts_before(0.4, f0, MEMORY, alpha) == 2**62  # never below: P/2 > 0.4


# the link layer's memory -----------------------------------------------------------------------
def test_the_node_knows_its_qubits_and_links_from_the_lab_file():
    b = node_b()
    assert list(b.holding) == ["B", "B.c13"]
    assert b.links == {"AB": "A", "BC": "C"}
    with pytest.raises(QnodeError, match="M1 is not a memory node"):
        NodeMemory.for_node(load_lab(LABS / "sim_three_node.toml"), "M1", MEMORY)


def test_a_heralded_pair_is_delivered_into_the_free_memory():
    b = node_b()
    pair_id = herald_ab(b, now=5.0)
    assert b.holding["B"] is not None and b.holding["B"].peer == "A"
    move = b.deliver_to_memory(pair_id, now=5.001)
    assert move == Move(pair_id, "AB", "B", "B.c13")
    stored = b.holding["B.c13"]
    assert stored is not None and b.holding["B"] is None
    assert (stored.link, stored.peer, stored.outcome) == ("AB", "A", "psi_plus")
    assert (stored.heralded_at, stored.stored_at) == (5.0, 5.001)
    assert stored.goodness == pytest.approx(LAM * 0.85 + (1 - LAM) / 4)
    assert stored.as_dict()["attempts"] == {}


def test_delivery_is_refused_when_no_memory_is_free():
    b = node_b()
    first = herald_ab(b)
    assert isinstance(b.deliver_to_memory(first, now=0.0), Move)
    b.on_heralded(
        link="BC", pair_id="s2:1:40", outcome="psi_minus", fidelity=0.85, fidelity_min=0.7, now=1e-3
    )
    refused = b.deliver_to_memory("s2:1:40", now=1e-3)
    assert refused == Refused(
        "s2:1:40", f"no free memory qubit on B: B.c13 holds {first} of link AB"
    )
    assert b.holding["B"] is not None and b.holding["B"].pair_id == "s2:1:40"  # stays put


def test_delivery_is_refused_without_a_calibrated_memory():
    b = NodeMemory.for_node(load_lab(LABS / "sim_three_node.toml"), "B", None)
    refused = b.deliver_to_memory(herald_ab(b), now=0.0)
    assert isinstance(refused, Refused) and "memory is not calibrated" in refused.reason
    assert "c13_move_fidelity" in refused.reason


def test_a_pair_the_move_alone_takes_under_its_minimum_is_cut_off_at_once():
    b = node_b()
    pair_id = herald_ab(b, f0=0.71, fmin=0.705)  # after the move: lam 0.71 + (1 - lam)/4
    cut = b.deliver_to_memory(pair_id, now=0.0)
    assert isinstance(cut, Discard) and cut.reason == CUT_OFF
    assert cut.detail["expected_fidelity"] == pytest.approx(LAM * 0.71 + (1 - LAM) / 4)
    assert b.pairs() == []


def test_the_cut_off_fires_exactly_when_the_fidelity_crosses_the_minimum():
    """Attempts on BC in blocks of one: the pair survives every attempt at which the formula's
    fidelity is still >= the minimum and is discarded at the first below it, with the reason
    "cut-off", the numbers, and its peer to tell."""
    f0, fmin, alpha = 0.85, 0.7, 0.05
    crossing = next(n for n in range(1, 100_000) if expected(f0, [(n, alpha)], 0.0) < fmin)
    b = node_b()
    pair_id = herald_ab(b, f0=f0, fmin=fmin)
    b.deliver_to_memory(pair_id, now=0.0)
    for n in range(1, crossing):
        assert b.on_attempts("BC", 1, alpha, now=0.0) == [], f"cut at {n}, crossing {crossing}"
    [cut] = b.on_attempts("BC", 1, alpha, now=0.0)
    assert (cut.pair_id, cut.link, cut.peer, cut.qubit, cut.reason) == (
        pair_id,
        "AB",
        "A",
        "B.c13",
        CUT_OFF,
    )
    assert cut.detail["attempts"] == {"BC": crossing}
    assert cut.detail["expected_fidelity"] == pytest.approx(expected(f0, [(crossing, alpha)], 0))
    assert cut.detail["expected_fidelity"] < fmin <= expected(f0, [(crossing - 1, alpha)], 0)
    assert f"minimum {fmin:g}" in cut.message and f"BC {crossing}" in cut.message
    assert b.holding["B.c13"] is None


def test_storage_time_alone_cuts_a_pair_off():
    f0, fmin = 0.85, 0.7
    b = node_b()
    pair_id = herald_ab(b, now=100.0, f0=f0, fmin=fmin)
    b.deliver_to_memory(pair_id, now=100.0)
    # the crossing in time: (fmin - P/2) = (F - P/2) e^(-t/T2)
    p = LAM + (1 - LAM) / 2
    t_cross = -math.log((fmin - p / 2) / (LAM * f0 + (1 - LAM) / 4 - p / 2))
    assert b.on_time(100.0 + t_cross * 0.999) == []
    [cut] = b.on_time(100.0 + t_cross * 1.001)
    assert cut.reason == CUT_OFF and cut.detail["stored_s"] == pytest.approx(t_cross * 1.001)


def test_no_attempt_while_the_electron_holds_a_pair():
    b = node_b()
    pair_id = herald_ab(b)
    permit = b.may_attempt("BC", 0.05, now=0.0)
    assert not permit.allowed and permit.budget == 0
    assert f"the electron holds pair {pair_id} of AB" in permit.reason
    b.deliver_to_memory(pair_id, now=0.0)
    assert b.may_attempt("BC", 0.05, now=0.0).allowed


def test_the_permit_bounds_the_attempt_block_by_the_stored_pairs_cut_off():
    """The budget is the exact crossing of the stored pair; a block up to it is allowed, one
    attempt more is refused, and running the whole budget never cuts the pair off."""
    f0, fmin, alpha, attempt_s = 0.85, 0.7, 0.05, 10e-6
    b = node_b()
    pair_id = herald_ab(b, f0=f0, fmin=fmin)
    b.deliver_to_memory(pair_id, now=0.0)
    b.on_attempts("BC", 100, alpha, now=100 * attempt_s)  # some attempts already
    now = 100 * attempt_s
    permit = b.may_attempt("BC", alpha, now=now, attempt_s=attempt_s)
    m = permit.budget
    assert permit.allowed
    assert expected(f0, [(100 + m, alpha)], now + m * attempt_s) >= fmin
    assert expected(f0, [(101 + m, alpha)], now + (m + 1) * attempt_s) < fmin
    assert b.may_attempt("BC", alpha, now=now, attempts=m, attempt_s=attempt_s).allowed
    refused = b.may_attempt("BC", alpha, now=now, attempts=m + 1, attempt_s=attempt_s)
    assert not refused.allowed and refused.budget == m
    assert f"would take pair {pair_id} in B.c13 under its minimum fidelity 0.7" in refused.reason
    assert b.on_attempts("BC", m, alpha, now=now + m * attempt_s) == []  # the whole budget
    assert b.may_attempt("BC", alpha, now=now + m * attempt_s, attempt_s=attempt_s).budget == 0


def test_a_larger_alpha_leaves_fewer_attempts():
    b = node_b()
    b.deliver_to_memory(herald_ab(b), now=0.0)
    budgets = [b.may_attempt("BC", a, now=0.0).budget for a in (0.02, 0.05, 0.1, 0.2)]
    assert all(x > y for x, y in itertools.pairwise(budgets))
    assert budgets[1] == attempts_before(0.7, 0.85, MEMORY, 0.05)


def test_without_stored_pairs_nothing_bounds_the_attempts():
    b = node_b()
    permit = b.may_attempt("AB", 0.1, now=0.0, attempts=10**6)
    assert permit.allowed and permit.budget == UNBOUNDED
    refused = b.may_attempt("AC", 0.1, now=0.0)
    assert not refused.allowed and "B has no link AC (its links: AB, BC)" in refused.reason


def test_scheduling_never_destroys_a_needed_pair():
    """Whatever blocks a session asks for (random sizes, alphas and waits), running only what
    the permit allows never cuts a stored pair off nor reuses the electron."""
    rng = np.random.default_rng(7)
    f0, fmin = 0.85, 0.72
    b = node_b()
    pair_id = herald_ab(b, f0=f0, fmin=fmin)
    b.deliver_to_memory(pair_id, now=0.0)
    now, refused = 0.0, 0
    for _ in range(400):
        alpha = float(rng.choice([0.02, 0.05, 0.1]))
        block = int(rng.integers(1, 120))
        now += float(rng.exponential(1e-4))
        permit = b.may_attempt("BC", alpha, now=now, attempts=block, attempt_s=10e-6)
        if not permit.allowed:
            refused += 1
            block = min(block, permit.budget)
            if block == 0:
                continue
        now += block * 10e-6
        assert b.on_attempts("BC", block, alpha, now=now) == []
        assert b.on_time(now) == []
    assert refused > 0  # the budget did bound blocks
    stored = b.pair(pair_id)
    assert stored.goodness >= fmin
    # and it let the session use the pair's budget, not stop far short of it
    assert b.may_attempt("BC", 0.02, now=now, attempt_s=10e-6).budget < 120


def test_attempts_with_a_pair_in_the_electron_discard_it_with_the_reason():
    b = node_b()
    pair_id = herald_ab(b)
    [gone] = b.on_attempts("BC", 3, 0.05, now=0.0)
    assert (gone.pair_id, gone.peer, gone.qubit) == (pair_id, "A", "B")
    assert gone.message == "the electron was used for 3 attempts on BC"


def test_release_and_discard_free_the_qubit():
    b = node_b()
    pair_id = herald_ab(b)
    b.deliver_to_memory(pair_id, now=0.0)
    assert b.release(pair_id).pair_id == pair_id and b.free_memory() == "B.c13"
    pair_id = herald_ab(b)
    b.deliver_to_memory(pair_id, now=0.0)
    gone = b.discard(pair_id, "peer A discarded it: timeout")
    assert gone.message == "peer A discarded it: timeout" and b.pairs() == []
    with pytest.raises(QnodeError, match="B holds no pair"):
        b.release(pair_id)
    pair_id = herald_ab(b)
    b.deliver_to_memory(pair_id, now=0.0)
    failed = b.on_move_failed(pair_id, "gate sequence aborted")
    assert failed.message == "move into memory failed: gate sequence aborted"
    assert b.free_memory() == "B.c13"


def test_a_node_without_memory_qubits_refuses_to_store():
    ion = NodeMemory("I", [], {"IJ": "J"}, MEMORY)
    ion.on_heralded(
        link="IJ", pair_id="s9:1:3", outcome="psi_plus", fidelity=0.9, fidelity_min=0.8, now=0.0
    )
    assert ion.deliver_to_memory("s9:1:3", now=0.0) == Refused(
        "s9:1:3", "I has no memory qubit (lab file `memories`)"
    )
    with pytest.raises(QnodeError, match="cannot be negative"):
        ion.on_attempts("IJ", -1, 0.05, now=0.0)
