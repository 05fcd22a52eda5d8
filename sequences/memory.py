"""Operations on an NV node's nuclear-spin memory (13C), compiled into electron pulse trains.

The electron (|0> = ms=0, |1> = ms=-1) couples to a 13C spin by
H = omega_L I_z + |1><1| (A_par I_z + A_perp I_x) (Taminiau et al., PRL 109, 137602 (2012)).
A decoupling train on the electron, tau - pi - 2 tau - pi - tau repeated, with tau on a
resonance tau_k = (2k - 1) pi / (2 omega_L + A_par), rotates the nucleus about +x when the
electron is |0> and about -x when it is |1>: the DD gate CRx(theta) = exp(-i theta/2 Z_e X_n)
(Taminiau et al., Nat. Nanotechnol. 9, 171 (2014)). Its angle grows linearly with the number
of pulses; `c13_n_pulses` is the count for theta = pi/2. Every other nuclear rotation is about
z and comes from waiting: the nucleus precesses at omega_0 = omega_L with the electron in |0>,
at omega_1 = sqrt((omega_L + A_par)^2 + A_perp^2) in |1>; while the electron is in a
superposition a wait is echoed (an electron pi pulse in its middle) so both branches turn by
the mean (omega_0 + omega_1) / 2.

The gate's axis is x in the laboratory frame (the hyperfine field's direction), so which axis
of the stored state it acts on depends on when it starts. The compiler tracks each memory's
frame: the moment its state was written (the end of SwapToMemory or MemoryInit, or of a
gate: a DD gate adds whole turns of the mean precession); a later gate on it starts a whole
number of Larmor periods after that (a wait while the electron is in |0>; before a
MemoryGate, whose electron may hold half of a pair, a doubly echoed wait). The sequencer
must therefore time everything between the two: a charge check or a sync wait (unknown
length) in between is refused, and an entanglement attempt only when its period is a whole
number of Larmor periods (then the number of attempts does not matter) -- unless the memory
was written on the sequencer's Larmor epoch (`epoch=True`): its write and its later
operations then start ALIGNed to the free-running clock's whole Larmor periods, so the frame
survives untimed waits and the end of the program, provided the electron sits in |0>
meanwhile (docs/network.md, "Delivery into memory").

Sequences (their structure as in Bradley et al., PRX 9, 031045 (2019) and the supplementary
material of Pompili et al., Science 372, 259 (2021); the pulse phases and the timing are our
derivation, replayed on the Hamiltonian above in hil_tests/test_compiler_memory.py):
- MemoryToElectron (electron in |0>): e y(pi/2), CRx(pi/2), e x(pi/2), an echoed wait that
  turns the nucleus by a quarter turn, CRx(pi/2), e -y(pi/2): the nuclear state moves onto
  the electron and the nucleus is left in a fixed state (|0>).
- MemoryInit: electron initialisation, MemoryToElectron (the nucleus's old state, whatever it
  was, goes onto the electron), electron initialisation again: a SWAP-like reset.
- SwapToMemory (nucleus initialised): MemoryToElectron's steps in reverse, each inverted.
- MemoryReadout: MemoryToElectron, an electron basis rotation, the electron's readout.
- ReadoutSparingMemory: the electron's readout while a memory holds a state; held to whole
  periods of both precessions, then a pi pulse (dark) or the pump (bright), equal lengths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sequences.operations import (
    OPERATIONS,
    MwPulse,
    Operation,
    Param,
    Readout,
    SpinInit,
    pi_half_pulse,
    pi_pulse,
)
from sequences.program import ALIGN_PERIOD_PS, ALIGN_STEP_PS, CLOCK_NS

if TYPE_CHECKING:
    from sequences.compiler import CompileError


def parameter(memory: str, quantity: str) -> str:
    """The stored name of a memory's calibrated quantity: parameter("c13", "tau_ns")."""
    return f"{memory}_{quantity}"


GATE_QUANTITIES = ("tau_ns", "n_pulses", "larmor_hz", "omega1_hz")
"""What a memory's gates are compiled from (`<memory>_<quantity>` in the parameter store)."""
DEPHASING_QUANTITIES = ("n_1e_at_alpha", "n_1e_alpha", "t2_s", "move_fidelity")
"""What the link layer plans with (dephasing per attempt, T2, a move's fidelity)."""


@dataclass(frozen=True)
class MemoryOperation(Operation):
    """An operation on one memory qubit of the node (a name of the lab file's `memories`)."""

    memory: str = "c13"


@dataclass(frozen=True)
class MemoryGate(MemoryOperation):
    """The electron-conditional rotation CRx(angle): the nucleus turns about +x with the
    electron in |0>, about -x in |1>. The angle is a positive multiple of 90 degrees (a
    multiple of the calibrated pi/2 pulse count)."""

    KIND = "memory_gate"
    angle_deg: float = 90.0
    frame: str = "keep"
    """"keep": start a whole number of Larmor periods after the memory's state was written
    (a gate on a memory without a frame sets it: what follows keeps time with the gate);
    "ignore": start at once (a nuclear Ramsey measures the precession frames are kept with)."""
    frame_deg: float = 0.0
    """A known rotation of the stored state about z to undo (as MemoryReadout's); the
    memory's frame moves with it for the operations that follow."""
    epoch: bool = False
    """The memory's state was written on the sequencer's Larmor epoch (an `epoch` write,
    maybe in an earlier program): start aligned to it (ALIGN) when this program has no frame."""
    attempt_phase_deg: float = 0.0
    """The stored state's mean turn about z per entanglement attempt of this program's
    attempt loop (the calibrated phase per attempt), undone in real time: the gate's ALIGN
    offset grows by the attempt register times the turn's time at the Larmor period (Hermans
    et al., Nature 605, 663 (2022) feed it forward). Needs the memory written on the epoch."""
    named_outcomes: bool = False
    """What follows reads its outcomes with names derived for the calibrated gate (the
    Bell-state measurement's BELL_TABLE, the GHZ operation's GHZ_BASES): they hold for a
    pulse count of 2 modulo 4 (`gate_pulses_near`), so another is refused."""


@dataclass(frozen=True)
class MemoryInit(MemoryOperation):
    """Reset the memory to a fixed state by moving its state onto a freshly initialised
    electron, then initialise the electron again."""

    KIND = "memory_init"
    epoch: bool = False
    """Write on the sequencer's Larmor epoch (ALIGN): see SwapToMemory."""


@dataclass(frozen=True)
class SwapToMemory(MemoryOperation):
    """Move the electron's state into the (initialised) memory; the electron ends in |0>."""

    KIND = "swap_to_memory"
    epoch: bool = False
    """Start aligned to the sequencer's free-running Larmor epoch (ALIGN; the electron waits
    up to one Larmor period in whatever state it holds), so the stored state's frame is
    known to any later program (`epoch` reads) whatever untimed waits come between, provided
    the electron sits in |0> meanwhile (a spin pump or a charge check while the memory holds
    a state dephases it: Kalb et al. 2018)."""


@dataclass(frozen=True)
class MemoryToElectron(MemoryOperation):
    """Move the memory's state onto the electron (which must be in |0>)."""

    KIND = "memory_to_electron"
    epoch: bool = False
    """As MemoryGate's."""


MEMORY_BASES = ("z", "x", "y")
FRAMES = ("keep", "ignore")


@dataclass(frozen=True)
class MemoryReadout(MemoryOperation):
    """Measure the memory in a basis: its state onto the electron, the electron read out
    (bright = the memory's +1 eigenstate of that basis: |0>, |+x>, |+y>)."""

    KIND = "memory_readout"
    basis: str = "z"
    label: str = "memory"
    frame_deg: float = 0.0
    """A known rotation of the stored state about z since it was written (degrees, in the
    memory's frame: e.g. attempts x the calibrated phase per attempt), undone by reading
    that much later or earlier in the memory's precession."""
    epoch: bool = False
    """As MemoryGate's: the state was written on the epoch, maybe by an earlier program."""


@dataclass(frozen=True)
class ReadoutSparingMemory(MemoryOperation):
    """Read the electron out while a memory holds a state, and bring the electron back to
    |0> without the spin pump's reset at a random time (which would dephase the memory):
    after a dark outcome a microwave pi pulse, after a bright one the pump (it acts only on
    an electron the readout light flipped, whose memory phase is random already). The
    electron stays in its measured state until a whole number of both precession periods
    (omega_0 and omega_1) since the readout began, so the memory's state is the same in
    both branches. Both branches last the same (the frame stays known)."""

    KIND = "readout_sparing_memory"
    label: str = "electron"


MEMORY_OPERATIONS: dict[str, type[Operation]] = {
    cls.KIND: cls
    for cls in (
        MemoryGate,
        MemoryInit,
        SwapToMemory,
        MemoryToElectron,
        MemoryReadout,
        ReadoutSparingMemory,
    )
}
OPERATIONS.update(MEMORY_OPERATIONS)


# ---- compilation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateCalibration:
    """A memory's calibrated gate parameters, read from the node's parameters."""

    memory: str
    tau_ns: float
    n_pulses: int
    larmor_hz: float
    omega1_hz: float
    sign: int = 1
    """The direction of the DD gate's rotation for electron |0> (+x). It depends on the
    resonance order and the sign of A_perp, and nothing needs it calibrated: the memory's
    axes are those SwapToMemory writes and MemoryReadout reads, the same gate's, so every
    sequence here (the Bell-state measurement too) does the same in them for either
    direction (hil_tests/test_bsm.py); -1 wraps each gate in flips."""

    @property
    def mean_precession_hz(self) -> float:
        """The nucleus's precession averaged over the electron's two states (echoed waits)."""
        return (self.larmor_hz + self.omega1_hz) / 2


class Emitter(Protocol):
    """What memory compilation needs of the compiler (sequences.compiler._Compiler)."""

    elapsed: int
    lines: list[str]
    memory_frames: dict[str, int]
    epoch_frames: set[str]
    memories: tuple[str, ...]

    def fail(self, reason: str) -> CompileError: ...

    def wait(self, ns: int) -> None: ...

    def emit(self, line: str) -> None: ...

    def label(self, stem: str) -> str: ...

    def mw_pulse(self, op: MwPulse) -> int: ...

    def played_ns(self, op: MwPulse) -> int: ...

    def operation(self, op: Operation) -> None: ...

    def value(self, v: float | int | Param, what: str) -> float: ...


def gate_calibration(out: Emitter, memory: str, precession: bool = True) -> GateCalibration:
    """The memory's gate parameters, or an error naming what is missing or wrong.
    `precession=False`: only the gate's own (tau, pulses), for a gate that keeps no frame."""
    if memory not in out.memories:
        have = ", ".join(out.memories) or "none"
        raise out.fail(
            f"memory '{memory}' is not a memory qubit of this node (the lab file's memories "
            f"of this node: {have})"
        )
    values = {"larmor_hz": math.nan, "omega1_hz": math.nan}
    for quantity in GATE_QUANTITIES if precession else GATE_QUANTITIES[:2]:
        name = parameter(memory, quantity)
        values[quantity] = out.value(Param(name), name)
    n = values["n_pulses"]
    if n != round(n) or n < 2 or round(n) % 2:
        raise out.fail(
            f"{parameter(memory, 'n_pulses')} must be an even pulse count of at least 2, "
            f"got {n:g}: recalibrate with c13_gate"
        )
    for quantity in ("tau_ns", "larmor_hz", "omega1_hz"):
        if values[quantity] <= 0:  # (nan when not read: not compared)
            raise out.fail(f"{parameter(memory, quantity)} must be positive")
    return GateCalibration(
        memory, values["tau_ns"], round(n), values["larmor_hz"], values["omega1_hz"]
    )


def gate_pulses_near(n: float) -> int:
    """The pulse count nearest `n` that a gate may have: 2 modulo 4. The XY-4 train's
    electron pulses multiply to Z_e (up to a phase) when their number of XY pairs is odd and
    to the identity when it is even; a memory's own round trip (SwapToMemory, MemoryReadout)
    reads right either way, but the Bell-state measurement's outcomes name Bell states
    (BELL_TABLE) only for the odd case: with an even one it reads the parity and Y inverted
    (the papers' Hamiltonian: hil_tests/test_memory_delivery.py). Two pulses more or fewer
    change a gate of a hundred or more by ~2 % of its angle."""
    return max(2, 4 * round((n - 2) / 4) + 2)


def _quantise(ns: float) -> int:
    return round(ns / CLOCK_NS) * CLOCK_NS


def gate_pulse_count(cal: GateCalibration, angle_deg: float) -> int:
    """Pulses for a conditional rotation by a positive multiple of 90 degrees."""
    quarters = angle_deg / 90
    if quarters != round(quarters) or quarters < 1:
        raise ValueError(
            f"a memory gate turns by a positive multiple of 90 degrees, not {angle_deg:g}"
        )
    return round(quarters) * cal.n_pulses


def _gate(out: Emitter, cal: GateCalibration, n_pulses: int) -> None:
    """The DD gate: n electron pi pulses (XY-4 cycle), centre to centre 2 tau, tau from the
    gate's start to the first centre and from the last centre to its end. Pulse centres, not
    edges, set the resonance."""
    spacing = _quantise(2 * cal.tau_ns)
    length = out.played_ns(pi_pulse())
    edge = _quantise((spacing - length) / 2)  # both ends together: one gap
    if edge < 0:
        raise out.fail(
            f"{parameter(cal.memory, 'tau_ns')} of {cal.tau_ns:g} ns is shorter than half the "
            f"{length} ns pi pulse"
        )
    out.wait(edge)
    cycles = n_pulses // 2 - 1  # X gap Y gap, looped by the sequencer; the last pair below
    if cycles > 0:
        top = out.label("dd")
        out.emit(f"{top}:")
        start = out.elapsed
        for phase in (0.0, 90.0):
            out.wait(out.mw_pulse(pi_pulse(phase)))
            out.wait(spacing - length)
        out.emit(f"LOOP {top}, {cycles}")
        out.elapsed = start + (out.elapsed - start) * cycles
    out.wait(out.mw_pulse(pi_pulse(0.0)))
    out.wait(spacing - length)
    out.wait(out.mw_pulse(pi_pulse(90.0)))
    out.wait(spacing - length - edge)


def _electron(out: Emitter, phase_deg: float, angle_deg: int) -> None:
    pulse = pi_pulse(phase_deg) if angle_deg == 180 else pi_half_pulse(phase_deg)
    out.wait(out.mw_pulse(pulse))


def _wrapped(cal: GateCalibration, sign: int) -> bool:
    return sign * cal.sign < 0


def _conditional(out: Emitter, cal: GateCalibration, sign: int) -> int:
    """CRx(+pi/2), or CRx(-pi/2) = X_e CRx(+pi/2) X_e (the electron's flips swap the
    branches' directions). Returns when the gate itself ended (before a closing flip)."""
    if _wrapped(cal, sign):
        _electron(out, 0.0, 180)
    _gate(out, cal, cal.n_pulses)
    end = out.elapsed
    if _wrapped(cal, sign):
        _electron(out, 0.0, 180)
    return end


def _echoed_quarter_turn(
    out: Emitter,
    cal: GateCalibration,
    turns: float,
    before: MwPulse | None,
    after: MwPulse | None,
    since: int,
    flips_after: int,
) -> None:
    """Between two gates: an electron pulse (`before`, `after`) and an echoed wait, wait -
    pi - wait, so long that from the first gate's end (`since`) to the second's start
    (`flips_after` flips of a wrapped gate still to come) the nucleus turns by `turns`
    (mod 1) at the mean precession in both of the electron's branches. Every pulse in the
    gap counts: at a Larmor period of 0.5 us a 100 ns pulse is a fifth of a turn."""
    pi_ns = out.played_ns(pi_pulse())
    extra = sum(out.played_ns(p) for p in (before, after) if p is not None)
    extra += (out.elapsed - since) + flips_after * pi_ns
    period_ns = 1e9 / cal.mean_precession_hz
    target = turns % 1
    for whole in range(1000):
        total = (target + whole) * period_ns
        half = _quantise((total - extra - pi_ns) / 2)
        if half >= CLOCK_NS:
            break
    else:  # pragma: no cover - a period is microseconds, pulses are far shorter
        raise out.fail("no echoed wait fits the memory's precession period")
    if before is not None:
        out.wait(out.mw_pulse(before))
    out.wait(half)
    out.wait(out.mw_pulse(pi_pulse()))
    out.wait(half)
    if after is not None:
        out.wait(out.mw_pulse(after))


def _epoch_period_ps(out: Emitter, cal: GateCalibration) -> int:
    period = round(1e12 / cal.larmor_hz)
    low, high = ALIGN_PERIOD_PS
    if not low <= period <= high:
        raise out.fail(
            f"{parameter(cal.memory, 'larmor_hz')} of {cal.larmor_hz:g} Hz gives a Larmor period "
            f"of {period} ps, outside ALIGN's {low}..{high} ps"
        )
    return period


def attempt_step_ps(per_attempt_deg: float, larmor_hz: float) -> int:
    """The ALIGN step that undoes a turn of `per_attempt_deg` per attempt: a state turned by
    phi ahead of its frame is where an unturned one would be phi / 360 Larmor periods later
    (its frame moves that much earlier, as _shift_frame's), so the gate starts that much
    earlier modulo the period: ALIGN's offset (clock + offset = whole periods) grows by it."""
    return round(per_attempt_deg / 360 * 1e12 / larmor_hz)


def _sync_epoch(
    out: Emitter, cal: GateCalibration, lead_ns: int, epoch: bool, per_attempt_deg: float = 0.0
) -> bool:
    """Without a frame in this program (none yet, or an untimed wait lost it) for a memory
    written on the epoch: ALIGN so that `lead_ns` from its end is a whole number of Larmor
    periods since the sequencer's epoch, which is where the memory's frame is. With a turn
    per attempt to undo (`per_attempt_deg`) always, the frame found again on the epoch: the
    ALIGN's offset adds the attempt register times attempt_step_ps (real-time feed-forward)."""
    from sequences.compiler import R_ATTEMPTS  # the compiler imports this module

    memory = cal.memory
    on_epoch = epoch or memory in out.epoch_frames
    if per_attempt_deg:
        if not math.isfinite(per_attempt_deg) or not on_epoch:
            raise out.fail(
                f"attempt_phase_deg {per_attempt_deg}: the turn per attempt is fed forward "
                f"against the sequencer's Larmor epoch, so memory '{memory}' must be written "
                "on it (epoch=True) and the turn finite"
            )
        out.memory_frames.pop(memory, None)  # found again on the epoch, the attempts' turn too
    if memory in out.memory_frames or not on_epoch:
        return False
    period = _epoch_period_ps(out, cal)
    offset = lead_ns * 1000 % period
    if per_attempt_deg:
        step = attempt_step_ps(per_attempt_deg, cal.larmor_hz)
        if not -ALIGN_STEP_PS - 1 <= step <= ALIGN_STEP_PS:
            raise out.fail(
                f"attempt_phase_deg {per_attempt_deg:g} is {step} ps per attempt at memory "
                f"'{memory}''s Larmor period, beyond ALIGN's step of {ALIGN_STEP_PS} ps"
            )
        out.emit(f"ALIGN {period}, {offset}, r{R_ATTEMPTS}, {step}")
    else:
        out.emit(f"ALIGN {period}, {offset}")
    out.memory_frames[memory] = out.elapsed + lead_ns
    out.epoch_frames.add(memory)
    return True


def _epoch_write(out: Emitter, cal: GateCalibration, write: Callable[[], None]) -> None:
    """A write on the epoch: ALIGN, then the write, its ALIGN's offset set (once the write's
    frame is known) so the frame falls on a whole number of Larmor periods since the epoch."""
    period = _epoch_period_ps(out, cal)
    index, start = len(out.lines), out.elapsed
    out.emit(f"ALIGN {period}")
    write()
    offset_ns = out.memory_frames[cal.memory] - start
    out.lines[index] = f"ALIGN {period}, {offset_ns * 1000 % period}"
    out.epoch_frames.add(cal.memory)


def _shift_frame(out: Emitter, cal: GateCalibration, frame_deg: float) -> None:
    """A stored state turned by frame_deg about z (ahead of its frame) is where an unturned
    one would be frame_deg / 360 Larmor periods later: its frame moves that much earlier."""
    if not math.isfinite(frame_deg) or abs(frame_deg) > 1e6:
        raise out.fail(f"frame_deg must be a finite angle of at most 1e6 degrees, not {frame_deg}")
    frame = out.memory_frames.get(cal.memory)
    if frame_deg and frame is None:
        raise out.fail(
            f"frame_deg: memory '{cal.memory}' has no frame in this program (nothing wrote it "
            "and no gate set it), so there is no rotation to undo"
        )
    if frame_deg and frame is not None:
        out.memory_frames[cal.memory] = frame - round(frame_deg / 360 * 1e9 / cal.larmor_hz)


def _align(out: Emitter, cal: GateCalibration, lead_ns: int) -> None:
    """Wait (the electron in |0>: the nucleus precesses at omega_L alone) until `lead_ns` from
    now is a whole number of Larmor periods after the memory's frame was set."""
    frame = out.memory_frames.get(cal.memory)
    if frame is None:
        return
    period_ns = 1e9 / cal.larmor_hz
    late = (out.elapsed + lead_ns - frame) % period_ns
    out.wait(_quantise((period_ns - late) % period_ns))


ECHOED_ALIGN_TRIES = 64


def _echoed_align(out: Emitter, cal: GateCalibration, lead_ns: int = 0) -> None:
    """Before a gate on a framed memory, with the electron in any state (it may hold half of
    a pair, as at a Bell-state measurement): a doubly echoed wait, q - pi - 2q - pi - q, so
    the nucleus turns at the mean precession in both of the electron's branches (a plain
    wait would turn it at omega_0 or omega_1 by the electron's state: a conditional phase),
    long enough that its phase since the frame is a whole number of turns when the gate
    starts; the electron ends as it was. Of the first tries, the one the clock's grid
    plays nearest. No frame: nothing (the gate sets it)."""
    frame = out.memory_frames.get(cal.memory)
    if frame is None:
        return
    pi_ns = out.played_ns(pi_pulse())
    turned = ((out.elapsed + lead_ns - frame) * 1e-9 * cal.larmor_hz) % 1
    best: tuple[float, int] | None = None
    for whole in range(ECHOED_ALIGN_TRIES):
        total_ns = ((1 - turned) % 1 + whole) / cal.mean_precession_hz * 1e9
        quarter = _quantise((total_ns - 2 * pi_ns) / 4)
        if quarter < CLOCK_NS:
            continue
        miss = abs(4 * quarter + 2 * pi_ns - total_ns)
        if best is None or miss < best[0]:
            best = (miss, quarter)
        if miss <= CLOCK_NS / 4:
            break
    assert best is not None  # a period is microseconds: some try fits
    quarter = best[1]
    out.wait(quarter)
    out.wait(out.mw_pulse(pi_pulse(0.0)))
    out.wait(2 * quarter)
    out.wait(out.mw_pulse(pi_pulse(180.0)))
    out.wait(quarter)


def _memory_to_electron(
    out: Emitter, cal: GateCalibration, align: bool, epoch: bool = False, frame_deg: float = 0.0
) -> None:
    wrapped = _wrapped(cal, +1)
    if align:
        lead = out.played_ns(pi_half_pulse(90.0)) + wrapped * out.played_ns(pi_pulse())
        _sync_epoch(out, cal, lead, epoch)
        _shift_frame(out, cal, frame_deg)
        _align(out, cal, lead)
    _electron(out, 90.0, 90)
    end = _conditional(out, cal, +1)
    _echoed_quarter_turn(out, cal, 0.25, pi_half_pulse(0.0), None, end, int(wrapped))
    _conditional(out, cal, +1)
    _electron(out, 270.0, 90)


def _swap_to_memory(out: Emitter, cal: GateCalibration) -> None:
    """MemoryToElectron's steps in reverse order, each inverted."""
    wrapped = _wrapped(cal, -1)
    _electron(out, 90.0, 90)
    end = _conditional(out, cal, -1)
    _echoed_quarter_turn(out, cal, -0.25, None, pi_half_pulse(180.0), end, int(wrapped))
    out.memory_frames[cal.memory] = _conditional(out, cal, -1)
    _electron(out, 270.0, 90)


HOLD_TOLERANCE = 0.03
"""How far from a whole number of each precession period (in periods) the electron's
measured state may be held: 0.03 turns the memory by at most 11 degrees in a dark branch."""
HOLD_MAX_PERIODS = 400


def sparing_hold_ns(cal: GateCalibration, readout_ns: int) -> int:
    """The time from a readout's start to the electron's reset, at least the readout's: on
    the clock's grid, nearest a whole number of periods at both omega_0 (electron |0>) and
    omega_1 (|1>), the first within HOLD_TOLERANCE (the best one beyond it)."""

    def off(t: int) -> float:
        return max(abs(x - round(x)) for x in (t * 1e-9 * cal.larmor_hz, t * 1e-9 * cal.omega1_hz))

    first = math.ceil(readout_ns * 1e-9 * cal.omega1_hz)
    candidates = [
        t
        for n in range(first, first + HOLD_MAX_PERIODS)
        for t in (_quantise(n / cal.omega1_hz * 1e9),)
        if t >= readout_ns
    ]
    for t in candidates:
        if off(t) <= HOLD_TOLERANCE:
            return t
    return min(candidates, key=off)


def _readout_sparing_memory(out: Emitter, cal: GateCalibration, label: str) -> None:
    """ReadoutSparingMemory: readout, hold, then branch on the counts (COUNT wrote them to
    the compiler's count register): bright -> pump, dark -> pi pulse, equal lengths."""
    from sequences.compiler import R_COUNT  # the compiler imports this module

    threshold = out.value(Param("readout_threshold"), "readout threshold")
    start = out.elapsed
    out.operation(Readout(label=label))
    hold = sparing_hold_ns(cal, out.elapsed - start)
    out.wait(start + hold - out.elapsed)
    dark, join = out.label("dark"), out.label("join")
    out.emit(f"BRANCH_LT r{R_COUNT}, {math.ceil(threshold)}, {dark}")
    branch = out.elapsed
    out.operation(SpinInit())
    pump_ns = out.elapsed - branch
    pi_ns = out.played_ns(pi_pulse())
    length = max(pump_ns, pi_ns)
    out.wait(length - pump_ns)
    out.emit(f"JUMP {join}")
    out.emit(f"{dark}:")
    out.elapsed = branch
    out.wait(out.mw_pulse(pi_pulse()))
    out.wait(length - pi_ns)
    out.emit(f"{join}:")
    if out.elapsed != branch + length:  # pragma: no cover - both branches are built equal
        raise out.fail("the readout's branches differ in length")


BASIS_ROTATION = {"z": None, "x": pi_half_pulse(270.0), "y": pi_half_pulse(0.0)}
"""The electron's rotation that takes the basis's +1 eigenstate to |0> (bright)."""


def compile_memory_operation(out: Emitter, op: MemoryOperation) -> None:
    """Emit `op` as electron pulses and waits (see the module's docstring)."""
    framed = op.memory in out.memory_frames
    if isinstance(op, MemoryGate) and op.frame not in FRAMES:
        raise out.fail(f"unknown frame {op.frame!r} ({', '.join(FRAMES)})")
    epoch = getattr(op, "epoch", False) or op.memory in out.epoch_frames
    if isinstance(op, MemoryGate) and not (op.frame == "keep" and (framed or epoch)):
        cal = gate_calibration(out, op.memory, precession=False)
    else:
        cal = gate_calibration(out, op.memory)
    match op:
        case MemoryGate():
            try:
                n = gate_pulse_count(cal, op.angle_deg)
            except ValueError as e:
                raise out.fail(str(e)) from None
            if op.named_outcomes and cal.n_pulses % 4 != 2:
                name = parameter(cal.memory, "n_pulses")
                raise out.fail(
                    f"{name} must be 2 modulo 4 (an odd number of XY pairs) for a Bell-state "
                    f"measurement or GHZ operation, got {cal.n_pulses}: their outcomes' names "
                    "hold for the electron's phase such a gate leaves; "
                    f"{gate_pulses_near(cal.n_pulses)} is the nearest (c13_gate chooses so)"
                )
            wrapped = _wrapped(cal, +1)
            if op.frame == "keep":
                lead = wrapped * out.played_ns(pi_pulse())
                synced = _sync_epoch(out, cal, lead, op.epoch, op.attempt_phase_deg)
                _shift_frame(out, cal, op.frame_deg)
                if not synced or op.frame_deg:
                    _echoed_align(out, cal, lead)
            elif op.frame_deg or op.attempt_phase_deg:
                raise out.fail("frame_deg and attempt_phase_deg need frame 'keep'")
            if wrapped:
                _electron(out, 0.0, 180)
            _gate(out, cal, n)
            if op.frame == "keep":  # a gate adds no precession of its own (whole mean turns):
                out.memory_frames[cal.memory] = out.elapsed  # the frame moves to its end
            if wrapped:
                _electron(out, 0.0, 180)
        case MemoryInit():

            def initialise() -> None:
                out.operation(SpinInit())
                _memory_to_electron(out, cal, align=False)
                out.memory_frames[cal.memory] = out.elapsed

            out.memory_frames.pop(cal.memory, None)
            out.epoch_frames.discard(cal.memory)
            _epoch_write(out, cal, initialise) if op.epoch else initialise()
            out.operation(SpinInit())
        case SwapToMemory():
            out.memory_frames.pop(cal.memory, None)
            out.epoch_frames.discard(cal.memory)
            if op.epoch:
                _epoch_write(out, cal, lambda: _swap_to_memory(out, cal))
            else:
                _swap_to_memory(out, cal)
        case MemoryToElectron():
            _memory_to_electron(out, cal, align=True, epoch=op.epoch)
        case MemoryReadout():
            if op.basis not in BASIS_ROTATION:
                raise out.fail(f"unknown basis {op.basis!r} ({', '.join(MEMORY_BASES)})")
            _memory_to_electron(out, cal, align=True, epoch=op.epoch, frame_deg=op.frame_deg)
            rotation = BASIS_ROTATION[op.basis]
            if rotation is not None:
                out.wait(out.mw_pulse(rotation))
            out.operation(Readout(label=op.label))
        case ReadoutSparingMemory():
            _readout_sparing_memory(out, cal, op.label)
        case _:
            raise out.fail(f"no compiler for {type(op).__name__}")


def check_frames_survive(out: Emitter, op: Operation, duration_ns: int | None) -> None:
    """A stored memory state needs the time since it was written: refuse what the sequencer
    cannot time (duration None), or an attempt loop whose period is not a whole number of
    Larmor periods (its phase would depend on the number of attempts)."""
    for memory in list(out.memory_frames):
        name = type(op).__name__
        if duration_ns is None and memory in out.epoch_frames:
            del out.memory_frames[memory]  # found again on the epoch by the next operation
            continue
        if duration_ns is None:
            raise out.fail(
                f"{name} lasts an unknown time, so the phase of the state memory '{memory}' "
                "holds would be lost; move it before the memory is written or after it is read, "
                "or write the memory on the epoch (epoch=True)"
            )
        cal = gate_calibration(out, memory)
        periods = duration_ns * cal.larmor_hz * 1e-9
        if abs(periods - round(periods)) > 0.02:
            whole = math.ceil(periods) / cal.larmor_hz * 1e9
            raise out.fail(
                f"{name}'s period of {duration_ns} ns is not a whole number of memory "
                f"'{memory}' Larmor periods ({1e9 / cal.larmor_hz:.1f} ns): the stored phase "
                f"would depend on the number of attempts; pad it to {whole:.0f} ns"
            )
