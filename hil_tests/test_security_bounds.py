"""Bounded resources for allowed keys (issue 12, item 7), through the real node daemon: a pulse
beyond the AWG's memory allocates nothing, a sweep beyond the lab's bound is refused at the
door, a long compile leaves the daemon's loop free for `status` and `abort`, and a message
beyond the bound never reaches the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.messaging.serving import read_info
from controller.operator.client import NodeRequestError
from sequences.operations import MwPulse, Readout, Sequence

pytestmark = pytest.mark.usefixtures("sim")

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """The resident memory of a process (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def daemon_pid(data_dir: Path, node: str) -> int:
    return int(read_info(data_dir, node)["pid"])


# ---- 1. limits before allocation -------------------------------------------------------------


def test_a_pulse_beyond_the_awg_memory_is_refused_before_any_array(start_daemon, data_dir, lab):
    daemon = start_daemon("A")
    pid = daemon_pid(data_dir, "A")
    daemon.client.status()
    before = rss_bytes(pid)
    # 2e7 ns at the AWG's 1.2 GS/s: 24 M samples, against a memory of 2 M points
    long_pulse = Sequence("long_pulse", (MwPulse(0.5, 2e7), Readout()), shots=1)
    with pytest.raises(NodeRequestError) as refused:
        daemon.client.start(long_pulse)
    grown = rss_bytes(pid) - before
    assert grown < 40 * MiB, f"the daemon grew by {grown / MiB:.0f} MiB"
    message = str(refused.value)
    memory = int(lab.nodes["A"].instruments["awg"].limits["waveform_points"][1])
    assert "operation 0 (MwPulse)" in message, message
    assert f"AWG memory limit of {memory} points" in message, message
    assert "24000000 for this 2e+07 ns pulse" in message, message  # the pulse's own samples
    assert daemon.client.status()["state"] == "idle"
