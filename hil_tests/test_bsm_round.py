"""The Bell-state measurement in the same program as its link's herald, the stored state's
turn per attempt fed forward in real time.

A state stored in a 13C turns about z by a mean phase per entanglement attempt (the spin
pump's reset at a random time: Kalb et al., PRA 97, 062330 (2018)); the attempts that turn
it are counted only by the sequencer's attempt loop (the compiler's attempt register), so
the BSM's gate must start where the stored state's frame has turned to, decided in real time
(Hermans et al., Nature 605, 663 (2022)). ALIGN's register term does it: the gate's ALIGN
waits until clock + offset + attempts x step is a whole number of Larmor periods since the
sequencer's epoch (sequences.program.align_offset_ps), step = the turn's time at the Larmor
period (sequences.memory.attempt_step_ps).

Here: the program format (text, binary, bounds), the simulated sequencer's execution through
its serial line, and the compiled BSM replayed on the papers' Hamiltonian (the model of
hil_tests/test_compiler_memory.py) from each Bell state of (electron, memory) turned by the
attempts' phase.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from controller.data.sessionfile import DELIVERED
from controller.harness.truth_calibration import phase_per_attempt_from_truth
from controller.harness.truth_states import (
    BELL_VECTORS,
    bell_fidelities,
    framed,
    ghz_truth_values,
)
from controller.link.vocabulary import BASES
from hil_tests.test_compiler_memory import F_L, HW, PARAMS, replay_outcomes
from qnode.errors import ProgramError, QnodeError
from sequences.compiler import R_ATTEMPTS, CompileError, compile_sequence
from sequences.library import BELL_TABLE, bell_measurement
from sequences.memory import MemoryGate, MemoryInit, attempt_step_ps
from sequences.operations import Sequence
from sequences.program import (
    ALIGN_STEP_PS,
    Instruction,
    Op,
    align_offset_ps,
    align_step_ps,
    align_wait_ns,
    assemble,
    decode,
    encode,
)

# ---- the program format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, register, step",
    [
        ("ALIGN 2us, 500ns, r2, 1570", 2, 1570),
        ("ALIGN 2us, 500ns, r15, -1570ps", 15, -1570),
        ("ALIGN 2us, 0, r0, 32767", 0, ALIGN_STEP_PS),
        ("ALIGN 2us, 0, r3, -32768", 3, -ALIGN_STEP_PS - 1),
        ("ALIGN 2us, 0, r3, -2ns", 3, -2000),
    ],
)
def test_align_s_register_term_round_trips_text_and_binary(text, register, step):
    instructions = assemble(f"{text}\nHALT").instructions
    align = instructions[0]
    assert (align.a, align_step_ps(align)) == (register, step)
    assert decode(encode(instructions)) == instructions


def test_an_align_without_register_term_reads_no_register():
    """The old form: step 0 in its image, so whatever r0 holds the offset is the constant."""
    align = assemble("ALIGN 2us, 500ns\nHALT").instructions[0]
    assert align_step_ps(align) == 0
    assert align_offset_ps(align, [123_456] + [0] * 15) == 500_000


@pytest.mark.parametrize(
    "text, message",
    [
        ("ALIGN 2us, 0, r2", "ALIGN's register needs its step"),
        ("ALIGN 2us, 0, r16, 5", "register r16 does not exist"),
        ("ALIGN 2us, 0, r2, 32768", "step 32768 ps is outside"),
        ("ALIGN 2us, 0, r2, -32769", "step -32769 ps is outside"),
        ("ALIGN 2us, 0, r2, 1us", "is not a signed time in ps"),
        ("ALIGN 2us, 0, c2, 5", "is not a register"),
        ("ALIGN 2us, 0, r2, 5, 6", "ALIGN takes 1 to 4 operands"),
    ],
)
def test_align_s_register_term_is_bounded(text, message):
    with pytest.raises(ProgramError, match=message):
        assemble(f"{text}\nHALT")


def test_the_firmware_refuses_a_register_term_naming_no_register():
    with pytest.raises(ProgramError, match="register r20 does not exist"):
        encode([Instruction(Op.ALIGN, a=20, b=5, c=0, d=2_000_000), Instruction(Op.HALT)])


@pytest.mark.parametrize("attempts", [0, 1, 7, 1000, 123_456])
@pytest.mark.parametrize("step", [1570, -1570])
def test_the_offset_grows_with_the_register_modulo_the_period(attempts, step):
    """align_offset_ps = (offset + register x step) mod period, and ALIGN's wait ends where
    clock + that offset is a whole number of periods."""
    period = 2_257_336
    text = f"ALIGN {period}, 1000ns, r{R_ATTEMPTS}, {step}\nHALT"
    align = assemble(text).instructions[0]
    registers = [0] * 16
    registers[R_ATTEMPTS] = attempts
    offset = align_offset_ps(align, registers)
    assert offset == (1_000_000 + attempts * step) % period
    for clock in (0, 4, 999_996, 10**12 + 8):
        wait = align_wait_ns(clock, period, offset)
        residual = ((clock + wait) * 1000 + offset) % period
        assert min(residual, period - residual) <= 2000  # half a 4 ns clock cycle


def test_the_simulated_sequencer_adds_the_register_term(open_driver):
    """Through the sequencer's serial line: after an ALIGN to 2 us and a wait of 1236 ns,
    ALIGN 2us, 500ns, r2, +-10ns with r2 = 30 ends where clock + 800 (200) ns is a whole
    number of 2 us: 3200 (1800) ns after the first ALIGN's end."""
    seq = open_driver("sequencer")
    for step, expected in (("10ns", 3200), ("-10000ps", 1800), ("0", 1500)):
        program = assemble(
            f"SET r2, 30\nALIGN 2us\nEVENT 1\nWAIT 1236\nALIGN 2us, 500ns, r2, {step}\n"
            "EVENT 2\nHALT"
        )
        seq.load(program)
        seq.run()
        deadline = time.monotonic() + 20
        while seq.state() != "HALTED":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first, second = seq.read_events()
        assert second.time_ns - first.time_ns == expected, step


# ---- the compiler and the model -------------------------------------------------------------

PHASE_PER_ATTEMPT_DEG = 0.25
"""The simulator's 13C at alpha 0.05 with the echo turns by about this much per attempt
(docs/network.md): 360 attempts make a quarter turn, 720 a half."""


def test_the_bsm_s_gate_aligns_with_the_attempt_register():
    compiled = compile_sequence(
        bell_measurement(epoch=True, attempt_phase_deg=PHASE_PER_ATTEMPT_DEG), PARAMS, HW
    )
    aligns = [i for i in compiled.program.instructions if i.op == Op.ALIGN]
    step = attempt_step_ps(PHASE_PER_ATTEMPT_DEG, F_L)
    assert step == round(0.25 / 360 * 1e12 / F_L) == 1568
    assert (aligns[0].a, align_step_ps(aligns[0])) == (R_ATTEMPTS, step)


def test_feed_forward_needs_the_epoch_and_a_bounded_step():
    with pytest.raises(CompileError, match="must be written on it"):
        compile_sequence(
            Sequence("x", (MemoryInit(), MemoryGate(attempt_phase_deg=1.0)), 1), PARAMS, HW
        )
    with pytest.raises(CompileError, match="beyond ALIGN's step"):
        compile_sequence(bell_measurement(epoch=True, attempt_phase_deg=10.0), PARAMS, HW)
    with pytest.raises(CompileError, match="need frame 'keep'"):
        compile_sequence(
            Sequence("x", (MemoryGate(frame="ignore", attempt_phase_deg=1.0),), 1), PARAMS, HW
        )


def _turned(vector: np.ndarray, degrees: float) -> np.ndarray:
    """The Bell state with its memory turned about z by `degrees` (ahead of its frame, as
    the free precession exp(-i omega I_z t) turns it)."""
    half = math.radians(degrees) / 2
    u = np.kron(np.eye(2), np.diag([np.exp(-1j * half), np.exp(1j * half)]))
    rho = np.outer(vector, vector.conj())
    return u @ rho @ u.conj().T


CLOCK_FRACTIONS = (0.0, 0.37, 0.71)
"""Where in its Larmor period the free-running clock is when the BSM starts: the ALIGN's
wait (unechoed, the electron's half in a superposition) differs, and with it its
conditional phase."""


def p_named(per_attempt: float, attempts: int, fed_forward: float) -> dict[str, float]:
    """From each Bell state, its memory turned by `attempts` x `per_attempt` degrees (and on
    the epoch's frame at the clock it starts at): the probability that the BSM fed forward
    with `fed_forward` degrees per attempt names it (the worst of CLOCK_FRACTIONS)."""
    compiled = compile_sequence(
        bell_measurement(epoch=True, attempt_phase_deg=fed_forward), PARAMS, HW
    )
    period_ns = 1e9 / F_L
    found = {}
    for state, vector in BELL_VECTORS.items():
        worst = 1.0
        for fraction in CLOCK_FRACTIONS:
            clock = round(period_ns * (1000 + fraction) / 4) * 4
            # the memory's frame precessed with the clock since the epoch, and the attempts;
            # BELL_TABLE names states in SwapToMemory's frame, half a turn from the nucleus's
            # own axes (hil_tests/test_memory_delivery.py)
            turn = 180 + per_attempt * attempts + 360 * F_L * clock * 1e-9
            rho = _turned(vector, turn)
            p = sum(
                replay_outcomes(
                    compiled, (e, m), rho, clock_ns=clock, registers={R_ATTEMPTS: attempts}
                )[1]
                for e in (True, False)
                for m in (True, False)
                if BELL_TABLE[(1 if e else -1, 1 if m else -1)] == state
            )
            worst = min(worst, p)
        found[state] = worst
    return found


@pytest.mark.parametrize("attempts", [360, 720])
def test_fed_forward_the_bsm_names_each_bell_state_after_the_attempts(attempts):
    """360 (720) attempts at 0.25 degrees turned the stored state by a quarter (half) turn:
    fed forward, each Bell state is named with probability > 0.9 (runs: 0.97; the rest: the
    DD gates' tilted axis and the ALIGN's conditional phase)."""
    found = p_named(PHASE_PER_ATTEMPT_DEG, attempts, PHASE_PER_ATTEMPT_DEG)
    assert min(found.values()) > 0.9, found


def test_without_feed_forward_the_phase_bit_is_lost_or_flipped():
    """The control: not fed forward, a quarter turn leaves the phase bit at chance (runs:
    0.36-0.44 for the right state) and a half turn flips it (runs: < 0.02); fed forward
    with the wrong sign a quarter turn becomes a half turn (flipped)."""
    quarter = p_named(PHASE_PER_ATTEMPT_DEG, 360, 0.0)
    assert all(0.25 < p < 0.6 for p in quarter.values()), quarter
    half = p_named(PHASE_PER_ATTEMPT_DEG, 720, 0.0)
    assert max(half.values()) < 0.1, half
    wrong_sign = p_named(PHASE_PER_ATTEMPT_DEG, 360, -PHASE_PER_ATTEMPT_DEG)
    assert max(wrong_sign.values()) < 0.1, wrong_sign


# ---- the request and the round's program (pure) ---------------------------------------------


def test_the_bsm_delivery_is_checked_before_any_attempt():
    from controller.labconfig import load_lab
    from controller.link.messages import check_request, request_from
    from hil_tests.test_memory_delivery import CALIBRATED, THREE

    lab = load_lab(THREE)
    bsm = {"pairs": 1, "protocol": "single_click", "alpha": 0.1, "delivery": "bsm"}
    check_request(request_from({**bsm, "peer_delivery": "Z"}), lab, "B", "C", CALIBRATED)
    with pytest.raises(QnodeError, match="the bsm delivery takes one pair per session"):
        check_request(request_from({**bsm, "pairs": 2}), lab, "B", "C", CALIBRATED)
    uncalibrated = {k: v for k, v in CALIBRATED.items() if not k.startswith("c13_")}
    with pytest.raises(QnodeError, match="B's memory c13 is not calibrated"):
        check_request(request_from(bsm), lab, "B", "C", uncalibrated)


def test_the_bsm_round_measures_right_after_the_herald():
    """The round's program: check, sync, the protected attempts, then at once (no charge
    check, no program boundary) the BSM's gate on the epoch with the attempt register fed
    forward, both readouts, and only then the charge check that flags the shot."""
    from controller.link.messages import request_from
    from controller.link.plan import announced_delivery, plan_round, round_sequence
    from sequences.memory import ReadoutSparingMemory
    from sequences.operations import CRCheck, EntanglementAttempt

    with pytest.raises(QnodeError, match="protect the stored pair"):
        round_sequence("nv", "single_click", 1, "bsm", 0.1)
    seq = round_sequence(
        "nv",
        "single_click",
        1,
        "bsm",
        0.1,
        protect_memory=True,
        echo=True,
        frame_deg=12.5,
        attempt_phase_deg=0.25,
    )
    kinds = [type(op).__name__ for op in seq.operations]
    attempt = kinds.index("EntanglementAttempt")
    assert kinds[attempt + 1] == "MemoryGate" and kinds[-1] == "CRCheck"
    assert not any(isinstance(op, CRCheck) for op in seq.operations[attempt:-1])
    gate = seq.operations[attempt + 1]
    assert (gate.frame_deg, gate.attempt_phase_deg, gate.epoch) == (12.5, 0.25, True)
    assert any(isinstance(op, ReadoutSparingMemory) for op in seq.operations)
    assert isinstance(seq.operations[attempt], EntanglementAttempt)
    compiled = compile_sequence(seq, {**PARAMS, "readout_threshold": 1.5}, HW)
    assert "ALIGN" in compiled.listing and f"r{R_ATTEMPTS}," in compiled.listing
    assert compiled.readouts[:2] == ["electron", "memory"]
    request = request_from(
        {"pairs": 1, "protocol": "single_click", "delivery": "bsm", "peer_delivery": "X"}
    )
    assert announced_delivery(request) == "X"
    assert plan_round("bsm", 1, {}) == ("bsm", 1)


def test_the_ghz_round_operates_right_after_the_herald_and_keeps_the_memory():
    """Delivery "ghz" (B's second link of a GHZ shot): checked as bsm is (one pair, the
    memory calibrated, one stored pair); its round's program runs the GHZ operation at once
    after the attempts (the gate on the epoch with the attempt register fed forward, the
    electron's sparing readout) and no charge check after it, whose light would dephase the
    memory's half of the GHZ state."""
    from controller.labconfig import load_lab
    from controller.link.messages import check_request, request_from
    from controller.link.plan import announced_delivery, plan_round, round_sequence
    from hil_tests.test_memory_delivery import CALIBRATED, THREE
    from sequences.network_ops import GHZ_GATE_DEG
    from sequences.operations import CRCheck

    lab = load_lab(THREE)
    ghz = {"pairs": 1, "protocol": "single_click", "alpha": 0.1, "delivery": "ghz"}
    check_request(request_from({**ghz, "peer_delivery": "X"}), lab, "B", "C", CALIBRATED)
    with pytest.raises(QnodeError, match="the ghz delivery takes one pair per session"):
        check_request(request_from({**ghz, "pairs": 2}), lab, "B", "C", CALIBRATED)
    with pytest.raises(QnodeError, match="protect the stored pair"):
        round_sequence("nv", "single_click", 1, "ghz", 0.1)
    seq = round_sequence(
        "nv",
        "single_click",
        1,
        "ghz",
        0.1,
        protect_memory=True,
        echo=True,
        frame_deg=7.0,
        attempt_phase_deg=0.5,
    )
    kinds = [type(op).__name__ for op in seq.operations]
    attempt = kinds.index("EntanglementAttempt")
    assert kinds[attempt + 1 :] == ["MemoryGate", "MwPulse", "ReadoutSparingMemory"]
    assert not any(isinstance(op, CRCheck) for op in seq.operations[attempt:])
    gate = seq.operations[attempt + 1]
    assert (gate.angle_deg, gate.frame_deg, gate.attempt_phase_deg, gate.epoch) == (
        GHZ_GATE_DEG,
        7.0,
        0.5,
        True,
    )
    compiled = compile_sequence(seq, {**PARAMS, "readout_threshold": 1.5}, HW)
    assert compiled.readouts == ["electron"]
    request = request_from(
        {"pairs": 1, "protocol": "single_click", "delivery": "ghz", "peer_delivery": "Y"}
    )
    assert announced_delivery(request) == "Y"
    assert plan_round("ghz", 1, {}) == ("ghz", 1)
    # verifying, the memory is read in the setting's basis at once after the operation, in
    # the frame the program keeps, and only then the charge check
    read = round_sequence(
        "nv", "single_click", 1, "ghz", 0.1, protect_memory=True, echo=True, memory_basis="Y"
    )
    kinds = [type(op).__name__ for op in read.operations]
    assert kinds[attempt + 1 :] == [
        "MemoryGate",
        "MwPulse",
        "ReadoutSparingMemory",
        "MemoryReadout",
        "CRCheck",
    ]
    assert read.operations[attempt + 4].basis == "y"
    compiled = compile_sequence(read, {**PARAMS, "readout_threshold": 1.5}, HW)
    assert compiled.readouts[:2] == ["electron", "memory"]
    with pytest.raises(QnodeError, match="memory_basis reads the memory right after a GHZ"):
        check_request(
            request_from({**ghz, "delivery": "bsm", "memory_basis": "X"}), lab, "B", "C", CALIBRATED
        )


def test_old_session_files_read_with_counts_memory_at_minus_one(tmp_path):
    import h5py

    from controller.data.sessionfile import PAIR_ROW, pair_rows

    old_dtype = np.dtype([d for d in PAIR_ROW.descr if d[0] != "counts_memory"])
    old = np.zeros(2, dtype=old_dtype)
    old["counts"] = [3, -1]
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["pairs"] = old
    with h5py.File(tmp_path / "old.h5", "r") as f:
        rows = pair_rows(f["pairs"][:])
    assert rows.dtype == PAIR_ROW
    assert list(rows["counts"]) == [3, -1] and list(rows["counts_memory"]) == [-1, -1]


# ---- through the daemons on the simulator ---------------------------------------------------

SWAP_SEED = 20261201
BC_ALPHA = 0.1
SWAPS_Z = 60
"""Swaps with A and C measuring Z: the BSM's parity (ZZ of B's two qubits) against A's Z
times C's, after the swap's frame (controller.network.pauli). Runs gave 0.70-0.77 right (88
of 114 and 7 of 10 on the cavity lab; 28 of 40 and 62 of 90 on the lab-scale lab with eta
pinned: the chain's errors multiply, A-B's and B-C's Z correlations and the BSM's readouts,
as in test_memory_delivery.py's two-program BSM, 36 of 52). ~1 s a swap."""
PARITY_MIN = 30
"""Of SWAPS_Z (~57 valid): at 0.70, 40 +- 3.5 expected, so 30 is 2.9 sigma below it; a
parity read inverted gives 17 +- 3.5 (3.7 sigma under). The ends' readouts blur what the
truth test below sees directly."""
SWAPS_X = 20
"""Swaps with A and C measuring X: the phase bit through the ends' readouts, printed with
the end-to-end fidelity estimate. Its contrast is small (the truth test: the swapped pair's
phase holds ~0.7 of the time, then both ends' X readouts): ~0.6 right, which a few hundred
swaps would tell from chance; test_the_swapped_pair_s_true_state_follows_its_frame does it
from the simulator's state in 40."""
SWAPS_TRUTH = 40
"""Swaps whose end-to-end pair is read from the simulator's register (A and C keep their
halves). Runs (16 swaps): after the frame, psi+ 0.39-0.63 (mean 0.52), the same pair with
the other phase (psi-) 0.11-0.40; with the BSM's phase bit read inverted (BELL_TABLE as it
was derived in the gate's axes) psi+ was 0.16-0.27 in 10 of 10. Each of the four outcomes
comes ~a quarter of the time: all four in 40 swaps but with probability 4 x 0.75^40 = 4e-5."""
LAB = "sim_three_node_cavity.toml"
"""NVs in microcavities with weakly coupled 13C memories (labs/sim_three_node_cavity.toml):
B-C heralds in ~100 attempts at alpha 0.1 and the stored state keeps its coherence."""


SLOWER_13C = {
    "kind": "c13",
    "field_t": 0.19,
    "larmor_hz": 2.0317e6,
    "a_par_hz": -12000.0,
    "a_perp_hz": 15000.0,
    "t2star_s": 0.01,
    "t2_hahn_s": 0.5,
    "bath_tau_c_s": 0.01,
    "t2_s": 10.0,
    "t1_s": 21600.0,
}
"""The cavity lab's pinned 13C (labs/sim_three_node_cavity.toml: A_par -12 kHz, so it
precesses more slowly with the electron in |1>)."""
ATTEMPT_VALUES = {"spin_pump_duration_ns": 3000.0, "pi_duration_ns": 100.0}
ATTEMPT_VALUES["excitation_duration_ns"] = 8.0


def test_the_phase_per_attempt_from_the_truth_turns_behind_a_slower_13c():
    """A 13C that precesses more slowly with the electron in |1> (A_par < 0) falls behind
    its frame in every attempt: a negative turn, at least dw x the electron's mean time in
    |1> (dark share 0.9 from the alpha pulse's centre to the echo's, 108 ns; bright share 0.1
    through the 1008 ns wait: -0.87 deg; the pump's reset and the tilted axis's kicks add:
    -1.18 deg, the simulator -1.27 over B-C swaps); without A_par and A_perp nothing turns;
    with A_par's sign reversed the turn reverses (+2.0 deg: the kicks are not odd in A_par).
    The BSM round feeds this forward (the session's ALIGN step); left at 0, as the
    truth calibration did, hundreds of B-C attempts turned the stored state by hundreds of
    degrees, the phase bit at chance (one cause of two: docs/network.md, "Where the phase bit
    went")."""
    truth = {"init_fidelity": 0.9964}
    slower = phase_per_attempt_from_truth(SLOWER_13C, truth, ATTEMPT_VALUES, 0.1, 1008.0)
    dw_hz = math.hypot(2.0317e6 - 12000.0, 15000.0) - 2.0317e6
    mean_in_one = 360 * dw_hz * (0.9 * 108 + 0.1 * 1058) * 1e-9
    assert mean_in_one * 1.6 < slower < mean_in_one * 1.1, (slower, mean_in_one)
    bare = {**SLOWER_13C, "a_par_hz": 0.0, "a_perp_hz": 0.0}
    assert abs(phase_per_attempt_from_truth(bare, truth, ATTEMPT_VALUES, 0.1, 1008.0)) < 1e-6
    faster = {**SLOWER_13C, "a_par_hz": 12000.0}
    assert phase_per_attempt_from_truth(faster, truth, ATTEMPT_VALUES, 0.1, 1008.0) > 0
    assert attempt_step_ps(slower, 2.0317e6) < 0  # the gate starts later: ALIGN's offset falls


@pytest.fixture(scope="module")
def swap_lab(tmp_path_factory):
    """The three-node cavity lab (LAB), its own simulator and five daemons, both links and
    B's 13C calibrated from the truth: (lab, sim control)."""
    from controller.link.plan import attempt_window_ns
    from hil_tests.test_memory_delivery import THREE, _memory_lab, calibrate_memory_from_truth

    text = (THREE.parent / LAB).read_text()
    # the midpoints' instruments wait longer: B's BSM right after the herald (gates of ~100
    # pulses at ~0.3 ms of CPU each) holds the simulator's event loop for up to seconds
    nodes, midpoints = text.split("[nodes.M1]", 1)
    for short in ("timeout_s = 1.0", "timeout_s = 2.0"):
        midpoints = midpoints.replace(short, "timeout_s = 10.0")
    lab_file = tmp_path_factory.mktemp("bsm_round") / LAB
    lab_file.write_text(f"{nodes}[nodes.M1]{midpoints}")
    # its data folder is _memory_lab's own (QNODE_DATA_DIR, inherited by the daemons)
    for lab, control, store, memory in _memory_lab(tmp_path_factory, lab_file, seed=SWAP_SEED):
        calibrate_memory_from_truth(lab, store, "B", memory)
        # the stored state's turn per attempt of the B-C link, fed forward by the BSM round
        truth = control.truth("B")
        values = store.station_values("B", "nv")
        window = attempt_window_ns(values["herald_window_ns"], lab.all_links["BC"])
        turn = phase_per_attempt_from_truth(memory, truth, values, BC_ALPHA, window)
        store.set_manual("B", "c13_phase_per_attempt_deg", turn, "from the simulator's truth")
        yield lab, control


def delivered_row(client, session: str) -> np.void:
    rows = client.session_data(session)["pairs"]
    mine = rows[rows["status"] == DELIVERED]
    assert len(mine) == 1, rows
    return mine[0]


def end_bits(a, c, stored: dict, swap: dict, basis: str) -> tuple[int, int]:
    """A's and C's bits of the end-to-end pair after the swap's frame: each link's state as
    the ends' corrected bits see it (psi+ where the end is the link's frame node, else the
    heralded state: B was to correct it and did not), the BSM's Bell state, then
    swap_frame's Paulis applied to the bits (result_after)."""
    from controller.network.pauli import bsm_parities, result_after, swap_frame

    bsm = swap["bsm"]
    first, second = bsm["pairs"]["memory"], bsm["pairs"]["electron"]
    a_row = delivered_row(a, stored["session"])
    c_row = delivered_row(c, swap["session"])
    assert a_row["id"].decode() == first["pair_id"] and c_row["id"].decode() == second["pair_id"]
    states = [pair["outcome"] if pair["frame_here"] else "psi_plus" for pair in (first, second)]
    frame = swap_frame(*states, *bsm_parities(bsm["bell_state"]))
    if not a_row["bit"] or not c_row["bit"]:
        return 0, 0
    return (
        result_after(int(a_row["bit"]), basis, (frame.first.name,)),
        result_after(int(c_row["bit"]), basis, (frame.second.name,)),
    )


def one_pair(b, delivery: str, peer_delivery: str, peer: str, memory_basis: str = "") -> dict:
    """One single-click pair at BC_ALPHA between B and `peer` with these deliveries: the
    session's summary once it ended."""
    began = b.entangle(
        1,
        "single_click",
        alpha=BC_ALPHA,
        deadline_s=120,
        delivery=delivery,
        peer_delivery=peer_delivery,
        peer=peer,
        memory_basis=memory_basis,
    )
    return b.wait_session(began["session"], timeout_s=180)


@pytest.mark.timeout(900)
def test_b_swaps_with_the_bsm_right_after_the_b_c_herald(swap_lab):
    """B stores A-B (A measures at once in Z or X), then B-C with delivery "bsm" (C measures
    at once in the same basis): B's BSM runs in the B-C round's program right after the
    herald. The summary gives both bits, the Bell state and both pairs; the stored pair is
    released, the electron free; B's pair row has both readouts. After the swap's frame the
    end-to-end pair should be psi+: A's Z times C's -1 (asserted, PARITY_MIN), X times X +1
    (printed), and the fidelity estimate from the two, (E_ZZ' + E_XX') / 2 (a lower bound
    of the fidelity with psi+ when only those are measured), printed."""
    from controller.operator.client import NodeClient

    lab, _control = swap_lab
    right = {"Z": [0, 0], "X": [0, 0]}
    invalid = 0
    started_at = time.monotonic()
    with (
        NodeClient.for_lab(lab, "B", timeout_s=60) as b,
        NodeClient.for_lab(lab, "A") as a,
        NodeClient.for_lab(lab, "C") as c,
    ):
        with pytest.raises(QnodeError, match="holds 0 stored pairs"):
            b.entangle(1, "single_click", alpha=BC_ALPHA, delivery="bsm", peer="C")
        for basis in ["Z"] * SWAPS_Z + ["X"] * SWAPS_X:
            stored = one_pair(b, "memory", basis, "A")
            assert stored["state"] == "completed", stored.get("reason")
            swap = one_pair(b, "bsm", basis, "C")
            if swap["state"] != "completed":  # the heralded shot discarded: no second try
                assert "consumed by this session's Bell-state measurement" in swap["reason"]
                assert not swap["bsm"]["valid"], swap["bsm"]
                assert b.memory()["holds"] == {"B": None, "B.c13": None}
                invalid += 1
                continue
            bsm = swap["bsm"]
            assert bsm == b.request("bsm_result", session=swap["session"])["bsm"]
            assert bsm["bell_state"] == BELL_TABLE[(bsm["electron_bit"], bsm["memory_bit"])]
            assert b.memory()["holds"] == {"B": None, "B.c13": None}
            row = delivered_row(b, swap["session"])
            assert BASES[row["basis"]] == "bsm"
            assert [int(row["counts"]), int(row["counts_memory"])] == bsm["counts"]
            if not bsm["valid"]:
                invalid += 1
                continue
            a_bit, c_bit = end_bits(a, c, stored, swap, basis)
            if not a_bit or not c_bit:  # an end's own readout flagged
                invalid += 1
                continue
            target = -1 if basis == "Z" else 1  # psi+: ZZ = -1, XX = +1
            right[basis][0] += int(a_bit * c_bit == target)
            right[basis][1] += 1
    wall = time.monotonic() - started_at
    e = {k: 2 * n / max(total, 1) - 1 for k, (n, total) in right.items()}
    print(
        f"swaps in {wall:.0f} s, right/valid: {right}, {invalid} invalid; end-to-end "
        "fidelity estimate "
        f"(E_ZZ + E_XX) / 2 = {(e['Z'] + e['X']) / 2:.2f}"
    )
    assert right["Z"][1] >= SWAPS_Z - 10, right  # a discarded herald or flagged readout
    assert right["Z"][0] >= PARITY_MIN, right


PHASE_MARGIN = 0.1
"""The mean of F(psi+) - F(psi-) after the frame over the valid swaps must exceed this: runs
~0.3, its spread ~0.1 a swap (standard error ~0.02 over ~38 swaps: 0.1 is 10 errors under);
the phase bit read inverted gives ~-0.3, at chance 0."""


@pytest.mark.timeout(900)
def test_the_swapped_pair_s_true_state_follows_its_frame(swap_lab):
    """Swaps at B with A and C keeping their halves: after each, the simulator's state of
    (A, C) (its register: ground truth, each electron as of its node's last step) with the
    Pauli frame the network computes from the links' heralded states and the BSM's Bell
    state (pauli.swap_frame) applied. For every outcome of the BSM: the frame takes the pair
    to psi+ rather than to the same pair with the other phase (psi-, what a phase bit read
    inverted gives), on average over the outcome's swaps; over all, by PHASE_MARGIN; and the
    parity holds (psi+ and psi- together above 0.6: runs ~0.75). All four outcomes occur."""
    from controller.network.pauli import bsm_parities, swap_frame
    from controller.operator.client import NodeClient

    lab, control = swap_lab
    per_outcome: dict[str, list[tuple[float, float]]] = {}
    invalid = 0
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b:
        for _ in range(SWAPS_TRUTH):
            stored = one_pair(b, "memory", "keep", "A")
            assert stored["state"] == "completed", stored.get("reason")
            swap = one_pair(b, "bsm", "keep", "C")
            if swap["state"] != "completed" or not swap["bsm"]["valid"]:
                invalid += 1
                continue
            bsm = swap["bsm"]
            first, second = bsm["pairs"]["memory"], bsm["pairs"]["electron"]
            frame = swap_frame(
                first["outcome"], second["outcome"], *bsm_parities(bsm["bell_state"])
            )
            after = bell_fidelities(
                framed(control.qubits("A", "C"), frame.first.name, frame.second.name)
            )
            per_outcome.setdefault(bsm["bell_state"], []).append(
                (after["psi_plus"], after["psi_minus"])
            )
    table = {
        state: (
            len(f),
            round(float(np.mean([p for p, _ in f])), 2),
            round(float(np.mean([m for _, m in f])), 2),
        )
        for state, f in sorted(per_outcome.items())
    }
    print(f"per BSM outcome (swaps, F(psi+), F(psi-)) after the frame: {table}; {invalid} invalid")
    everything = [pair for f in per_outcome.values() for pair in f]
    assert len(everything) >= SWAPS_TRUTH - 6, (invalid, table)
    assert set(per_outcome) == set(BELL_VECTORS), table
    for state, (_, plus, minus) in table.items():
        assert plus > minus, (state, table)
    margin = float(np.mean([p - m for p, m in everything]))
    assert margin > PHASE_MARGIN, (margin, table)
    assert float(np.mean([p + m for p, m in everything])) > 0.6, table


TELEPORTS_PER_STATE = 12
"""Teleportations B -> C of each cardinal state (72 in all, ~0.7 s each). Runs: 0.738 on
average over 46 (per state 0.59-0.81, a teleport's fidelity spread ~0.15): over ~70 the
average's standard error is ~0.018, so 2/3 lies 4 of them under it."""
TELEPORT_BLOCH = {
    "+Z": (0, 0, 1),
    "-Z": (0, 0, -1),
    "+X": (1, 0, 0),
    "-X": (-1, 0, 0),
    "+Y": (0, 1, 0),
    "-Y": (0, -1, 0),
}


@pytest.mark.timeout(900)
def test_teleportation_to_c_on_the_truth(swap_lab):
    """Teleportation through the link layer alone (Hermans et al. 2022, one link): B writes
    a cardinal state into its memory (`prepare_memory`), makes a B-C pair with its BSM right
    after the herald (delivery `bsm`), C keeping its half; C's true state (the simulator's
    register) with the teleportation's correction (pauli.teleport_correction from the link
    pair's heralded state and the BSM's Bell state) is compared with the state sent. The
    average over the six states must beat the classical 2/3 (TELEPORTS_PER_STATE), each
    basis must be above 1/2, and the correction must matter: without it the average is
    1/2 +- 0.04 (a random Pauli), 0.05 under the corrected one is 4 of those."""
    from controller.network.pauli import bsm_parities, pair_pauli, teleport_correction
    from controller.operator.client import NodeClient

    lab, control = swap_lab
    paulis = {
        "I": np.eye(2),
        "X": np.array([[0, 1], [1, 0]]),
        "Y": np.array([[0, -1j], [1j, 0]]),
        "Z": np.diag([1.0, -1.0]),
    }

    def fidelity(rho: np.ndarray, pauli: str, state: str) -> float:
        u = paulis[pauli]
        after = u @ rho @ u.conj().T
        bloch = [float(np.real(np.trace(after @ paulis[a]))) for a in "XYZ"]
        return (1 + float(np.dot(bloch, TELEPORT_BLOCH[state]))) / 2

    corrected: dict[str, list[float]] = {}
    uncorrected: list[float] = []
    invalid = 0
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b:
        for _ in range(TELEPORTS_PER_STATE):
            for state in TELEPORT_BLOCH:
                prepared = b.prepare_memory(state, "C")
                assert prepared["state"] == state and prepared["qubit"] == "B.c13"
                session = one_pair(b, "bsm", "keep", "C")
                if session["state"] != "completed" or not session["bsm"]["valid"]:
                    invalid += 1
                    continue
                bsm = session["bsm"]
                assert bsm["pairs"]["memory"]["pair_id"] == prepared["state_id"]
                outcome = bsm["pairs"]["electron"]["outcome"]
                correction = teleport_correction(
                    pair_pauli(outcome), *bsm_parities(bsm["bell_state"])
                )
                rho = control.qubits("C")
                corrected.setdefault(state, []).append(fidelity(rho, correction.name, state))
                uncorrected.append(fidelity(rho, "I", state))
    per_state = {s: round(float(np.mean(f)), 2) for s, f in corrected.items()}
    everything = [f for fs in corrected.values() for f in fs]
    average = float(np.mean([np.mean(f) for f in corrected.values()]))
    print(
        f"teleported B -> C: {len(everything)} ({invalid} invalid), average fidelity "
        f"{average:.3f} on the truth, per state {per_state}; uncorrected "
        f"{float(np.mean(uncorrected)):.2f}"
    )
    assert len(everything) >= 6 * TELEPORTS_PER_STATE - 6, invalid
    assert set(corrected) == set(TELEPORT_BLOCH)
    assert average > 2 / 3, per_state
    for basis in "ZXY":
        assert np.mean(corrected[f"+{basis}"] + corrected[f"-{basis}"]) > 0.5, per_state
    assert average - float(np.mean(uncorrected)) > 0.05


GHZ_TRUTH_SHOTS = 32
"""GHZ shots at B (A-B stored, B-C delivered `ghz` with B's memory read in the setting's
basis right after the operation, A and C keeping), each checked on the simulator's state of A
and C after B's readout: ~0.8 s each."""
GHZ_TRUTH_PLAN = ("ZZZ", "XXX", "ZZZ", "XYY", "ZZZ", "YXY", "ZZZ", "YYX")
"""The settings in turn: ZZZ every other shot, since ZIZ (the one stabiliser B's readout does
not enter) comes from it alone; five shots per setting gave ZIZ five values, too few (a CI
run: 0.05 over five values, two of them ~-0.25, against 0.35 over 46)."""
GHZ_TRUTH_MIN = 0.15
"""The mean of the stabiliser values (below) that B's readout enters, and of ZIZ's, must
exceed this. A run of 96 shots (2026-12-01): ZIZ 0.35 over 46 values (most 0.2-0.5, one in
twenty about -0.45 or 0: a frame from a wrong electron readout, a dark herald), SD ~0.16, so
over 16 values a standard error of 0.04 and 0.15 five of them under; B's 0.44 over 140 values
(ZZI 0.41, IZZ 0.50, XXX 0.49, XYY 0.50, YXY 0.36, YYX 0.22: a value about +-0.6, its sign
wrong when B's readout was, about one in eight), SD ~0.4, over 48 values a standard error of
0.06, 0.15 five of them under. B's memory read along the wrong axis gives 0 (a quarter turn)
or -0.43 (half a turn: what the readout in a later program gave, docs/network.md); a wrong
operation, outcome or frame 0 or negative for ZIZ too."""


@pytest.mark.timeout(900)
def test_the_ghz_operation_and_b_s_readout_in_the_link_s_program_on_the_truth(swap_lab):
    """B stores A-B, then B-C with delivery `ghz` and B's memory read in the setting's
    physical basis (GHZ_BASES) right after the operation, in the same program; A and C keep
    their halves. On the simulator's state of (A, C) after it, with the frame the network
    computes (pauli.ghz_frame from the links' heralded states and B's electron outcome) and
    B's read value: every stabiliser of the setting holds (GHZ_TRUTH_MIN), ZIZ (B not in it)
    and those B's readout enters alike. The memory is free after each shot."""
    from controller.network.estimators import GHZ_SETTINGS
    from controller.network.node_operations import LINK_X_SIGN
    from controller.network.pauli import ghz_frame, pair_pauli
    from controller.operator.client import NodeClient
    from sequences.network_ops import GHZ_BASES

    assert set(GHZ_TRUTH_PLAN) == set(GHZ_SETTINGS)
    lab, control = swap_lab
    values: dict[str, list[float]] = {}
    invalid = 0
    with NodeClient.for_lab(lab, "B", timeout_s=60) as b:
        for shot in range(GHZ_TRUTH_SHOTS):
            setting = GHZ_TRUTH_PLAN[shot % len(GHZ_TRUTH_PLAN)]
            physical, sign = GHZ_BASES[1][setting[1]]
            stored = one_pair(b, "memory", "keep", "A")
            assert stored["state"] == "completed", stored.get("reason")
            session = one_pair(b, "ghz", "keep", "C", memory_basis=physical)
            assert b.memory()["holds"] == {"B": None, "B.c13": None}  # read: free
            ghz = session.get("ghz")
            if session["state"] != "completed" or not ghz or not ghz["valid"]:
                invalid += 1
                continue
            first, second = ghz["pairs"]["memory"], ghz["pairs"]["electron"]
            assert first["pair_id"] == stored["memory"]["holds"]["B.c13"]["pair_id"]
            assert ghz["memory_basis"] == physical and ghz["memory_bit"] in (-1, 1)
            row = delivered_row(b, session["session"])
            assert BASES[row["basis"]] == "ghz"
            assert [int(row["counts"]), int(row["counts_memory"])] == [
                ghz["counts"],
                ghz["counts_memory"],
            ]
            bright = int(ghz["electron_bit"] == 1)
            frame = ghz_frame(pair_pauli(first["outcome"]), pair_pauli(second["outcome"]), bright)
            # the node's bit in the model's bases (LINK_X_SIGN), then GHZ_BASES' sign
            b_value = ghz["memory_bit"] * (LINK_X_SIGN if physical == "X" else 1) * sign
            shot_values = ghz_truth_values(setting, control.qubits("A", "C"), frame, b_value)
            for stabiliser, value in shot_values.items():
                values.setdefault(stabiliser, []).append(value)
    means = {k: (len(v), round(float(np.mean(v)), 2)) for k, v in values.items()}
    with_b = [v for k, vs in values.items() if k[1] != "I" for v in vs]
    print(
        f"GHZ on the truth after B's readout: {sum(len(v) for v in values.values())} values "
        f"of {GHZ_TRUTH_SHOTS} shots ({invalid} invalid); per stabiliser (values, mean) "
        f"{means}; B's readout in them: {float(np.mean(with_b)):.2f}"
    )
    assert invalid <= 4, invalid
    assert float(np.mean(values["ZIZ"])) > GHZ_TRUTH_MIN, means
    assert float(np.mean(with_b)) > GHZ_TRUTH_MIN, means
