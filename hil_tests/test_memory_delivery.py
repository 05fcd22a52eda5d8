"""Delivery into memory: a node moves its half of a heralded pair into its 13C memory right
after the herald (in the same program), records it in NodeMemory, and reads it later
(`memory_measure`).

Through the real transports: the three-node lab (`qnode sim up` in its own process), the node
daemons of A and B and the midpoint M1, both links calibrated from the truth; B's 13C gate
from the truth's couplings (the resonance nearest the clock's grid and the model's pulse count
at it, as hil_tests/test_calibration_memory.py sets them); the planning model's memory values
(dephasing per attempt, T2, move fidelity) set by hand: they only plan, the simulator does not
read them. Stored-state fidelities reported here are the planning model's, not checked
against the simulator.

Pure code: the request checks (a node without memories, the ion lab, no calibration) and the
round's program.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from calibration.planning import memory_from_calibration
from controller.data.params import ParameterStore
from controller.data.sessionfile import DELIVERED
from controller.harness.sim import SimControl, start_sim
from controller.harness.truth_states import BELL_VECTORS
from controller.labconfig import load_lab
from controller.link.memory import hold_attempts
from controller.link.messages import check_request, request_from
from controller.link.plan import announced_delivery, round_basis, round_sequence
from controller.link.vocabulary import BASES, HOLD_ATTEMPTS_DEFAULT
from controller.node.runtime import hardware_of
from controller.operator.daemons import StartError
from hil_tests.test_compiler_memory import (
    HW,
    PARAMS,
    free_evolution,
    nucleus_of,
    replay,
    replay_outcomes,
)
from qnode.errors import QnodeError
from sequences.compiler import compile_sequence
from sequences.library import BELL_TABLE, bell_measurement
from sequences.memory import MemoryGate, SwapToMemory, gate_pulses_near
from sequences.operations import EntanglementAttempt, Sequence

LABS = Path(__file__).resolve().parent.parent / "labs"
THREE = LABS / "sim_three_node.toml"
SEED = 20261130
PAIRS = 80
"""Sessions of one pair each (single-click, alpha 0.1), B's half read in Z (slow_sim). The
bound is 3.1 sigma above chance on the valid readouts (54 of 80: chance 40 +- 4.5); runs
gave 34 of 39 and 30 of 40 (0.81: 65 +- 3.5 expected of 80, the bound 3.1 sigma below).
~3-5 s a pair (the memory is initialised again every hold_attempts)."""
ANTI_SIGMAS = 3.1
MEMORY_PLAN = {"c13_n_1e_at_alpha": 1000.0, "c13_n_1e_alpha": 0.5, "c13_move_fidelity": 0.95}


# pure code ------------------------------------------------------------------------------------
def request(**fields) -> dict:
    return request_from({"pairs": 1, "protocol": "barrett_kok", **fields})


CALIBRATED = {
    "mw_frequency_hz": 2.87e9,
    "pi_amplitude_v": 0.6,
    "pi2_amplitude_v": 0.3,
    **{f"c13_{q}": 1.0 for q in ("tau_ns", "n_pulses", "larmor_hz", "omega1_hz", "t2_s")},
    **MEMORY_PLAN,
}


def test_peer_delivery_defaults_to_the_initiator_s():
    assert request(delivery="Z")["peer_delivery"] == "Z"
    assert request(delivery="memory", peer_delivery="Z")["peer_delivery"] == "Z"


def test_memory_delivery_is_checked_before_any_attempt():
    lab = load_lab(THREE)
    check_request(request(delivery="memory", peer_delivery="Z"), lab, "B", "A", CALIBRATED)
    uncalibrated = {k: v for k, v in CALIBRATED.items() if not k.startswith("c13_")}
    with pytest.raises(QnodeError, match=r"B's memory c13 is not calibrated: c13_tau_ns"):
        check_request(request(delivery="memory"), lab, "B", "A", uncalibrated)
    # the responder checks its own side: B delivers into memory, A (measuring) needs no 13C
    responder = {**request(delivery="memory", peer_delivery="Z"), "nodes": ["B", "A"]}
    check_request(responder, lab, "A", "B", uncalibrated)
    with pytest.raises(QnodeError, match="one pair per session"):
        check_request(request(delivery="memory", pairs=2), lab, "B", "A", CALIBRATED)


def test_a_waiting_memory_is_initialised_again_within_a_fifth_of_its_n_1e():
    """The attempts a round into memory makes before the memory is initialised again: a
    fifth of the stored coherence's N_1/e at the session's alpha (MEMORY_PLAN: 1000 at alpha
    0.5, so 5000 at alpha 0.1: 1000), halved for Barrett-Kok's two excitations an attempt,
    bounded, and the default without a calibrated memory; the peer refuses a value out of
    bounds."""
    memory = memory_from_calibration(CALIBRATED, "B")
    assert hold_attempts(memory, 0.1, 1) == pytest.approx(1000, abs=1)
    assert hold_attempts(memory, 0.5, 2) == pytest.approx(100, abs=1)  # at its floor
    assert hold_attempts(memory, 0.01, 1) == pytest.approx(10000, abs=5)
    assert hold_attempts(None, 0.1, 1) == HOLD_ATTEMPTS_DEFAULT
    lab = load_lab(THREE)
    held = {**request(delivery="memory", peer_delivery="Z"), "hold_attempts": 1000}
    check_request(held, lab, "B", "A", CALIBRATED)
    with pytest.raises(QnodeError, match=r"hold_attempts must be 100\.\.1e\+07, got 5"):
        check_request({**held, "hold_attempts": 5}, lab, "B", "A", CALIBRATED)


def test_memory_delivery_on_a_node_without_memories_or_on_the_ion_lab(tmp_path):
    text = THREE.read_text().replace('memories = ["c13"]', "memories = []")
    (tmp_path / "no_memories.toml").write_text(text)
    lab = load_lab(tmp_path / "no_memories.toml")
    with pytest.raises(QnodeError, match="node B has no memory qubit"):
        check_request(request(delivery="memory"), lab, "B", "A", CALIBRATED)
    ion = load_lab(LABS / "sim_two_node_ion.toml")
    ion_request = request_from(
        {"pairs": 1, "protocol": "single_click", "delivery": "memory", "alpha": 0.1}
    )
    with pytest.raises(QnodeError, match="needs an NV node with a 13C memory"):
        check_request(ion_request, ion, "A", "B", CALIBRATED)


def test_each_side_follows_its_own_delivery():
    req = request(delivery="memory", peer_delivery="Z")
    assert announced_delivery(req) == "Z"
    assert round_basis(req, True, "Z") == "memory"
    assert round_basis(req, False, "Z") == "Z"
    both = request(delivery="memory", peer_delivery="memory")
    assert announced_delivery(both) == "keep"
    kept = request(delivery="keep", peer_delivery="Z")  # B keeps its electron, C measures
    assert round_basis(kept, True, announced_delivery(kept)) == "keep"
    assert round_basis(kept, False, announced_delivery(kept)) == "Z"
    verifying = request(delivery="verify")
    assert round_basis(verifying, False, "Y") == "Y"  # follows the announced basis
    with pytest.raises(QnodeError, match="cannot be mixed"):
        check_request(
            request(delivery="verify", peer_delivery="Z"), load_lab(THREE), "B", "A", CALIBRATED
        )
    stored = round_sequence("nv", "barrett_kok", 1, "memory", None)
    assert isinstance(stored.operations[-1], SwapToMemory)  # right after the herald
    assert not any(type(op).__name__ == "Readout" for op in stored.operations)


BELL_EIGENVALUES = {  # each Bell state's XX, YY, ZZ
    "phi_plus": {"X": 1, "Y": -1, "Z": 1},
    "phi_minus": {"X": -1, "Y": 1, "Z": 1},
    "psi_plus": {"X": 1, "Y": 1, "Z": -1},
    "psi_minus": {"X": -1, "Y": -1, "Z": -1},
}


def product_then_bsm(basis: str, memory_sign: int, electron_sign: int) -> Sequence:
    """A product state written as the link layer writes one: the memory reset, the electron
    turned to the cardinal state (STATE_PREPARATIONS), moved in (SwapToMemory), the electron
    turned to its own; then the BSM."""
    from sequences.memory import MemoryInit
    from sequences.network_ops import STATE_PREPARATIONS
    from sequences.operations import CRCheck, SpinInit

    def turn(sign: int) -> tuple:
        pulse = STATE_PREPARATIONS[f"{'+' if sign > 0 else '-'}{basis}"]
        return () if pulse is None else (pulse,)

    ops = (
        CRCheck(),
        SpinInit(),
        MemoryInit(),
        *turn(memory_sign),
        SwapToMemory(),
        *turn(electron_sign),
        *bell_measurement().operations,
    )
    return Sequence("product_then_bsm", ops, 1)


@pytest.mark.parametrize("basis", ["X", "Y", "Z"])
@pytest.mark.parametrize("signs", [(1, 1), (1, -1), (-1, 1), (-1, -1)])
def test_bell_measurement_names_states_in_the_frame_swap_to_memory_writes(basis, signs):
    """What a swap needs of the BSM: the Bell state of (the electron's half stored by
    SwapToMemory, the electron) as if both were still electrons. A product state of the two,
    each a cardinal state of `basis`, is an even mixture of the two Bell states whose
    `basis` x `basis` eigenvalue is the product of the signs: replayed on the papers'
    Hamiltonian (the readouts projecting, the branches followed), the outcomes BELL_TABLE
    names among those two come with probability > 0.85 (the rest: the DD gates' A_perp-tilted
    axis). A convention-free check: no Bell state is written in any frame by hand."""
    compiled = compile_sequence(product_then_bsm(basis, *signs), PARAMS, HW)
    found = {
        BELL_TABLE[(+1 if e else -1, +1 if m else -1)]: replay_outcomes(compiled, (e, m))[1]
        for e in (True, False)
        for m in (True, False)
    }
    assert sum(found.values()) == pytest.approx(1.0)
    product = signs[0] * signs[1]
    consistent = sum(p for state, p in found.items() if BELL_EIGENVALUES[state][basis] == product)
    assert consistent > 0.85, found


def test_with_an_even_number_of_xy_pairs_the_bsm_would_read_the_parity_inverted():
    """Why a BSM's gate must have 2 modulo 4 pulses (sequences.memory.gate_pulses_near): at
    52 (the compiler refuses it for the BSM; here its refusal is switched off) the XY-4
    train leaves the electron without the Z that 50's leaves, and |0>|0> (ZZ +1) is named a
    psi state (ZZ -1) almost always, on the papers' Hamiltonian."""
    from dataclasses import replace

    sequence = product_then_bsm("Z", 1, 1)
    unchecked = tuple(
        replace(op, named_outcomes=False) if isinstance(op, MemoryGate) else op
        for op in sequence.operations
    )
    for pulses, phi_expected in ((50, True), (52, False)):
        params = {**PARAMS, "c13_n_pulses": pulses}
        compiled = compile_sequence(Sequence("z", unchecked, 1), params, HW)
        phi = sum(
            replay_outcomes(compiled, (e, m))[1]
            for e in (True, False)
            for m in (True, False)
            if BELL_TABLE[(+1 if e else -1, +1 if m else -1)].startswith("phi")
        )
        assert (phi > 0.85) if phi_expected else (phi < 0.15), (pulses, phi)


@pytest.mark.parametrize("state", list(BELL_VECTORS))
def test_in_the_gate_s_own_axes_the_bsm_names_the_other_phase(state):
    """The control: each Bell state written straight into the model's (electron, nucleus) at
    the BSM's start, in the nucleus's own axes there (where the gate's derivation puts them),
    is named with the other phase (phi+ <-> phi-, psi+ <-> psi-): SwapToMemory's frame is
    half a turn about z from those axes (a Z on the memory), which BELL_TABLE's names take
    in. A table derived in the gate's axes reads every swap's phase bit inverted (seen: the
    simulator's end-to-end states after the frame, psi- where psi+ was to be)."""
    from hil_tests.test_bsm import FLIPPED_PHASE

    vector = BELL_VECTORS[state]
    compiled = compile_sequence(bell_measurement(), PARAMS, HW)
    rho = np.outer(vector, vector.conj())
    found = {
        BELL_TABLE[(+1 if e else -1, +1 if m else -1)]: replay_outcomes(compiled, (e, m), rho)[1]
        for e in (True, False)
        for m in (True, False)
    }
    assert found[FLIPPED_PHASE[state]] > 0.85, found


PAULI_X = np.array([[0.0, 1.0], [1.0, 0.0]])


def test_the_echo_on_both_electrons_keeps_the_heralded_state_on_one_it_does_not():
    """The echo is X on an electron: X on both leaves psi+ as it is and psi- up to a sign (the
    link's Pauli frame holds); X on one side turns psi+/psi- into phi+/phi- (its Z and Y bits
    would flip): so a session echoes on both sides when either holds a stored pair."""
    both, one = np.kron(PAULI_X, PAULI_X), np.kron(PAULI_X, np.eye(2))
    for name, flipped in (("psi_plus", "phi_plus"), ("psi_minus", "phi_minus")):
        v = BELL_VECTORS[name]
        assert abs(np.vdot(v, both @ v)) == pytest.approx(1.0)
        assert abs(np.vdot(BELL_VECTORS[flipped], one @ v)) == pytest.approx(1.0)


@pytest.mark.parametrize("protocol", ["single_click", "barrett_kok"])
def test_a_protected_attempt_echoes_and_lasts_whole_larmor_periods(protocol):
    """The echo (an electron pi pulse) right after the last optical pulse, and the failed
    attempt's period within half a clock cycle of a whole number of Larmor periods."""
    op = EntanglementAttempt(protocol, protect_memory=True, max_attempts=10)
    plain = compile_sequence(Sequence("a", (EntanglementAttempt(protocol),), 1), PARAMS, HW)
    c = compile_sequence(Sequence("a", (op,), 1), PARAMS, HW)
    lines = [line.split(";")[0].strip() for line in c.listing.splitlines()]
    lines = [line for line in lines if line]
    excites = [k for k, line in enumerate(lines) if line == "TTL_CLR 0x8"]
    assert lines[excites[-1] + 1].startswith("AWG_TRIG")  # the echo
    assert not lines[excites[0] + 1].startswith("AWG_TRIG") or len(excites) == 1
    body = lines[lines.index("attempt1:") : lines.index("failed4:")]
    rounds = [k for k, line in enumerate(body) if line.startswith("BRANCH_LT")] or [len(body)]
    larmor_ns = 1e9 / PARAMS["c13_larmor_hz"]
    for part in (body[: rounds[0]], body[rounds[0] :]):  # Barrett-Kok: a fail in either round
        waits = [line.replace(",", " ").split() for line in part if line.startswith("WAIT")]
        period = sum(int(w[1] if w[0] == "WAIT" else w[2]) for w in waits)
        assert abs(period - round(period / larmor_ns) * larmor_ns) <= 2.0, (part, period)
    assert c.listing.count("AWG_TRIG") == plain.listing.count("AWG_TRIG") + 1


def test_the_attempt_s_flags_travel_as_data_and_nothing_else_takes_a_bool():
    from sequences.operations import SequenceDataError, from_data, to_data

    protected = Sequence("a", (EntanglementAttempt(protect_memory=True, echo=True),), 1)
    assert from_data(to_data(protected))[0] == protected
    data = to_data(protected)
    data["operations"][0]["max_attempts"] = True
    with pytest.raises(SequenceDataError, match="unexpected value True"):
        from_data(data)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--delivery", "cellar", "--delivery 'cellar': keep, X, Y, Z, verify, memory"),
        ("--peer-delivery", "z", "--peer-delivery 'z': keep, X, Y, Z, verify, memory"),
        ("--basis", "memory", "into memory: --delivery memory"),
        ("--basis", "ghz", "--basis 'ghz': keep, X, Y or Z"),
    ],
)
def test_the_cli_checks_the_deliveries_before_anything_starts(option, value, message, tmp_path):
    import os
    import subprocess
    import sys

    args = ["entangle", "--lab", str(THREE), "--node", "B", "--peer", "A", "--pairs", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", *args, option, value],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QNODE_DATA_DIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr


# through the real transports -------------------------------------------------------------------
def resonances(memory: dict, best: int = 2) -> list[float]:
    """The truth's DD resonances of 1-4 us on the 2 ns grid whose grid error turns the gate's
    axis least (truth_calibration.ranked_resonances), the `best` of them."""
    from controller.harness.truth_calibration import ranked_resonances

    return ranked_resonances(memory)[:best]


def model_pulse_count(values: dict, hw, free) -> int:
    """The even pulse count of the conditional pi/2 at the stored tau, on the model."""
    start = np.kron(np.diag([1, 0]), np.diag([1, 0]))
    for n in range(4, 600, 2):
        c = compile_sequence(Sequence("g", (MemoryGate(),), 1), {**values, "c13_n_pulses": n}, hw)
        rho, _ = replay(c, start, free, values["pi_amplitude_v"], hw)
        if float(np.real(nucleus_of(rho)[0, 0])) < 0.5:
            return gate_pulses_near(n)
    raise AssertionError("the model's gate never reaches pi/2")


STORED_CHECKS = (("+Z", "z"), ("+X", "x"), ("+Y", "y"))


def stored_state_survival(values: dict, hw, free) -> float:
    """The worst, over +Z, +X and +Y, of the probability that a state written as the link
    layer writes it (MemoryInit, the electron's pulse, SwapToMemory on the epoch) reads back
    bright in its basis, on the model."""
    from sequences.memory import MemoryInit, MemoryReadout
    from sequences.network_ops import STATE_PREPARATIONS

    worst = 1.0
    for state, basis in STORED_CHECKS:
        prep = STATE_PREPARATIONS[state]
        ops = (
            MemoryInit(),
            *((prep,) if prep is not None else ()),
            SwapToMemory(epoch=True),
            MemoryReadout(basis=basis, epoch=True),
        )
        c = compile_sequence(Sequence("stored", ops, 1), values, hw)
        p = replay_outcomes(c, (True,), None, free, values["pi_amplitude_v"], hw)[1]
        worst = min(worst, p)
    return worst


def calibrate_memory_from_truth(lab, store: ParameterStore, node: str, memory: dict) -> None:
    """The memory's gate as c13_gate and c13_spectroscopy would leave it, from the truth's
    couplings on the model: of the resonances the clock's grid plays best (`resonances`), the
    one whose pulse count writes and reads back cardinal states best. The grid's rounding
    turns a resonance's axis over the gate: the cavity lab's A at tau 2068 ns (0.18 ns off,
    order 17) wrote mixed states, even MemoryInit failed, on the model and the simulator
    alike; at 1338 ns (0.001 ns off) it does not."""
    hw = hardware_of(lab, node)
    f_1 = math.hypot(memory["larmor_hz"] + memory["a_par_hz"], memory["a_perp_hz"])
    values = {
        "c13_larmor_hz": memory["larmor_hz"],
        "c13_omega1_hz": f_1,
        "c13_t2_s": memory["t2_s"],
        **MEMORY_PLAN,
    }
    free = free_evolution(memory["larmor_hz"], memory["a_par_hz"], memory["a_perp_hz"])
    current = {**store.station_values(node, lab.nodes[node].memory_platform), **values}
    scored = []
    for tau in resonances(memory):
        trial = {**current, "c13_tau_ns": float(tau)}
        try:
            trial["c13_n_pulses"] = float(model_pulse_count(trial, hw, free))
        except AssertionError:  # a resonance the clock's grid missed: no pi/2 in reach
            continue
        scored.append((stored_state_survival(trial, hw, free), tau, trial["c13_n_pulses"]))
    _, tau, pulses = max(scored)
    for name, value in {**values, "c13_tau_ns": float(tau), "c13_n_pulses": pulses}.items():
        store.set_manual(node, name, value, "from the simulator's truth (test)")


@pytest.fixture(scope="module")
def memory_lab(tmp_path_factory):
    """The three-node lab, its five daemons; both links calibrated from the truth:
    (lab, sim control, store, B's memory truth). B's memory is calibrated by the test."""
    yield from _memory_lab(tmp_path_factory, THREE)


def _memory_lab(tmp_path_factory, path: Path, seed: int = SEED):
    """The lab at `path` with its own simulator (`seed`), data folder and five daemons, both
    links calibrated from the truth: (lab, sim control, store, B's memory truth)."""
    from controller.harness.sim import lab_processes
    from controller.harness.truth_calibration import calibrate_links_from_truth
    from controller.operator import daemons

    folder = tmp_path_factory.mktemp("memory_delivery")
    with lab_processes(folder / "data") as procs:
        lab = load_lab(path)
        resource_map = folder / "resources.json"
        try:
            procs.append(start_sim(lab, resource_map, seed=seed, log=folder / "sim.log"))
        except StartError as e:
            pytest.fail(str(e))
        control = SimControl(resource_map)
        calibrate_links_from_truth(lab, control)
        stations = ["A", "B", "C", "M1", "M2"]
        procs.extend(daemons.ensure_daemons(lab, stations, resource_map, folder / "logs"))
        store = ParameterStore(lab.data_dir / "params.sqlite")
        yield lab, control, store, control.truth("B")["memories"]["c13"]
        store.close()


STORE_ALPHA = 0.1
"""A-B single-click into B's memory (as Pompili et al.): p ~ 1e-4 here, so a few 10^3-10^4
attempts with the waiting memory initialised again every hold_attempts (a fifth of its
N_1/e); Barrett-Kok's ~1e-8 on this lab's free-space NVs is refused for memory delivery."""


def store_one(client, peer_delivery: str = "Z", **extra) -> dict:
    started = client.entangle(
        1,
        "single_click",
        alpha=extra.pop("alpha", STORE_ALPHA),
        deadline_s=120,
        delivery="memory",
        peer_delivery=peer_delivery,
        peer="A",
        **extra,
    )
    return client.wait_session(started["session"], timeout_s=180)


def z_bit(client, session: str, pair_id: bytes) -> int:
    """The peer's Z bit of one pair (0: not measured)."""
    rows = client.session_data(session)["pairs"]
    row = rows[rows["id"] == pair_id]
    assert len(row) == 1 and row[0]["status"] == DELIVERED
    return int(row[0]["bit"])


def calibrated_memory(memory_lab) -> None:
    lab, _control, store, memory = memory_lab
    if "c13_n_pulses" not in store.station_values("B", "nv"):
        calibrate_memory_from_truth(lab, store, "B", memory)


def store_and_read_z(b, a, pairs: int) -> tuple[int, int]:
    """`pairs` sessions of one pair, B's half stored then read in Z: each one's bookkeeping
    checked (the memory holds it, the hold, the release); (anticorrelated, valid readouts)."""
    anti = kept = 0
    for index in range(pairs):
        summary = store_one(b)
        assert summary["state"] == "completed", summary.get("reason")
        holds = summary["memory"]["holds"]["B.c13"]
        assert holds is not None and holds["link"] == "AB", summary["memory"]
        assert 0.25 < holds["goodness"] <= holds["fidelity_heralded"]
        data = b.session_data(summary["session"])
        rows = data["pairs"]
        mine = rows[rows["status"] == DELIVERED]
        assert len(mine) == 1 and BASES[mine[0]["basis"]] == "memory"
        # the waiting memory initialised again every hold_attempts: a fifth of its N_1/e
        # (MEMORY_PLAN) at alpha 0.1, so a shot (one round each) per 1000 attempts at most
        hold = data["request"]["hold_attempts"]
        assert hold == pytest.approx(1000, abs=1)
        stats = summary["stats"]
        assert stats["shots"] >= math.ceil(stats["attempts"] / hold), stats
        assert b.memory()["holds"]["B.c13"]["pair_id"] == mine[0]["id"].decode()
        if index == 0:  # the memory is taken: a second store is refused until it is read
            with pytest.raises(QnodeError, match="no free memory qubit"):
                store_one(b)
        measured = b.memory_measure("Z")
        assert b.memory()["holds"]["B.c13"] is None  # released
        theirs = a.session_data(summary["session"])["pairs"]
        their = theirs[theirs["id"] == mine[0]["id"]]
        assert len(their) == 1 and their[0]["status"] == DELIVERED
        if measured["valid"] and their[0]["bit"] != 0:
            kept += 1
            anti += int(measured["bit"] == -int(their[0]["bit"]))
    return anti, kept


LEAN_PAIRS = 6
"""make test's share: the bookkeeping of a few stores (~3-5 s each); the statistics are the
slow_sim test's (PAIRS)."""


@pytest.mark.timeout(900)
def test_b_stores_its_half_in_its_memory_and_releases_it_when_read(memory_lab):
    """B (initiating, delivery memory) and A (peer_delivery Z): B's half goes into its 13C at
    the herald (the memory initialised again every hold_attempts while it waits), the memory
    holds it, a second store is refused until it is read, reading releases it. Uncalibrated
    first: the request names what is missing; Barrett-Kok into memory is refused with its
    numbers. The Z anticorrelation is printed here, asserted in the slow_sim test below."""
    from controller.operator.client import NodeClient

    lab, _control, store, memory = memory_lab
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b, NodeClient.for_lab(lab, "A") as a:
        with pytest.raises(QnodeError, match="memory c13 is not calibrated"):
            store_one(b)
        calibrate_memory_from_truth(lab, store, "B", memory)
        with pytest.raises(QnodeError, match=r"barrett_kok needs ~.* rounds; single_click"):
            b.entangle(
                1, "barrett_kok", deadline_s=60, delivery="memory", peer_delivery="Z", peer="A"
            )
        with pytest.raises(QnodeError, match="holds 0 stored pairs"):
            b.memory_measure("Z")
        anti, kept = store_and_read_z(b, a, LEAN_PAIRS)
    print(f"{LEAN_PAIRS} stored pairs: {anti}/{kept} anticorrelated")


@pytest.mark.slow_sim
@pytest.mark.timeout(1500)
def test_b_s_stored_half_read_in_z_is_anticorrelated_with_a(memory_lab):
    """PAIRS stores read in Z: anticorrelated with A's bit as psi+/psi- say, 3.2 sigma above
    chance on the valid readouts (PAIRS' docstring)."""
    from controller.operator.client import NodeClient

    lab = memory_lab[0]
    calibrated_memory(memory_lab)
    started = time.monotonic()
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b, NodeClient.for_lab(lab, "A") as a:
        anti, kept = store_and_read_z(b, a, PAIRS)
    print(f"{PAIRS} stored pairs in {time.monotonic() - started:.0f} s: {anti}/{kept} anti")
    assert kept >= 0.8 * PAIRS  # the readout's charge check passed (~90 % seen)
    assert anti >= kept / 2 + ANTI_SIGMAS * math.sqrt(kept) / 2, (anti, kept)


EPOCH_Y_PAIRS = 150
"""Sessions of one pair each (single-click, alpha 0.1), A measuring at once in Y, B's stored
half read in Y in a later program (its frame from the sequencer's Larmor epoch): the bits
agree (psi+ after the link's Pauli frame: YY = +1). The bound is 3.1 sigma above chance on
the valid readouts (94 of 150); runs gave 48 of 68 (0.71: 106 +- 5.6 expected of 150, the
bound 2.2 sigma below). ~4 s a pair (the memory initialised again every hold_attempts)."""
EPOCH_Y_SIGMAS = 3.1
EPOCH_X_PAIRS = 16
"""The same in X, printed, not asserted: X agrees less (41 of 64 over three runs, 14 of 16 in
one, against 0.75-0.79 in Y) though the epoch frame itself keeps X across programs on the
simulator (a stored +x reads +x 0.85 a program later): open, docs/network.md."""


@pytest.mark.slow_sim
@pytest.mark.timeout(1500)
def test_a_stored_half_read_in_y_in_a_later_program_agrees_with_a(memory_lab):
    """The stored pair's frame survives the end of the program that stored it: B's memory
    read in Y (memory_measure, a program of its own after the session's) agrees with A's
    bit in Y, measured at the herald. X is reported beside it (EPOCH_X_PAIRS)."""
    from controller.operator.client import NodeClient

    lab = memory_lab[0]
    calibrated_memory(memory_lab)
    counts = {"X": [0, 0], "Y": [0, 0]}
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b, NodeClient.for_lab(lab, "A") as a:
        for basis in ["Y"] * EPOCH_Y_PAIRS + ["X"] * EPOCH_X_PAIRS:
            summary = store_one(b, peer_delivery=basis)
            assert summary["state"] == "completed", summary.get("reason")
            rows = b.session_data(summary["session"])["pairs"]
            mine = rows[rows["status"] == DELIVERED]
            measured = b.memory_measure(basis)
            assert measured["frame_deg"] == 0.0  # no phase per attempt calibrated
            theirs = a.session_data(summary["session"])["pairs"]
            their = theirs[theirs["id"] == mine[0]["id"]]
            if measured["valid"] and their[0]["bit"] != 0:
                counts[basis][0] += int(measured["bit"] == int(their[0]["bit"]))
                counts[basis][1] += 1
    print(f"stored halves read in X/Y a program later, agree/kept: {counts}")
    agree, kept = counts["Y"]
    assert kept >= 0.8 * EPOCH_Y_PAIRS  # the readout's charge check passed
    assert agree >= kept / 2 + EPOCH_Y_SIGMAS * math.sqrt(kept) / 2, counts


PROTECTED = 100
"""Store A-B, make B-C with the echo, read B's memory in Z: anticorrelated with A's bit as
psi+/- says. Chance gives 50 +- 5 of 100; the test asks for 65 (3 sigma above chance), while
runs give 80-85 % (80 +- 4 expected at 80 %: 65 is 3.75 sigma below it); the unprotected
store-and-read gives ~90 %. ~1.3 s each (~130 s)."""
PROTECTED_ANTI = 65
BC_ALPHA = 0.1
"""Single-click on B-C while B holds a pair (as Pompili et al.): p ~ 1e-4, a few 10^4 attempts
a pair, where Barrett-Kok's ~5e-8 (this lab's photon collection) would take 10^7-10^8."""
BC_SESSION = {"deadline_s": 120, "delivery": "keep", "peer_delivery": "Z", "peer": "C"}
BELL_MEASUREMENTS = 52
"""~3.5 s each. The BSM names phi (ZZ = +1 on B's two qubits) when A's Z bit times C's is +1.
Runs gave 14 of 16 and 36 of 52 (0.69: the chain's errors multiply: A-B's Z correlation,
B's electron kept in Z across the end of the B-C program, both readouts). The bound, half
(26), is 3.0 sigma below 36 +- 3.3; a BSM reading the parity inverted (the table's sign
wrong) gives 16 +- 3.3, 3 sigma under it. It does not tell chance (26 +- 3.6) apart at 3
sigma: the one-program test (hil_tests/test_bsm.py) does, with 160 shots."""
PARITY_AGREE_MIN = 26


def store_then_bc(b) -> tuple[dict, bytes, dict]:
    """B stores an A-B pair, then makes B-C (B keeps its electron, C measures Z): the two
    sessions' summaries and the stored pair's id."""
    stored = store_one(b)
    assert stored["state"] == "completed", stored.get("reason")
    ab = b.session_data(stored["session"])["pairs"]
    ab_id = ab[ab["status"] == DELIVERED][0]["id"]
    started = b.entangle(1, "single_click", alpha=BC_ALPHA, **BC_SESSION)
    bc = b.wait_session(started["session"], timeout_s=180)
    assert bc["state"] == "completed", bc.get("reason")
    kept = bc["memory"]["holds"]["B.c13"]
    assert kept is not None and kept["pair_id"] == ab_id.decode()
    assert kept["attempts"]["BC"] == bc["stats"]["attempts"]  # the block B-C cost it
    assert kept["goodness"] < kept["fidelity_heralded"]  # the planning model's, reported
    assert bc["memory"]["holds"]["B"]["link"] == "BC"  # the electron holds B-C
    return stored, ab_id, bc


@pytest.mark.slow_sim
@pytest.mark.xfail(reason="a stored Z does not survive 10^4 attempts (docstring)", strict=False)
@pytest.mark.timeout(1500)
def test_a_stored_pair_survives_a_protected_session_on_the_other_link(memory_lab):
    """B stores A-B; B-C runs with the echo on both electrons (B holds a stored pair: the
    attempts protect it, padded to whole Larmor periods) and reports the stored pair's
    expected fidelity; B's memory read in Z afterwards is still anticorrelated with A.
    Open (xfail, and slow_sim: out of `make test`): on this lab's free-space NVs B-C takes
    10^4-6x10^4 attempts, and since the drawn attempts got the stepped attempt's exact
    channel each costs a stored Z state ~5e-5 (at every random electron reset the nucleus has
    turned about the tilted hyperfine axis, A_perp ~30 kHz): 47 and 56 of 100 seen. On the
    cavity lab (hundreds of attempts) the truth-calibrated memory gate of its weakly coupled
    13C does not store at all yet (18 of 30 read right without any B-C session)."""
    from controller.operator.client import NodeClient

    lab = memory_lab[0]
    calibrated_memory(memory_lab)
    anti = 0
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b, NodeClient.for_lab(lab, "A") as a:
        for _ in range(PROTECTED):
            stored, ab_id, _bc = store_then_bc(b)
            measured = b.memory_measure("Z")
            assert measured["pair_id"] == ab_id.decode()
            anti += int(measured["bit"] == -z_bit(a, stored["session"], ab_id))
    print(f"{PROTECTED} protected: {anti} anticorrelated")
    assert anti >= PROTECTED_ANTI, anti


@pytest.mark.slow_sim
@pytest.mark.timeout(1500)
def test_bell_measurement_on_b_returns_its_outcomes_and_frees_both_qubits(memory_lab):
    """Store A-B, make B-C (C measures Z, B keeps its electron), then B's Bell-state
    measurement: its two bits and the Bell state BELL_TABLE names come back, with both
    pairs (ids, heralded outcomes, frames); both qubits are free after and the run is on
    record. Its parity agrees with A's Z bit times C's (the electron's readout spares the
    memory). The phase bit is not checked: the electron's half does not keep its phase
    across the end of the B-C program (docs/network.md)."""
    from controller.operator.client import NodeClient

    lab = memory_lab[0]
    calibrated_memory(memory_lab)
    agree, seen = 0, set()
    with (
        NodeClient.for_lab(lab, "B", timeout_s=60) as b,
        NodeClient.for_lab(lab, "A") as a,
        NodeClient.for_lab(lab, "C") as c,
    ):
        for _ in range(BELL_MEASUREMENTS):
            stored, ab_id, bc = store_then_bc(b)
            rows = b.session_data(bc["session"])["pairs"]
            bc_id = rows[rows["status"] == DELIVERED][0]["id"]
            result = b.bell_measurement()
            bits = (result["electron_bit"], result["memory_bit"])
            assert set(bits) <= {-1, 1}
            assert result["bell_state"] == BELL_TABLE[bits]
            assert result["pairs"]["memory"]["pair_id"] == ab_id.decode()
            assert result["pairs"]["electron"]["pair_id"] == bc_id.decode()
            assert result["pairs"]["electron"]["frame_here"] is False  # C is B-C's frame node
            assert b.memory()["holds"] == {"B": None, "B.c13": None}
            assert result["run_id"] and len(result["counts"]) == 2
            seen.add(result["bell_state"])
            parity = z_bit(a, stored["session"], ab_id) * z_bit(c, bc["session"], bc_id)
            agree += int(result["bell_state"].startswith("phi") == (parity == 1))
        with pytest.raises(QnodeError, match="needs a pair in the electron and one stored"):
            b.bell_measurement()
    print(f"{BELL_MEASUREMENTS} Bell measurements: parity agrees {agree}; {sorted(seen)}")
    assert len(seen) >= 2  # more than one outcome comes back
    assert agree >= PARITY_AGREE_MIN, agree


@pytest.mark.timeout(600)
def test_a_stored_pair_whose_budget_runs_out_is_cut_off(memory_lab):
    """A memory that dephases within a couple of attempts (c13_n_1e_at_alpha 2): a pair stored
    with minimum fidelity 0.5 has a budget of a few attempts on B-C, far fewer than a herald
    takes: the B-C session ends with "cut-off" and B discards the stored pair, saying why."""
    from controller.operator.client import NodeClient

    lab, _control, store, _memory = memory_lab
    calibrated_memory(memory_lab)
    store.set_manual("B", "c13_n_1e_at_alpha", 2.0, "a memory that forgets fast (test)")
    try:
        with NodeClient.for_lab(lab, "B", timeout_s=60) as b:
            stored = store_one(b, fidelity_min=0.5)
            assert stored["state"] == "completed", stored.get("reason")
            pair_id = stored["memory"]["holds"]["B.c13"]["pair_id"]
            started = b.entangle(1, "single_click", alpha=BC_ALPHA, **BC_SESSION)
            bc = b.wait_session(started["session"], timeout_s=180)
            assert bc["state"] == "cut-off", (bc["reason"], bc["stats"])
            assert "budget" in bc["reason"]
            assert bc["memory"]["holds"]["B.c13"] is None
            discarded = [d for d in b.memory()["discarded"] if d["pair_id"] == pair_id]
            assert discarded and discarded[-1]["reason"].startswith("cut-off"), discarded
            with NodeClient.for_lab(lab, "C") as c:
                assert c.session(bc["session"])["state"] == "cut-off"
    finally:
        store.set_manual("B", "c13_n_1e_at_alpha", MEMORY_PLAN["c13_n_1e_at_alpha"], "back (test)")


def test_the_prepare_memory_request_takes_only_a_cardinal_state():
    """`prepare_memory` (the operator's teleportation input): a cardinal state and a peer;
    anything else refused by its schema with the choices named."""
    from controller.link.messages import OPERATOR
    from controller.messaging.wire import MessageError, pack, unpack

    good = unpack(pack("prepare_memory", 1, state="-Y", peer="C"), OPERATOR)
    assert (good["state"], good["peer"]) == ("-Y", "C")
    with pytest.raises(MessageError, match="state"):
        unpack(pack("prepare_memory", 1, state="+W", peer="C"), OPERATOR)
    with pytest.raises(MessageError, match="missing field 'peer'"):
        unpack(pack("prepare_memory", 1, state="+X"), OPERATOR)


def test_the_published_set_s_memory_gate_writes_and_reads_back_cardinal_states(tmp_path):
    """labs/sim_pompili_2021.toml's 13C on the published run's seed: the gate the harness
    chooses (published_network.ranked_memory_gate: the resonance whose grid error times order
    is least and whose gate reaches pi/2) writes and reads back +Z, +X and +Y on the model
    (stored_state_survival, worst of the three) at 0.9 or better; the soak's choice on the
    lab's first spin (tau 1850 ns) gave 0.07, and its run's swap came out fully mixed."""
    import tomllib

    from controller.harness.published_network import LAB_FILE, SEED, ranked_memory_gate
    from sim_backends.lab import SimLab

    lab = load_lab(LAB_FILE)
    sim = SimLab(tomllib.loads(LAB_FILE.read_text()), SEED, tmp_path / "s", tmp_path / "s.json")
    memory = sim.nodes["B"].physics.memories[0].truth
    tau_ns, pulses = ranked_memory_gate(memory.__dict__)
    f_l, a_par, a_perp = memory.larmor_hz, memory.a_par_hz, memory.a_perp_hz
    values = {
        **PARAMS,
        **MEMORY_PLAN,
        "c13_larmor_hz": f_l,
        "c13_omega1_hz": math.hypot(f_l + a_par, a_perp),
        "c13_t2_s": memory.t2_s,
        "c13_tau_ns": tau_ns,
        "c13_n_pulses": float(pulses),
    }
    survival = stored_state_survival(
        values, hardware_of(lab, "B"), free_evolution(f_l, a_par, a_perp)
    )
    assert survival >= 0.9, (tau_ns, pulses, survival)
