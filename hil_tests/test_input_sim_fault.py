"""Item 12, `qnode sim fault ... --seconds`: a delay that is not a finite, non-negative number
is refused by the CLI and by the simulated lab's control channel (NaN passed for no delay;
inf froze the instrument for good), one clear error, no traceback."""

import math
import os
import subprocess
import sys
import time

import pytest

from sim_backends.client import SimControlError

pytestmark = pytest.mark.usefixtures("sim")
QNODE = [sys.executable, "-m", "controller.cli"]


def fault_cli(sim_process, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*QNODE, "sim", "fault", "A.mw", "delay", *args, "--resource-map", str(sim_process)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )


@pytest.mark.parametrize("seconds", ["nan", "inf", "-1"])
def test_the_cli_refuses_a_delay_that_is_not_finite_or_negative(sim_process, seconds):
    result = fault_cli(sim_process, "--seconds", seconds)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--seconds must be finite and not negative" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0, "1", True])
def test_the_control_channel_refuses_it_and_the_instrument_answers_on(sim, open_driver, seconds):
    with pytest.raises(SimControlError, match="seconds must be"):
        sim.fault("A.mw", "delay", seconds=seconds)
    mw = open_driver("microwave_source", "A")
    start = time.monotonic()
    mw.identity()
    assert time.monotonic() - start < 0.5  # no delay was set


def test_a_finite_delay_is_still_taken(sim_process, sim, open_driver):
    result = fault_cli(sim_process, "--seconds", "0.3")
    assert result.returncode == 0, result.stderr
    mw = open_driver("microwave_source", "A")
    start = time.monotonic()
    mw.identity()
    assert time.monotonic() - start >= 0.3
