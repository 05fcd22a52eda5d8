"""The real-time sequencer program format: the contract between host and firmware.

The host assembles text (or builds `Instruction`s directly in the compiler), validates, and
encodes to a binary image; the simulated sequencer decodes and validates the same image with
the same rules, as firmware and host would share a header. `docs/protocols.md` documents it.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from qnode.errors import ProgramError

CLOCK_NS = 4
"""Clock resolution: every duration is a whole number of 4 ns cycles, at least one."""

N_REGISTERS = 16
N_COUNTERS = 4
N_TTL_LINES = 32
N_LINK_PORTS = 4
"""Sync and herald input pairs of the sequencer: one per link (midpoint) the node takes part in."""
MAX_INSTRUCTIONS = 4096
MAX_DURATION_NS = 2**62
ALIGN_PERIOD_PS = (4_000, 10**9)
"""ALIGN's period bounds, ps: one clock cycle to 1 ms (a nuclear Larmor period is ~0.1-10 us)."""
ALIGN_STEP_PS = 32_767
"""ALIGN's register step bound, ps (signed 16 bits in field b): a memory's mean turn per
entanglement attempt is a fraction of a degree, nanoseconds of a microsecond Larmor period."""

HERALD_OUTCOMES = ("fail", "psi_plus", "psi_minus")
"""What the herald input reports, by the value WAIT_HERALD writes into its register (0, 1, 2):
the midpoint's herald logic, the host's link layer and the session files number outcomes so."""

MAGIC = b"QSEQ"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sHH")
_INSTRUCTION = struct.Struct("<BBHIq")
_CRC = struct.Struct("<I")
INSTRUCTION_BYTES = _INSTRUCTION.size


class Op(IntEnum):
    TTL_SET = 0x01
    TTL_CLR = 0x02
    AWG_TRIG = 0x03
    WAIT = 0x04
    COUNT = 0x05
    BRANCH_LT = 0x06
    BRANCH_GE = 0x07
    LOOP = 0x08
    WAIT_SYNC = 0x09
    WAIT_HERALD = 0x0A
    EVENT = 0x0B
    SET = 0x0C
    ADD = 0x0D
    JUMP = 0x0E
    HALT = 0x0F
    ALIGN = 0x10


@dataclass(frozen=True)
class Instruction:
    """One instruction; the meaning of the fields a, b, c, d depends on the opcode.

    TTL_SET/TTL_CLR c=line mask | AWG_TRIG c=segment | WAIT d=ns
    COUNT a=counter b=register d=window ns | BRANCH_LT/GE a=register c=target d=threshold
    LOOP c=target d=count | WAIT_SYNC b=port d=timeout ns | WAIT_HERALD a=register b=port
    d=timeout ns (port: the sync/herald input pair of one link, 0..3)
    EVENT b=code a=register (255: no value) | SET/ADD a=register d=value | JUMP c=target
    ALIGN d=period ps c=offset ps a=register b=step ps (signed 16 bits; 0: no register term)
    (wait until the free-running clock plus the offset plus register x step is a whole
    number of periods since the sequencer's epoch: align_wait_ns, align_offset_ps)
    """

    op: Op
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0


NO_REGISTER = 255

# mnemonic -> operand kinds, in text order. Kinds: reg, counter, mask, int, dur, label, code,
# port; a kind ending in "?" may be left out (EVENT's register; a wait's port, default 0).
_SYNTAX: dict[Op, tuple[str, ...]] = {
    Op.TTL_SET: ("mask",),
    Op.TTL_CLR: ("mask",),
    Op.AWG_TRIG: ("int",),
    Op.WAIT: ("dur",),
    Op.COUNT: ("counter", "reg", "dur"),
    Op.BRANCH_LT: ("reg", "int", "label"),
    Op.BRANCH_GE: ("reg", "int", "label"),
    Op.LOOP: ("label", "int"),
    Op.WAIT_SYNC: ("dur", "port?"),
    Op.WAIT_HERALD: ("reg", "dur", "port?"),
    Op.EVENT: ("code", "reg?"),
    Op.SET: ("reg", "int"),
    Op.ADD: ("reg", "int"),
    Op.JUMP: ("label",),
    Op.HALT: (),
    Op.ALIGN: ("ps", "ps?", "reg?", "sps?"),
}


def _fields(op: Op, operands: list[int]) -> Instruction:
    """Place operands (already converted to ints, labels resolved) into the encoded fields."""
    match op:
        case Op.TTL_SET | Op.TTL_CLR | Op.AWG_TRIG | Op.JUMP:
            return Instruction(op, c=operands[0])
        case Op.WAIT:
            return Instruction(op, d=operands[0])
        case Op.WAIT_SYNC:
            return Instruction(op, b=operands[1] if len(operands) > 1 else 0, d=operands[0])
        case Op.COUNT:
            return Instruction(op, a=operands[0], b=operands[1], d=operands[2])
        case Op.BRANCH_LT | Op.BRANCH_GE:
            return Instruction(op, a=operands[0], c=operands[2], d=operands[1])
        case Op.LOOP:
            return Instruction(op, c=operands[0], d=operands[1])
        case Op.WAIT_HERALD:
            port = operands[2] if len(operands) > 2 else 0
            return Instruction(op, a=operands[0], b=port, d=operands[1])
        case Op.EVENT:
            reg = operands[1] if len(operands) > 1 else NO_REGISTER
            return Instruction(op, a=reg, b=operands[0])
        case Op.SET | Op.ADD:
            return Instruction(op, a=operands[0], d=operands[1])
        case Op.HALT:
            return Instruction(op)
        case Op.ALIGN:
            offset = operands[1] if len(operands) > 1 else 0
            if len(operands) == 3:
                raise ValueError("ALIGN's register needs its step (ALIGN period, offset, rN, step)")
            register, step = (operands[2], operands[3]) if len(operands) > 3 else (0, 0)
            return Instruction(op, a=register, b=step & 0xFFFF, c=offset, d=operands[0])
    raise AssertionError(op)


@dataclass
class Program:
    """A validated instruction list, with the source line of each instruction for messages."""

    instructions: list[Instruction]
    source_lines: list[int] = field(default_factory=list)

    def line_of(self, index: int) -> int:
        """Source line of instruction `index` (1-based), or the index itself without source."""
        if 0 <= index < len(self.source_lines):
            return self.source_lines[index]
        return index

    def encode(self) -> bytes:
        return encode(self.instructions)

    def duration_ns(self) -> int | None:
        """Total run time if the program has no data-dependent timing, else None."""
        return straight_line_duration(self.instructions)


def validate(instructions: list[Instruction]) -> None:
    """Reject what firmware must never run; raises ProgramError with the instruction index.

    Indexes in messages are 0-based instruction numbers; `assemble` maps them to text lines.
    """
    n = len(instructions)
    if n == 0:
        raise ProgramError(0, "empty program", what="instruction")
    if n > MAX_INSTRUCTIONS:
        raise ProgramError(
            MAX_INSTRUCTIONS,
            f"program has {n} instructions, memory holds {MAX_INSTRUCTIONS}",
            what="instruction",
        )
    for i, ins in enumerate(instructions):
        reason = _problem(i, ins, n)
        if reason:
            raise ProgramError(i, reason, what="instruction")
    if instructions[-1].op not in (Op.HALT, Op.JUMP):
        raise ProgramError(n - 1, "program does not end with HALT", what="instruction")


def _problem(i: int, ins: Instruction, n: int) -> str | None:
    op = ins.op
    if op in (Op.COUNT, Op.BRANCH_LT, Op.BRANCH_GE, Op.WAIT_HERALD, Op.SET, Op.ADD) and not (
        0 <= ins.a < N_REGISTERS or op is Op.COUNT
    ):
        return f"register r{ins.a} does not exist (r0..r{N_REGISTERS - 1})"
    if op is Op.EVENT and ins.a != NO_REGISTER and not 0 <= ins.a < N_REGISTERS:
        return f"register r{ins.a} does not exist (r0..r{N_REGISTERS - 1})"
    if op is Op.COUNT:
        if not 0 <= ins.a < N_COUNTERS:
            return f"counter c{ins.a} does not exist (c0..c{N_COUNTERS - 1})"
        if not 0 <= ins.b < N_REGISTERS:
            return f"register r{ins.b} does not exist (r0..r{N_REGISTERS - 1})"
    if op in (Op.WAIT_SYNC, Op.WAIT_HERALD) and not 0 <= ins.b < N_LINK_PORTS:
        return f"sync/herald port {ins.b} does not exist (0..{N_LINK_PORTS - 1})"
    if op in (Op.WAIT, Op.COUNT, Op.WAIT_SYNC, Op.WAIT_HERALD):
        if ins.d < CLOCK_NS:
            return f"duration {ins.d} ns is below the clock resolution of {CLOCK_NS} ns"
        if ins.d % CLOCK_NS:
            return f"duration {ins.d} ns is not a multiple of the {CLOCK_NS} ns clock"
        if ins.d > MAX_DURATION_NS:
            return f"duration {ins.d} ns is too long"
    if op in (Op.BRANCH_LT, Op.BRANCH_GE, Op.JUMP, Op.LOOP) and not 0 <= ins.c < n:
        return f"jump target {ins.c} is outside the program (0..{n - 1})"
    if op in (Op.BRANCH_LT, Op.BRANCH_GE, Op.JUMP) and ins.c <= i:
        return "backward jump: loops must use LOOP with a bound"
    if op is Op.LOOP:
        if ins.c > i:
            return "LOOP must jump backward"
        if ins.d < 1:
            return f"loop count {ins.d} must be at least 1 (a loop without bound is not allowed)"
    if op in (Op.TTL_SET, Op.TTL_CLR) and ins.c >= 2**N_TTL_LINES:
        return f"TTL mask {ins.c:#x} names lines beyond {N_TTL_LINES - 1}"
    if op is Op.EVENT and not 0 <= ins.b < 2**16:
        return f"event code {ins.b} does not fit 16 bits"
    if op is Op.ALIGN:
        low, high = ALIGN_PERIOD_PS
        if not low <= ins.d <= high:
            return f"ALIGN period {ins.d} ps is outside {low}..{high} ps"
        if not 0 <= ins.c < ins.d:
            return f"ALIGN offset {ins.c} ps must be at least 0 and below the period {ins.d} ps"
        if not 0 <= ins.b < 2**16:
            return f"ALIGN step field {ins.b} does not fit 16 bits"
        if align_step_ps(ins) and not 0 <= ins.a < N_REGISTERS:
            return f"register r{ins.a} does not exist (r0..r{N_REGISTERS - 1})"
    return None


def align_step_ps(ins: Instruction) -> int:
    """ALIGN's register step, ps: field b as a signed 16-bit number."""
    return ins.b - 2**16 if ins.b >= 2**15 else ins.b


def align_offset_ps(ins: Instruction, registers: list[int]) -> int:
    """ALIGN's offset at run time: its constant plus its register times its step, modulo the
    period (a step of 0 reads no register). The host feeds forward what it learns only in
    real time, e.g. a stored memory's turn per entanglement attempt times the attempts."""
    step = align_step_ps(ins)
    return (ins.c + (registers[ins.a] * step if step else 0)) % ins.d


def encode(instructions: list[Instruction]) -> bytes:
    """Binary image: header, 16-byte little-endian instructions, CRC-32 of all before it."""
    validate(instructions)
    body = bytearray(_HEADER.pack(MAGIC, FORMAT_VERSION, len(instructions)))
    for ins in instructions:
        body += _INSTRUCTION.pack(int(ins.op), ins.a, ins.b, ins.c, ins.d)
    body += _CRC.pack(zlib.crc32(body))
    return bytes(body)


def decode(image: bytes) -> list[Instruction]:
    """Parse and validate an image; raises ProgramError naming the instruction index."""
    if len(image) < _HEADER.size + _CRC.size:
        raise ProgramError(0, f"image of {len(image)} bytes is shorter than a header", what="byte")
    magic, version, count = _HEADER.unpack_from(image, 0)
    if magic != MAGIC:
        raise ProgramError(0, f"bad magic {magic!r} (expected {MAGIC!r})", what="byte")
    if version != FORMAT_VERSION:
        raise ProgramError(
            4, f"format version {version}, firmware speaks {FORMAT_VERSION}", what="byte"
        )
    expected = _HEADER.size + count * INSTRUCTION_BYTES + _CRC.size
    if len(image) != expected:
        raise ProgramError(
            6,
            f"header announces {count} instructions ({expected} bytes), image has "
            f"{len(image)} bytes",
            what="byte",
        )
    (crc,) = _CRC.unpack_from(image, expected - _CRC.size)
    if crc != zlib.crc32(image[: expected - _CRC.size]):
        raise ProgramError(
            expected - _CRC.size, "CRC mismatch: image corrupted in transfer", what="byte"
        )
    instructions = []
    for i in range(count):
        opcode, a, b, c, d = _INSTRUCTION.unpack_from(image, _HEADER.size + i * INSTRUCTION_BYTES)
        try:
            op = Op(opcode)
        except ValueError:
            raise ProgramError(i, f"unknown opcode {opcode:#04x}", what="instruction") from None
        instructions.append(Instruction(op, a, b, c, d))
    validate(instructions)
    return instructions


_LABEL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def assemble(text: str) -> Program:
    """Text to program. Errors name the 1-based source line and the reason."""
    pending: list[tuple[int, Op, list[str]]] = []
    labels: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        while (m := _LABEL.match(line)) is not None:
            name, line = m.group(1), m.group(2).strip()
            if name in labels:
                raise ProgramError(lineno, f"label '{name}' defined twice")
            labels[name] = len(pending)
        if not line:
            continue
        mnemonic, _, rest = line.partition(" ")
        try:
            op = Op[mnemonic.upper()]
        except KeyError:
            raise ProgramError(lineno, f"unknown instruction '{mnemonic}'") from None
        operands = [o.strip() for o in rest.split(",")] if rest.strip() else []
        pending.append((lineno, op, operands))

    instructions, lines = [], []
    for lineno, op, operands in pending:
        kinds = _SYNTAX[op]
        required = sum(not k.endswith("?") for k in kinds)
        if not required <= len(operands) <= len(kinds):
            want = f"{required}" if required == len(kinds) else f"{required} to {len(kinds)}"
            raise ProgramError(
                lineno,
                f"{op.name} takes {want} operands ({', '.join(kinds) or 'none'}), "
                f"got {len(operands)}",
            )
        values = [
            _operand(lineno, op, kind.rstrip("?"), text_, labels)
            for kind, text_ in zip(kinds, operands, strict=False)
        ]
        try:
            instructions.append(_fields(op, values))
        except ValueError as e:
            raise ProgramError(lineno, f"{op.name}: {e}") from None
        lines.append(lineno)
    if not instructions:
        raise ProgramError(1, "empty program")
    program = Program(instructions, lines)
    try:
        validate(instructions)
    except ProgramError as e:
        raise ProgramError(program.line_of(e.line), e.reason) from None
    return program


def _operand(lineno: int, op: Op, kind: str, text: str, labels: dict[str, int]) -> int:
    def fail(why: str) -> ProgramError:
        return ProgramError(lineno, f"{op.name}: {why}")

    if kind == "label":
        if not _IDENT.match(text):
            raise fail(f"'{text}' is not a label name")
        if text not in labels:
            raise fail(f"undefined label '{text}'")
        return labels[text]
    if kind in ("reg", "counter"):
        prefix = "r" if kind == "reg" else "c"
        if not re.fullmatch(rf"{prefix}\d+", text):
            raise fail(
                f"'{text}' is not a {'register (r0..)' if kind == 'reg' else 'counter (c0..)'}"
            )
        return int(text[1:])
    if kind == "ps":
        m = re.fullmatch(r"(\d+)\s*(ps|ns|us)?", text)
        if not m:
            raise fail(f"'{text}' is not a time in ps (an integer with ps, ns or us)")
        return int(m.group(1)) * {"ps": 1, None: 1, "ns": 1_000, "us": 1_000_000}[m.group(2)]
    if kind == "sps":
        m = re.fullmatch(r"([+-]?\d+)\s*(ps|ns)?", text)
        if not m:
            raise fail(f"'{text}' is not a signed time in ps (an integer with ps or ns)")
        value = int(m.group(1)) * {"ps": 1, None: 1, "ns": 1_000}[m.group(2)]
        if not -ALIGN_STEP_PS - 1 <= value <= ALIGN_STEP_PS:
            raise fail(f"step {value} ps is outside {-ALIGN_STEP_PS - 1}..{ALIGN_STEP_PS} ps")
        return value
    if kind == "dur":
        m = re.fullmatch(r"(\d+)\s*(ns|us|ms|s)?", text)
        if not m:
            raise fail(f"'{text}' is not a duration (an integer with ns, us, ms or s)")
        scale = {"ns": 1, None: 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[m.group(2)]
        return int(m.group(1)) * scale
    try:
        value = int(text, 0)
    except ValueError:
        raise fail(f"'{text}' is not an integer") from None
    if kind in ("mask", "code", "port") and value < 0:
        raise fail(f"{kind} must not be negative")
    return value


def straight_line_duration(instructions: list[Instruction]) -> int | None:
    """Duration of a program without branches or herald/sync waits (loops are unrolled)."""
    total = 0
    for ins in instructions:
        if ins.op in (
            Op.BRANCH_LT,
            Op.BRANCH_GE,
            Op.WAIT_SYNC,
            Op.WAIT_HERALD,
            Op.JUMP,
            Op.LOOP,
            Op.ALIGN,
        ):
            return None
        if ins.op in (Op.WAIT, Op.COUNT):
            total += ins.d
    return total


def align_wait_ns(clock_ns: int, period_ps: int, offset_ps: int = 0) -> int:
    """ALIGN's wait from the free-running clock `clock_ns` (since the sequencer's epoch,
    never reset by RUN): until clock + offset is the next whole number of periods (now, if it
    is one), to the nearest clock cycle. A phase-continuous frame at 1 / period: a state
    written and read at aligned moments has turned by whole periods in between, however long
    the untimed waits between them were."""
    now_ps = clock_ns * 1000 + offset_ps
    wait_ps = -now_ps % period_ps
    return round(wait_ps / 1000 / CLOCK_NS) * CLOCK_NS


EVENT_RECORD = struct.Struct("<qHq")
"""An event as the sequencer reports it: virtual time (ns since RUN), code, register value."""


@dataclass(frozen=True)
class Event:
    time_ns: int
    code: int
    value: int


def encode_events(events: list[Event]) -> bytes:
    return b"".join(EVENT_RECORD.pack(e.time_ns, e.code, e.value) for e in events)


def decode_events(data: bytes) -> list[Event]:
    if len(data) % EVENT_RECORD.size:
        raise ValueError(
            f"event block of {len(data)} bytes is not a whole number of {EVENT_RECORD.size}-byte "
            "records"
        )
    return [
        Event(*EVENT_RECORD.unpack_from(data, o)) for o in range(0, len(data), EVENT_RECORD.size)
    ]
