"""Lasers (Cobolt 04-01 and 06-01 series) and the phase stabiliser (MDT694B subset) over
serial lines."""

import pytest

from qnode.errors import InstrumentReportedError, LimitError

LASERS = ["laser_green", "laser_red"]
"""Node A's lasers: in the simulated lab a 06-01 series (green) and a 04-01 series (red)."""


@pytest.fixture
def open_laser(lab, resources):
    """open_laser(name) -> node A's laser of that name, opened (left safe afterwards)."""
    opened = []

    def factory(name: str):
        laser = lab.make_driver("A", name, resources)
        laser.open()
        opened.append(laser)
        return laser

    yield factory
    for laser in opened:
        laser.safe_state()
        laser.close()


@pytest.mark.parametrize("name", LASERS)
def test_laser_power_and_enable(open_laser, maybe_sim, name):
    laser = open_laser(name)
    hi = laser.limits["power_w"][1]
    laser.set_power(hi / 2)
    laser.set_enabled(True)
    assert laser.power() == pytest.approx(hi / 2, abs=1e-6)
    assert laser.enabled() is True
    assert laser.measured_power() == pytest.approx(hi / 2, abs=1e-6)
    assert laser.autostart() is False  # open() switched it off
    assert laser.operating_mode() == "continuous"
    assert laser.fault() == 0 and laser.interlock_open() is False
    assert laser.identity().startswith(("Cobolt 04-01 SN ", "Cobolt 06-01 "))
    if maybe_sim:
        state = maybe_sim.state(laser.name)
        assert state["enabled"] is True and state["autostart"] is False
        assert state["power_w"] == pytest.approx(hi / 2, abs=1e-6)


def test_each_series_is_identified_by_what_it_answers(open_laser, sim):
    green, red = open_laser("laser_green"), open_laser("laser_red")
    assert sim.state(green.name)["series"] == "06-01" and green.series() == "06-01"
    assert sim.state(red.name)["series"] == "04-01" and red.series() == "04-01"
    assert green.identity().startswith("Cobolt 06-01 0638-06-01-")
    assert red.model_number() is None


def test_laser_limit_refused_before_any_byte(open_driver, nothing_reaches):
    laser = open_driver("laser")
    with nothing_reaches(laser):
        with pytest.raises(LimitError, match=r"power_w = 1 is outside the lab limit"):
            laser.set_power(1.0)
        with pytest.raises(LimitError):
            laser.set_power(-0.001)


@pytest.mark.parametrize("name", LASERS)
def test_laser_safe_state(open_laser, maybe_sim, name):
    laser = open_laser(name)
    laser.set_power(laser.limits["power_w"][1])
    laser.set_enabled(True)
    laser.safe_state()
    assert laser.enabled() is False
    assert laser.measured_power() == 0.0
    if maybe_sim:
        assert maybe_sim.state(laser.name)["enabled"] is False


@pytest.mark.parametrize("name", LASERS)
def test_laser_comes_back_off_after_a_power_cycle(open_laser, sim, name):
    laser = open_laser(name)
    laser.set_enabled(True)
    sim.fault(laser.name, "reset")
    # autostart is off (open() saw to it), so a power-cycled Cobolt comes back off and stays
    # off: the driver must read that, not a stale "1"
    assert laser.enabled() is False
    assert laser.operating_mode() == "off"
    assert sim.state(laser.name)["enabled"] is False


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
