"""GHZ states and teleportation through the node daemons. GHZ: the network service of B runs
each shot with its link layer (A-B into B's 13C memory, B-C kept in B's electron, the ends
measuring their halves at once in the shot's setting), B's GHZ operation (sequences/
network_ops.py), B's memory read by `memory_measure`, the frame applied to the results.
Teleportation A -> C: A writes the state into its memory before its link, its half of A-B
kept in its electron and measured with the state in the Bell basis at once, C's half of B-C
measured at once in the state's basis, both corrections (the swap's, the teleportation's)
applied to C's bit.

Through the real transports, on the lab of hil_tests/test_network_daemons.py (its fixture:
the three-node lab, both links and B's memory calibrated from the truth, single-click at
alpha 0.1, the five daemons; a lab of this module's own).

Asserted firmly: the bookkeeping (every shot on the three nodes with the same ids, the ledgers
balanced), each end's link pair measured at once in the basis GHZ_BASES gives for its
setting, the raw results each end recorded its link layer's bits, and B's corrected results
recomputed here from those raw facts (the links' heralded states, the link layer's own psi-
frame, B's electron outcome) with `pauli.ghz_frame`. The fidelities are printed, not asserted:
B's operation and A's BSM need the memory's frame at their gates, and B's X/Y readout a
program later, which the simulator's memory does not keep today (docs/network.md,
"Delivery into memory").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.data.networkfile import BASIS_NAMES, DELIVERED, PAULI_NAMES
from controller.link.vocabulary import BASES, OUTCOMES
from controller.network.estimators import CARDINAL_STATES, GHZ_SETTINGS
from controller.network.node_operations import LINK_X_SIGN
from controller.network.pauli import (
    BELL_PAULI,
    TARGET,
    bsm_pauli,
    ghz_frame,
    ghz_result,
    own_correction,
    pair_pauli,
    result_after,
    swap_frame,
    teleport_correction,
)
from hil_tests.test_network_daemons import (
    balanced,
    by_id,
    link_rows,
    make_network_lab,
    run_network_command,
    same_ids,
)
from sequences.network_ops import GHZ_BASES

CAVITY = Path(__file__).resolve().parent.parent / "labs" / "sim_three_node_cavity.toml"
SEED = 20261201


@pytest.fixture(scope="module")
def network_lab(tmp_path_factory):
    """The cavity lab (B-C heralds in ~100 attempts at alpha 0.1, so the stored state keeps
    its phase through them), its five daemons, both links at alpha 0.1; A's memory (the
    sender's, waiting through A-B) and B's (waiting through B-C) calibrated from the truth
    with their turn per attempt: (lab, {station: process}, sim control, resource map)."""
    yield from make_network_lab(tmp_path_factory, CAVITY, SEED, {"A": "AB", "B": "BC"})


def x_sign(basis: str) -> int:
    """A link-layer bit in `basis` as the model's bases have it (LINK_X_SIGN)."""
    return LINK_X_SIGN if basis == "X" else 1


GHZ_SHOTS = 15
"""Three shots per setting (~2-3 s each through the five daemons)."""


@pytest.mark.timeout(900)
def test_ghz_shots_through_the_five_daemons(network_lab):
    """`network_ghz --shots 15 --verify` (what `qnode network ghz` runs): every shot on the
    three nodes; each end's half measured at its delivery in the setting's physical basis,
    its recorded result its link layer's bit; B's corrected results those raw results signed
    by GHZ_BASES and flipped by the frame recomputed from the raw facts."""
    from controller.operator.client import NodeClient
    from controller.operator.network import network_ghz

    lab = network_lab[0]
    report = network_ghz(lab, GHZ_SHOTS, verify=True, deadline_s=600.0)
    s = report.summary
    print(f"GHZ session {s['session']}: {s['state']} ({s['reason']}), {s['elapsed_s']:.0f} s")
    print(f"  counts {s['attempted']} attempted, {s['delivered']} delivered, {s['reasons']}")
    assert s["state"] == "completed", s["reason"]
    assert s["done"] == GHZ_SHOTS
    assert report.agree
    for node in "ABC":
        balanced(report.data[node]["ledger"])
    rows = {n: by_id(report.data[n]) for n in "ABC"}
    same_ids(rows)
    delivered = {k: r for k, r in rows["B"].items() if r["status"] == DELIVERED}
    assert len(delivered) == GHZ_SHOTS
    per_setting: dict[str, list[float]] = {}
    seen_settings = set()
    for shot, b_row in delivered.items():
        outcome = s["ghz_outcomes"][shot]
        setting = outcome["setting"]
        seen_settings.add(setting)
        first, second = outcome["link_pairs"]
        assert shot == f"{first}|{second}"
        link_a, link_c = link_rows(lab, "A", first), link_rows(lab, "C", second)
        link_ba, link_bc = link_rows(lab, "B", first), link_rows(lab, "B", second)
        # B's second half: the GHZ operation in its link's program, right after the herald
        assert BASES[link_ba["basis"]] == "memory" and BASES[link_bc["basis"]] == "ghz"
        assert int(link_bc["counts_memory"]) >= 0  # B's memory read in that program too
        states = (OUTCOMES[int(link_ba["outcome"])], OUTCOMES[int(link_bc["outcome"])])
        assert states == (OUTCOMES[int(link_a["outcome"])], OUTCOMES[int(link_c["outcome"])])
        assert list(states) == outcome["link_states"]
        physical = [GHZ_BASES[k][setting[k]][0] for k in range(3)]
        assert s["ghz_results"][shot]["physical"] == physical
        raw = s["ghz_results"][shot]["raw"]
        for node, link_row, where, k in (("A", link_a, "first", 0), ("C", link_c, "second", 2)):
            assert BASES[link_row["basis"]] == physical[k]  # measured at once, in its basis
            # no Pauli applied to it: the link layer's bit, in the model's bases
            assert int(link_row["bit"]) * x_sign(physical[k]) == raw[k]
            assert rows[node][shot][f"bit_{where}"] == 0  # B's row holds the shot's results
        # the frame from the raw facts: each link's heralded state with the link layer's own
        # psi- frame (Z on the responder, the end, already in its bit), B's electron outcome
        own = [
            ("Z",) if OUTCOMES[int(r["outcome"])] == "psi_minus" else () for r in (link_a, link_c)
        ]
        frame = ghz_frame(
            pair_pauli(states[0], own[0]), pair_pauli(states[1], own[1]), outcome["electron_bright"]
        )
        for k, where in enumerate(("first", "repeater", "second")):
            value = ghz_result(raw[k], k, setting[k])
            expected = -value if frame[k].anticommutes_with(setting[k]) else value
            assert BASIS_NAMES[b_row[f"basis_{where}"] - 1] == setting[k]
            assert int(b_row[f"bit_{where}"]) == expected, (shot, where)
        corrected = [int(b_row[f"bit_{w}"]) for w in ("first", "repeater", "second")]
        for stabiliser, sign in GHZ_SETTINGS[setting]:
            product = sign * np.prod(
                [c for c, b in zip(corrected, stabiliser, strict=True) if b != "I"]
            )
            per_setting.setdefault(stabiliser, []).append(float(product))
    assert seen_settings == set(GHZ_SETTINGS)  # the settings cycle per delivered shot
    means = {k: round(float(np.mean(v)), 2) for k, v in sorted(per_setting.items())}
    print(f"  stabiliser means after the frame (a GHZ: all +1): {means}")
    print(f"  figures: {s['figures']}")
    with NodeClient.for_lab(lab, "B", timeout_s=30) as b:
        assert b.memory()["holds"] == {"B": None, "B.c13": None}


TELEPORT_SHOTS = 2
"""Each of the six cardinal states twice (~2-3 s each: A's preparation, two links, A's BSM);
the average fidelity's interval needs two a state."""


@pytest.mark.timeout(900)
def test_teleportation_through_the_five_daemons(network_lab):
    """`network_teleport --from A --to C` (what `qnode network teleport --states cardinal`
    runs), A's memory calibrated from the truth as B's: each state written into A's memory
    before its link, A's BSM in its link's program after the herald, C's half measured at
    once in the state's basis. Recomputed here from the raw facts: the swap's frame (the link rows'
    heralded states, B's BSM), A's share folded into its BSM's parities, the teleportation's
    correction, C's reported result its link-layer bit with both corrections."""
    from controller.data.params import ParameterStore
    from controller.operator.client import NodeClient
    from controller.operator.network import network_teleport
    from hil_tests.test_memory_delivery import calibrate_memory_from_truth

    lab, _procs, control, _resources = network_lab
    store = ParameterStore(lab.data_dir / "params.sqlite")
    try:
        calibrate_memory_from_truth(lab, store, "A", control.truth("A")["memories"]["c13"])
    finally:
        store.close()
    report = network_teleport(lab, "A", "C", TELEPORT_SHOTS, deadline_s=600.0)
    s = report.summary
    print(f"teleport session {s['session']}: {s['state']} ({s['reason']}), {s['elapsed_s']:.0f} s")
    print(f"  counts {s['attempted']} attempted, {s['delivered']} delivered, {s['reasons']}")
    assert s["state"] == "completed", s["reason"]
    assert s["done"] == TELEPORT_SHOTS * len(CARDINAL_STATES)
    assert report.agree
    for node in "ABC":
        balanced(report.data[node]["ledger"])
    rows = {n: by_id(report.data[n]) for n in "ABC"}
    same_ids(rows)
    teleported = s["teleports"]
    assert len(teleported) == s["done"]
    right = 0
    per_state: dict[str, list[int]] = {}
    for swap, fact in teleported.items():
        b_row = rows["B"][swap]
        assert b_row["status"] == DELIVERED
        first, second = swap.split("|")
        link_a, link_c = link_rows(lab, "A", first), link_rows(lab, "C", second)
        link_ba, link_bc = link_rows(lab, "B", first), link_rows(lab, "B", second)
        # A's half: its BSM with the prepared state, in the link's program
        assert BASES[link_a["basis"]] == "bsm"
        basis, sign = CARDINAL_STATES[fact["state"]]
        assert BASES[link_c["basis"]] == basis  # C's: measured at once in the state's basis
        states = (OUTCOMES[int(link_ba["outcome"])], OUTCOMES[int(link_bc["outcome"])])
        zz, xx = s["bsm"][swap]
        frame = swap_frame(states[0], states[1], zz, xx)
        assert fact["share"] == frame.first.name  # A's share: A applied nothing itself
        folded = bsm_pauli(*fact["raw"]) * frame.first
        assert (fact["zz"], fact["xx"]) == (folded.x, folded.z)
        own_c = ("Z",) if states[1] == "psi_minus" else ()
        c_share = own_correction(frame.second, own_c).name
        assert PAULI_NAMES[rows["C"][swap]["pauli"]] == c_share
        correction = teleport_correction(BELL_PAULI[TARGET], folded.x, folded.z)
        measured = int(link_c["bit"]) * x_sign(basis)  # in the model's bases
        expected = result_after(measured, basis, (c_share, correction.name))
        assert fact["result"] == expected == int(b_row["bit_second"]), swap
        right += expected == sign
        per_state.setdefault(fact["state"], []).append(int(expected == sign))
    print(f"  {right} of {len(teleported)} states right; per state {per_state}")
    print(f"  figures: {s['figures']}")
    for node in "AB":
        with NodeClient.for_lab(lab, node, timeout_s=30) as client:
            assert all(v is None for v in client.memory()["holds"].values()), node


@pytest.mark.timeout(600)
def test_the_operator_s_teleport_command_on_the_running_daemons(network_lab):
    """`qnode network teleport --from A --to C --states cardinal --shots 2` (after the test
    above calibrated A's memory): it finds the five daemons running, reports the session
    completed, the three nodes agreeing, and the average fidelity with its 95 % interval
    against 2/3."""
    args = ["teleport", "--from", "A", "--to", "C", "--states", "cardinal", "--shots", "2"]
    output = run_network_command(network_lab, args, timeout_s=400)
    assert "12 of 12 asked" in output
    assert "teleportation average fidelity" in output and "95 % CI" in output
    assert "0.667" in output  # the classical bound it is held against
