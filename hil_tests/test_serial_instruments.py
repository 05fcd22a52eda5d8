"""Lasers (Cobolt subset) and the phase stabiliser (MDT694B subset) over serial lines."""

import pytest

from qnode.errors import InstrumentReportedError, LimitError


def test_laser_power_and_enable(open_driver, maybe_sim):
    laser = open_driver("laser")
    hi = laser.limits["power_w"][1]
    laser.set_power(hi / 2)
    laser.set_enabled(True)
    assert laser.power() == pytest.approx(hi / 2, abs=1e-5)
    assert laser.enabled() is True
    assert laser.measured_power() == pytest.approx(hi / 2, abs=1e-5)
    assert laser.identity().startswith("Cobolt")
    if maybe_sim:
        state = maybe_sim.state(laser.name)
        assert state == {"enabled": True, "power_w": pytest.approx(hi / 2, abs=1e-5)}


def test_laser_limit_refused_before_any_byte(open_driver, nothing_reaches):
    laser = open_driver("laser")
    with nothing_reaches(laser):
        with pytest.raises(LimitError, match=r"power_w = 1 is outside the lab limit"):
            laser.set_power(1.0)
        with pytest.raises(LimitError):
            laser.set_power(-0.001)


def test_laser_safe_state(open_driver, maybe_sim):
    laser = open_driver("laser")
    laser.set_power(laser.limits["power_w"][1])
    laser.set_enabled(True)
    laser.safe_state()
    assert laser.enabled() is False
    if maybe_sim:
        assert maybe_sim.state(laser.name)["enabled"] is False


def test_laser_comes_back_off_after_a_reset(open_driver, sim):
    laser = open_driver("laser")
    laser.set_enabled(True)
    sim.fault(laser.name, "reset")
    # a power-cycled Cobolt comes back off: the driver must read that, not a stale "1"
    assert laser.enabled() is False


def test_laser_unknown_command_is_reported(open_driver):
    laser = open_driver("laser")
    with pytest.raises(InstrumentReportedError, match="illegal command"):
        laser._query("bogus?")


def test_stabiliser_voltage_lock_and_safe_state(open_driver, maybe_sim):
    stab = open_driver("phase_stabiliser")
    stab.set_voltage(12.5)
    assert stab.voltage() == pytest.approx(12.5)
    stab.set_setpoint(30.0)
    stab.set_lock(True)
    assert stab.locked() is True
    assert stab.setpoint() == pytest.approx(30.0)
    assert abs(stab.phase_error()) < 15.0  # locked: only the loop's residual remains
    stab.safe_state()
    assert stab.locked() is False and stab.voltage() == 0.0
    if maybe_sim:
        state = maybe_sim.state(stab.name)
        assert state == {"voltage_v": 0.0, "lock": False, "setpoint_deg": 30.0, "reference": False}


def test_stabiliser_limit_refused_before_any_byte(open_driver, nothing_reaches):
    stab = open_driver("phase_stabiliser")
    with nothing_reaches(stab), pytest.raises(LimitError, match="voltage_v"):
        stab.set_voltage(stab.limits["voltage_v"][1] + 1)
