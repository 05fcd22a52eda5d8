"""A minimum fidelity for a pair delivered into memory is planned for what the memory leaves of
it (controller/link/plan.py, calibration/planning.py "a pair planned for the memory"): alpha is
chosen for the fidelity after the move (and, on a repeater, at the expected time of use after
the other link's attempts), a minimum out of reach after the move is refused up front naming
the move's fidelity. Before, alpha met the minimum as heralded and the move took every stored
pair under it at once (the three-node soak, seed 3: 264 cut-offs, 0 pairs).

Pure tests of the planning, then one session through the daemons of the three-node lab."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from calibration.planning import (
    MARGIN_SIGMAS,
    Hold,
    Link,
    Memory,
    Uncertainty,
    alpha_for_fidelity,
    attempts_before,
    conservative_held_fidelity,
    fidelity,
    fidelity_sigma,
    held_fidelity,
    herald_parity,
    memory_coherence,
    memory_from_calibration,
    single_click,
    stored_fidelity,
    stored_state,
)
from controller.labconfig import load_lab
from controller.link.memory import Discard, Move, NodeMemory
from controller.link.messages import ExpectationMap
from controller.link.plan import (
    Expectation,
    Storage,
    expectation,
    link_plan,
    stored_pair_alpha,
)
from hil_tests.test_memory_delivery import calibrate_memory_from_truth, memory_lab  # noqa: F401
from qnode.errors import QnodeError

LABS = Path(__file__).resolve().parent.parent / "labs"
THREE = LABS / "sim_three_node.toml"

# a link as an NV pair's calibration gives it: eta 3.5e-4, V 0.9, 5 deg of phase noise, dark
# counts of 20 Hz in 25 ns windows, initialisation 0.99, double excitation 0.04, with errors
LINK = Link(
    eta_a=3.5e-4,
    eta_b=3.5e-4,
    visibility=0.9,
    dark_prob=20 * 25e-9,
    phase_sigma_rad=math.radians(5),
    init_a=0.99,
    init_b=0.99,
    double_a=0.04,
    double_b=0.04,
    uncertainty=Uncertainty(
        visibility=0.03,
        init_a=0.003,
        init_b=0.003,
        phase_rad=math.radians(3),
        dark_rel=0.25,
        eta_rel=0.1,
        double_a=0.02,
        double_b=0.02,
    ),
)
MEMORY = Memory(n_1e_at_alpha=1000.0, alpha_ref=0.5, t2_s=10.0, move_fidelity=0.95)
"""The memory the three-node tests calibrate B with (hil_tests/test_memory_delivery.py)."""
LONG_LIVED = Memory(n_1e_at_alpha=2e5, alpha_ref=0.5, t2_s=10.0, move_fidelity=0.95)
"""A memory that keeps a pair through ~1e4 attempts of a second link (N_1/e 1e6 at 0.1)."""


def stored_in_b(memory: Memory, attempts: tuple = (), seconds: float = 0.0) -> Storage:
    return Storage("B.c13", Hold(memory, attempts, seconds), "test")


def planned_after(e: Expectation, hold: Hold) -> float:
    """The conservative fidelity of the planned pair through `hold`."""
    return conservative_held_fidelity("single_click", LINK, [hold], e.alpha)


# the planning model's part ---------------------------------------------------------------------
def test_a_held_pair_s_fidelity_is_each_outcome_s_state_through_the_memory():
    """held_fidelity (the affine formula with the herald's parity) against the density
    matrices: each outcome's heralded state through stored_state, by the outcomes' shares."""
    herald = single_click(0.2, LINK)
    hold = Hold(MEMORY, ((3000, 0.1),), 0.5)
    exact = sum(
        w * fidelity(stored_state(herald.states[k], MEMORY, list(hold.attempts), 0.5), k)
        for k, w in herald.weights.items()
    )
    assert held_fidelity(herald, hold) == pytest.approx(exact, abs=1e-12)
    assert 0.75 < herald_parity(herald) < 0.85  # about 1 - alpha: both bright otherwise
    # the margin carried through the memory: lam d of the heralded one
    sigma = fidelity_sigma("single_click", LINK, 0.2)
    planned = conservative_held_fidelity("single_click", LINK, [hold], 0.2)
    lam_d = MEMORY.move_depolarising * memory_coherence([(3000, 0.1)], 0.5, MEMORY)
    assert held_fidelity(herald, hold) - planned == pytest.approx(MARGIN_SIGMAS * sigma * lam_d)


# alpha for the fidelity after the move ---------------------------------------------------------
@pytest.mark.parametrize("fidelity_min", [0.5, 0.6, 0.7])
def test_alpha_is_chosen_for_the_fidelity_after_the_move(fidelity_min):
    """The old choice (alpha for the heralded minimum) leaves the pair under the minimum after
    the move, so NodeMemory cut it off at once; the new alpha is smaller, the largest whose
    conservative fidelity after the move meets the minimum, and NodeMemory stores the pair."""
    old = alpha_for_fidelity(fidelity_min, LINK)
    old_heralded = single_click(old, LINK).fidelity
    assert stored_fidelity(old_heralded, MEMORY) < fidelity_min  # the bug: cut off at the move
    e = expectation("single_click", LINK, fidelity_min, None, (), [stored_in_b(MEMORY)])
    assert e.alpha is not None and e.alpha < old
    assert e.fidelity_stored is not None and e.fidelity_stored >= fidelity_min
    assert planned_after(e, Hold(MEMORY)) >= fidelity_min - 1e-9
    bigger = conservative_held_fidelity("single_click", LINK, [Hold(MEMORY)], e.alpha * 1.02)
    assert bigger < fidelity_min  # the largest: the highest rate that meets it
    assert e.p_success == pytest.approx(single_click(e.alpha, LINK).p_success)
    assert e.fidelity_at_use == e.fidelity_stored  # no hold planned
    # NodeMemory (the cut-off) with the planned pair: stored, goodness >= the minimum
    for alpha, heralded, stored in ((old, old_heralded, False), (e.alpha, e.fidelity, True)):
        b = NodeMemory.for_node(load_lab(THREE), "B", MEMORY)
        b.on_heralded(
            link="AB",
            pair_id="s:1:1",
            outcome="psi_plus",
            fidelity=heralded,
            fidelity_min=fidelity_min,
            now=0.0,
        )
        moved = b.deliver_to_memory("s:1:1", now=0.0)
        assert isinstance(moved, Move if stored else Discard), (alpha, moved)
        if stored:
            assert b.pair("s:1:1").goodness >= fidelity_min


def test_a_minimum_out_of_reach_after_the_move_is_refused_naming_the_move():
    """0.75 is within the link's reach as heralded (0.779 planned at the best alpha) but not
    after a move that keeps 0.95 of a perfect pair: refused up front with the move's fidelity;
    so are an alpha given and Barrett-Kok when the move takes them under."""
    alpha_for_fidelity(0.75, LINK)  # as heralded: reachable
    with pytest.raises(QnodeError) as refused:
        expectation("single_click", LINK, 0.75, None, (), [stored_in_b(MEMORY)])
    message = str(refused.value)
    assert "out of reach for a pair stored in B.c13" in message
    assert "keeps 0.95 (B.c13_move_fidelity) of a perfect pair" in message
    assert "after the move" in message and "best alpha" in message
    with pytest.raises(QnodeError, match=r"alpha 0\.2 \(heralded 0\.7\d\d\) leaves 0\.6"):
        expectation("single_click", LINK, 0.7, 0.2, (), [stored_in_b(MEMORY)])
    bk = expectation("barrett_kok", LINK, 0.0, None)
    moved = stored_fidelity(bk.fidelity, MEMORY)
    with pytest.raises(QnodeError, match=r"Barrett-Kok on this link \(heralded"):
        expectation("barrett_kok", LINK, moved - 0.001, None, (), [stored_in_b(MEMORY)])
    # an alpha given that meets it after the move is kept
    ok = expectation("single_click", LINK, 0.6, 0.2, (), [stored_in_b(MEMORY)])
    assert ok.alpha == 0.2 and ok.fidelity_stored is not None and ok.fidelity_stored >= 0.6
    # without storage the heralded minimum is all that counts (unchanged)
    assert expectation("single_click", LINK, 0.75, None).fidelity_stored is None


# alpha for the fidelity at the expected time of use ----------------------------------------------
def test_on_a_repeater_alpha_meets_the_minimum_at_the_expected_time_of_use():
    """A long-lived memory holding the pair through 1 / p of the other link's attempts: the
    alpha is chosen so that the conservative fidelity then meets the minimum (a smaller alpha
    than after the move alone), and NodeMemory's budget at the other link's alpha covers those
    attempts."""
    other = expectation("single_click", LINK, 0.7, None)
    attempts = math.ceil(1 / other.p_success)
    hold = Hold(LONG_LIVED, ((attempts, other.alpha),), attempts * 10e-6)
    e = expectation("single_click", LINK, 0.7, None, (), [Storage("B.c13", hold, "after BC")])
    moved_only = expectation("single_click", LINK, 0.7, None, (), [stored_in_b(LONG_LIVED)])
    assert e.alpha < moved_only.alpha
    assert e.fidelity_at_use is not None and e.fidelity_stored is not None
    assert e.fidelity_at_use >= 0.7 and e.fidelity_stored > e.fidelity_at_use
    assert planned_after(e, hold) >= 0.7 - 1e-9
    assert not any("cut off before its use" in n for n in e.notes)
    budget = attempts_before(0.7, e.fidelity, LONG_LIVED, other.alpha, attempt_s=10e-6)
    assert budget >= attempts  # parity 1 (NodeMemory's) is above the herald's parity


def test_when_no_alpha_holds_until_use_the_move_decides_and_says_so():
    """The three-node tests' memory (N_1/e 5000 at alpha 0.1) cannot hold a pair through the
    ~1e4 attempts of a second link at any alpha: alpha is then the one for after the move,
    with a note that the pair is expected to be cut off before its use."""
    hold = Hold(MEMORY, ((10_000, 0.1),), 0.1)
    e = expectation("single_click", LINK, 0.7, None, (), [Storage("B.c13", hold, "after BC")])
    moved_only = expectation("single_click", LINK, 0.7, None, (), [stored_in_b(MEMORY)])
    assert e.alpha == pytest.approx(moved_only.alpha)
    assert e.fidelity_at_use is not None and e.fidelity_at_use < 0.7 <= e.fidelity_stored
    assert any("expected to be cut off before its use" in n for n in e.notes)


# from the lab file and the calibrated values -----------------------------------------------------
PHOTONS = {
    "detection_probability": 4e-4,
    "detection_window_ns": 27.6,
    "detection_window_start_ns": 62.0,
    "photon_onset_ns": 60.0,
    "photon_lifetime_ns": 12.0,
    "init_fidelity": 0.99,
    "double_excitation": 0.04,
    "herald_window_ns": 600.0,
}
MIDPOINT = {"dark_count_hz_psi_plus": 15.0, "dark_count_hz_psi_minus": 15.0, "visibility": 0.9}
B_MEMORY = {
    "c13_n_1e_at_alpha": 2e5,
    "c13_n_1e_alpha": 0.5,
    "c13_t2_s": 10.0,
    "c13_move_fidelity": 0.95,
}


def three_node_values(station: str) -> dict[str, float]:
    """The three-node lab calibrated: A and C (one link each) node-level, B per link under
    each midpoint, B's memory."""
    b_on_link = {f"B_{k}": v for k, v in PHOTONS.items()}
    return {
        "A": dict(PHOTONS),
        "C": dict(PHOTONS),
        "B": {**PHOTONS, **B_MEMORY},
        "M1": {**MIDPOINT, **b_on_link},
        "M2": {**MIDPOINT, **b_on_link},
    }[station]


def test_link_plan_holds_a_repeater_s_pair_through_its_other_link():
    """B storing its half of A-B (as initiator, or as A's peer) is planned through the
    expected attempts of B-C at the alpha B-C would plan for the same minimum; an end (one
    link) storing is judged after the move only; no memory delivery, no storage."""
    lab = load_lab(THREE)
    bc = link_plan(lab, three_node_values, "B", "C", "single_click", 0.7)
    attempts = math.ceil(1 / bc.p_success)
    for node, peer, deliveries in (("B", "A", ("memory", "Z")), ("A", "B", ("Z", "memory"))):
        e = link_plan(lab, three_node_values, node, peer, "single_click", 0.7, None, deliveries)
        assert e.fidelity_stored is not None and e.fidelity_at_use is not None
        assert e.fidelity_at_use < e.fidelity_stored
        said = [n for n in e.notes if n.startswith("B.c13: used after link BC")]
        assert said and f"expected {attempts} attempts at alpha {bc.alpha:.3g}" in said[0]
    keep = link_plan(lab, three_node_values, "B", "A", "single_click", 0.7)
    assert keep.fidelity_stored is None
    values = dict(three_node_values("A"), **B_MEMORY)
    end = link_plan(
        lab,
        lambda s: values if s == "A" else three_node_values(s),
        "B",
        "A",
        "single_click",
        0.7,
        None,
        ("Z", "memory"),
    )
    assert end.fidelity_at_use == end.fidelity_stored
    with pytest.raises(QnodeError, match=r"memory not calibrated: A\.c13_n_1e_at_alpha"):
        link_plan(lab, three_node_values, "B", "A", "single_click", 0.7, None, ("Z", "memory"))


def test_barrett_kok_holds_two_excitations_at_half_per_attempt():
    assert stored_pair_alpha(None, "barrett_kok") == (0.5, 2)
    assert stored_pair_alpha(0.05, "single_click") == (0.05, 1)


def test_the_expectation_on_the_wire_carries_the_stored_fidelities():
    e = expectation("single_click", LINK, 0.6, None, (), [stored_in_b(MEMORY)])
    sent = e.as_dict()
    assert ExpectationMap.accepts(sent)
    assert Expectation.from_dict(sent) == e
    assert not ExpectationMap.accepts({**sent, "fidelity_stored": "high"})
    plain = expectation("single_click", LINK, 0.6, None).as_dict()
    assert "fidelity_stored" not in plain and Expectation.from_dict(plain).fidelity_stored is None


# through the daemons ---------------------------------------------------------------------------
STORE_MIN = 0.6
"""A minimum the old choice of alpha could not store on the three-node lab (checked first)."""


@pytest.mark.timeout(900)
def test_a_memory_delivery_with_a_minimum_is_stored_not_cut_off(memory_lab):  # noqa: F811
    """B (initiating, single-click, delivery memory) and A (Z) with a minimum fidelity of
    STORE_MIN: the old alpha (the largest for the heralded minimum) would have left the stored
    pair under it after the move (the planning model's, on these calibrated values); now the
    session completes, the pair is in B's 13C with its expected fidelity >= the minimum, and
    a minimum out of reach after the move is refused up front with the move's fidelity."""
    from controller.data.params import ParameterStore
    from controller.operator.client import NodeClient

    lab, _control, store, memory = memory_lab
    calibrate_memory_from_truth(lab, store, "B", memory)
    with ParameterStore(lab.data_dir / "params.sqlite") as fresh:

        def parameters(station: str) -> dict[str, float]:
            return fresh.station_values(station, lab.nodes[station].memory_platform)

        old = link_plan(lab, parameters, "B", "A", "single_click", STORE_MIN)
        planned = link_plan(
            lab, parameters, "B", "A", "single_click", STORE_MIN, None, ("memory", "Z")
        )
        model = memory_from_calibration(parameters("B"), "B")
    assert stored_fidelity(old.fidelity, model) < STORE_MIN  # the old choice: cut off
    assert planned.alpha is not None and old.alpha is not None and planned.alpha < old.alpha
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b:
        started = b.entangle(
            1,
            "single_click",
            fidelity_min=STORE_MIN,
            deadline_s=120,
            delivery="memory",
            peer_delivery="Z",
            peer="A",
        )
        summary = b.wait_session(started["session"], timeout_s=180)
        print(summary["state"], summary.get("reason"), summary["memory"], planned.notes)
        assert summary["state"] == "completed", summary.get("reason")
        assert summary["expected"]["alpha"] == pytest.approx(planned.alpha, rel=1e-6)
        assert summary["expected"]["fidelity_stored"] >= STORE_MIN
        held = summary["memory"]["holds"]["B.c13"]
        assert held is not None and held["fidelity_min"] == STORE_MIN
        assert held["goodness"] >= STORE_MIN, summary["memory"]
        assert summary["memory"]["discarded"] == [] or all(
            d["pair_id"] != held["pair_id"] for d in summary["memory"]["discarded"]
        )
        b.memory_measure("Z")  # the memory free again
        with pytest.raises(QnodeError, match=r"keeps 0\.95 \(B\.c13_move_fidelity\)"):
            b.entangle(
                1,
                "single_click",
                fidelity_min=0.9,
                deadline_s=120,
                delivery="memory",
                peer_delivery="Z",
                peer="A",
            )
        assert b.memory()["holds"]["B.c13"] is None  # nothing started, nothing stored
