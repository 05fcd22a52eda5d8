"""Microwave source (SGS100A subset) through TCP against the lab."""

import socket

import pytest

from qnode.errors import InstrumentReportedError, LimitError


def test_frequency_and_power_round_trip(open_driver):
    mw = open_driver("microwave_source")
    mw.set_frequency(2.8765e9)
    mw.set_power(-12.5)
    mw.set_output(True)
    assert mw.frequency() == pytest.approx(2.8765e9, abs=1e-3)
    assert mw.power() == pytest.approx(-12.5)
    assert mw.output() is True
    mw.set_output(False)
    assert mw.output() is False


def test_tcp_nodelay_is_on(open_driver):
    mw = open_driver("microwave_source")
    sock = mw.transport._sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_limits_refused_before_any_byte(open_driver, nothing_reaches):
    mw = open_driver("microwave_source")
    hi = mw.limits["power_dbm"][1]
    with nothing_reaches(mw):
        with pytest.raises(LimitError) as err:
            mw.set_power(hi + 1.0)
        message = str(err.value)
        assert mw.name in message and "power_dbm" in message and f"{hi:g}" in message
        with pytest.raises(LimitError, match="frequency_hz"):
            mw.set_frequency(mw.limits["frequency_hz"][1] * 2)
        with pytest.raises(LimitError):
            mw.set_frequency(float("nan"))
    assert mw.power() <= hi


def test_safe_state_turns_rf_off(open_driver, maybe_sim):
    mw = open_driver("microwave_source")
    mw.set_output(True)
    mw.safe_state()
    assert mw.output() is False
    if maybe_sim:
        assert maybe_sim.state(mw.name)["output"] is False


def test_instrument_error_queue_is_reported(open_driver):
    mw = open_driver("microwave_source")
    # a command the instrument does not know: the driver's error check must surface it
    with pytest.raises(InstrumentReportedError, match="Undefined header"):
        mw.scpi.write("SOUR:FREQ:BOGUS 1")
    assert mw.scpi.errors() == []


def test_iq_modulation_and_reference_source_round_trip(open_driver, maybe_sim):
    mw = open_driver("microwave_source")
    mw.set_iq_modulation(True)
    mw.set_reference_source("EXT")
    assert mw.iq_modulation() is True
    assert mw.reference_source() == "EXT"
    if maybe_sim:
        state = maybe_sim.state(mw.name)
        assert (state["iq"], state["reference_source"]) == (True, "EXT")
    mw.set_iq_modulation(False)
    mw.set_reference_source("INT")
    assert (mw.iq_modulation(), mw.reference_source()) == (False, "INT")
    assert mw.scpi.errors() == []


def test_a_value_out_of_the_instruments_range_is_its_error(open_driver, maybe_sim):
    """Past the lab limit the driver refuses; past the instrument's range (here asked
    around the driver) the instrument refuses with -222 and keeps its setting."""
    mw = open_driver("microwave_source")
    mw.set_frequency(2.9e9)
    with pytest.raises(InstrumentReportedError, match="-222 Data out of range"):
        mw.scpi.write("SOUR:FREQ 13 GHZ")
    assert mw.frequency() == pytest.approx(2.9e9)
    if maybe_sim:
        assert maybe_sim.state(mw.name)["frequency_hz"] == pytest.approx(2.9e9)
