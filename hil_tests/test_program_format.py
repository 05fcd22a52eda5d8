"""The sequencer program format, host side (pure: no lab)."""

import struct
import zlib

import pytest

from qnode.errors import ProgramError
from sequences.program import (
    CLOCK_NS,
    Event,
    Instruction,
    Op,
    assemble,
    decode,
    decode_events,
    encode,
    encode_events,
)

VALID = """
# CR check then a counted readout, 3 times
start:
    TTL_SET 0x1
    WAIT 2us
    TTL_CLR 0x1
    COUNT c0, r1, 10us
    BRANCH_LT r1, 1, dark     ; forward branch
    EVENT 1, r1
    JUMP next
dark:
    EVENT 2
next:
    LOOP start, 3
    HALT
"""


def test_assemble_encode_decode_round_trip():
    program = assemble(VALID)
    assert program.instructions[0] == Instruction(Op.TTL_SET, c=1)
    assert program.instructions[1] == Instruction(Op.WAIT, d=2000)
    assert program.instructions[3] == Instruction(Op.COUNT, a=0, b=1, d=10_000)
    assert program.instructions[4] == Instruction(Op.BRANCH_LT, a=1, c=7, d=1)
    assert program.line_of(0) == 4
    assert decode(program.encode()) == program.instructions


def test_straight_line_duration():
    program = assemble("WAIT 1000\nCOUNT c0, r0, 400\nEVENT 3, r0\nHALT")
    assert program.duration_ns() == 1400


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("WAIT 100\nFLY 3\nHALT", 2, "unknown instruction 'FLY'"),
        ("JUMP nowhere\nHALT", 1, "undefined label 'nowhere'"),
        ("WAIT 100\nWAIT 2\nHALT", 2, f"below the clock resolution of {CLOCK_NS} ns"),
        ("WAIT 10\nHALT", 1, "not a multiple"),
        ("top:\nWAIT 100\nBRANCH_LT r0, 5, top\nHALT", 3, "backward jump"),
        ("top:\nWAIT 100\nLOOP top, 0\nHALT", 3, "without bound"),
        ("COUNT c0, r16, 100\nHALT", 1, "register r16 does not exist"),
        ("COUNT c9, r1, 100\nHALT", 1, "counter c9 does not exist"),
        ("WAIT 100\nEVENT 1", 2, "does not end with HALT"),
        ("WAIT 100, 200\nHALT", 1, "WAIT takes 1 operands"),
        ("WAIT soon\nHALT", 1, "not a duration"),
        ("a:\na:\nHALT", 2, "label 'a' defined twice"),
        ("LOOP later, 2\nlater:\nHALT", 1, "LOOP must jump backward"),
        ("", 1, "empty program"),
    ],
)
def test_invalid_programs_name_line_and_reason(text, line, reason):
    with pytest.raises(ProgramError) as err:
        assemble(text)
    assert err.value.line == line
    assert reason in err.value.reason
    assert str(err.value).startswith(f"line {line}: ")


def _image(instructions: list[tuple[int, int, int, int, int]]) -> bytes:
    body = struct.pack("<4sHH", b"QSEQ", 1, len(instructions))
    for fields in instructions:
        body += struct.pack("<BBHIq", *fields)
    return body + struct.pack("<I", zlib.crc32(body))


def test_firmware_side_rejects_unknown_opcode_with_index():
    image = _image([(int(Op.WAIT), 0, 0, 0, 100), (0x42, 0, 0, 0, 0), (int(Op.HALT), 0, 0, 0, 0)])
    with pytest.raises(ProgramError, match=r"instruction 1: unknown opcode 0x42"):
        decode(image)


def test_firmware_side_rejects_corruption():
    image = bytearray(encode([Instruction(Op.WAIT, d=100), Instruction(Op.HALT)]))
    image[12] ^= 0xFF
    with pytest.raises(ProgramError, match="CRC mismatch"):
        decode(bytes(image))
    with pytest.raises(ProgramError, match="bad magic"):
        decode(b"XXXX" + bytes(image[4:]))
    with pytest.raises(ProgramError, match="announces"):
        decode(bytes(image[:-5]))


def test_event_records_round_trip():
    events = [Event(1000, 1, -1), Event(2**40, 65535, 7)]
    assert decode_events(encode_events(events)) == events
    with pytest.raises(ValueError, match="whole number"):
        decode_events(b"\x00" * 7)
