"""Compile a sequence, at one sweep point, into a sequencer program and AWG waveforms.

The host compiles; the sequencer times (ARTIQ's split). The program repeats the sequence
`shots` times; each readout emits an event (code = its readout number, value = counts) and
every shot ends with a SHOT_END event whose value is 1 if a CR / cooling check never passed
in that shot. Rejections name the operation: index, kind and the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qnode.errors import QnodeError
from sequences.memory import MemoryOperation, check_frames_survive, compile_memory_operation
from sequences.operations import (
    PROTOCOLS,
    CountWindow,
    CRCheck,
    Decoupling,
    EntanglementAttempt,
    LaserPulse,
    MwPulse,
    Operation,
    Parallel,
    Param,
    Repeat,
    Sequence,
    SpinInit,
    Value,
    Wait,
    WaitSync,
    pi_half_pulse,
    pi_pulse,
)
from sequences.program import CLOCK_NS, MAX_INSTRUCTIONS, N_LINK_PORTS, Program, assemble

FIBRE_SWITCH = "fibre_switch"
"""The TTL line (by its name in the node's channel map) of a two-link node's fibre switch."""

XY8 = (0.0, 90.0, 0.0, 90.0, 90.0, 0.0, 90.0, 0.0)
"""XY-8 (Gullion, Baker and Conradi, J. Magn. Reson. 89, 479 (1990)): XYXY YXYX, whose
second half undoes the first's pulse errors to higher order than XY-4."""


def decoupling_phases(n: int) -> list[float]:
    """The pi pulses' phases of XY-n: whole XY-8 blocks when n is a multiple of 8, else the
    XY-4 cycle X, Y, X, Y, ..."""
    if n % 8 == 0:
        return list(XY8) * (n // 8)
    return [0.0, 90.0] * (n // 2) + [0.0] * (n % 2)


SHOT_END = 1000
"""Event code closing every shot; its value is 1 if the shot's CR / cooling check failed."""
CR_COUNTS = 1001
"""Event code of the last CR / cooling check count of a shot (for threshold calibration)."""

HERALD = 1100
"""Event: the herald outcome of the successful attempt (its HERALD_OUTCOMES index)."""
ATTEMPTS = 1101
"""Event: the number of attempts the shot took (also sent when they ran out)."""
ATTEMPTS_EXHAUSTED = 1102
"""Event: max_attempts passed without a herald; the shot is flagged."""
ENTANGLEMENT_EVENTS = (HERALD, ATTEMPTS, ATTEMPTS_EXHAUSTED)

R_CR, R_COUNT, R_ATTEMPTS, R_HERALD, R_HERALD2, R_FLAG = 0, 1, 2, 3, 4, 15
R_LAST = 14
"""1 once an attempt with last_shot_on_herald heralded: the shot is the program's last."""


class SweepError(QnodeError):
    """A sweep that does not fit its sequence."""


class CompileError(QnodeError):
    def __init__(self, index: int, op: Operation | None, reason: str) -> None:
        self.index = index
        self.reason = reason
        kind = type(op).__name__ if op is not None else "sequence"
        super().__init__(f"operation {index} ({kind}): {reason}")


@dataclass(frozen=True)
class Hardware:
    """What the compiler needs to know of one node; built from the lab file by the controller."""

    ttl: dict[str, int]
    optics: dict[str, str]  # light path -> TTL line name
    counters: dict[str, int]
    iq_channels: tuple[int, int]
    awg_sample_rate_hz: float
    awg_amplitude_vpp: float  # the AWG channels run at this; pulse amplitudes scale within it
    awg_memory_points: int
    memories: tuple[str, ...] = ()
    """The node's memory qubits beside the electron (the lab file's `memories`)."""

    @property
    def awg_peak_v(self) -> float:
        return self.awg_amplitude_vpp / 2


@dataclass
class Compiled:
    program: Program
    listing: str
    waveforms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)  # AWG_TRIG k plays waveforms[segments[k]]
    settings: dict[str, float] = field(default_factory=dict)
    readouts: list[str] = field(default_factory=list)  # event code k+1 -> readout label
    shots: int = 1
    shot_duration_ns: int = 0
    has_check: bool = False
    awg_points: int = 0  # AWG memory the waveforms take (built or not)
    ends_at_herald: bool = False
    """The program ends after the shot that heralded (EntanglementAttempt.last_shot_on_herald):
    it may report fewer than `shots` shots."""


def quantise(ns: float) -> int:
    """Nearest whole clock cycle (durations reaching the sequencer)."""
    return round(ns / CLOCK_NS) * CLOCK_NS


class _Compiler:
    def __init__(
        self, sequence: Sequence, params: dict[str, float], hw: Hardware, waveforms: bool = True
    ) -> None:
        self.seq = sequence
        self.params = params
        self.hw = hw
        self.waveforms = waveforms
        self.lines: list[str] = []
        self._instructions = 0
        self.out = Compiled(program=None, listing="", shots=sequence.shots)  # type: ignore[arg-type]
        self.index = 0
        self.op: Operation | None = None
        self.elapsed = 0
        self._labels = 0
        self._pulses: dict[tuple, str] = {}
        self.read: set[str] = set()
        """The parameters the sequence read: a swept name outside it sweeps nothing."""
        self.memories = hw.memories
        self.memory_frames: dict[str, int] = {}
        """memory -> when its state was written (ns into the shot): later gates keep time."""
        self.epoch_frames: set[str] = set()
        """Memories whose frame is on the sequencer's Larmor epoch (written after an ALIGN):
        an untimed wait does not lose it; the next operation on them ALIGNs again."""

    # helpers -------------------------------------------------------------------------------
    def fail(self, reason: str) -> CompileError:
        return CompileError(self.index, self.op, reason)

    def value(self, v: Value, what: str) -> float:
        if isinstance(v, Param):
            self.read.add(v.name)
            if v.name not in self.params:
                return self._missing(v.name, what)
            v = self.params[v.name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(f"{what} must be a finite number, got {v!r}")
        return float(v)

    def _missing(self, name: str, what: str) -> float:
        raise self.fail(
            f"{what} refers to parameter '{name}', which has no value: calibrate it, sweep it, "
            "or set it with `qnode params set`"
        )

    def duration(self, v: Value, what: str = "duration") -> int:
        ns = self.value(v, what)
        if ns < 0:
            raise self.fail(f"{what} {ns:g} ns is negative")
        if 0 < ns < CLOCK_NS:
            raise self.fail(
                f"{what} {ns:g} ns is below the sequencer clock resolution of {CLOCK_NS} ns"
            )
        return quantise(ns)

    def ttl_line(self, path: str) -> int:
        if path not in self.hw.optics:
            known = ", ".join(sorted(self.hw.optics)) or "none"
            raise self.fail(f"light path '{path}' is not wired on this node (wired: {known})")
        return self.hw.ttl[self.hw.optics[path]]

    def counter(self, name: str) -> int:
        if name not in self.hw.counters:
            raise self.fail(f"counter '{name}' is not in the node's channel map")
        return self.hw.counters[name]

    def port_operand(self, port: int) -> str:
        """A sync/herald wait's port operand (none for port 0, the format's default)."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < N_LINK_PORTS:
            raise self.fail(f"sync/herald port {port!r} is not one of 0..{N_LINK_PORTS - 1}")
        return f", {port}" if port else ""

    def point_fibre_switch(self, port: int) -> None:
        """On a node with a fibre switch (two links), send its photons to the midpoint of the
        link on this port: the switch line low for port 0, high for port 1."""
        line = self.hw.ttl.get(FIBRE_SWITCH)
        if line is None:
            return
        if port not in (0, 1):
            raise self.fail(f"the fibre switch selects the link on port 0 or 1, not {port}")
        self.emit(f"{'TTL_SET' if port else 'TTL_CLR'} {1 << line:#x}")

    def emit(self, line: str) -> None:
        if not line.endswith(":"):  # labels take no memory
            self._instructions += 1
            if self._instructions > MAX_INSTRUCTIONS:  # refused as it grows, not at the end
                raise self.fail(
                    f"the program needs more than {MAX_INSTRUCTIONS} instructions, the "
                    f"sequencer's memory holds {MAX_INSTRUCTIONS}"
                )
        self.lines.append(line)

    def label(self, stem: str) -> str:
        self._labels += 1
        return f"{stem}{self._labels}"

    def wait(self, ns: int) -> None:
        if ns > 0:
            self.emit(f"WAIT {ns}")
            self.elapsed += ns

    # operations ---------------------------------------------------------------------------
    def compile(self) -> Compiled:
        seq = self.seq
        if not seq.operations:
            raise CompileError(0, None, "a sequence needs at least one operation")
        if not 1 <= seq.shots <= 2**31:
            raise CompileError(0, None, f"shots must be 1..2^31, got {seq.shots}")
        last_on_herald = any(
            isinstance(op, EntanglementAttempt) and op.last_shot_on_herald for op in seq.operations
        )
        end = self.label("end") if last_on_herald else ""
        self.out.ends_at_herald = last_on_herald
        self.emit("shot:")
        self.emit(f"SET r{R_FLAG}, 0")
        if last_on_herald:
            self.emit(f"SET r{R_LAST}, 0")
        for self.index, self.op in enumerate(seq.operations):
            self.operation(self.op)
        self.index, self.op = len(seq.operations), None
        self.emit(f"EVENT {SHOT_END}, r{R_FLAG}")
        if last_on_herald:
            self.emit(f"BRANCH_GE r{R_LAST}, 1, {end}")
        self.emit(f"LOOP shot, {seq.shots}")
        if last_on_herald:
            self.emit(f"{end}:")
        self.emit("HALT")
        listing = "\n".join(self.lines)
        self.out.program = assemble(listing)
        self.out.listing = listing
        self.out.shot_duration_ns = self.elapsed
        return self.out

    def operation(self, op: Operation) -> None:
        match op:
            case Wait():
                self.wait(self.duration(op.duration_ns))
            case MemoryOperation():
                compile_memory_operation(self, op)
            case CRCheck():
                check_frames_survive(self, op, None)
                self.check(op)
            case Decoupling():
                self.decoupling(op)
            case EntanglementAttempt():
                start = self.elapsed
                self.attempt(op)
                check_frames_survive(self, op, self.elapsed - start)
            case Repeat():
                self.repeat(op)
            case WaitSync():
                check_frames_survive(self, op, None)
                timeout = self.duration(op.timeout_ns, "sync timeout")
                if timeout == 0:
                    raise self.fail("the sync timeout must be positive")
                self.emit(f"WAIT_SYNC {timeout}{self.port_operand(op.port)}")
            case Parallel():
                self.parallel(list(op.operations))
            case LaserPulse() | SpinInit() | MwPulse() | CountWindow():
                self.parallel([op])
            case _:
                raise self.fail(f"no compiler for {type(op).__name__}")

    def check(self, op: CRCheck) -> None:
        pump, readout = self.ttl_line("pump"), self.ttl_line("readout")
        repump = self.ttl_line("repump")
        both = (1 << pump) | (1 << readout)
        threshold = self.value(op.threshold, "threshold")
        window = self.duration(op.window_ns, "check window")
        repump_ns = self.duration(op.repump_ns, "repump duration")
        if window == 0 or repump_ns == 0:
            raise self.fail("check window and repump duration must be positive")
        if not 1 <= op.max_tries <= 1_000_000:
            raise self.fail(f"max_tries must be 1..1e6, got {op.max_tries}")
        top, passed = self.label("check"), self.label("passed")
        counter = self.counter("readout")
        self.emit(f"{top}:")
        self.emit(f"TTL_SET {both:#x}")
        self.emit(f"COUNT c{counter}, r{R_CR}, {window}")
        self.emit(f"TTL_CLR {both:#x}")
        self.emit(f"BRANCH_GE r{R_CR}, {math.ceil(threshold)}, {passed}")
        self.emit(f"TTL_SET {1 << repump:#x}")
        self.emit(f"WAIT {repump_ns}")
        self.emit(f"TTL_CLR {1 << repump:#x}")
        self.emit(f"LOOP {top}, {op.max_tries}")
        self.emit(f"SET r{R_FLAG}, 1")
        self.emit(f"{passed}:")
        self.emit(f"EVENT {CR_COUNTS}, r{R_CR}")
        self.elapsed += window  # the best case: passes at once
        self.out.has_check = True

    def decoupling(self, op: Decoupling) -> None:
        if not 1 <= op.n <= 1024:
            raise self.fail(f"n must be 1..1024 pi pulses, got {op.n}")
        tau = self.value(op.tau_ns, "tau")
        half = self.duration(tau / 2, "tau/2")
        phases = decoupling_phases(op.n)
        self.wait(half)
        for k in range(op.n):
            self.wait(self.mw_pulse(pi_pulse(phases[k])))
            self.wait(half if k == op.n - 1 else self.duration(tau, "tau"))

    def repeat(self, op: Repeat) -> None:
        if not 1 <= op.count <= 2**40:
            raise self.fail(f"count must be 1..2^40, got {op.count}")
        allowed = (Wait, LaserPulse, SpinInit, MwPulse, Parallel)
        for inner in op.operations:
            parts = inner.operations if isinstance(inner, Parallel) else (inner,)
            if not isinstance(inner, allowed) or any(isinstance(p, CountWindow) for p in parts):
                raise self.fail(f"Repeat holds only pulses and waits, not {type(inner).__name__}")
        top = self.label("repeat")
        self.emit(f"{top}:")
        start = self.elapsed
        for inner in op.operations:
            self.operation(inner)
        if self.elapsed == start:
            raise self.fail("a repeated block needs a duration")
        self.emit(f"LOOP {top}, {op.count}")
        self.elapsed = start + (self.elapsed - start) * op.count

    def attempt(self, op: EntanglementAttempt) -> None:
        if op.protocol not in PROTOCOLS:
            raise self.fail(f"unknown protocol {op.protocol!r} ({', '.join(PROTOCOLS)})")
        if not 1 <= op.max_attempts <= 2**31:
            raise self.fail(f"max_attempts must be 1..2^31, got {op.max_attempts}")
        pump, excite = 1 << self.ttl_line("pump"), 1 << self.ttl_line("excitation")
        init_ns = self.duration(Param("spin_pump_duration_ns"), "spin pump")
        excite_ns = self.duration(op.excitation_ns, "excitation")
        window = self.duration(op.window_ns, "herald window")
        if excite_ns == 0 or window == 0:
            raise self.fail("excitation and herald window must be positive")
        top, heralded, done = self.label("attempt"), self.label("heralded"), self.label("done")
        failed = self.label("failed")

        echoes = op.protect_memory or op.echo
        echo_ns = self.played_ns(pi_pulse()) if echoes else 0
        # a protected attempt's failed periods (Barrett-Kok: its first round's, and its second
        # round's on top) padded to whole Larmor periods
        if op.protocol == "single_click":
            rotation = self.played_ns(MwPulse(op.alpha_amplitude_v, Param("pi_duration_ns")))
        elif op.protocol == "barrett_kok":
            rotation = self.played_ns(pi_half_pulse())
        else:
            rotation = 0
        last_echo = 0 if op.protocol == "barrett_kok" else echo_ns
        pad_ns = self.attempt_padding(op, init_ns + rotation + excite_ns + last_echo + window)
        second = self.played_ns(pi_pulse()) + excite_ns + echo_ns + window
        pad2_ns = self.attempt_padding(op, second) if op.protocol == "barrett_kok" else 0

        def excite_and_wait(register: int, last: bool = True) -> None:
            self.emit(f"TTL_SET {excite:#x}")
            self.emit(f"WAIT {excite_ns}")
            self.emit(f"TTL_CLR {excite:#x}")
            if echoes and last:  # the echo, right after the last optical pi pulse
                self.wait(self.mw_pulse(pi_pulse()))
            self.emit(f"WAIT_HERALD r{register}, {window}{self.port_operand(op.port)}")

        self.point_fibre_switch(op.port)
        self.emit(f"SET r{R_ATTEMPTS}, 0")
        self.emit(f"{top}:")
        self.emit(f"ADD r{R_ATTEMPTS}, 1")
        self.emit(f"TTL_SET {pump:#x}")
        self.emit(f"WAIT {init_ns}")
        self.emit(f"TTL_CLR {pump:#x}")
        if pad_ns:
            self.emit(f"WAIT {pad_ns}")
        if op.protocol == "single_click":
            self.wait(self.mw_pulse(MwPulse(op.alpha_amplitude_v, Param("pi_duration_ns"))))
            excite_and_wait(R_HERALD)
            self.emit(f"BRANCH_GE r{R_HERALD}, 1, {heralded}")
        elif op.protocol == "two_photon":  # excited from the pumped state: no rotation
            excite_and_wait(R_HERALD)
            self.emit(f"BRANCH_GE r{R_HERALD}, 1, {heralded}")
        else:
            self.wait(self.mw_pulse(pi_half_pulse()))
            excite_and_wait(R_HERALD, last=False)  # the pi pulse below echoes this round
            self.emit(f"BRANCH_LT r{R_HERALD}, 1, {failed}")
            if pad2_ns:
                self.emit(f"WAIT {pad2_ns}")
            self.wait(self.mw_pulse(pi_pulse()))
            excite_and_wait(R_HERALD2)
            self.emit(f"BRANCH_GE r{R_HERALD2}, 1, {heralded}")
        self.emit(f"{failed}:")
        self.emit(f"LOOP {top}, {op.max_attempts}")
        self.emit(f"EVENT {ATTEMPTS_EXHAUSTED}, r{R_ATTEMPTS}")
        self.emit(f"SET r{R_FLAG}, 1")
        self.emit(f"JUMP {done}")
        self.emit(f"{heralded}:")
        self.emit(f"EVENT {HERALD}, r{R_HERALD2 if op.protocol == 'barrett_kok' else R_HERALD}")
        self.emit(f"EVENT {ATTEMPTS}, r{R_ATTEMPTS}")
        if op.last_shot_on_herald:
            self.emit(f"SET r{R_LAST}, 1")
        self.emit(f"{done}:")
        self.elapsed += init_ns + pad_ns + excite_ns + window  # the best case (pulses: wait)

    def attempt_padding(self, op: EntanglementAttempt, period: int) -> int:
        """A protected attempt's wait that makes `period` a whole number of every memory's
        Larmor period (`<memory>_larmor_hz` must be calibrated); 0 unprotected."""
        if not op.protect_memory:
            return 0
        if not self.hw.memories:
            raise self.fail("protect_memory: this node has no memory qubit (lab file `memories`)")
        periods_ns = []
        for memory in self.hw.memories:
            larmor = self.value(Param(f"{memory}_larmor_hz"), f"{memory} Larmor frequency")
            if not larmor > 0:
                raise self.fail(f"{memory}_larmor_hz must be positive, got {larmor:g}")
            periods_ns.append(1e9 / larmor)

        def residual_ns(pad: int) -> float:  # the worst memory's distance to a whole period
            return max(abs((period + pad) - round((period + pad) / p) * p) for p in periods_ns)

        # the clock-grid pad (within the longest period) nearest a whole number of periods;
        # what is left (under half a clock cycle for one memory) turns the stored state by
        # residual x f_L per attempt: a known phase, as the number of attempts is reported
        pads = range(0, CLOCK_NS * math.ceil(max(periods_ns) / CLOCK_NS) + CLOCK_NS, CLOCK_NS)
        best = min(pads, key=residual_ns)
        if any(residual_ns(best) / p > 0.02 for p in periods_ns):
            raise self.fail(
                f"protect_memory: no padding makes the attempt of {period} ns a whole number of "
                "the memories' Larmor periods (several memories whose periods do not fit)"
            )
        return best

    def played_ns(self, op: MwPulse) -> int:
        """How long `mw_pulse(op)` will keep the sequencer waiting, without emitting it."""
        samples = round(self.value(op.duration_ns, "duration") * 1e-9 * self.hw.awg_sample_rate_hz)
        return math.ceil(samples / self.hw.awg_sample_rate_hz * 1e9 / CLOCK_NS) * CLOCK_NS

    def mw_pulse(self, op: MwPulse) -> int:
        """Emit AWG_TRIG and return the pulse's length in ns (0: no pulse)."""
        amplitude = self.value(op.amplitude_v, "amplitude")
        length_ns = self.value(op.duration_ns, "duration")
        phase = self.value(op.phase_deg, "phase")
        if length_ns < 0:
            raise self.fail(f"duration {length_ns:g} ns is negative")
        if amplitude < 0:
            raise self.fail(f"amplitude {amplitude:g} V is negative (use the phase)")
        if amplitude > self.hw.awg_peak_v + 1e-12:
            raise self.fail(
                f"amplitude {amplitude:g} V exceeds the lab limit of {self.hw.awg_peak_v:g} V peak "
                f"(AWG at {self.hw.awg_amplitude_vpp:g} Vpp)"
            )
        samples = round(length_ns * 1e-9 * self.hw.awg_sample_rate_hz)
        if length_ns == 0 or amplitude == 0:
            return 0
        if samples < 1:
            raise self.fail(
                f"duration {length_ns:g} ns is shorter than one AWG sample "
                f"({1e9 / self.hw.awg_sample_rate_hz:.3g} ns)"
            )
        if op.shape not in ("square", "gaussian"):
            raise self.fail(f"unknown pulse shape {op.shape!r} (square, gaussian)")
        key = (round(amplitude, 12), samples, round(phase % 360, 9), op.shape)
        name = self._pulses.get(key)
        if name is None:
            # the limit before the arrays: a pulse's samples follow from its duration and
            # the sample rate, so a pulse beyond the AWG's memory allocates nothing
            needed = self.out.awg_points + samples
            if needed > self.hw.awg_memory_points:
                raise self.fail(
                    f"waveforms need {needed} points ({samples} for this {length_ns:g} ns "
                    f"pulse at {self.hw.awg_sample_rate_hz:g} S/s), beyond the AWG memory "
                    f"limit of {self.hw.awg_memory_points} points (waveform_points)"
                )
            name = f"p{len(self._pulses)}"
            self._pulses[key] = name
            self.out.awg_points = needed
            self.out.segments.append(name)
            if self.waveforms:
                self.out.waveforms[name] = self._waveform(amplitude, samples, phase, op.shape)
        self.emit(f"AWG_TRIG {self.out.segments.index(name)}")
        self.out.settings.setdefault(
            "mw_frequency_hz", self.value(Param("mw_frequency_hz"), "carrier")
        )
        self.out.settings.setdefault("mw_power_dbm", self.value(Param("mw_power_dbm"), "MW power"))
        return math.ceil(samples / self.hw.awg_sample_rate_hz * 1e9 / CLOCK_NS) * CLOCK_NS

    def _waveform(
        self, amplitude: float, samples: int, phase: float, shape: str
    ) -> tuple[np.ndarray, np.ndarray]:
        envelope = np.ones(samples)
        if shape == "gaussian":
            t = np.arange(samples) + 0.5
            sigma = samples / 6
            envelope = np.exp(-((t - samples / 2) ** 2) / (2 * sigma**2))
        scale = amplitude / self.hw.awg_peak_v * envelope
        rad = math.radians(phase)
        return scale * math.cos(rad), scale * math.sin(rad)

    def parallel(self, ops: list[Operation]) -> None:
        """Start everything at once; clear each line at its end; at most one count window."""
        lines_on: dict[int, int] = {}  # ttl line -> end time (ns from block start)
        used: dict[str, str] = {}
        count: tuple[int, int, str] | None = None  # (counter, window, label)
        mw_end = 0

        def claim(resource: str, who: Operation) -> None:
            if resource in used:
                raise self.fail(
                    f"{type(who).__name__} and {used[resource]} use {resource} at the same time"
                )
            used[resource] = type(who).__name__

        for op in ops:
            if isinstance(op, SpinInit):
                op = LaserPulse("pump", op.duration_ns)
            if isinstance(op, LaserPulse):
                d = self.duration(op.duration_ns)
                line = self.ttl_line(op.path)
                claim(f"light path '{op.path}' (TTL {line})", op)
                if d:
                    lines_on[line] = d
            elif isinstance(op, CountWindow):
                d = self.duration(op.duration_ns)
                if d == 0:
                    raise self.fail("a count window needs a positive duration")
                claim(f"counter '{op.counter}'", op)
                if count is not None:
                    raise self.fail("two count windows at the same time")
                count = (self.counter(op.counter), d, op.label)
                if op.path is not None:
                    line = self.ttl_line(op.path)
                    claim(f"light path '{op.path}' (TTL {line})", op)
                    lines_on[line] = d
            elif isinstance(op, MwPulse):
                claim("the microwave IQ channels", op)
                mw_end = self.mw_pulse(op)
            elif isinstance(op, Parallel):
                raise self.fail("Parallel blocks do not nest")
            else:
                raise self.fail(f"{type(op).__name__} cannot run in parallel with other operations")

        if lines_on:
            mask = sum(1 << line for line in lines_on)
            self.emit(f"TTL_SET {mask:#x}")
        t = 0
        if count is not None:
            counter, window, label = count
            early = [line for line, end in lines_on.items() if end < window]
            if early:
                raise self.fail(
                    f"TTL line(s) {early} would end inside the {window} ns count window"
                )
            self.emit(f"COUNT c{counter}, r{R_COUNT}, {window}")
            self.out.readouts.append(label)
            self.emit(f"EVENT {len(self.out.readouts)}, r{R_COUNT}")
            t = window
        ends = sorted({end for end in lines_on.values()} | ({mw_end} if mw_end > t else set()))
        for end in ends:
            if end > t:
                self.emit(f"WAIT {end - t}")
                t = end
            clear = sum(1 << line for line, e in lines_on.items() if e == end)
            if clear:
                self.emit(f"TTL_CLR {clear:#x}")
        self.elapsed += t


def compile_sequence(
    sequence: Sequence,
    params: dict[str, float],
    hw: Hardware,
    point: dict[str, float] | None = None,
    *,
    waveforms: bool = True,
) -> Compiled:
    """Sweep values override parameters of the same name; a swept name the sequence never
    reads is an error (a typo would otherwise sweep nothing, silently).

    Every limit (AWG memory, sequencer memory) is checked before anything is allocated for
    it. `waveforms=False` checks all the same but builds no AWG waveforms (their names,
    segments and sizes are there, `waveforms` is empty): a sweep's points are validated so."""
    values = {**params, **(point or {})}
    compiler = _Compiler(sequence, values, hw, waveforms)
    compiled = compiler.compile()
    unused = sorted(set(point or {}) - compiler.read)
    if unused:
        raise SweepError(
            f"sweep of {', '.join(unused)}: sequence {sequence.name} does not use "
            f"{'it' if len(unused) == 1 else 'them'} (it reads {', '.join(sorted(compiler.read))})"
        )
    return compiled
