"""Lasers (Cobolt 04-01 and 06-01 series) and the interferometer's piezo driver (MDT694B) over
serial lines."""

import re
import time

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
    laser.set_constant_power()
    laser.set_power(hi / 2)
    laser.set_enabled(True)
    assert laser.power() == pytest.approx(hi / 2, abs=1e-6)
    assert laser.enabled() is True
    deadline = time.monotonic() + 2.0  # the emitted power ramps up after l1
    while laser.measured_power() < 0.99 * hi / 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert laser.measured_power() == pytest.approx(hi / 2, rel=0.02)
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


READ_BACK_V = 0.3
"""A unit reads its output back measured: a few tenths of a volt off (the recorded MDT693B
read 0.21-0.24 V)."""


def test_piezo_voltage_and_safe_state(open_driver, maybe_sim):
    piezo = open_driver("phase_stabiliser")
    piezo.set_voltage(12.5)
    assert piezo.voltage() == pytest.approx(12.5, abs=READ_BACK_V)
    assert "MDT694B" in piezo.identity()
    if maybe_sim:
        assert maybe_sim.state(piezo.name)["voltage_v"] == pytest.approx(12.5)
    piezo.safe_state()
    assert piezo.voltage() == pytest.approx(0.0, abs=READ_BACK_V)
    if maybe_sim:
        state = maybe_sim.state(piezo.name)
        assert state["voltage_v"] == 0.0 and state["echo"] is False  # the driver's echo=0


def test_piezo_limit_refused_before_any_byte(open_driver, nothing_reaches):
    piezo = open_driver("phase_stabiliser")
    with nothing_reaches(piezo), pytest.raises(LimitError, match="voltage_v"):
        piezo.set_voltage(piezo.limits["voltage_v"][1] + 1)


def test_piezo_front_panel_limit_covers_the_lab(open_driver):
    piezo = open_driver("phase_stabiliser")
    assert piezo.voltage_limit() in (75.0, 100.0, 150.0)
    assert piezo.voltage_limit() >= piezo.limits["voltage_v"][1]


def test_piezo_works_with_its_echo_on_and_off(open_driver, maybe_sim):
    piezo = open_driver("phase_stabiliser")
    piezo.set_echo(True)  # a unit left with its echo on: every command comes back first
    if maybe_sim:
        assert maybe_sim.state(piezo.name)["echo"] is True
    piezo.set_voltage(3.25)  # the driver strips its echo and switches it off again
    assert piezo.voltage() == pytest.approx(3.25, abs=READ_BACK_V)
    assert piezo.echo_enabled() is False
    if maybe_sim:
        assert maybe_sim.state(piezo.name)["echo"] is False


def test_piezo_after_a_power_cycle(open_driver, sim):
    piezo = open_driver("phase_stabiliser")
    piezo.set_voltage(20.0)
    sim.fault(piezo.name, "reset")
    # back from a power cycle: echo on again and the output at 0 V; the driver reads that
    assert piezo.voltage() == pytest.approx(0.0, abs=READ_BACK_V)
    assert piezo.echo_enabled() is False  # it switched the echo off on seeing it
    piezo.set_voltage(5.0)
    assert sim.state(piezo.name)["voltage_v"] == pytest.approx(5.0)


def test_piezo_refuses_a_voltage_over_its_limit_switch_with_the_manuals_text(open_driver, sim):
    piezo = open_driver("phase_stabiliser")
    switch = piezo.voltage_limit()
    with pytest.raises(InstrumentReportedError, match="CMD_ARG_INVALID"):
        piezo._set(f"xvoltage={switch + 1:.2f}")  # past the driver's own check, on purpose
    with pytest.raises(InstrumentReportedError, match="CMD_NOT_DEFINED"):
        piezo._exchange("lock=1")  # no lock in a piezo driver


def test_piezo_serves_the_mdt693a_commands_in_compatibility_mode_only(open_driver, sim):
    piezo = open_driver("phase_stabiliser")
    with pytest.raises(InstrumentReportedError, match="CMD_NOT_DEFINED"):
        piezo._exchange("XR?")
    try:
        piezo._set("cm=1")
        piezo._set("XV7.5")  # what pylablib's MDT69xA sends
        reply = piezo._exchange("XR?")
        assert re.fullmatch(r"\[ *[0-9.]+\]", reply)
        assert float(reply[1:-1]) == pytest.approx(7.5, abs=READ_BACK_V)
        # the unit's own commands still work
        assert piezo.voltage() == pytest.approx(7.5, abs=READ_BACK_V)
    finally:
        piezo._set("cm=0")
    assert sim.state(piezo.name)["compatibility"] is False
