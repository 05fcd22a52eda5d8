"""A daemon whose instruments are gone still stops within seconds of SIGINT (Ctrl-C) or
SIGTERM, and says what it is doing: it tries to put each instrument in its safe state once,
in parallel and with a deadline, reports those that did not answer, and exits."""

import signal
import time

import pytest

pytestmark = pytest.mark.usefixtures("sim")
INSTRUMENTS = ("mw", "awg", "seq", "laser_green", "laser_red")


def test_sigint_with_every_instrument_frozen_exits_within_seconds(start_daemon, sim):
    daemon = start_daemon("A")
    daemon.client.close()
    for name in INSTRUMENTS:
        sim.fault(f"A.{name}", "unplug")  # a lab whose instruments are gone
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGINT)
    code = daemon.proc.wait(timeout=30)
    took = time.monotonic() - started
    log = daemon.log()
    assert code == 0, log
    assert took < 12, f"took {took:.1f} s to stop\n{log}"
    assert "stopping: safe state of" in log
    assert "did not reach the safe state" in log and "A.mw" in log


def test_a_node_whose_instruments_are_gone_comes_up_in_fault_and_stops_within_seconds(
    start_daemon, sim
):
    """Opened one after the other, six gone instruments (each with its reconnect back-off)
    kept the daemon from serving, and from stopping, for about a minute."""
    for name in INSTRUMENTS:
        sim.fault(f"A.{name}", "unplug")
    started = time.monotonic()
    daemon = start_daemon("A")  # returns once the daemon serves
    took_up = time.monotonic() - started
    status = daemon.client.status()
    assert status["state"] == "fault", status
    assert "did not open in their safe state" in status["fault_reason"]
    assert "mw" in status["fault_reason"] and "laser_red" in status["fault_reason"]
    assert took_up < 15, f"{took_up:.1f} s to serve"
    daemon.client.close()
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 12, daemon.log()
