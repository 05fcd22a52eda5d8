"""The Cobolt driver's exact bytes on the wire, for both series, with no simulator.

Commands end with CR, replies with CR LF; a set answers OK. The commands and their replies
follow Cobolt's own host software (pycobolt, the Micro-Manager adapter) and the independent
drivers (pylablib, microscope): see the laser section of docs/instruments.md.
"""

from __future__ import annotations

import pytest

from drivers.laser_cobolt import CoboltLaser
from hil_tests.transcript import expected_protocol
from qnode.errors import (
    InstrumentReplyError,
    InstrumentReportedError,
    InstrumentTimeout,
    LimitError,
)

OPEN = [(b"@cobas 0\r", b"OK\r\n")]
"""Every open switches autostart off first."""
ILLEGAL = b"Syntax error: illegal command\r\n"
SERIES_06 = [(b"glm?\r", b"0638-06-01-0500-100\r\n")]
SERIES_04 = [(b"glm?\r", ILLEGAL)]


def test_open_switches_autostart_off():
    with expected_protocol(CoboltLaser, OPEN) as laser:
        assert laser.is_open


def test_open_fails_clearly_when_autostart_cannot_be_switched_off():
    with (
        pytest.raises(InstrumentReportedError, match=r"'@cobas 0'.*illegal command"),
        expected_protocol(CoboltLaser, [(b"@cobas 0\r", ILLEGAL)]),
    ):
        pass


def test_identity_of_a_06_01_series_laser():
    steps = [(b"sn?\r", b"21345\r\n"), *SERIES_06, (b"gfv?\r", b"9.001\r\n")]
    with expected_protocol(CoboltLaser, OPEN + steps) as laser:
        assert laser.identity() == "Cobolt 06-01 0638-06-01-0500-100 SN 21345 FW 9.001"


def test_identity_of_a_04_01_series_laser():
    steps = [(b"sn?\r", b"4294967295\r\n"), *SERIES_04, (b"gfv?\r", b"4001\r\n")]
    with expected_protocol(CoboltLaser, OPEN + steps) as laser:
        assert laser.identity() == "Cobolt 04-01 SN 4294967295 FW 4001"


@pytest.mark.parametrize(("steps", "series"), [(SERIES_06, "06-01"), (SERIES_04, "04-01")])
def test_series(steps, series):
    with expected_protocol(CoboltLaser, OPEN + steps) as laser:
        assert laser.series() == series


def test_model_number_that_is_neither_series_names_the_reply():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"glm?\r", b"MAMBO-XYZ\r\n")]) as laser,
        pytest.raises(InstrumentReplyError, match=r"transcript.*'glm\?'.*'MAMBO-XYZ'"),
    ):
        laser.model_number()


def test_serial_number_must_be_a_number():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"sn?\r", b"abc\r\n")]) as laser,
        pytest.raises(InstrumentReplyError, match=r"serial number reply 'abc'"),
    ):
        laser.serial_number()


def test_firmware():
    with expected_protocol(CoboltLaser, [*OPEN, (b"gfv?\r", b"4001\r\n")]) as laser:
        assert laser.firmware() == "4001"


def test_set_power_in_watts():
    steps = [(b"p 0.012500\r", b"OK\r\n")]
    with expected_protocol(CoboltLaser, OPEN + steps) as laser:
        laser.set_power(0.0125)


def test_set_power_beyond_the_limit_sends_nothing():
    with (
        expected_protocol(CoboltLaser, OPEN, limits={"power_w": (0.0, 0.01)}) as laser,
        pytest.raises(LimitError, match=r"power_w = 0.02"),
    ):
        laser.set_power(0.02)


def test_set_power_refused_by_the_laser():
    steps = [(b"p 0.500000\r", b"Syntax error: illegal parameter\r\n")]
    with (
        expected_protocol(CoboltLaser, OPEN + steps) as laser,
        pytest.raises(InstrumentReportedError, match=r"'p 0.500000'.*illegal parameter"),
    ):
        laser.set_power(0.5)


def test_power_set_point_and_measured_power():
    steps = [(b"p?\r", b"0.012500\r\n"), (b"pa?\r", b"0.012431\r\n")]
    with expected_protocol(CoboltLaser, OPEN + steps) as laser:
        assert laser.power() == 0.0125
        assert laser.measured_power() == 0.012431


def test_constant_power_mode_is_checked_with_the_run_mode():
    steps = [*OPEN, (b"cp\r", b"OK\r\n"), (b"gam?\r", b"1\r\n")]
    with expected_protocol(CoboltLaser, steps) as laser:
        laser.set_constant_power()


def test_a_laser_that_stays_in_constant_current_is_an_error():
    steps = [*OPEN, (b"cp\r", b"OK\r\n"), (b"gam?\r", b"0\r\n")]
    with (
        expected_protocol(CoboltLaser, steps) as laser,
        pytest.raises(InstrumentReplyError, match=r"gam\?\) is 0, not 1"),
    ):
        laser.set_constant_power()


def test_measured_power_is_the_emitted_power():
    steps = [*OPEN, (b"pa?\r", b"0.000412\r\n")]
    with expected_protocol(CoboltLaser, steps) as laser:
        assert laser.measured_power() == pytest.approx(0.000412)


def test_drive_current():
    with expected_protocol(CoboltLaser, [*OPEN, (b"i?\r", b"52.5000\r\n")]) as laser:
        assert laser.drive_current() == 52.5


@pytest.mark.parametrize(("on", "command"), [(True, b"l1\r"), (False, b"l0\r")])
def test_set_enabled(on, command):
    with expected_protocol(CoboltLaser, [*OPEN, (command, b"OK\r\n")]) as laser:
        laser.set_enabled(on)


def test_switching_on_with_autostart_on_is_the_lasers_error():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"l1\r", ILLEGAL)]) as laser,
        pytest.raises(InstrumentReportedError, match=r"after 'l1': Syntax error"),
    ):
        laser.set_enabled(True)


@pytest.mark.parametrize(("reply", "on"), [(b"1\r\n", True), (b"0\r\n", False)])
def test_enabled_reads_the_laser(reply, on):
    with expected_protocol(CoboltLaser, [*OPEN, (b"l?\r", reply)]) as laser:
        assert laser.enabled() is on


def test_enabled_that_is_not_a_boolean_names_the_reply():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"l?\r", b"2\r\n")]) as laser,
        pytest.raises(InstrumentReplyError, match=r"'l\?'.*'2'"),
    ):
        laser.enabled()


@pytest.mark.parametrize(("on", "command"), [(True, b"@cobas 1\r"), (False, b"@cobas 0\r")])
def test_set_autostart(on, command):
    with expected_protocol(CoboltLaser, [*OPEN, (command, b"OK\r\n")]) as laser:
        laser.set_autostart(on)


def test_autostart():
    with expected_protocol(CoboltLaser, [*OPEN, (b"@cobas?\r", b"0\r\n")]) as laser:
        assert laser.autostart() is False


@pytest.mark.parametrize(
    ("reply", "mode"),
    [(b"0\r\n", "off"), (b"1\r\n", "waiting for key"), (b"2\r\n", "continuous"),
     (b"5\r\n", "fault"), (b"6\r\n", "aborted")],
)  # fmt: skip
def test_operating_mode(reply, mode):
    with expected_protocol(CoboltLaser, [*OPEN, (b"gom?\r", reply)]) as laser:
        assert laser.operating_mode() == mode


def test_unknown_operating_mode_names_the_reply():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"gom?\r", b"9\r\n")]) as laser,
        pytest.raises(InstrumentReplyError, match=r"'gom\?'.*9"),
    ):
        laser.operating_mode()


def test_fault_and_clear_fault():
    steps = [(b"f?\r", b"3\r\n"), (b"cf\r", b"OK\r\n"), (b"f?\r", b"0\r\n")]
    with expected_protocol(CoboltLaser, OPEN + steps) as laser:
        assert laser.fault() == 3
        laser.clear_fault()
        assert laser.fault() == 0


def test_fault_that_is_not_a_code_names_the_reply():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"f?\r", b"x\r\n")]) as laser,
        pytest.raises(InstrumentReplyError, match=r"'f\?'.*'x'"),
    ):
        laser.fault()


@pytest.mark.parametrize(("reply", "is_open"), [(b"1\r\n", True), (b"0\r\n", False)])
def test_interlock_open(reply, is_open):
    with expected_protocol(CoboltLaser, [*OPEN, (b"ilk?\r", reply)]) as laser:
        assert laser.interlock_open() is is_open


def test_operating_hours():
    with expected_protocol(CoboltLaser, [*OPEN, (b"hrs?\r", b"1234.50\r\n")]) as laser:
        assert laser.operating_hours() == 1234.5


def test_safe_state_switches_emission_off():
    with expected_protocol(CoboltLaser, [*OPEN, (b"l0\r", b"OK\r\n")]) as laser:
        laser.safe_state()


def test_health_of_a_04_01_with_an_open_interlock():
    steps = [
        (b"f?\r", b"3\r\n"),
        (b"l?\r", b"0\r\n"),
        (b"p?\r", b"0.000500\r\n"),
        (b"ilk?\r", b"1\r\n"),
        (b"sn?\r", b"123\r\n"),
        *SERIES_04,
        (b"gfv?\r", b"4001\r\n"),
    ]
    with expected_protocol(CoboltLaser, OPEN + steps) as laser:
        health = laser.health()
    assert health.identity == "Cobolt 04-01 SN 123 FW 4001"
    assert health.state == "off, set point 0.50 mW"
    assert health.errors == ["fault code 3: interlock error", "interlock open"]


def test_a_reply_cut_before_its_cr_lf_is_a_timeout_not_a_value():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"p?\r", b"0.01")]) as laser,
        pytest.raises(InstrumentTimeout),
    ):
        laser.power()


def test_a_set_answered_with_something_else_than_ok_names_the_reply():
    with (
        expected_protocol(CoboltLaser, [*OPEN, (b"l0\r", b"1\r\n")]) as laser,
        pytest.raises(InstrumentReplyError, match=r"reply to 'l0' is not OK: '1'"),
    ):
        laser.set_enabled(False)
