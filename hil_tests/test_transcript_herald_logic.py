"""Wire transcripts of the herald logic driver: qnode's own firmware contract (the CPLD/FPGA
behind the midpoint's detectors; docs/instruments.md "Herald logic"), SCPI over TCP, each set
checked with the error queue in the same message (`cmd;:SYST:ERR?`)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.herald_logic import HeraldLogic
from drivers.transport import ieee_block
from hil_tests.transcript import expected_protocol
from qnode.errors import InstrumentReportedError
from qnode.records import CLICK_DTYPE

OPEN = [(b"*CLS\n", None)]
OK = b'0,"No error"\n'


def checked(command: bytes) -> tuple[bytes, bytes]:
    return (command + b";:SYST:ERR?\n", OK)


def test_sync_output_auto_fire_and_count():
    steps = [
        *OPEN,
        checked(b"SYNC:MODE AUTO"),
        checked(b"SYNC:MODE OFF"),
        checked(b"SYNC:FIRE"),
        (b"SYNC:COUN?\n", b"42\n"),
    ]
    with expected_protocol(HeraldLogic, steps) as logic:
        logic.set_sync_auto(True)
        logic.set_sync_auto(False)
        logic.fire_sync()
        assert logic.sync_count() == 42


def test_click_mode_and_arming():
    steps = [
        *OPEN,
        checked(b"CLIC:MODE SOFT"),
        checked(b"CLIC:MODE HARD"),
        checked(b"CLIC:ARM ON"),
        checked(b"CLIC:ARM OFF"),
    ]
    with expected_protocol(HeraldLogic, steps) as logic:
        logic.set_click_mode(True)
        logic.set_click_mode(False)
        logic.arm_clicks(True)
        logic.arm_clicks(False)


def test_herald_windows_fill_every_slot():
    steps = [
        *OPEN,
        checked(b"CLIC:WIND1 52.500,27.600"),
        checked(b"CLIC:WIND2 71.000,27.600"),
        checked(b"CLIC:WIND3 0.000,0.000"),
        checked(b"CLIC:WIND4 0.000,0.000"),
    ]
    with expected_protocol(HeraldLogic, steps) as logic:
        logic.set_herald_windows([(52.5, 27.6), (71.0, 27.6)])


def test_bad_herald_windows_send_nothing():
    with (
        expected_protocol(HeraldLogic, OPEN) as logic,
        pytest.raises(ValueError, match=r"length 0\.0 ns"),
    ):
        logic.set_herald_windows([(50.0, 0.0)])
        with pytest.raises(ValueError, match="5 herald windows"):
            logic.set_herald_windows([(50.0, 10.0)] * 5)


def test_read_clicks_as_records():
    clicks = np.zeros(2, dtype=CLICK_DTYPE)
    clicks["sync"], clicks["attempt"], clicks["channel"] = 7, [3, 4], [1, 2]
    clicks["delay_ps"] = [52_600, 71_100]
    steps = [*OPEN, (b"CLIC:DATA?\n", ieee_block(clicks.tobytes()) + b"\n")]
    with expected_protocol(HeraldLogic, steps) as logic:
        got = logic.read_clicks()
    assert np.array_equal(got, clicks)


def test_an_error_after_a_set_is_reported():
    steps = [
        *OPEN,
        (b"SYNC:MODE AUTO;:SYST:ERR?\n", b'-241,"Hardware missing: no sync output wired"\n'),
        (b"SYST:ERR?\n", OK),
    ]
    with (
        expected_protocol(HeraldLogic, steps) as logic,
        pytest.raises(InstrumentReportedError, match="-241 Hardware missing"),
    ):
        logic.set_sync_auto(True)


def test_safe_state_and_health():
    steps = [
        *OPEN,
        checked(b"SYNC:MODE OFF"),
        checked(b"CLIC:MODE HARD"),
        checked(b"CLIC:ARM OFF"),
        (b"SYNC:MODE?\n", b"OFF\n"),
        (b"*IDN?\n", b"QNODE,HERALD-LOGIC,12,1.0\n"),
        (b"SYST:ERR?\n", OK),
    ]
    with expected_protocol(HeraldLogic, steps) as logic:
        logic.safe_state()
        health = logic.health()
    assert health.state == "sync output OFF"
    assert health.errors == []
