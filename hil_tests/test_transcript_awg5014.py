"""The AWG5014 driver against the exact bytes of the AWG5000 series programmer manual's
commands (wire transcripts, no simulator). Every checked set is one compound message with
`;:SYST:ERR?`, so the instrument answers the head of its error queue to it; binary blocks are
IEEE 488.2 definite-length blocks, the point formats written out byte by byte below."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from drivers.awg_5014 import TektronixAwg5014
from hil_tests.transcript import expected_protocol
from qnode.errors import InstrumentReplyError, InstrumentReportedError

OPEN = (b"*CLS\n", None)
NO_ERROR = b'0,"No error"\n'
IDN = b"TEKTRONIX,AWG5014C,B010123,SCPI:99.0 FW:4.6.0.7\n"

# samples 0, +1, -1 with marker 1 on the second point, in the INT format: 8191 (0x1FFF),
# 16382 (0x3FFE) with bit 14 set (0x7FFE), 0
INT_POINTS = b"\xff\x1f\xfe\x7f\x00\x00"


def checked(command: bytes) -> tuple[bytes, bytes]:
    return (command + b";:SYST:ERR?\n", NO_ERROR)


def test_first_upload_makes_the_entry_then_writes_the_block():
    """A name this driver has not made: delete whatever has it (a missing one only leaves
    an error to drain), make it, write the points."""
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            (b'WLIS:WAV:DEL "pi"\n', None),
            (b"SYST:ERR?\n", b'-224,"Illegal parameter value"\n'),
            (b"SYST:ERR?\n", NO_ERROR),
            checked(b'WLIS:WAV:NEW "pi",3,INT'),
            (b'WLIS:WAV:DATA "pi",0,3,#16' + INT_POINTS + b"\n", None),
            (b"SYST:ERR?\n", NO_ERROR),
        ],
    ) as awg:
        awg.upload_waveform("pi", np.array([0.0, 1.0, -1.0]), marker1=np.array([0, 1, 0]))


def test_upload_again_of_the_same_length_writes_the_points_only():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            (b'WLIS:WAV:DEL "w"\n', None),
            (b"SYST:ERR?\n", NO_ERROR),
            checked(b'WLIS:WAV:NEW "w",1,INT'),
            (b'WLIS:WAV:DATA "w",0,1,#12\xff\x1f\n', None),
            (b"SYST:ERR?\n", NO_ERROR),
            (b'WLIS:WAV:DATA "w",0,1,#12\x00\x00\n', None),
            (b"SYST:ERR?\n", NO_ERROR),
        ],
    ) as awg:
        awg.upload_waveform("w", np.array([0.0]))
        awg.upload_waveform("w", np.array([-1.0]))


def test_upload_again_remakes_an_entry_deleted_behind_its_back():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            (b'WLIS:WAV:DEL "w"\n', None),
            (b"SYST:ERR?\n", NO_ERROR),
            checked(b'WLIS:WAV:NEW "w",1,INT'),
            (b'WLIS:WAV:DATA "w",0,1,#12\xff\x1f\n', None),
            (b"SYST:ERR?\n", NO_ERROR),
            (b'WLIS:WAV:DATA "w",0,1,#12\xff\x1f\n', None),
            (b"SYST:ERR?\n", b'-224,"Illegal parameter value"\n'),
            (b"SYST:ERR?\n", NO_ERROR),
            (b'WLIS:WAV:DEL "w"\n', None),
            (b"SYST:ERR?\n", NO_ERROR),
            checked(b'WLIS:WAV:NEW "w",1,INT'),
            (b'WLIS:WAV:DATA "w",0,1,#12\xff\x1f\n', None),
            (b"SYST:ERR?\n", NO_ERROR),
        ],
    ) as awg:
        awg.upload_waveform("w", np.array([0.0]))
        awg.upload_waveform("w", np.array([0.0]))


def test_download_of_an_int_waveform():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            (b'WLIS:WAV:TYPE? "pi"\n', b"INT\n"),
            (b'WLIS:WAV:DATA? "pi"\n', b"#16" + INT_POINTS + b"\n"),
        ],
    ) as awg:
        samples, marker1, marker2 = awg.download_waveform("pi")
    assert samples.tolist() == [0.0, 16382 / 8191 - 1, -1.0]
    assert marker1.tolist() == [0, 1, 0] and marker2.tolist() == [0, 0, 0]


def test_download_of_a_span_of_a_real_waveform():
    """REAL points: float32 then a marker byte (bit 6 marker 1, bit 7 marker 2)."""
    points = struct.pack("<fB", 0.5, 0x40) + struct.pack("<fB", -0.25, 0x80)
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            (b'WLIS:WAV:TYPE? "ramp"\n', b"REAL\n"),
            (b'WLIS:WAV:DATA? "ramp",10,2\n', b"#210" + points + b"\n"),
        ],
    ) as awg:
        samples, marker1, marker2 = awg.download_waveform("ramp", start=10, size=2)
    assert samples.tolist() == [0.5, -0.25]
    assert marker1.tolist() == [1, 0] and marker2.tolist() == [0, 1]


def test_download_from_a_start_to_the_end():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            (b'WLIS:WAV:TYPE? "pi"\n', b"INT\n"),
            (b'WLIS:WAV:DATA? "pi",2\n', b"#12\x00\x00\n"),
        ],
    ) as awg:
        samples, _, _ = awg.download_waveform("pi", start=2)
    assert samples.tolist() == [-1.0]


def test_a_block_of_broken_points_names_the_instrument():
    with (
        expected_protocol(
            TektronixAwg5014,
            [OPEN, (b'WLIS:WAV:TYPE? "pi"\n', b"INT\n"), (b'WLIS:WAV:DATA? "pi"\n', b"#13abc\n")],
        ) as awg,
        pytest.raises(InstrumentReplyError, match=r"transcript: .*3 bytes are not whole"),
    ):
        awg.download_waveform("pi")


def test_an_unknown_waveform_type_names_the_reply():
    steps = [OPEN, (b'WLIS:WAV:TYPE? "pi"\n', b"FLOAT\n")]
    refused = pytest.raises(InstrumentReplyError, match=r"transcript: .*TYPE.*'FLOAT'")
    with expected_protocol(TektronixAwg5014, steps) as awg, refused:
        awg.waveform_type("pi")


def test_sequence_elements_wait_for_their_trigger():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            checked(b"SEQ:LENG 0"),
            checked(b"SEQ:LENG 2"),
            checked(b'SEQ:ELEM1:WAV1 "a_i"'),
            checked(b'SEQ:ELEM1:WAV2 "a_q"'),
            checked(b"SEQ:ELEM1:TWA 1"),
            checked(b'SEQ:ELEM2:WAV1 "b_i"'),
            checked(b"SEQ:ELEM2:TWA 1"),
            checked(b"AWGC:RMOD SEQ"),
        ],
    ) as awg:
        awg.set_sequence([{1: "a_i", 2: "a_q"}, {1: "b_i"}])


def test_amplitude_set_and_read_back():
    with expected_protocol(
        TektronixAwg5014,
        [OPEN, checked(b"SOUR2:VOLT:AMPL 1.5000"), (b"SOUR2:VOLT:AMPL?\n", b"1.5\n")],
    ) as awg:
        awg.set_amplitude(2, 1.5)
        assert awg.amplitude(2) == 1.5


def test_a_refused_set_raises_with_the_instruments_errors():
    with (
        expected_protocol(
            TektronixAwg5014,
            [
                OPEN,
                (b"SOUR1:VOLT:AMPL 2.0000;:SYST:ERR?\n", b'-222,"Data out of range"\n'),
                (b"SYST:ERR?\n", NO_ERROR),
            ],
        ) as awg,
        pytest.raises(InstrumentReportedError, match=r"transcript: .*-222 Data out of range"),
    ):
        awg.set_amplitude(1, 2.0)


def test_an_amplitude_that_is_no_number_names_the_reply():
    steps = [OPEN, (b"SOUR1:VOLT:AMPL?\n", b"1.5 V\n")]
    refused = pytest.raises(InstrumentReplyError, match=r"transcript: .*AMPL\?.*'1\.5 V'")
    with expected_protocol(TektronixAwg5014, steps) as awg, refused:
        awg.amplitude(1)


def test_sample_rate_goes_to_source_1():
    with expected_protocol(TektronixAwg5014, [OPEN, checked(b"SOUR1:FREQ 1000000000.0")]) as awg:
        awg.set_sample_rate(1e9)


def test_output_state():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            checked(b"OUTP3:STAT ON"),
            checked(b"OUTP3:STAT OFF"),
            (b"OUTP3:STAT?\n", b"1\n"),
            (b"OUTP3:STAT?\n", b"2\n"),
        ],
    ) as awg:
        awg.set_output(3, True)
        awg.set_output(3, False)
        assert awg.output(3) is True
        with pytest.raises(InstrumentReplyError, match=r"OUTP3:STAT.*'2'"):
            awg.output(3)


def test_run_stop_and_run_state():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            checked(b"AWGC:RUN"),
            (b"AWGC:RST?\n", b"1\n"),
            checked(b"AWGC:STOP"),
            (b"AWGC:RST?\n", b"0\n"),
            (b"AWGC:RST?\n", b"7\n"),
        ],
    ) as awg:
        awg.run()
        assert awg.run_state() == 1
        awg.stop()
        assert awg.run_state() == 0
        with pytest.raises(InstrumentReplyError, match=r"transcript: .*AWGC:RST.*7"):
            awg.run_state()


def test_safe_state_stops_and_switches_every_output_off():
    with expected_protocol(
        TektronixAwg5014,
        [OPEN, checked(b"AWGC:STOP")] + [checked(b"OUTP%d:STAT OFF" % ch) for ch in (1, 2, 3, 4)],
    ) as awg:
        awg.safe_state()


def test_health_reports_identity_run_state_outputs_and_errors():
    with expected_protocol(
        TektronixAwg5014,
        [
            OPEN,
            (b"OUTP1:STAT?\n", b"1\n"),
            (b"OUTP2:STAT?\n", b"1\n"),
            (b"OUTP3:STAT?\n", b"0\n"),
            (b"OUTP4:STAT?\n", b"0\n"),
            (b"AWGC:RST?\n", b"1\n"),
            (b"WLIS:SIZE?\n", b"4\n"),
            (b"*IDN?\n", IDN),
            (b"SYST:ERR?\n", b'-222,"Data out of range"\n'),
            (b"SYST:ERR?\n", NO_ERROR),
        ],
    ) as awg:
        health = awg.health()
    assert health.identity == "TEKTRONIX AWG5014C SN B010123 FW SCPI:99.0 FW:4.6.0.7"
    assert health.state == "waiting for trigger, outputs on: [1, 2], 4 waveforms"
    assert health.errors == ["-222 Data out of range"]
