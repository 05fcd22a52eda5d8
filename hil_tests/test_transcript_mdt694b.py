"""The MDT694B driver against the bytes of the unit's serial interface, no simulator.

Replies as recorded from real MDT694B units (firmware 1.10) and as the independent drivers of
the unit parse them (the user guide was not at hand: docs/instruments.md, "Piezo driver"): CR
after each command; a query's lines each end with a CR and the '>' prompt follows; with echo
on (the power-up state) the command comes back first.
"""

from __future__ import annotations

import pytest

from drivers.stabiliser_mdt import MdtPiezoDriver
from hil_tests.transcript import TranscriptMismatch, expected_protocol
from qnode.errors import InstrumentError, InstrumentReplyError, InstrumentReportedError, LimitError

ID_LINES = (
    b"Model MDT694B Piezo Control Module\rFirmware Version: 1.10\rVoltage Range: 0V to 150V\r"
    b"Serial#:140317-02\rFriendly Name:MDT694B\rThorlabs, Inc. Newton, NJ 07860\r"
    b"www.thorlabs.com\r\r"
)
OPEN_ECHO_ON = [
    (b"echo=0\r", b"echo=0\r>"),  # the unit echoes the command that switches its echo off
    (b"id?\r", ID_LINES + b">"),
    (b"vlimit?\r", b"2\r>"),  # assumed format: a number line like xmin?'s
    (b"xmin?\r", b"0\r>"),  # the unit's own output range, as the recorded units answer it
    (b"xmax?\r", b"150.50\r>"),
]
OPEN_ECHO_OFF = [
    (b"echo=0\r", b">"),
    (b"id?\r", ID_LINES + b">"),
    (b"vlimit?\r", b"2\r>"),  # assumed format: a number line like xmin?'s
    (b"xmin?\r", b"0\r>"),  # the unit's own output range, as the recorded units answer it
    (b"xmax?\r", b"150.50\r>"),
]
LAB = {"voltage_v": (0.0, 75.0)}


@pytest.mark.parametrize("opening", [OPEN_ECHO_ON, OPEN_ECHO_OFF], ids=["echo on", "echo off"])
def test_open_switches_the_echo_off_and_reads_identity_and_limit(opening):
    with expected_protocol(MdtPiezoDriver, opening, LAB) as piezo:
        assert piezo.is_open


@pytest.mark.parametrize(
    ("xmin", "xmax"), [(b"0\r>", b"60.00\r>"), (b"[  10.00]\r>", b"150.50\r>")]
)
def test_a_unit_whose_own_range_does_not_hold_the_labs_is_refused_on_open(xmin, xmax):
    steps = [*OPEN_ECHO_OFF[:3], (b"xmin?\r", xmin), (b"xmax?\r", xmax)]
    with (
        pytest.raises(InstrumentError, match=r"not inside the unit's own output range"),
        expected_protocol(MdtPiezoDriver, steps, LAB),
    ):
        pass


def test_output_range_reads_xmin_and_xmax():
    steps = [*OPEN_ECHO_OFF, (b"xmin?\r", b"0\r>"), (b"xmax?\r", b"150.50\r>")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        assert piezo.output_range() == (0.0, 150.5)


def test_identity_reads_every_line_of_id():
    steps = [*OPEN_ECHO_OFF, (b"id?\r", ID_LINES + b">")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        assert piezo.identity() == (
            "Model MDT694B Piezo Control Module; Firmware Version: 1.10; Voltage Range: 0V to "
            "150V; Serial#:140317-02; Friendly Name:MDT694B; Thorlabs, Inc. Newton, NJ 07860; "
            "www.thorlabs.com"
        )


def test_identity_of_another_instrument_is_refused():
    steps = [(b"echo=0\r", b">"), (b"id?\r", b"Model MDT693A Piezo Control Module\r>")]
    with (
        pytest.raises(InstrumentReplyError, match="not an MDT694B"),
        expected_protocol(MdtPiezoDriver, steps, LAB),
    ):
        pass


@pytest.mark.parametrize("echo", [False, True], ids=["echo off", "echo on"])
def test_set_voltage_and_read_it_back(echo):
    if echo:  # a unit that came back from a power cycle: the driver switches the echo off
        steps = [
            (b"xvoltage=12.50\r", b"xvoltage=12.50\r>"),
            (b"echo=0\r", b"echo=0\r>"),
            (b"xvoltage?\r", b"[  12.50]\r>"),
        ]
    else:
        steps = [(b"xvoltage=12.50\r", b">"), (b"xvoltage?\r", b"[  12.50]\r>")]
    with expected_protocol(MdtPiezoDriver, [*OPEN_ECHO_OFF, *steps], LAB) as piezo:
        piezo.set_voltage(12.5)
        assert piezo.voltage() == 12.5


def test_voltage_query_with_its_echo():
    steps = [*OPEN_ECHO_OFF, (b"xvoltage?\r", b"xvoltage?\r[  40.25]\r>"), (b"echo=0\r", b">")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        assert piezo.voltage() == 40.25


def test_voltage_outside_the_lab_limit_never_reaches_the_wire():
    with (
        expected_protocol(MdtPiezoDriver, OPEN_ECHO_OFF, LAB) as piezo,
        pytest.raises(LimitError, match="voltage_v = 80 is outside the lab limit"),
    ):
        piezo.set_voltage(80.0)


def test_refused_argument_is_reported_with_the_units_text():
    steps = [*OPEN_ECHO_OFF, (b"xvoltage=70.00\r", b"CMD_ARG_INVALID>")]
    with (
        expected_protocol(MdtPiezoDriver, steps, LAB) as piezo,
        pytest.raises(InstrumentReportedError, match="CMD_ARG_INVALID"),
    ):
        piezo.set_voltage(70.0)


@pytest.mark.parametrize(
    "reply, volts",
    [(b"0\r>", 75.0), (b"1\r>", 100.0), (b"2\r>", 150.0), (b"[150]\r>", 150.0), (b"100\r>", 100.0)],
)
def test_voltage_limit_is_the_front_panel_switch(reply, volts):
    """The setting as the unit's list gives it (0, 1, 2), or volts (another firmware)."""
    steps = [*OPEN_ECHO_OFF, (b"vlimit?\r", reply)]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        assert piezo.voltage_limit() == volts


def test_a_voltage_limit_reply_that_is_no_switch_setting_is_an_error():
    steps = [*OPEN_ECHO_OFF, (b"vlimit?\r", b"7\r>")]
    with (
        expected_protocol(MdtPiezoDriver, steps, LAB) as piezo,
        pytest.raises(InstrumentReplyError, match="no limit switch setting"),
    ):
        piezo.voltage_limit()


def test_a_lab_limit_above_the_front_panel_switch_refuses_to_run():
    steps = [(b"echo=0\r", b">"), (b"id?\r", ID_LINES + b">"), (b"vlimit?\r", b"0\r>")]
    with (
        pytest.raises(InstrumentError, match=r"up to 100 V .* limit switch is at 75 V"),
        expected_protocol(MdtPiezoDriver, steps, {"voltage_v": (0.0, 100.0)}),
    ):
        pass


@pytest.mark.parametrize("reply", [b"Echo On\r>", b"Echo Off\r>"])
def test_echo_state(reply):
    steps = [*OPEN_ECHO_OFF, (b"echo?\r", reply)]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        assert piezo.echo_enabled() is (reply == b"Echo On\r>")


def test_set_echo_on_and_off():
    steps = [*OPEN_ECHO_OFF, (b"echo=1\r", b">"), (b"echo=0\r", b"echo=0\r>")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        piezo.set_echo(True)
        piezo.set_echo(False)


def test_serial_number():
    steps = [*OPEN_ECHO_OFF, (b"serial?\r", b"serial?\r140317-02\r>"), (b"echo=0\r", b">")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        assert piezo.serial_number() == "140317-02"


def test_a_unit_without_a_stored_serial_number_answers_the_prompt_alone():
    steps = [*OPEN_ECHO_OFF, (b"serial?\r", b">")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        assert piezo.serial_number() == ""


def test_unknown_command_is_reported():
    steps = [*OPEN_ECHO_OFF, (b"echo?\r", b"CMD_NOT_DEFINED>")]
    with (
        expected_protocol(MdtPiezoDriver, steps, LAB) as piezo,
        pytest.raises(InstrumentReportedError, match="after 'echo\\?': CMD_NOT_DEFINED"),
    ):
        piezo.echo_enabled()


def test_a_garbled_value_is_an_error_not_a_number():
    steps = [*OPEN_ECHO_OFF, (b"xvoltage?\r", b"12.5\r>")]
    with (
        expected_protocol(MdtPiezoDriver, steps, LAB) as piezo,
        pytest.raises(InstrumentReplyError, match="not '\\[value\\]'"),
    ):
        piezo.voltage()


def test_safe_state_sets_zero_volts():
    steps = [*OPEN_ECHO_OFF, (b"xvoltage=0.00\r", b">")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        piezo.safe_state()


def test_health_reports_identity_and_voltage():
    steps = [*OPEN_ECHO_OFF, (b"id?\r", ID_LINES + b">"), (b"xvoltage?\r", b"[   3.00]\r>")]
    with expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        health = piezo.health()
    assert health.identity.startswith("Model MDT694B Piezo Control Module")
    assert health.state == "3.00 V"


def test_the_transcript_itself_catches_a_wrong_byte():
    steps = [*OPEN_ECHO_OFF, (b"xvoltage=1.0\r", b">")]  # the driver sends two decimals
    with pytest.raises(TranscriptMismatch), expected_protocol(MdtPiezoDriver, steps, LAB) as piezo:
        piezo.set_voltage(1.0)
