"""End-to-end pairs A-C through the node daemons: the network service of B (the repeater) runs
each swap with its link layer (a link session per link pair: A-B into B's 13C memory, B-C kept
in B's electron, the ends measuring their halves at once), B's Bell-state measurement, the
swap's frame applied to the ends' recorded bits.

Through the real transports: the three-node lab (`qnode sim up` in its own process), the
daemons of A, B, C, M1 and M2, both links calibrated from the truth, B's memory from the
truth's couplings (hil_tests/test_memory_delivery.py), single-click at alpha 0.1 on both links
(p ~ 1e-4 per attempt: a link pair in about a second of wall time), `network_entangle` of the
operator's module (what `qnode network entangle --ends A C --pairs N --verify` runs).

What is asserted firmly is the bookkeeping (every end-to-end pair accounted on the three nodes,
the same ids and time stamps, each end's link pair measured in its pair's basis, the frame each
end applied as `pauli.swap_frame` says for the recorded raw facts, the bit it reports that frame
applied to its link-layer bit) and a node dying mid-swap. The correlations after the frame are
printed, not asserted: on this lab B-C takes ~10^4 attempts at alpha 0.1, through which the
stored half dephases, and the service runs B's BSM as a program of its own (docs/network.md,
"The phase bit, found"); the swap's frame is checked against the simulator's state in
hil_tests/test_bsm_round.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from controller.data.networkfile import BASIS_NAMES, CAUSES, DELIVERED, DISCARDED, PAULI_NAMES
from controller.data.params import ParameterStore
from controller.data.sessionfile import DELIVERED as LINK_DELIVERED
from controller.harness.sim import SimControl, start_sim
from controller.labconfig import load_lab
from controller.link.vocabulary import BASES, OUTCOMES
from controller.network.node_operations import DAEMON_TIMING, LINK_SESSION_OVERHEAD_S
from controller.network.pauli import own_correction, result_after, swap_frame
from controller.operator.daemons import StartError, start_daemon, terminate
from hil_tests.test_memory_delivery import MEMORY_PLAN, calibrate_memory_from_truth

LABS = Path(__file__).resolve().parent.parent / "labs"
THREE = LABS / "sim_three_node.toml"
SEED = 20261201
STATIONS = ("A", "B", "C", "M1", "M2")
ALPHA = 0.1
"""Single-click's bright population on both links (as Pompili et al. on the link made while a
pair is stored): p ~ 1e-4 per attempt on this lab, the stored pair's budget far larger."""
MEMORY_N_1E = MEMORY_PLAN["c13_n_1e_at_alpha"]
PAIRS = 12
"""Four end-to-end pairs per basis (XX, YY, ZZ): ~2 s each through the five daemons (6 in 10 s
seen), the test with its fixture well under 3 minutes."""


@pytest.fixture(scope="module")
def network_lab(tmp_path_factory):
    """The three-node lab, both links and B's memory calibrated from the truth, the five
    daemons: (lab, {station: process}, sim control, resource map)."""
    yield from make_network_lab(tmp_path_factory, THREE, SEED)


def make_network_lab(
    tmp_path_factory, path: Path, seed: int, memories: dict[str, str | None] | None = None
):
    """The lab at `path` on its own simulator (`seed`) and data folder, both links at ALPHA
    and the memories of `memories` (node -> the link whose attempts its stored state waits
    through, or None; default B's, None) calibrated from the truth, with that link's turn
    per attempt at ALPHA (fed forward by the BSM and the memory's readouts); the five
    daemons: (lab, {station: process}, sim control, resource map)."""
    from controller.harness.truth_calibration import (
        calibrate_links_from_truth,
        phase_per_attempt_from_truth,
    )
    from controller.link.plan import attempt_window_ns

    folder = tmp_path_factory.mktemp("network_daemons")
    data = folder / "data"
    data.mkdir()
    old = os.environ.get("QNODE_DATA_DIR")
    os.environ["QNODE_DATA_DIR"] = str(data)
    lab = load_lab(path)
    resource_map = folder / "resources.json"
    procs: dict[str, object] = {}
    sim = None
    try:
        try:
            sim = start_sim(lab, resource_map, seed=seed, log=folder / "sim.log")
        except StartError as e:
            pytest.fail(str(e))
        control = SimControl(resource_map)
        calibrate_links_from_truth(lab, control)
        store = ParameterStore(lab.data_dir / "params.sqlite")
        try:
            for midpoint in ("M1", "M2"):
                store.set_manual(midpoint, "single_click_alpha", ALPHA, "test: fast links")
            for node, link_name in (memories or {"B": None}).items():
                truth = control.truth(node)
                calibrate_memory_from_truth(lab, store, node, truth["memories"]["c13"])
                if link_name is None:
                    continue
                values = store.station_values(node, "nv")
                window = attempt_window_ns(values["herald_window_ns"], lab.all_links[link_name])
                turn = phase_per_attempt_from_truth(
                    truth["memories"]["c13"], truth, values, ALPHA, window
                )
                store.set_manual(node, "c13_phase_per_attempt_deg", turn, "from the truth")
        finally:
            store.close()
        for station in STATIONS:
            procs[station] = start_daemon(
                lab, station, log=folder / f"{station}.log", resource_map=resource_map
            )
        yield lab, procs, control, resource_map
    finally:
        for proc in reversed(list(procs.values())):
            terminate(proc)  # type: ignore[arg-type]
        if sim is not None:
            terminate(sim)
        if old is None:
            os.environ.pop("QNODE_DATA_DIR", None)
        else:
            os.environ["QNODE_DATA_DIR"] = old


def link_rows(lab, node: str, pair_id: str) -> np.void:
    """The link session's row of a link pair on `node` (its session file, via its daemon)."""
    from controller.operator.client import NodeClient

    session = pair_id.split(":", 1)[0]
    with NodeClient.for_lab(lab, node, timeout_s=30) as client:
        rows = client.session_data(session)["pairs"]
    (row,) = rows[rows["id"] == pair_id.encode()]
    return row


def by_id(data: dict) -> dict[str, np.void]:
    return {r["id"].decode(): r for r in data["pairs"]}


def same_ids(rows: dict[str, dict]) -> None:
    """Every end-to-end attempt on A and B under the same id, on C too unless C never heard
    of it: B's BSM right after the B-C herald measured the stored pair but the heralded shot
    was discarded (a readout flagged), so C's link layer delivered no half; B and A record
    that attempt discarded, operation_failed, with the reason."""
    assert set(rows["A"]) == set(rows["B"])
    assert set(rows["C"]) <= set(rows["B"])
    for missing in set(rows["B"]) - set(rows["C"]):
        row = rows["B"][missing]
        assert row["status"] == DISCARDED and CAUSES[row["cause"] - 1] == "operation_failed"
        assert b"the BSM after its herald" in row["reason"], row["reason"]


def balanced(ledger: dict) -> None:
    assert ledger["open"] == 0, ledger
    assert ledger["attempted"] == ledger["delivered"] + ledger["discarded"], ledger
    assert ledger["discarded"] == sum(ledger[f"discarded_{c}"] for c in CAUSES), ledger


@pytest.mark.timeout(900)
def test_verified_end_to_end_pairs_through_the_five_daemons(network_lab):
    """`network_entangle --ends A C --pairs 6 --verify` on running daemons: every end-to-end
    pair accounted on the three nodes, the same ids and BSM time on each, each end's half
    measured at its delivery in its pair's basis, the frame each end applied the one
    `swap_frame` gives for the link pairs' heralded states and B's BSM (with the link layer's
    own psi- frame at the end), and each end's reported bit its link-layer bit with that frame
    applied. The correlations are printed (see the module's docstring)."""
    from controller.operator.network import network_entangle

    lab = network_lab[0]
    started = time.monotonic()
    report = network_entangle(lab, ("A", "C"), PAIRS, verify=True, deadline_s=600.0)
    elapsed = time.monotonic() - started
    s = report.summary
    print(f"network session {s['session']}: {s['state']} ({s['reason']}) in {elapsed:.0f} s")
    print(f"  counts {s['attempted']} attempted, {s['delivered']} delivered, {s['reasons']}")
    assert s["state"] == "completed", s["reason"]
    assert s["done"] == PAIRS and s["delivered"] >= PAIRS
    assert report.agree
    for node in "ABC":
        balanced(report.data[node]["ledger"])
        assert report.data[node]["status"] == "completed"
    rows = {n: by_id(report.data[n]) for n in "ABC"}
    same_ids(rows)  # discards too
    delivered = {k: r for k, r in rows["B"].items() if r["status"] == DELIVERED}
    assert len(delivered) == s["delivered"]
    products: dict[str, list[int]] = {}
    parity_agrees = 0
    for swap, b_row in delivered.items():
        first, second = b_row["link_first"].decode(), b_row["link_second"].decode()
        assert swap == f"{first}|{second}"
        for node in "AC":
            row = rows[node][swap]
            assert row["status"] == DELIVERED
            assert (row["link_first"], row["link_second"]) == (
                b_row["link_first"],
                b_row["link_second"],
            )
            assert row["t_bsm"] == b_row["t_bsm"]  # B's time stamp, as B sent it
            assert abs(row["made_first"] - b_row["made_first"]) < 30.0
            assert abs(row["made_second"] - b_row["made_second"]) < 30.0
            assert row["made_first"] < row["made_second"] < row["t_bsm"] + 1.0
        # the raw facts: each link pair as the link layer recorded it on both of its nodes
        link_a, link_ca = link_rows(lab, "A", first), link_rows(lab, "C", second)
        link_ba, link_bc = link_rows(lab, "B", first), link_rows(lab, "B", second)
        # B's half of B-C measured with the stored one right after the herald
        assert BASES[link_ba["basis"]] == "memory" and BASES[link_bc["basis"]] == "bsm"
        states = (OUTCOMES[int(link_ba["outcome"])], OUTCOMES[int(link_bc["outcome"])])
        assert states == (OUTCOMES[int(link_a["outcome"])], OUTCOMES[int(link_ca["outcome"])])
        basis = BASIS_NAMES[rows["A"][swap]["basis_first"] - 1]
        zz, xx = s["bsm"][swap]
        frame = swap_frame(states[0], states[1], zz, xx)
        for node, link_row, share, where in (
            ("A", link_a, frame.first, "first"),
            ("C", link_ca, frame.second, "second"),
        ):
            assert BASES[link_row["basis"]] == basis  # measured at once, in the pair's basis
            own = ("Z",) if OUTCOMES[int(link_row["outcome"])] == "psi_minus" else ()
            applied = PAULI_NAMES[rows[node][swap]["pauli"]]
            assert applied == own_correction(share, own).name, (node, swap)
            assert BASIS_NAMES[b_row[f"basis_{where}"] - 1] == basis
            reported = int(b_row[f"bit_{where}"])
            assert reported == result_after(int(link_row["bit"]), basis, (applied,))
        product = int(b_row["bit_first"]) * int(b_row["bit_second"])
        products.setdefault(basis, []).append(product)
        if basis == "Z":
            # both links heralded psi+ or psi-, each end's Z bit opposite B's half: A's x C's
            # raw Z bits are the ZZ parity of B's two halves (zz = 1: -1)
            raw = int(link_a["bit"]) * int(link_ca["bit"])
            parity_agrees += int(raw == (-1 if zz else 1))
    correlations = {b: float(np.mean(v)) for b, v in sorted(products.items())}
    print(f"  correlations after the frame (psi+: XX +1, YY +1, ZZ -1): {correlations}")
    print(
        f"  B's BSM parity agrees with A's x C's raw Z bits in {parity_agrees} of "
        f"{len(products.get('Z', []))} ZZ pairs (chance today: docs/network.md)"
    )
    print(f"  figures: {s['figures']}")
    assert set(products) == {"X", "Y", "Z"}  # the bases cycle per delivered pair
    # no minimum fidelity: no budget binds, B waits one shot's attempts plus the overhead
    assert LINK_SESSION_OVERHEAD_S < s["second_link_wait_s"] <= DAEMON_TIMING.second_link_s
    # B's memory and electron are free again: every stored pair was used or discarded
    from controller.operator.client import NodeClient

    with NodeClient.for_lab(lab, "B", timeout_s=30) as b:
        assert b.memory()["holds"] == {"B": None, "B.c13": None}


def run_network_command(network_lab, args: list[str], timeout_s: float) -> str:
    """`qnode network ...` in a process of its own on the running daemons (it must start none):
    its output once it exited 0 reporting the session completed, the three nodes agreeing."""
    import subprocess
    import sys

    resource_map = network_lab[3]
    args = ["network", *args, "--lab", str(THREE), "--resource-map", str(resource_map)]
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "250"},
        check=False,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed" in result.stdout and "the three nodes agree" in result.stdout
    return result.stdout


@pytest.mark.timeout(600)
def test_the_operator_s_command_on_the_running_daemons(network_lab):
    """`qnode network entangle --ends A C --pairs 3 --verify`: it finds the five daemons
    running (starts none), reports the session completed, the three nodes agreeing."""
    args = ["entangle", "--ends", "A", "C", "--pairs", "3", "--verify"]
    output = run_network_command(network_lab, args, timeout_s=300)
    assert "3 of 3 asked" in output


CUT_OFF_DEADLINE_S = 20.0
"""Swaps whose stored pair is cut off, tried until this deadline (~2 s each)."""


@pytest.mark.timeout(300)
def test_barrett_kok_into_b_s_memory_is_refused_with_the_reason(network_lab):
    """Barrett-Kok on this lab's free-space NVs heralds ~1e-8 an attempt: a pair stored in
    B's memory would take ~10^5 rounds of memory re-initialisation (hold_attempts), so B's
    link layer refuses it up front and the network session fails with that reason, nothing
    attempted, rather than running for hours."""
    from controller.operator.network import network_entangle

    lab = network_lab[0]
    report = network_entangle(
        lab, ("A", "C"), 1, verify=True, protocol="barrett_kok", deadline_s=CUT_OFF_DEADLINE_S
    )
    s = report.summary
    assert s["state"] == "failed" and s["delivered"] == 0, s
    assert "rounds; single_click with a small alpha" in s["reason"], s["reason"]


@pytest.mark.timeout(900)
def test_a_stored_pair_cut_off_discards_the_end_to_end_attempt_on_a_and_b(network_lab):
    """A memory that forgets within a couple of attempts (c13_n_1e_at_alpha 2) and a minimum
    fidelity of 0.5, single-click: alpha is chosen for 0.5 after the move (controller/link/plan.py;
    the pair cannot last until its use, a note says), so the pair is stored, and its budget
    allows no B-C attempt at the alpha B-C plans for 0.5. Either way the network discards the
    end-to-end attempt with cause cutoff on B and on A (told by B), with the link layer's
    reason; nothing is delivered; B's wait for the second link is derived from the budget (a
    link session's overhead and next to no attempts)."""
    from controller.operator.network import network_entangle

    protocol, why = "single_click", b"budget"

    lab = network_lab[0]
    store = ParameterStore(lab.data_dir / "params.sqlite")
    try:
        store.set_manual("B", "c13_n_1e_at_alpha", 2.0, "a memory that forgets fast (test)")
        report = network_entangle(
            lab,
            ("A", "C"),
            1,
            verify=True,
            protocol=protocol,
            fidelity_min=0.5,
            deadline_s=CUT_OFF_DEADLINE_S,
        )
    finally:
        store.set_manual("B", "c13_n_1e_at_alpha", MEMORY_N_1E, "back (test)")
        store.close()
    time.sleep(1.0)  # B's last discard on its way to A
    s = report.summary
    print(
        f"cut-off session ({protocol}): {s['state']} ({s['reason']}), {s['reasons']}, wait "
        f"{s['second_link_wait_s']}, link failures {s['link_failures']}"
    )
    assert s["state"] == "deadline" and s["delivered"] == 0
    assert s["attempted"] >= 1 and s["reasons"] == {"cutoff": s["attempted"]}
    assert LINK_SESSION_OVERHEAD_S <= s["second_link_wait_s"] < LINK_SESSION_OVERHEAD_S + 1
    from controller.operator.client import NodeClient

    data = {}
    for node in "ABC":
        with NodeClient.for_lab(lab, node, timeout_s=30) as client:
            data[node] = client.request("network_session_data", session=s["session"])["data"]
    rows = {n: by_id(data[n]) for n in "ABC"}
    assert len(rows["B"]) == s["attempted"]
    for node in "AB":
        balanced(data[node]["ledger"])
        assert set(rows[node]) == set(rows["B"]), node
        for row in rows[node].values():
            assert row["status"] == DISCARDED and CAUSES[row["cause"] - 1] == "cutoff"
            assert why in row["reason"], row["reason"]
    assert data["C"]["ledger"]["delivered"] == 0


@pytest.mark.timeout(900)
def test_the_repeater_dying_mid_swap_discards_the_pair_at_the_ends(network_lab):
    """B's daemon is killed (SIGKILL) while it makes the B-C link with the A-B pair in its
    memory: A, which holds its half of that pair (measured at delivery), discards the
    end-to-end attempt as soon as B's heartbeats stop (cause node_down, "node B down"), long
    before its wait for the outcome (`outcome_s`) would; C, whose link session with B fails,
    has no pair; nothing is counted delivered. B restarted: its old network file is closed
    as interrupted, its next session closes the stale one on A and C (failed) and runs."""
    from controller.operator.client import NodeClient

    lab, procs, _control, resources = network_lab
    with NodeClient.for_lab(lab, "B", timeout_s=30) as b:
        started = b.request("network_entangle", ends=["A", "C"], pairs=1, verify=True)
        session = started["session"]["session"]
        limit = time.monotonic() + 300
        while True:
            link = b.status()["session"]
            if link is not None and link["peer"] == "C":
                break  # the first link pair is in B's memory: B makes the second
            assert time.monotonic() < limit, "B never started its second link"
            time.sleep(0.05)
    proc = procs["B"]
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait(timeout=30)  # type: ignore[attr-defined]
    killed = time.monotonic()
    data = {}
    limit = killed + DAEMON_TIMING.outcome_s + 120
    for node in "AC":
        with NodeClient.for_lab(lab, node, timeout_s=30) as client:
            while True:
                got = client.request("network_session_data", session=session)["data"]
                if node == "C" or len(got["pairs"]):  # A's row: its decision about the pair
                    break
                assert time.monotonic() < limit, got["ledger"]
                time.sleep(0.5)
            data[node] = got
    took = time.monotonic() - killed
    print(f"A's discard after {took:.0f} s: {data['A']['pairs']}")
    assert took < DAEMON_TIMING.outcome_s / 2, took  # the heartbeats' silence, not outcome_s
    a_rows = data["A"]["pairs"]
    assert len(a_rows) == 1
    (row,) = a_rows
    assert row["status"] == DISCARDED
    assert CAUSES[row["cause"] - 1] == "node_down"
    assert b"node B down" in row["reason"], row["reason"]
    for node in "AC":
        ledger = data[node]["ledger"]
        balanced(ledger)
        assert ledger["delivered"] == 0, (node, ledger)
    assert len(data["C"]["pairs"]) == 0  # C's link pair never came: nothing to discard
    assert int((data["A"]["pairs"]["status"] == DELIVERED).sum()) == 0
    # A's half was a real link pair, delivered by its link layer and measured at once
    pair = row["link_first"].decode()
    link_row = link_rows(lab, "A", pair)
    assert link_row["status"] == LINK_DELIVERED and BASES[link_row["basis"]] in "XYZ"
    # B restarted: its next session closes the one A and C still held open (B never closed
    # it), and runs
    from controller.operator.network import network_entangle

    procs["B"] = start_daemon(
        lab, "B", log=resources.parent / "B.log", resource_map=resources, append=True
    )
    from controller.data.networkfile import network_file_path, read_network_session

    report = network_entangle(lab, ("A", "C"), 1, verify=True, deadline_s=300.0)
    assert report.summary["state"] == "completed" and report.agree, report.summary["reason"]
    b_old = read_network_session(network_file_path(lab.data_dir, session, "B"))
    assert b_old["status"] == "interrupted", (b_old["status"], b_old["reason"])
    for node in "AC":
        with NodeClient.for_lab(lab, node, timeout_s=30) as client:
            old = client.request("network_session_data", session=session)["data"]
        assert old["status"] == "failed", (node, old["status"])
        assert int((old["pairs"]["status"] == DELIVERED).sum()) == 0
