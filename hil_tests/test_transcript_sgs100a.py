"""The SGS100A driver against the exact bytes of the R&S SGS100A remote-control commands
(wire transcripts, no simulator). Every checked set is one compound message with
`;:SYST:ERR?` (IEEE 488.2), so the instrument answers the error queue's head to it."""

from __future__ import annotations

import pytest

from drivers.microwave_sgs100a import RsSgs100a
from hil_tests.transcript import expected_protocol
from qnode.errors import InstrumentReplyError, InstrumentReportedError, LimitError

OPEN = (b"*CLS\n", None)
NO_ERROR = b'0,"No error"\n'


def test_set_frequency_sends_hz_and_checks_the_error_queue():
    with expected_protocol(
        RsSgs100a, [OPEN, (b"SOUR:FREQ 2876500000.000;:SYST:ERR?\n", NO_ERROR)]
    ) as mw:
        mw.set_frequency(2.8765e9)


@pytest.mark.parametrize(
    "reply", [b"2876500000\n", b"2.8765E+09\n", b"+2.876500000E+09\n", b"2876500000.000\n"]
)
def test_frequency_parses_every_numeric_reply_form(reply):
    with expected_protocol(RsSgs100a, [OPEN, (b"SOUR:FREQ?\n", reply)]) as mw:
        assert mw.frequency() == 2.8765e9


def test_an_unparsable_reply_names_the_instrument_and_the_reply():
    steps = [OPEN, (b"SOUR:FREQ?\n", b"2.87 GHz\n")]
    unparsable = pytest.raises(InstrumentReplyError, match=r"transcript: .*SOUR:FREQ\?.*2\.87 GHz")
    with expected_protocol(RsSgs100a, steps) as mw, unparsable:
        mw.frequency()


def test_set_power_and_power():
    with expected_protocol(
        RsSgs100a,
        [OPEN, (b"SOUR:POW -12.50;:SYST:ERR?\n", NO_ERROR), (b"SOUR:POW?\n", b"-1.25E+01\n")],
    ) as mw:
        mw.set_power(-12.5)
        assert mw.power() == -12.5


@pytest.mark.parametrize(("reply", "on"), [(b"1\n", True), (b"0\n", False), (b"ON\n", True)])
def test_output_state(reply, on):
    with expected_protocol(
        RsSgs100a,
        [
            OPEN,
            (b"OUTP:STAT ON;:SYST:ERR?\n", NO_ERROR),
            (b"OUTP:STAT OFF;:SYST:ERR?\n", NO_ERROR),
            (b"OUTP:STAT?\n", reply),
        ],
    ) as mw:
        mw.set_output(True)
        mw.set_output(False)
        assert mw.output() is on


def test_output_reply_that_is_no_boolean_is_refused():
    steps = [OPEN, (b"OUTP:STAT?\n", b"2\n")]
    refused = pytest.raises(InstrumentReplyError, match=r"OUTP:STAT.*'2'")
    with expected_protocol(RsSgs100a, steps) as mw, refused:
        mw.output()


def test_iq_modulation():
    with expected_protocol(
        RsSgs100a,
        [OPEN, (b"SOUR:IQ:STAT ON;:SYST:ERR?\n", NO_ERROR), (b"SOUR:IQ:STAT?\n", b"1\n")],
    ) as mw:
        mw.set_iq_modulation(True)
        assert mw.iq_modulation() is True


@pytest.mark.parametrize(("reply", "source"), [(b"EXT\n", "EXT"), (b"INT\n", "INT")])
def test_reference_source(reply, source):
    with expected_protocol(
        RsSgs100a,
        [OPEN, (b"SOUR:ROSC:SOUR EXT;:SYST:ERR?\n", NO_ERROR), (b"SOUR:ROSC:SOUR?\n", reply)],
    ) as mw:
        mw.set_reference_source("EXT")
        assert mw.reference_source() == source


def test_reference_source_reply_unknown_is_an_error():
    steps = [OPEN, (b"SOUR:ROSC:SOUR?\n", b"PLL\n")]
    refused = pytest.raises(InstrumentReplyError, match=r"ROSC.*PLL")
    with expected_protocol(RsSgs100a, steps) as mw, refused:
        mw.reference_source()


def test_safe_state_turns_rf_off():
    with expected_protocol(RsSgs100a, [OPEN, (b"OUTP:STAT OFF;:SYST:ERR?\n", NO_ERROR)]) as mw:
        mw.safe_state()


def test_identity():
    idn = b"Rohde&Schwarz,SGS100A,1416.0505k02/103074,3.1.19.7-3.20.140.60.1\n"
    with expected_protocol(RsSgs100a, [OPEN, (b"*IDN?\n", idn)]) as mw:
        assert mw.identity() == (
            "Rohde&Schwarz SGS100A SN 1416.0505k02/103074 FW 3.1.19.7-3.20.140.60.1"
        )


def test_error_list_drains_the_queue_with_doubled_quotes_undone():
    with expected_protocol(
        RsSgs100a,
        [
            OPEN,
            (b"SYST:ERR?\n", b'-222,"Data out of range;""FREQ"" 99 GHz"\n'),
            (b"SYST:ERR?\n", b'+0,"No error"\n'),
        ],
    ) as mw:
        assert mw.error_list() == ['-222 Data out of range;"FREQ" 99 GHz']


def test_a_refused_set_raises_with_every_queued_error():
    with (
        expected_protocol(
            RsSgs100a,
            [
                OPEN,
                (b"SOUR:POW 20.00;:SYST:ERR?\n", b'-221,"Settings conflict"\n'),
                (b"SYST:ERR?\n", b'-222,"Data out of range"\n'),
                (b"SYST:ERR?\n", NO_ERROR),
            ],
        ) as mw,
        pytest.raises(InstrumentReportedError, match="-221 Settings conflict; -222 Data out"),
    ):
        mw.set_power(20.0)


def test_health():
    with expected_protocol(
        RsSgs100a,
        [
            OPEN,
            (b"OUTP:STAT?\n", b"1\n"),
            (b"SOUR:FREQ?\n", b"2.87E+09\n"),
            (b"SOUR:POW?\n", b"-10\n"),
            (b"*IDN?\n", b"Rohde&Schwarz,SGS100A,1416.0505k02/1,4.2\n"),
            (b"SYST:ERR?\n", NO_ERROR),
        ],
    ) as mw:
        health = mw.health()
    assert health.state == "RF on, 2.870000 GHz, -10.0 dBm"
    assert health.identity.startswith("Rohde&Schwarz SGS100A") and health.errors == []


def test_limits_are_refused_before_any_byte():
    with expected_protocol(
        RsSgs100a, [OPEN], limits={"frequency_hz": (2e9, 4e9), "power_dbm": (-60, 0)}
    ) as mw:
        with pytest.raises(LimitError):
            mw.set_frequency(5e9)
        with pytest.raises(LimitError):
            mw.set_power(1.0)


def test_a_garbled_error_reply_is_an_error_not_a_pass():
    with (
        expected_protocol(RsSgs100a, [OPEN, (b"OUTP:STAT OFF;:SYST:ERR?\n", b'0,"No err\n')]) as mw,
        pytest.raises(InstrumentReplyError, match="SYST:ERR"),
    ):
        mw.safe_state()
