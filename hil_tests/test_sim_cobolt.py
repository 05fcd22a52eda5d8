"""The simulated Cobolt lasers as the independent drivers and Cobolt's own software see them:
each series' command set, its refusals, autostart, interlock and faults, and the bytes on
the pty (CR in, CR LF out; pylablib's CR LF in works too)."""

from __future__ import annotations

import time

import pytest
import serial

from controller.labconfig import load_lab
from hil_tests.test_labconfig import expect_error, write_variant
from sim_backends.framing import Message
from sim_backends.instruments.laser import SimLaser
from sim_backends.node import SimLaserState

ILLEGAL_COMMAND = "Syntax error: illegal command"
ILLEGAL_PARAMETER = "Syntax error: illegal parameter"
BOTH = ["04-01", "06-01"]


def make(series: str) -> SimLaser:
    return SimLaser("X.laser", SimLaserState(), 123456, series)


def ask(laser: SimLaser, command: str) -> str | bytes | None:
    return laser.execute(Message(command))


def warmed_up(laser: SimLaser) -> SimLaser:
    """As if its emission had started long ago (the turn-on ramp over)."""
    laser.on_since -= 100.0
    return laser


@pytest.mark.parametrize("series", BOTH)
def test_power_up_with_autostart_on_starts_the_laser_by_itself(series):
    laser = make(series)  # factory default: autostart on, the key on
    assert ask(laser, "@cobas?") == "1"
    assert ask(laser, "l?") == "1" and ask(laser, "gom?") == "2"
    assert laser.state()["enabled"] is True


@pytest.mark.parametrize("series", BOTH)
def test_l1_needs_autostart_off_and_autostart_off_survives_a_power_cycle(series):
    laser = make(series)
    assert ask(laser, "l0") == "OK" and ask(laser, "l?") == "0"
    assert ask(laser, "l1") == ILLEGAL_COMMAND  # autostart still on: l1 is not allowed
    assert ask(laser, "l?") == "0"
    assert ask(laser, "@cobas 0") == "OK" and ask(laser, "@cobas?") == "0"
    assert ask(laser, "l1") == "OK" and ask(laser, "l?") == "1"
    laser.reset_state()  # a power cycle: the setting stays, the laser stays dark
    assert ask(laser, "@cobas?") == "0" and ask(laser, "l?") == "0"
    assert ask(laser, "gom?") == "0"


@pytest.mark.parametrize("series", BOTH)
def test_cob1_restarts_and_cob0_stops_whatever_autostart_says(series):
    laser = make(series)
    assert ask(laser, "@cob0") == "OK" and ask(laser, "l?") == "0"
    assert ask(laser, "gom?") == "6"  # aborted
    assert ask(laser, "@cob1") == "OK" and ask(laser, "l?") == "1"
    assert ask(laser, "@cobas 0") == "OK" and ask(laser, "@cob1") == "OK"
    assert ask(laser, "l?") == "1"


@pytest.mark.parametrize("series", BOTH)
def test_power_set_point_and_output(series):
    laser = warmed_up(make(series))
    assert ask(laser, "p 0.0125") == "OK"
    assert float(ask(laser, "p?")) == 0.0125  # type: ignore[arg-type]
    assert float(ask(laser, "pa?")) == 0.0125  # type: ignore[arg-type]
    assert laser.laser.power_w == 0.0125  # what the node's optics see
    ask(laser, "l0")
    assert float(ask(laser, "pa?")) == 0.0  # type: ignore[arg-type]
    assert float(ask(laser, "p?")) == 0.0125  # type: ignore[arg-type]
    assert float(ask(laser, "gmlp?")) == 500.0  # type: ignore[arg-type]  # mW


@pytest.mark.parametrize(
    ("series", "current", "unit_a"), [("04-01", "1.3", 1.0), ("06-01", "100", 1e-3)]
)
def test_constant_current_drives_the_power(series, current, unit_a):
    laser = warmed_up(make(series))
    spec = laser.spec
    assert ask(laser, "ci") == "OK" and ask(laser, "gam?") == "0"
    assert ask(laser, f"slc {current}") == "OK"
    assert float(ask(laser, "glc?")) == float(current)  # type: ignore[arg-type]
    expected_w = (float(current) * unit_a - spec.threshold_a) * spec.slope_w_per_a
    assert float(ask(laser, "pa?")) == pytest.approx(expected_w, abs=1e-6)  # type: ignore[arg-type]
    assert float(ask(laser, "i?")) == pytest.approx(float(current))  # type: ignore[arg-type]
    assert ask(laser, "cp") == "OK" and ask(laser, "gam?") == "1"


@pytest.mark.parametrize("series", BOTH)
def test_the_emitted_power_ramps_up_after_l1(series):
    """Not at once: software that counts the light right after `l1` sees less of it."""
    laser = make(series)
    assert ask(laser, "@cobas 0") == "OK" and ask(laser, "l0") == "OK"
    assert ask(laser, "p 0.001") == "OK" and ask(laser, "l1") == "OK"
    assert float(ask(laser, "pa?")) < 0.9 * 0.001  # type: ignore[arg-type]
    assert laser.state()["emitted_w"] < 0.9 * 0.001
    time.sleep(5 * laser.spec.turn_on_s)
    assert float(ask(laser, "pa?")) == pytest.approx(0.001, rel=0.01)  # type: ignore[arg-type]
    assert float(ask(laser, "p?")) == 0.001  # type: ignore[arg-type]


@pytest.mark.parametrize("series", BOTH)
def test_bad_arguments_are_illegal_parameters_and_change_nothing(series):
    laser = make(series)
    ask(laser, "p 0.01")
    for command in ("p", "p abc", "p 0.6", "p -0.1", "p 0.01 0.02", "@cobas 2", "@cobas"):
        assert ask(laser, command) == ILLEGAL_PARAMETER, command
    assert ask(laser, "p?") == "0.010000" and ask(laser, "@cobas?") == "1"


@pytest.mark.parametrize("series", BOTH)
def test_interlock_open_stops_emission_until_closed_and_cleared(series):
    laser = make(series)
    laser.set_interlock_open(True)
    assert ask(laser, "ilk?") == "1" and ask(laser, "f?") == "3"
    assert ask(laser, "l?") == "0" and ask(laser, "gom?") == "5"
    ask(laser, "@cobas 0")
    assert ask(laser, "l1") == "OK" and ask(laser, "l?") == "0"  # cannot emit
    assert ask(laser, "cf") == "OK" and ask(laser, "f?") == "3"  # still open
    laser.set_interlock_open(False)
    assert ask(laser, "cf") == "OK" and ask(laser, "f?") == "0"
    assert ask(laser, "l1") == "OK" and ask(laser, "l?") == "1"


def test_each_series_answers_exactly_its_own_commands():
    old, new = make("04-01"), make("06-01")
    for command in ("glm?", "gsn?", "gmlc?", "rlc?", "@cobasks?", "em"):
        assert ask(old, command) == ILLEGAL_COMMAND, command
    assert ask(new, "glm?") == "0638-06-01-0500-100"
    assert ask(new, "gsn?") == ask(new, "sn?") == "123456"
    assert ask(new, "@cobasks?") == "1"
    assert ask(old, "leds?") == "7"  # power, laser on, lock
    assert ask(new, "leds?") == ILLEGAL_COMMAND
    # firmware: a 04-01 answers without a '.', which is how Cobolt's pycobolt tells it
    assert "." not in str(ask(old, "gfv?")) and "." in str(ask(new, "gfv?"))
    for laser in (old, new):
        for command in ("ver?", "*IDN?", "SYST:ERR?", "bogus"):
            assert ask(laser, command) == ILLEGAL_COMMAND, command


@pytest.mark.parametrize("series", BOTH)
def test_shared_readings(series):
    laser = make(series)
    assert ask(laser, "sn?") == "123456"
    assert float(ask(laser, "hrs?")) == 1234.5  # type: ignore[arg-type]
    assert ask(laser, "ilk?") == "0" and ask(laser, "f?") == "0" and ask(laser, "cf") == "OK"
    assert ask(laser, "@cobasdr 0") == "OK" and ask(laser, "@cobasdr?") == "0"
    assert ask(laser, "@cobasp 0.02") == "OK" and ask(laser, "p?") == "0.020000"


def test_unknown_series_is_refused_when_the_lab_is_built():
    with pytest.raises(ValueError, match="series '05-01' is not one of"):
        SimLaser("X.laser", SimLaserState(), 1, "05-01")


def test_the_lab_file_picks_the_series_of_a_laser_and_only_of_a_laser(tmp_path):
    lab = load_lab(write_variant(tmp_path, lambda raw: None))
    assert lab.nodes["A"].instruments["laser_red"].model == "04-01"
    assert lab.nodes["A"].instruments["laser_green"].model is None  # the default: 06-01
    path = write_variant(
        tmp_path, lambda raw: raw["nodes"]["A"]["instruments"]["mw"].update(model="04-01")
    )
    expect_error(path, "nodes.A.instruments.mw.model", "only a laser has a model")
    path = write_variant(
        tmp_path, lambda raw: raw["nodes"]["A"]["instruments"]["laser_red"].update(model="05-01")
    )
    expect_error(path, "nodes.A.instruments.laser_red.model", "'04-01'")


def _exchange(port: serial.Serial, data: bytes) -> bytes:
    port.reset_input_buffer()
    port.write(data)
    return port.read_until(b"\r\n")


def test_the_pty_speaks_cr_in_and_cr_lf_out(resources, sim):
    """Raw bytes on the 04-01 laser's pty, as microscope (CR) and pylablib (CR LF) send them."""
    with serial.Serial(resources["A.laser_red"], 115200, timeout=2.0) as port:
        time.sleep(0.05)
        assert _exchange(port, b"sn?\r").strip().isdigit()
        assert _exchange(port, b"glm?\r") == b"Syntax error: illegal command\r\n"
        assert _exchange(port, b"@cobas?\r\n") in (b"0\r\n", b"1\r\n")
        assert _exchange(port, b"gfv?\r\n") == b"4001\r\n"  # the LF before it is ignored
    assert sim.state("A.laser_red")["series"] == "04-01"
