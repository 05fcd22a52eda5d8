"""The three-node fault soak: end-to-end pairs A - C through B under the three-node fault menu,
audited against the three nodes' network session files, the link layer's session files and
each midpoint's heralds in the simulator's truth.

The audit is pure code over files, tested first on files made to hold each kind of error; then
a short `qnode soak --lab labs/sim_three_node.toml` runs on a simulated lab of its own and must
lose, double-count and invent no end-to-end pair, with every kind of fault of the menu
injected and recovered from.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from controller.data.networkfile import NetworkSessionFile, network_file_path
from controller.data.sessionfile import DELIVERED, DISCARDED, HERALD_ROW, PAIR_ROW, SessionFile
from controller.harness.soak_network import (
    NETWORK_FAULT_MENU,
    Roles,
    gate_populations,
    gate_pulse_count,
    grid_resonance,
    has_repeater,
    memory_gate,
    midpoint_of,
)
from controller.harness.soak_network_audit import audit_network
from controller.labconfig import DEFAULT_LAB, load_lab
from hil_tests.test_soak import soak_cli
from qnode.errors import QnodeError

LABS = Path(__file__).resolve().parent.parent / "labs"
THREE = LABS / "sim_three_node.toml"
LINK_AB = "20261201-000000-aaaaaa"
LINK_BC = "20261201-000001-bbbbbb"
NETWORK = "20261201-000100-cccccc"
MIDPOINT_OF = {frozenset("AB"): "M1", frozenset("BC"): "M2"}
# link pairs: (id, shot, attempt, outcome) with heralds (seq, shot, sync, attempt, outcome)
AB_HERALDS = [(1, 0, 101, 7, 1), (2, 1, 102, 3, 2), (3, 2, 103, 9, 1)]
BC_HERALDS = [(1, 0, 201, 5, 1), (2, 1, 202, 4, 1)]
AB0, AB1, AB2 = f"{LINK_AB}:0:7", f"{LINK_AB}:1:3", f"{LINK_AB}:2:9"
BC0, BC1 = f"{LINK_BC}:0:5", f"{LINK_BC}:1:4"
AB_PAIRS = [(AB0, 0, 7, 1), (AB1, 1, 3, 2), (AB2, 2, 9, 1)]
BC_PAIRS = [(BC0, 0, 5, 1), (BC1, 1, 4, 1)]
TRUTH = {
    "M1": [
        {"generation": 101, "attempts": 7, "outcome": "psi_plus"},
        {"generation": 102, "attempts": 3, "outcome": "psi_minus"},
        {"generation": 103, "attempts": 9, "outcome": "psi_plus"},
    ],
    "M2": [
        {"generation": 201, "attempts": 5, "outcome": "psi_plus"},
        {"generation": 202, "attempts": 4, "outcome": "psi_plus"},
    ],
}
E1, E2, E3 = f"{AB0}|{BC0}", f"{AB1}|{BC1}", f"{AB2}|"
DELIVER = {"status": "delivered"}


def link_file(data_dir, session, node, peer, pairs, heralds, undelivered=()) -> None:
    """A link session file of `node` (pairs (id, shot, attempt, outcome), delivered unless
    named in `undelivered`)."""
    file = SessionFile(
        data_dir / "runs" / "2026-12-01" / f"{session}_{node}_entangle.h5",
        session=session,
        node=node,
        role="initiator" if node == "B" else "responder",
        protocol="single_click",
        request={"nodes": [node, peer]},
        lab_text="",
        parameters={},
        software_version="test",
    )
    file.add_heralds(np.array([(*h, 0.0, 0.0) for h in heralds], dtype=HERALD_ROW))
    rows = np.zeros(len(pairs), dtype=PAIR_ROW)
    for row, (pair_id, shot, attempt, outcome) in zip(rows, pairs, strict=True):
        row["id"], row["shot"], row["attempt"], row["outcome"] = pair_id, shot, attempt, outcome
        row["status"] = DISCARDED if pair_id in undelivered else DELIVERED
    file.add_pairs(rows)
    file.close("completed")


def link_files(data_dir, ab_heralds=AB_HERALDS, undelivered_on_b=(), ab_pairs=AB_PAIRS) -> None:
    for node, peer in (("A", "B"), ("B", "A")):
        undelivered = undelivered_on_b if node == "B" else ()
        link_file(data_dir, LINK_AB, node, peer, ab_pairs, ab_heralds, undelivered)
    for node, peer in (("B", "C"), ("C", "B")):
        link_file(data_dir, LINK_BC, node, peer, BC_PAIRS, BC_HERALDS)


def network_files(data_dir, rows: dict[str, list[tuple[str, dict]]], open_on=()) -> None:
    """The three nodes' network session files; rows per node: (pair, fields of `record`).
    A node in `open_on` leaves its file running (as a node killed in the session)."""
    request = {"ends": ["A", "C"], "repeater": "B"}
    for node in "ABC":
        file = NetworkSessionFile(
            network_file_path(data_dir, NETWORK, node),
            session=NETWORK,
            node=node,
            role="repeater" if node == "B" else "end",
            application="entangle",
            request=request,
            software_version="test",
        )
        for pair, fields in rows.get(node, []):
            links = tuple(pair.split("|"))
            if fields.get("again"):  # a second row for the pair, as a confused writer would
                file._rows.pop(pair, None)
            file.record(pair, fields["status"], link_pairs=links, cause=fields.get("cause", ""))
        if node not in open_on:
            file.close("completed")


GOOD = [(E1, DELIVER), (E2, DELIVER), (E3, {"status": "discarded", "cause": "cutoff"})]


def run_audit(tmp_path, reported=None):
    return audit_network(tmp_path, TRUTH, MIDPOINT_OF, reported or {})


def counts(result) -> tuple[int, ...]:
    return (
        result.delivered,
        result.discarded,
        result.lost,
        result.double_counted,
        result.phantom,
        result.uncaused,
    )


def test_the_lab_s_roles_and_links():
    lab = load_lab(THREE)
    roles = Roles.of(lab)
    assert (roles.ends, roles.repeater, roles.midpoints) == (("A", "C"), "B", ("M1", "M2"))
    assert midpoint_of(lab) == MIDPOINT_OF
    assert has_repeater(lab) and not has_repeater(load_lab(DEFAULT_LAB))
    assert set(NETWORK_FAULT_MENU) >= {"kill_repeater_mid_swap", "herald_drop", "memory_cutoff"}


def test_the_memory_s_gate_from_the_truth_s_couplings():
    # a 13C of Taminiau 2012's size: A_par 30 kHz, A_perp 25 kHz at 440 kHz Larmor
    memory = {"larmor_hz": 440e3, "a_par_hz": 30e3, "a_perp_hz": 25e3}
    tau = grid_resonance(memory)
    assert 1500 <= tau <= 2500 and tau % 2 == 0
    pulses = gate_pulse_count(memory, tau)
    # each unit turns the nucleus by ~2 A_perp / (omega_L) (Taminiau's small-angle form):
    # pi/2 needs of order omega_L / (4 A_perp) units
    assert pulses % 2 == 0 and 4 <= pulses <= 100
    assert memory_gate(memory) == (tau, pulses)  # the grid's nearest resonance gets there
    # weak A_perp, every resonance 0.5 ns off the 2 ns grid: no grid point's gate reaches
    # pi/2 on this model; the soak takes the deepest turn rather than refusing to run
    hard = {"larmor_hz": 1985392.05, "a_par_hz": -49280.25, "a_perp_hz": 15850.96}
    with pytest.raises(QnodeError, match="never reaches pi/2"):
        gate_pulse_count(hard, grid_resonance(hard))
    tau, pulses = memory_gate(hard)
    assert tau % 2 == 0 and pulses % 2 == 0
    assert gate_populations(hard, tau)[pulses // 2 - 1] < 0.9  # a turn, if not a full one


def test_agreeing_files_count_the_pairs_and_their_link_pairs(tmp_path):
    link_files(tmp_path)
    # the discarded attempt: C never had its link pair (no row there)
    network_files(tmp_path, {"A": GOOD, "B": GOOD, "C": GOOD[:2]})
    result = run_audit(tmp_path, {NETWORK: 2})
    assert counts(result) == (2, 1, 0, 0, 0, 0), result.problems
    assert result.link_pairs_checked == 4
    assert result.causes == {"cutoff": 1}
    assert result.problems == [] and result.unclosed == [] and result.clean


def test_a_pair_delivered_on_two_nodes_and_missing_on_the_third_is_lost(tmp_path):
    link_files(tmp_path)
    network_files(tmp_path, {"A": GOOD[1:], "B": GOOD, "C": GOOD}, open_on="A")
    result = run_audit(tmp_path)
    assert (result.delivered, result.lost) == (1, 1)
    assert f"{E1} delivered on some nodes only" in result.problems[0]
    assert "'A': 'missing'" in result.problems[0]
    assert result.unclosed == [f"{NETWORK}: A"] and not result.clean


def test_a_pair_delivered_on_one_node_and_discarded_on_another_is_lost(tmp_path):
    link_files(tmp_path)
    discarded = [(E1, {"status": "discarded", "cause": "timeout"}), *GOOD[1:]]
    network_files(tmp_path, {"A": discarded, "B": GOOD, "C": GOOD})
    result = run_audit(tmp_path)
    assert (result.delivered, result.lost) == (1, 1)
    assert "'A': 'discarded (timeout)'" in result.problems[0]


def test_pairs_reported_but_not_in_the_files_are_lost(tmp_path):
    link_files(tmp_path)
    network_files(tmp_path, {n: GOOD for n in "ABC"})
    result = run_audit(tmp_path, {NETWORK: 3})
    assert result.lost == 1 and "1 reported pair(s) not in the files" in result.problems[0]


def test_a_discard_without_a_cause_is_found(tmp_path):
    link_files(tmp_path)
    uncaused = [*GOOD[:2], (E3, {"status": "discarded"})]
    network_files(tmp_path, {"A": GOOD, "B": uncaused, "C": GOOD[:2]})
    result = run_audit(tmp_path)
    assert result.uncaused == 1 and "discarded without a cause on ['B']" in result.problems[0]


def test_a_pair_delivered_twice_in_a_file_is_double_counted(tmp_path):
    link_files(tmp_path)
    twice = [*GOOD, (E1, {"status": "delivered", "again": True})]
    network_files(tmp_path, {"A": twice, "B": GOOD, "C": GOOD[:2]})
    result = run_audit(tmp_path)
    assert result.double_counted == 1 and "A delivers 1 pair(s) twice" in result.problems[0]


def test_a_link_pair_used_by_two_end_to_end_pairs_is_double_counted(tmp_path):
    link_files(tmp_path)
    reused = [(E1, DELIVER), (f"{AB0}|{BC1}", DELIVER)]  # A-B's first pair used twice
    network_files(tmp_path, {n: reused for n in "ABC"})
    result = run_audit(tmp_path)
    assert result.delivered == 2 and result.double_counted == 2  # the link pair and its herald
    assert f"link pair {AB0} used by 2 end-to-end pairs" in result.problems
    assert "herald 101 of M1 delivered 2 times" in result.problems


def test_two_link_pairs_from_one_herald_are_double_counted(tmp_path):
    # a duplicated herald taken as a new one: shots 0 and 1 both M1's generation 101
    heralds = [(1, 0, 101, 7, 1), (2, 1, 101, 7, 1), (3, 2, 103, 9, 1)]
    pairs = [AB_PAIRS[0], (AB1, 1, 7, 1), AB_PAIRS[2]]
    link_files(tmp_path, ab_heralds=heralds, ab_pairs=pairs)
    network_files(tmp_path, {n: GOOD for n in "ABC"})
    result = run_audit(tmp_path)
    assert (result.delivered, result.double_counted, result.phantom) == (2, 1, 0)
    assert result.problems == ["herald 101 of M1 delivered 2 times"]


def test_end_to_end_pairs_without_their_link_pairs_are_phantoms(tmp_path):
    link_files(tmp_path, undelivered_on_b=(AB1,))
    phantoms = [
        (f"{AB0}|", DELIVER),  # no second link pair
        (E2, DELIVER),  # A-B's pair discarded by B's link layer
        (f"{AB2}|{LINK_BC}:7:1", DELIVER),  # a second link pair no file holds
    ]
    network_files(tmp_path, {n: phantoms for n in "ABC"})
    result = run_audit(tmp_path)
    assert result.phantom == 3 and result.delivered == 3
    problems = " ".join(result.problems)
    assert "has no link pair to C" in problems
    assert f"link pair {AB1} is not delivered in B's link session file" in problems
    assert f"{LINK_BC}:7:1 is not delivered" in problems


def test_link_pairs_the_physics_never_heralded_are_phantoms(tmp_path):
    link_files(tmp_path)
    network_files(tmp_path, {n: GOOD for n in "ABC"})
    wrong = {
        "M1": [
            {"generation": 101, "attempts": 8, "outcome": "psi_plus"},  # another attempt
            {"generation": 102, "attempts": 3, "outcome": "psi_plus"},  # another outcome
        ],
        "M2": [],  # M2's heralds: none (B-C's pairs would be M1's generations: not enough)
    }
    result = audit_network(tmp_path, wrong, MIDPOINT_OF, {})
    assert result.phantom == 2
    problems = " ".join(result.problems)
    assert f"{AB0} has no herald of M1" in problems
    assert f"{AB1} has another outcome than M1's herald" in problems
    assert f"{BC0} has no herald of M2" in problems


def test_an_unreadable_network_file_leaves_the_others_pairs_lost(tmp_path):
    link_files(tmp_path)
    network_files(tmp_path, {n: GOOD for n in "ABC"})
    network_file_path(tmp_path, NETWORK, "C").write_bytes(b"not an HDF5 file")
    result = run_audit(tmp_path)
    assert (result.delivered, result.lost) == (0, 2)
    assert any("unreadable" in p for p in result.problems)


def test_the_network_soak_refuses_calibration_by_routines(tmp_path):
    out = tmp_path / "out"
    args = ["--lab", str(THREE), "--minutes", "1", "--calibration", "routines"]
    result = soak_cli(*args, "--out", str(out))
    assert result.returncode == 2
    assert "the network soak calibrates from the truth only" in " ".join(result.stderr.split())
    assert not out.exists()  # nothing started


@pytest.mark.timeout(600)
def test_three_node_soak_loses_double_counts_and_invents_no_end_to_end_pair(tmp_path):
    out = tmp_path / "soak"
    args = ["--lab", str(THREE), "--minutes", "2", "--seed", "5", "--interval", "3.5"]
    proc = soak_cli(*args, "--out", str(out), timeout_s=480)
    assert (out / "report.json").exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    a = report["audit"]
    print(proc.stdout[-6000:])
    assert report["mode"] == "network"
    assert a["lost"] == a["double_counted"] == a["phantom"] == a["uncaused"] == 0, a["problems"]
    assert a["delivered"] >= 3 and a["link_pairs_checked"] == 2 * a["delivered"]
    assert a["causes"].get("cutoff", 0) >= 1  # the forced cut-off discarded end-to-end pairs
    assert set(report["faults_by_kind"]) == set(NETWORK_FAULT_MENU), report["faults_by_kind"]
    killed = [f for f in report["faults"] if f["kind"] == "kill_repeater_mid_swap"]
    assert any("making its second link" in f["detail"] for f in killed), killed  # mid-swap
    assert report["faults_recovered"] == report["faults_injected"], report["faults"]
    assert report["final_completed"]
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "soak clean" in proc.stdout
