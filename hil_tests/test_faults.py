"""Every driver against the simulator's faults: freeze, garble, drop (TCP), reset (serial)."""

import time

import pytest

from qnode.errors import InstrumentReplyError, InstrumentTimeout

ROLES = [
    "microwave_source",
    "awg",
    "sequencer",
    "time_tagger",
    "herald_logic",
    "laser",
    "phase_stabiliser",
]
TCP_ROLES = ["microwave_source", "awg", "time_tagger", "herald_logic"]  # the tagger: ZeroMQ
SERIAL_ROLES = ["sequencer", "laser", "phase_stabiliser"]


def probe(driver):
    """A query whose answer the driver parses strictly (a number or a fixed format)."""
    match driver.ROLE:
        case "microwave_source":
            return driver.frequency()
        case "awg":
            return driver.amplitude(1)
        case "sequencer":
            return driver.program_size()
        case "time_tagger":
            return driver.threshold(1)
        case "herald_logic":
            return driver.sync_count()
        case "laser":
            return driver.power()
        case "phase_stabiliser":  # (its voltage reads back measured: jitter)
            return driver.voltage_limit()


@pytest.mark.parametrize("role", ROLES)
def test_frozen_instrument_times_out_clearly(open_driver, sim, role):
    driver = open_driver(role)
    probe(driver)
    sim.fault(driver.name, "freeze")
    started = time.monotonic()
    with pytest.raises(InstrumentTimeout) as err:
        probe(driver)
    elapsed = time.monotonic() - started
    assert driver.name in str(err.value) and "no reply" in str(err.value)
    assert elapsed < driver.timeout_s + 1.0
    sim.fault(driver.name, "unfreeze")
    assert probe(driver) is not None  # the driver recovers once the instrument answers


@pytest.mark.parametrize("role", ROLES)
def test_garbled_reply_is_an_error_not_a_value(open_driver, sim, role):
    driver = open_driver(role)
    good = probe(driver)
    sim.fault(driver.name, "garble")
    with pytest.raises(InstrumentReplyError) as err:
        probe(driver)
    assert driver.name in str(err.value)
    assert probe(driver) == good


@pytest.mark.parametrize("role", TCP_ROLES)
def test_dropped_connection_reconnects(open_driver, sim, role):
    driver = open_driver(role)
    before = probe(driver)
    sim.fault(driver.name, "drop")
    time.sleep(0.05)
    assert probe(driver) == before
    assert driver.transport.reconnects >= 1


@pytest.mark.parametrize("role", SERIAL_ROLES)
def test_serial_reset_then_next_call_works(open_driver, sim, role):
    driver = open_driver(role)
    probe(driver)
    sim.fault(driver.name, "reset")
    time.sleep(0.05)
    # after a power-on reset the boot banner is in the line; the next call must not read it
    assert probe(driver) is not None
    driver.identity()


def test_unreachable_instrument_gives_up_after_bounded_backoff():
    import socket

    from drivers.microwave_sgs100a import RsSgs100a
    from drivers.transport import Backoff
    from qnode.errors import InstrumentConnectionError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mw = RsSgs100a(
        "lab.mw",
        f"TCPIP::127.0.0.1::{port}::SOCKET",
        {"frequency_hz": (1e9, 3e9), "power_dbm": (-30, 0)},
        timeout_s=0.5,
        backoff=Backoff(first_s=0.05, budget_s=0.4),
    )
    started = time.monotonic()
    with pytest.raises(InstrumentConnectionError, match=r"cannot connect within 0\.4 s"):
        mw.open()
    assert time.monotonic() - started < 3.0
    assert not mw.is_open


def test_no_io_before_open():
    from drivers.registry import DRIVERS
    from qnode.errors import InstrumentConnectionError

    # constructing every driver against an address that does not exist touches nothing
    for cls in DRIVERS.values():
        limits = {key: rng for key, rng in cls.RANGES.items()}
        resource = "TCPIP::127.0.0.1::1::SOCKET" if cls.TRANSPORT == "tcp" else "/dev/null-none"
        driver = cls("x", resource, limits)
        with pytest.raises(InstrumentConnectionError, match="not open"):
            driver.identity()


def test_serial_devices_cannot_be_dropped(sim):
    from sim_backends.client import SimControlError

    with pytest.raises(SimControlError, match="serial device"):
        sim.fault("A.laser_red", "drop")


def test_every_driver_offers_its_roles_capability():
    """Code asks for capabilities (drivers/protocols.py), not classes: each driver fits its."""
    from drivers import protocols
    from drivers.registry import DRIVERS

    capability = {
        "microwave_source": protocols.MicrowaveSource,
        "awg": protocols.WaveformGenerator,
        "sequencer": protocols.RealTimeSequencer,
        "time_tagger": protocols.TimeTagger,
        "herald_logic": protocols.HeraldLogic,
        "laser": protocols.Laser,
        "phase_stabiliser": protocols.PhaseStabiliser,
    }
    for name, cls in DRIVERS.items():
        driver = cls(
            "x",
            "TCPIP::127.0.0.1::1::SOCKET" if cls.TRANSPORT == "tcp" else "/dev/x",
            dict(cls.RANGES),
        )
        assert isinstance(driver, capability[cls.ROLE]), name
