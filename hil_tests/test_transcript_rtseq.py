"""The real-time sequencer driver's exact bytes on the wire, with no simulator.

The contract is the project's own sequencer firmware, docs/protocols.md ("Serial commands",
the program and event formats) and the sequencer table of docs/instruments.md: LF-terminated
SCPI-style commands, a checked set followed by `SYST:ERR?`, binary data as IEEE 488.2
definite-length blocks, events as 18-byte little-endian records (time ns i64, code u16,
value i64).
"""

from __future__ import annotations

import struct
import zlib

import pytest

from drivers.sequencer_rtseq import RtSequencer
from hil_tests.transcript import expected_protocol
from qnode.errors import InstrumentReplyError, InstrumentReportedError, ProgramError
from sequences.program import Event, Instruction, Op, Program

OPEN = [(b"*CLS\n", None)]
"""open() clears the status (unchecked)."""
NO_ERROR = (b"SYST:ERR?\n", b'0,"No error"\n')


def checked(command: bytes) -> list[tuple[bytes, bytes | None]]:
    """A set: the command, then the error queue read until it is empty."""
    return [(command, None), NO_ERROR]


def event_record(time_ns: int, code: int, value: int) -> bytes:
    return struct.pack("<qHq", time_ns, code, value)


def program_image(instructions: list[tuple[int, int, int, int, int]]) -> bytes:
    """docs/protocols.md's program format, written out here independently of the encoder."""
    body = struct.pack("<4sHH", b"QSEQ", 1, len(instructions))
    for op, a, b, c, d in instructions:
        body += struct.pack("<BBHIq", op, a, b, c, d)
    return body + struct.pack("<I", zlib.crc32(body))


PROGRAM = Program([Instruction(Op.WAIT, d=1000), Instruction(Op.HALT)], source_lines=[3, 5])
IMAGE = program_image([(0x04, 0, 0, 0, 1000), (0x0F, 0, 0, 0, 0)])


def test_open_clears_the_status():
    with expected_protocol(RtSequencer, OPEN) as seq:
        assert seq.is_open


def test_load_sends_the_image_as_a_block_and_reads_the_errors():
    assert len(IMAGE) == 8 + 2 * 16 + 4
    steps = [(b"PROG:LOAD #244" + IMAGE + b"\n", None), NO_ERROR]
    with expected_protocol(RtSequencer, OPEN + steps) as seq:
        seq.load(PROGRAM)


def test_load_rejected_at_an_instruction_names_the_source_line():
    steps = [
        (b"PROG:LOAD #244" + IMAGE + b"\n", None),
        (b"SYST:ERR?\n", b'101,"instruction 1: HALT not allowed here"\n'),
        NO_ERROR,
    ]
    with (
        expected_protocol(RtSequencer, OPEN + steps) as seq,
        pytest.raises(ProgramError, match=r"^line 5: HALT not allowed here$"),
    ):
        seq.load(PROGRAM)


def test_load_image_rejected_at_a_byte_names_the_byte():
    steps = [
        (b"PROG:LOAD #13abc\n", None),
        (b"SYST:ERR?\n", b'101,"byte 0: bad magic"\n'),
        NO_ERROR,
    ]
    with (
        expected_protocol(RtSequencer, OPEN + steps) as seq,
        pytest.raises(ProgramError, match=r"^byte 0: bad magic$"),
    ):
        seq.load_image(b"abc")


def test_load_image_rejected_at_an_instruction_without_source_names_the_index():
    steps = [
        (b"PROG:LOAD #13abc\n", None),
        (b"SYST:ERR?\n", b'101,"instruction 7: unknown opcode"\n'),
        NO_ERROR,
    ]
    with (
        expected_protocol(RtSequencer, OPEN + steps) as seq,
        pytest.raises(ProgramError, match=r"^instruction 7: unknown opcode$"),
    ):
        seq.load_image(b"abc")


def test_load_with_another_error_is_the_instruments_error():
    steps = [
        (b"PROG:LOAD #13abc\n", None),
        (b"SYST:ERR?\n", b'-350,"Queue overflow"\n'),
        NO_ERROR,
    ]
    with (
        expected_protocol(RtSequencer, OPEN + steps) as seq,
        pytest.raises(InstrumentReportedError, match=r"after PROG:LOAD: -350 Queue overflow"),
    ):
        seq.load_image(b"abc")


def test_program_size():
    with expected_protocol(RtSequencer, [*OPEN, (b"PROG:SIZE?\n", b"2\n")]) as seq:
        assert seq.program_size() == 2


@pytest.mark.parametrize(
    ("method", "command"),
    [("run", b"RUN\n"), ("stop", b"STOP\n"), ("sync", b"SYNC\n"), ("safe_state", b"SAFE\n")],
)
def test_checked_commands(method, command):
    with expected_protocol(RtSequencer, OPEN + checked(command)) as seq:
        getattr(seq, method)()


def test_a_checked_command_the_sequencer_refuses():
    steps = [(b"RUN\n", None), (b"SYST:ERR?\n", b'-200,"Execution error"\n'), NO_ERROR]
    with (
        expected_protocol(RtSequencer, OPEN + steps) as seq,
        pytest.raises(InstrumentReportedError, match=r"after 'RUN': -200 Execution error"),
    ):
        seq.run()


@pytest.mark.parametrize("state", ["IDLE", "RUNNING", "WAITING", "HALTED"])
def test_state(state):
    with expected_protocol(RtSequencer, [*OPEN, (b"STAT?\n", state.encode() + b"\n")]) as seq:
        assert seq.state() == state


def test_unknown_state_names_the_reply():
    with (
        expected_protocol(RtSequencer, [*OPEN, (b"STAT?\n", b"BUSY\n")]) as seq,
        pytest.raises(InstrumentReplyError, match=r"STAT\? reply 'BUSY'"),
    ):
        seq.state()


def test_clock():
    with expected_protocol(RtSequencer, [*OPEN, (b"TIME?\n", b"123456789\n")]) as seq:
        assert seq.clock_ns() == 123456789


def test_read_events_until_a_short_chunk():
    records = event_record(100, 1, 7) + event_record(250, 2, -1)
    steps = [(b"EVT:DATA? 4096\n", b"#236" + records + b"\n")]
    with expected_protocol(RtSequencer, OPEN + steps) as seq:
        assert seq.read_events() == [Event(100, 1, 7), Event(250, 2, -1)]


def test_read_events_asks_again_after_a_full_chunk():
    full = b"".join(event_record(i, 3, i) for i in range(4096))
    steps = [
        (b"EVT:DATA? 4096\n", b"#573728" + full + b"\n"),
        (b"EVT:DATA? 4096\n", b"#10\n"),
    ]
    with expected_protocol(RtSequencer, OPEN + steps) as seq:
        events = seq.read_events()
    assert len(events) == 4096 and events[-1] == Event(4095, 3, 4095)


def test_read_events_refuses_a_partial_record():
    steps = [(b"EVT:DATA? 4096\n", b"#217" + event_record(1, 1, 1)[:17] + b"\n")]
    with (
        expected_protocol(RtSequencer, OPEN + steps) as seq,
        pytest.raises(InstrumentReplyError, match="17 bytes is not a whole number"),
    ):
        seq.read_events()


@pytest.mark.parametrize(
    ("outcome", "command"),
    [("fail", b"HERALD 0\n"), ("psi_plus", b"HERALD 1\n"), ("psi_minus", b"HERALD 2\n")],
)
def test_send_herald(outcome, command):
    with expected_protocol(RtSequencer, OPEN + checked(command)) as seq:
        seq.send_herald(outcome)


def test_unknown_herald_outcome_sends_nothing():
    with (
        expected_protocol(RtSequencer, OPEN) as seq,
        pytest.raises(ValueError, match="herald outcome 'psi'"),
    ):
        seq.send_herald("psi")


def test_ttl_lines():
    with expected_protocol(RtSequencer, [*OPEN, (b"TTL?\n", b"5\n")]) as seq:
        assert seq.ttl_lines() == 0b101


@pytest.mark.parametrize(("seconds", "command"), [(2.0, b"WDOG:TIME 2\n"), (0, b"WDOG:TIME 0\n")])
def test_set_watchdog(seconds, command):
    with expected_protocol(RtSequencer, OPEN + checked(command)) as seq:
        seq.set_watchdog(seconds)


@pytest.mark.parametrize("seconds", [0.05, 61.0, float("nan")])
def test_watchdog_outside_its_range_sends_nothing(seconds):
    with (
        expected_protocol(RtSequencer, OPEN) as seq,
        pytest.raises(ValueError, match=r"neither 0 \(off\) nor in 0\.1\.\.60 s"),
    ):
        seq.set_watchdog(seconds)


def test_watchdog():
    with expected_protocol(RtSequencer, [*OPEN, (b"WDOG:TIME?\n", b"2.5\n")]) as seq:
        assert seq.watchdog() == 2.5


def test_pet_watchdog_is_unchecked():
    with expected_protocol(RtSequencer, [*OPEN, (b"WDOG:PET\n", None)]) as seq:
        seq.pet_watchdog()


@pytest.mark.parametrize(("reply", "tripped"), [(b"1\n", True), (b"0\n", False)])
def test_watchdog_tripped(reply, tripped):
    with expected_protocol(RtSequencer, [*OPEN, (b"WDOG:TRIP?\n", reply)]) as seq:
        assert seq.watchdog_tripped() is tripped


def test_identity_and_error_list():
    steps = [
        (b"*IDN?\n", b"QNODE,RTSEQ-1,123456,1.0-sim\n"),
        (b"SYST:ERR?\n", b'-222,"Data out of range"\n'),
        NO_ERROR,
    ]
    with expected_protocol(RtSequencer, OPEN + steps) as seq:
        assert seq.identity() == "QNODE RTSEQ-1 SN 123456 FW 1.0-sim"
        assert seq.error_list() == ["-222 Data out of range"]


def test_health():
    steps = [
        (b"STAT?\n", b"RUNNING\n"),
        (b"PROG:SIZE?\n", b"12\n"),
        (b"TTL?\n", b"10\n"),
        (b"*IDN?\n", b"QNODE,RTSEQ-1,123456,1.0-sim\n"),
        NO_ERROR,
    ]
    with expected_protocol(RtSequencer, OPEN + steps) as seq:
        health = seq.health()
    assert health.identity == "QNODE RTSEQ-1 SN 123456 FW 1.0-sim"
    assert health.state == "running, program 12 instructions, TTL 0xa"
    assert health.errors == []


def test_send_herald_on_a_second_links_input():
    """A node between two midpoints: the herald of its link on port 1 goes to input 1."""
    with expected_protocol(RtSequencer, OPEN + checked(b"HERALD 2,1\n")) as seq:
        seq.send_herald("psi_minus", 1)


def test_herald_port_outside_the_inputs_sends_nothing():
    with (
        expected_protocol(RtSequencer, OPEN) as seq,
        pytest.raises(ValueError, match=r"herald port 4 is outside 0\.\.3"),
    ):
        seq.send_herald("fail", 4)
