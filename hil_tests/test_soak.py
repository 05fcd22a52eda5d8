"""The fault soak: entanglement under random faults, audited against the simulator's truth.

The audit is pure code over session files, tested first on files made to hold each kind of
error; then a two-minute `qnode soak` runs on a simulated lab of its own and must lose and
double-count nothing, with every kind of fault of the menu injected and recovered from.
"""

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from controller.data.sessionfile import DELIVERED, DISCARDED, HERALD_ROW, PAIR_ROW, SessionFile
from controller.harness.soak import FAULT_MENU
from controller.harness.soak_audit import audit
from controller.labconfig import DEFAULT_LAB
from controller.operator.daemons import QNODE

SESSION = "20261122-000000-abcdef"


def write_files(data_dir, pairs: dict[str, list[tuple]], heralds: list[tuple]) -> None:
    """Session files of A and B (pairs: (id, shot, attempt, outcome, status)) and of the
    midpoint, all with the same herald rows (seq, shot, sync, attempt, outcome)."""
    herald_rows = np.array([(*h, 0.0, 0.0) for h in heralds], dtype=HERALD_ROW)
    for node, role in (("A", "initiator"), ("B", "responder"), ("M", "midpoint")):
        kind = "heralds" if node == "M" else "entangle"
        file = SessionFile(
            data_dir / "runs" / "2026-11-22" / f"{SESSION}_{node}_{kind}.h5",
            session=SESSION,
            node=node,
            role=role,
            protocol="single_click",
            request={"nodes": ["A", "B"]},
            lab_text="",
            parameters={},
            software_version="test",
        )
        file.add_heralds(herald_rows)
        rows = np.zeros(len(pairs.get(node, [])), dtype=PAIR_ROW)
        for row, (pair_id, shot, attempt, outcome, status) in zip(
            rows, pairs.get(node, []), strict=True
        ):
            row["id"], row["shot"], row["attempt"] = pair_id.encode(), shot, attempt
            row["outcome"], row["status"] = outcome, status
            row["reason"] = b"" if status == DELIVERED else b"no herald message within 3 s"
        file.add_pairs(rows)
        file.close("completed")


def truth(*generations: tuple[int, int, str]) -> list[dict]:
    return [{"generation": g, "attempts": a, "outcome": o} for g, a, o in generations]


HERALDS = [(1, 0, 101, 7, 1), (2, 1, 102, 3, 2), (3, 2, 103, 9, 1)]
TRUTH = truth(
    (101, 7, "psi_plus"), (102, 3, "psi_minus"), (103, 9, "psi_plus"), (104, 2, "psi_plus")
)
GOOD = [
    (f"{SESSION}:0:7", 0, 7, 1, DELIVERED),
    (f"{SESSION}:1:3", 1, 3, 2, DELIVERED),
    (f"{SESSION}:2:9", 2, 9, 1, DISCARDED),
]


def test_audit_of_agreeing_files_counts_the_pairs_and_nothing_else(tmp_path):
    write_files(tmp_path, {"A": GOOD, "B": GOOD}, HERALDS)
    result = audit(tmp_path, TRUTH, {SESSION: 2})
    assert (result.delivered, result.lost, result.double_counted, result.phantom) == (2, 0, 0, 0)
    assert result.unsent_heralds == 1  # generation 104 never reached the midpoint's files
    assert result.unrecorded_heralds == 0
    assert result.discarded == {"no herald message within s": 2}
    assert result.problems == []


def test_audit_finds_a_pair_one_node_holds_alone(tmp_path):
    write_files(tmp_path, {"A": GOOD, "B": GOOD[:1]}, HERALDS)
    result = audit(tmp_path, TRUTH, {})
    assert (result.delivered, result.lost) == (1, 1)
    assert "pairs held by one node only {'A': 1, 'B': 0}" in result.problems[0]


def test_audit_finds_pairs_reported_but_not_recorded(tmp_path):
    write_files(tmp_path, {"A": GOOD, "B": GOOD}, HERALDS)
    result = audit(tmp_path, TRUTH, {SESSION: 5})
    assert result.lost == 3
    assert "3 reported pair(s) not in the files" in result.problems[0]


def test_audit_finds_a_pair_counted_twice(tmp_path):
    twice = [*GOOD, GOOD[0]]
    write_files(tmp_path, {"A": twice, "B": twice}, HERALDS)
    result = audit(tmp_path, TRUTH, {})
    assert result.double_counted == 2  # once in each node's file
    assert result.delivered == 2


def test_audit_finds_two_pairs_from_one_herald(tmp_path):
    # the same shot delivered under two ids (a duplicated herald taken as a new one)
    pairs = [*GOOD, (f"{SESSION}:0:7b", 0, 7, 1, DELIVERED)]
    write_files(tmp_path, {"A": pairs, "B": pairs}, HERALDS)
    result = audit(tmp_path, TRUTH, {})
    assert result.double_counted == 1
    assert "herald 101 delivered 2 times" in result.problems


def test_audit_finds_pairs_the_physics_never_heralded(tmp_path):
    wrong = [
        (f"{SESSION}:0:8", 0, 8, 1, DELIVERED),  # another attempt than the herald's
        (f"{SESSION}:1:3", 1, 3, 1, DELIVERED),  # psi+ where the physics made psi-
    ]
    write_files(tmp_path, {"A": wrong, "B": wrong}, HERALDS)
    result = audit(tmp_path, TRUTH, {})
    assert result.phantom == 2
    assert any("has no herald of the physics" in p for p in result.problems)
    assert any("another outcome" in p for p in result.problems)


def test_audit_counts_the_pairs_of_an_unreadable_file_as_lost(tmp_path):
    write_files(tmp_path, {"A": GOOD, "B": GOOD}, HERALDS)
    broken = next((tmp_path / "runs").glob(f"*/{SESSION}_B_entangle.h5"))
    broken.write_bytes(b"not an HDF5 file")  # as a writer killed while creating it leaves
    result = audit(tmp_path, TRUTH, {})
    assert (result.delivered, result.lost) == (0, 2)
    assert any("unreadable" in p for p in result.problems)


def soak_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """`qnode soak ARGS` in a process group of its own: on a timeout the whole group (its
    simulated lab and daemons too) is stopped, and the test fails."""
    proc = subprocess.Popen(
        [*QNODE, "soak", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the soak stops its lab and daemons
        try:
            proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"qnode soak {' '.join(args)} still running after {timeout_s} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_soak_refuses_a_lab_with_real_instruments(tmp_path):
    text = Path(DEFAULT_LAB).read_text()
    real = tmp_path / "real.toml"
    real.write_text(
        text.replace('\nresource = "sim"', '\nresource = "TCPIP::10.0.0.5::5025::SOCKET"', 1)
    )
    result = soak_cli("--minutes", "1", "--lab", str(real), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "needs a fully simulated lab" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing started


def test_soak_refuses_an_unknown_calibration(tmp_path):
    result = soak_cli("--minutes", "1", "--calibration", "guess", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--calibration 'guess': truth or routines" in result.stderr


@pytest.mark.timeout(360)
def test_two_minute_soak_loses_and_double_counts_no_pair(tmp_path):
    out = tmp_path / "soak"
    proc = soak_cli("--minutes", "2", "--seed", "11", "--out", str(out), timeout_s=300)
    assert (out / "report.json").exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    a = report["audit"]
    assert a["lost"] == 0 and a["double_counted"] == 0 and a["phantom"] == 0, a["problems"]
    # pairs were made, under faults, from heralds the midpoint sent
    assert 1000 < a["delivered"] <= a["truth_heralds"] - a["unsent_heralds"]
    assert set(report["faults_by_kind"]) == set(FAULT_MENU)
    assert report["faults_recovered"] == report["faults_injected"], report["faults"]
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "soak clean" in proc.stdout
