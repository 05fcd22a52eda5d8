"""Start a qnode command in the background and wait until it is ready; stop it cleanly.

Readiness is a file the command writes once it serves (the simulated lab's resource map, a
daemon's node info file). Used by `make demo` and the test fixtures.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

QNODE = [sys.executable, "-m", "controller.cli"]


class StartError(RuntimeError):
    pass


def spawn(
    args: list[str],
    ready: Path,
    log: Path,
    timeout_s: float = 30.0,
    env: dict | None = None,
    append: bool = False,
) -> subprocess.Popen:
    """Run `qnode ARGS`, its output to `log` (after what is there, for a restart); return
    once `ready` exists."""
    with open(log, "ab" if append else "wb") as out:
        proc = subprocess.Popen([*QNODE, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while not Path(ready).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=5)
            raise StartError(f"qnode {' '.join(args[:2])} did not start:\n{Path(log).read_text()}")
        time.sleep(0.05)
    return proc


def terminate(proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """SIGTERM, then wait; kill if it does not stop in time. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)
