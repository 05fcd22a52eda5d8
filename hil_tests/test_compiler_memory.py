"""The memory qubit's operations compiled to electron pulse trains (pure: no lab).

Besides the program's shape (pulse counts, spacing, durations, errors), the compiled
programs are replayed on an electron and a 13C spin under the Hamiltonian the compiler plans
with, H = omega_L I_z + |1><1| (A_par I_z + A_perp I_x) (Taminiau et al., PRL 109, 137602
(2012)): a pulse is an instantaneous rotation at its centre, a wait is free evolution, the
pump light resets the electron. This is the controller's own model (no simulator): it shows
that the sequences do what the docs say on the physics they were designed from, with the
quantisation of every wait to the sequencer's clock included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sequences.compiler import CompileError, Hardware, compile_sequence
from sequences.memory import (
    MemoryGate,
    MemoryInit,
    MemoryReadout,
    MemoryToElectron,
    SwapToMemory,
)
from sequences.operations import (
    CRCheck,
    EntanglementAttempt,
    MwPulse,
    Sequence,
    Wait,
    from_data,
    to_data,
)
from sequences.parameters import defaults
from sequences.program import CLOCK_NS, Op, align_offset_ps, align_wait_ns

F_L, A_PAR, A_PERP = 443e3, 30e3, 60e3
"""The model's 13C: Larmor frequency (about 414 G) and hyperfine couplings, in Hz."""
F_1 = math.hypot(F_L + A_PAR, A_PERP)
RESONANCE_K = 12
TAU_NS = (2 * RESONANCE_K - 1) / (2 * (F_L + F_1)) * 1e9
"""tau_k = (2k - 1) pi / (omega_0 + omega_1): the resonance, A_perp's shift included."""
N_PI2 = 50
"""Pulses for the conditional pi/2 at this coupling (the model's rotation per pulse pair,
found as c13_gate finds it: see test_the_gate_turns_the_nucleus_by_its_calibrated_angle)."""

HW = Hardware(
    ttl={"repump_aom": 0, "readout_aom": 1, "spin_pump_aom": 2, "excitation_aom": 3},
    optics={
        "repump": "repump_aom",
        "readout": "readout_aom",
        "pump": "spin_pump_aom",
        "excitation": "excitation_aom",
    },
    counters={"readout": 0},
    iq_channels=(1, 2),
    awg_sample_rate_hz=1.2e9,
    awg_amplitude_vpp=2.0,
    awg_memory_points=100_000,
    memories=("c13",),
)
NO_MEMORY = Hardware(**{**HW.__dict__, "memories": ()})
PARAMS = {
    **defaults(),
    "mw_frequency_hz": 2.87e9,
    "pi_amplitude_v": 0.6,
    "pi2_amplitude_v": 0.3,
    "alpha_amplitude_v": 0.1,
    "c13_tau_ns": TAU_NS,
    "c13_n_pulses": N_PI2,
    "c13_larmor_hz": F_L,
    "c13_omega1_hz": F_1,
}


def compiled(*ops, params=None, hw=HW):
    return compile_sequence(Sequence("memory", tuple(ops), 1), params or PARAMS, hw)


def executed(c):
    """The first shot's instructions in the order the sequencer runs them (loops inside the
    shot unrolled, a check passing at once)."""
    instructions, loops, pc = c.program.instructions, {}, 0
    while pc < len(instructions):
        ins = instructions[pc]
        pc += 1
        if ins.op == Op.BRANCH_GE:  # the CR check: passes
            pc = ins.c
            continue
        if ins.op == Op.LOOP:
            if ins.c == 0:
                return  # the shot loop
            done = loops.get(pc, 0) + 1
            loops[pc] = done if done < ins.d else 0
            if done < ins.d:
                pc = ins.c
            continue
        yield ins, instructions[pc] if pc < len(instructions) else None


def pulse_centres(c) -> list[tuple[int, float]]:
    """(centre time in ns, amplitude in V) of every AWG pulse of the first shot."""
    t, out = 0, []
    pending = None
    for ins, _ in executed(c):
        if ins.op == Op.AWG_TRIG:
            i, q = c.waveforms[c.segments[ins.c]]
            pending = abs(complex(i[0], q[0])) * HW.awg_peak_v
        elif ins.op == Op.WAIT:
            if pending is not None:
                out.append((t + ins.d / 2, pending))
                pending = None
            t += ins.d
    return out


# ---- the model --------------------------------------------------------------------------------
_IZ, _IX = np.diag([0.5, -0.5]), np.array([[0, 0.5], [0.5, 0]])
_SX, _SY = np.array([[0, 1], [1, 0]]), np.array([[0, -1j], [1j, 0]])


def free_evolution(f_l: float, a_par: float, a_perp: float):
    """ns -> the electron-nuclear propagator of a wait under the model's H (Hz)."""
    h = (
        2
        * np.pi
        * (np.kron(np.eye(2), f_l * _IZ) + np.kron(np.diag([0, 1]), a_par * _IZ + a_perp * _IX))
    )
    ev, vec = np.linalg.eigh(h)

    def evolve(ns: float) -> np.ndarray:
        return vec @ np.diag(np.exp(-1j * ev * ns * 1e-9)) @ vec.conj().T

    return evolve


_free = free_evolution(F_L, A_PAR, A_PERP)


def _electron_rotation(phase: float, angle: float) -> np.ndarray:
    axis = math.cos(phase) * _SX + math.sin(phase) * _SY
    return np.kron(math.cos(angle / 2) * np.eye(2) - 1j * math.sin(angle / 2) * axis, np.eye(2))


def electron_of(rho):
    return np.einsum("ijkj->ik", rho.reshape(2, 2, 2, 2))


def nucleus_of(rho):
    return np.einsum("ijik->jk", rho.reshape(2, 2, 2, 2))


def replay(c, rho=None, free=None, pi_amplitude=None, hw=HW):
    """The program's first shot on the model: (final state, P(electron |0>) at each readout).
    Loops inside the shot (Repeat) run; the shot loop itself (to "shot", the first
    instruction) ends the replay; a check (CR) passes at once."""
    rho = np.kron(np.diag([1, 0]), np.eye(2) / 2) if rho is None else rho
    free = free or _free
    pi_amplitude = pi_amplitude or PARAMS["pi_amplitude_v"]
    pump = 1 << hw.ttl[hw.optics["pump"]]
    reads, pending = [], None
    cache: dict[int, np.ndarray] = {}
    for ins, following in executed(c):
        if ins.op == Op.AWG_TRIG:
            i, q = c.waveforms[c.segments[ins.c]]
            amplitude = abs(complex(i[0], q[0])) * hw.awg_peak_v
            angle = math.pi * amplitude / pi_amplitude
            pending = _electron_rotation(math.atan2(q[0], i[0]), angle)
        elif ins.op == Op.WAIT:
            if pending is not None:
                u = free(ins.d / 2) @ pending @ free(ins.d / 2)
                pending = None
            else:
                u = cache.get(ins.d)
                if u is None:
                    u = cache[ins.d] = free(ins.d)
            rho = u @ rho @ u.conj().T
        elif ins.op == Op.TTL_SET and ins.c & pump:
            rho = np.kron(np.diag([1, 0]), nucleus_of(rho))
        elif ins.op == Op.COUNT and following is not None and 0 < following.b < 1000:
            reads.append(float(np.real(rho[0, 0] + rho[1, 1])))  # a readout (its EVENT k)
    return rho, reads


def replay_outcomes(
    c,
    outcomes,
    rho=None,
    free=None,
    pi_amplitude=None,
    hw=HW,
    clock_ns=0,
    untimed_ns=0,
    ends=None,
    registers=None,
):
    """The first shot on the model with its readouts' outcomes given (True: bright): each
    readout projects the electron onto its outcome and lasts its window (the nucleus
    precessing with the electron in the measured state), the program branches on the counts
    as the sequencer would (bright: counts 1, dark 0; a CR check passes after `untimed_ns`
    of free evolution, the electron pumped: the unknown length of a check or sync wait).
    ALIGN waits as the sequencer does on a free-running clock that reads `clock_ns` at the
    start (its end is appended to `ends`), its register term from `registers` (r: value, as
    an attempt loop before would have left them). Returns (final state normalised,
    probability of the outcomes)."""
    rho = np.kron(np.diag([1, 0]), np.eye(2) / 2) if rho is None else rho
    free = free or _free
    pi_amplitude = pi_amplitude or PARAMS["pi_amplitude_v"]
    pump = 1 << hw.ttl[hw.optics["pump"]]
    instructions = c.program.instructions
    regs, loops, pc, pending, probability = [0] * 16, {}, 0, None, 1.0
    for register, value in (registers or {}).items():
        regs[register] = value
    given, clock = iter(outcomes), clock_ns

    def evolve(rho, ns):
        u = free(ns)
        return u @ rho @ u.conj().T

    while pc < len(instructions):
        ins = instructions[pc]
        pc += 1
        if ins.op == Op.AWG_TRIG:
            i, q = c.waveforms[c.segments[ins.c]]
            amplitude = abs(complex(i[0], q[0])) * hw.awg_peak_v
            pending = _electron_rotation(math.atan2(q[0], i[0]), math.pi * amplitude / pi_amplitude)
        elif ins.op == Op.WAIT:
            u = free(ins.d) if pending is None else free(ins.d / 2) @ pending @ free(ins.d / 2)
            pending = None
            rho = u @ rho @ u.conj().T
            clock += ins.d
        elif ins.op == Op.ALIGN:
            wait = align_wait_ns(clock, ins.d, align_offset_ps(ins, regs))
            rho, clock = evolve(rho, wait), clock + wait
        elif ins.op == Op.TTL_SET and ins.c & pump:
            rho = np.kron(np.diag([1, 0]), nucleus_of(rho))
        elif ins.op == Op.COUNT:
            following = instructions[pc]
            if following.op == Op.EVENT and 0 < following.b < 1000:  # a readout
                bright = next(given)
                keep = np.kron(np.diag([1, 0] if bright else [0, 1]), np.eye(2))
                rho = keep @ rho @ keep
                p = float(np.real(np.trace(rho)))
                probability *= p
                if p < 1e-12:
                    return rho, 0.0
                rho = evolve(rho / p, ins.d)
                regs[ins.b] = 1 if bright else 0
            else:
                regs[ins.b] = 10**6  # a CR check: passes
                ins_ns = ins.d + untimed_ns
                rho, clock = (
                    evolve(np.kron(np.diag([1, 0]), nucleus_of(rho)), ins_ns),
                    clock + ins_ns,
                )
            clock += ins.d if following.op == Op.EVENT and 0 < following.b < 1000 else 0
        elif ins.op in (Op.BRANCH_LT, Op.BRANCH_GE):
            if (regs[ins.a] < ins.d) == (ins.op == Op.BRANCH_LT):
                pc = ins.c
        elif ins.op == Op.JUMP:
            pc = ins.c
        elif ins.op == Op.LOOP:
            if ins.c == 0:
                break  # the shot loop
            left = loops.get(pc, ins.d) - 1
            if left > 0:
                loops[pc] = left
                pc = ins.c
            else:
                loops.pop(pc, None)
    if ends is not None:
        ends.append(clock)
    return rho, probability


CARDINAL = {  # electron preparations from |0> (phase, amplitude): Bloch vectors
    "+z": (None, (0, 0, 1)),
    "-z": (MwPulse(0.6, 100, 0.0), (0, 0, -1)),
    "+x": (MwPulse(0.3, 100, 90.0), (1, 0, 0)),
    "-x": (MwPulse(0.3, 100, 270.0), (-1, 0, 0)),
    "+y": (MwPulse(0.3, 100, 180.0), (0, 1, 0)),
    "-y": (MwPulse(0.3, 100, 0.0), (0, -1, 0)),
}


def fidelity_with(rho_1q, bloch) -> float:
    target = (np.eye(2) + bloch[0] * _SX + bloch[1] * _SY + bloch[2] * np.diag([1, -1])) / 2
    return float(np.real(np.trace(rho_1q @ target)))


# ---- plain data ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op",
    [
        MemoryGate(angle_deg=180.0),
        MemoryInit(),
        SwapToMemory(memory="c13"),
        MemoryToElectron(),
        MemoryReadout(basis="x", label="m"),
    ],
)
def test_memory_operations_travel_as_plain_data(op):
    sequence = Sequence("s", (op,), 3)
    again, _ = from_data(to_data(sequence))
    assert again == sequence


# ---- the gate's pulse train -------------------------------------------------------------------
@pytest.mark.parametrize("angle, pulses", [(90.0, N_PI2), (180.0, 2 * N_PI2), (270.0, 3 * N_PI2)])
def test_a_gate_is_its_calibrated_pulse_count_spaced_on_the_resonance(angle, pulses):
    c = compiled(MemoryGate(angle_deg=angle))
    centres = pulse_centres(c)
    assert len(centres) == pulses
    spacing = np.diff([t for t, _ in centres])
    two_tau = round(2 * TAU_NS / CLOCK_NS) * CLOCK_NS
    assert np.all(spacing == two_tau)  # centre to centre, on the clock's grid
    assert abs(two_tau - 2 * TAU_NS) <= CLOCK_NS / 2
    assert all(a == pytest.approx(0.6) for _, a in centres)  # pi pulses
    # tau before the first centre and after the last: the gate lasts N spacings
    assert abs(centres[0][0] - TAU_NS) <= CLOCK_NS
    assert c.shot_duration_ns == pulses * two_tau


def test_the_gate_turns_the_nucleus_by_its_calibrated_angle():
    """From nucleus |0>, the conditional pi/2 leaves population 1/2, the pi empties it."""
    start = np.kron(np.diag([1, 0]), np.diag([1, 0]))
    for angle, population in ((90.0, 0.5), (180.0, 0.0)):
        rho, _ = replay(compiled(MemoryGate(angle_deg=angle)), start)
        assert np.real(nucleus_of(rho)[0, 0]) == pytest.approx(population, abs=0.03)


# ---- the sequences on the model ----------------------------------------------------------------
def test_initialisation_resets_the_memory_from_any_state():
    for start in (np.diag([1, 0]), np.diag([0, 1]), np.eye(2) / 2):
        rho, _ = replay(compiled(MemoryInit()), np.kron(np.diag([1, 0]), start))
        assert np.real(nucleus_of(rho)[0, 0]) > 0.97
        assert np.real(electron_of(rho)[0, 0]) == pytest.approx(1.0)  # re-initialised


@pytest.mark.parametrize("state", list(CARDINAL))
def test_a_state_stored_then_retrieved_comes_back(state):
    prep, bloch = CARDINAL[state]
    ops = [MemoryInit(), *([prep] if prep else []), SwapToMemory(), Wait(3777), MemoryToElectron()]
    rho, _ = replay(compiled(*ops))
    assert fidelity_with(electron_of(rho), bloch) > 0.95


@pytest.mark.parametrize("state", list(CARDINAL))
def test_memory_readout_in_each_basis(state):
    """Bright (P(|0>) high) for the basis's +1 eigenstate, dark for -1, a coin otherwise."""
    prep, bloch = CARDINAL[state]
    for basis, component in zip("xyz", bloch, strict=True):
        ops = [MemoryInit(), *([prep] if prep else []), SwapToMemory(), Wait(1000)]
        _, reads = replay(compiled(*ops, MemoryReadout(basis=basis)))
        # up to ~0.09 on this strongly coupled model spin: the echoed waits neglect A_perp's
        # tilt of the |1> precession axis (A_perp / omega_L = 0.14 here: ~8 degrees), and tau
        # sits on the clock's 2 ns grid
        assert reads[-1] == pytest.approx((1 + component) / 2, abs=0.1)


# ---- errors -------------------------------------------------------------------------------------
def test_a_node_without_memories_is_told_so():
    with pytest.raises(CompileError, match=r"memory 'c13' is not a memory qubit.*: none"):
        compiled(MemoryInit(), hw=NO_MEMORY)
    with pytest.raises(CompileError, match=r"memory 'n15' is not a memory qubit.*: c13"):
        compiled(MemoryGate(memory="n15"))


@pytest.mark.parametrize("name", ["c13_tau_ns", "c13_n_pulses", "c13_larmor_hz", "c13_omega1_hz"])
def test_a_missing_calibration_names_the_parameter(name):
    params = {k: v for k, v in PARAMS.items() if k != name}
    with pytest.raises(CompileError, match=f"parameter '{name}', which has no value: calibrate"):
        compiled(SwapToMemory(), params=params)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"c13_n_pulses": 7}, "even pulse count"),
        ({"c13_tau_ns": -5.0}, "c13_tau_ns must be positive"),
        ({"c13_tau_ns": 20.0}, "shorter than half the"),
    ],
)
def test_a_wrong_calibration_is_refused(change, message):
    with pytest.raises(CompileError, match=message):
        compiled(MemoryGate(), params={**PARAMS, **change})


def test_a_bsm_s_gate_needs_an_odd_number_of_xy_pairs():
    """The Bell-state measurement and the GHZ operation name their outcomes for a gate of 2
    modulo 4 pulses: with 52 they are refused, naming 50; a plain gate (a calibration's
    scan) compiles with it."""
    from sequences.library import bell_measurement
    from sequences.network_ops import ghz_operation

    params = {**PARAMS, "c13_n_pulses": 52}
    for sequence in (bell_measurement(), ghz_operation()):
        with pytest.raises(CompileError, match=r"must be 2 modulo 4 .* 50 is the nearest"):
            compile_sequence(sequence, params, HW)
    compiled(MemoryGate(), params=params)


def test_a_gate_angle_must_be_a_multiple_of_ninety_degrees():
    with pytest.raises(CompileError, match="positive multiple of 90 degrees, not 45"):
        compiled(MemoryGate(angle_deg=45.0))
    with pytest.raises(CompileError, match="unknown basis 'w'"):
        compiled(MemoryReadout(basis="w"))


def test_an_untimed_operation_between_writing_and_reading_a_memory_is_refused():
    with pytest.raises(CompileError, match=r"operation 2 \(CRCheck\).*unknown time.*'c13'"):
        compiled(MemoryInit(), SwapToMemory(), CRCheck(), MemoryToElectron())
    compiled(CRCheck(), MemoryInit(), SwapToMemory(), MemoryToElectron())  # before: fine


def test_attempts_while_a_memory_holds_a_state_keep_whole_larmor_periods():
    with pytest.raises(CompileError, match="not a whole number of memory 'c13' Larmor periods"):
        compiled(MemoryInit(), SwapToMemory(), EntanglementAttempt(max_attempts=10))
    # pad the herald window so one attempt is exactly 2 Larmor... periods of the clock grid
    base = compiled(EntanglementAttempt(max_attempts=10)).shot_duration_ns
    periods = math.ceil(base * F_L * 1e-9)
    window = PARAMS["herald_window_ns"] + periods / F_L * 1e9 - base
    padded = {**PARAMS, "herald_window_ns": round(window / CLOCK_NS) * CLOCK_NS}
    compiled(MemoryInit(), SwapToMemory(), EntanglementAttempt(max_attempts=10), params=padded)


# ---- a frame on the sequencer's Larmor epoch ------------------------------------------------
EPOCH_TOLERANCE = 0.2
"""The readouts' own ~0.09 on this strongly coupled model spin (test_memory_readout_in_each_
basis), and up to ~0.1 more: the swap's ALIGN waits up to a Larmor period (2.3 us here) with
the electron's state not yet moved, while the nucleus (|0>) turns about the A_perp-tilted axis
and shifts the electron's line by the hyperfine coupling (8 and ~14 degrees here; on the
simulator's spins, 2 MHz Larmor and < 60 kHz couplings, under ~5 degrees). A lost frame reads
anything from 0 to 1 as the clock and the untimed wait vary: these cases would see it."""


@pytest.mark.parametrize("untimed_ns", [0, 1236, 98_764, 3_000_004])
@pytest.mark.parametrize("state", ["+x", "-y"])
def test_an_epoch_frame_survives_an_untimed_wait(state, untimed_ns):
    """Stored on the epoch (SwapToMemory(epoch=True)), a state survives a charge check of
    any length (the electron pumped to |0> in it), read in X and Y; started at any clock.
    Within EPOCH_TOLERANCE: see there."""
    prep, bloch = CARDINAL[state]
    for basis, component in (("x", bloch[0]), ("y", bloch[1])):
        ops = (MemoryInit(), prep, SwapToMemory(epoch=True), CRCheck(), MemoryReadout(basis=basis))
        c = compiled(*ops)
        for start in (0, 777_777):
            _, p = replay_outcomes(c, (True,), clock_ns=start, untimed_ns=untimed_ns)
            assert p == pytest.approx((1 + component) / 2, abs=EPOCH_TOLERANCE), (basis, start)


@pytest.mark.parametrize("gap_ns", [4, 50_000, 1_234_567])
def test_an_epoch_frame_survives_the_end_of_its_program(gap_ns):
    """Written on the epoch in one program, read in another (MemoryReadout(epoch=True)) after
    any gap: the free-running clock carries the frame, not the program."""
    prep, bloch = CARDINAL["+y"]
    write = compiled(MemoryInit(), prep, SwapToMemory(epoch=True))
    ends: list[int] = []
    rho, _ = replay_outcomes(write, (), clock_ns=123_456, ends=ends)
    for basis, component in (("x", bloch[0]), ("y", bloch[1])):
        read = compiled(CRCheck(), MemoryReadout(basis=basis, epoch=True))
        _, p = replay_outcomes(
            read, (True,), _free(gap_ns) @ rho @ _free(gap_ns).conj().T, clock_ns=ends[0] + gap_ns
        )
        assert p == pytest.approx((1 + component) / 2, abs=EPOCH_TOLERANCE), basis


def test_without_the_epoch_the_untimed_wait_is_still_refused():
    with pytest.raises(CompileError, match=r"unknown time.*epoch=True"):
        compiled(MemoryInit(), SwapToMemory(), CRCheck(), MemoryReadout(basis="x"))


def test_align_waits_to_the_next_whole_period_of_the_free_running_clock():
    c = compiled(SwapToMemory(epoch=True))
    aligns = [i for i in c.program.instructions if i.op == Op.ALIGN]
    assert len(aligns) == 1 and aligns[0].d == round(1e12 / F_L)
    period = aligns[0].d
    for clock in (0, 4, 1_000_000, 10**13 + 12):
        wait = align_wait_ns(clock, period, aligns[0].c)
        assert wait % CLOCK_NS == 0 and 0 <= wait <= period / 1000 + CLOCK_NS
        residual = ((clock + wait) * 1000 + aligns[0].c) % period
        assert min(residual, period - residual) <= CLOCK_NS * 1000 / 2


def test_a_frame_rotation_is_undone_at_the_readout():
    """A state turned by +90 degrees about z since it was written (+x became +y) reads +x
    when the readout is told so (frame_deg 90)."""
    prep, _ = CARDINAL["+y"]
    ops = (MemoryInit(), prep, SwapToMemory(), Wait(1000))
    for basis, frame_deg, bright in (("x", 90.0, True), ("y", 90.0, None), ("x", 0.0, None)):
        _, reads = replay(compiled(*ops, MemoryReadout(basis=basis, frame_deg=frame_deg)))
        expected = 1.0 if bright else 0.5
        assert reads[-1] == pytest.approx(expected, abs=0.12), (basis, frame_deg)


@pytest.mark.parametrize(
    "text, message",
    [
        ("ALIGN 3999", "ALIGN period 3999 ps is outside"),
        ("ALIGN 2ms", "is not a time in ps"),
        ("ALIGN 2us, 2us", "ALIGN offset 2000000 ps must be"),
        ("ALIGN", "ALIGN takes 1 to 4 operands"),
    ],
)
def test_align_operands_are_bounded(text, message):
    from qnode.errors import ProgramError
    from sequences.program import assemble, decode, encode

    with pytest.raises(ProgramError, match=message):
        assemble(f"{text}\nHALT")
    good = assemble("ALIGN 2257336, 1000ns\nHALT").instructions
    assert decode(encode(good)) == good
