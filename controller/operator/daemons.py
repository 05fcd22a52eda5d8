"""Start a qnode command in the background and wait until it is ready; stop it cleanly.

Readiness is a file the command writes once it serves (the simulated lab's resource map, a
daemon's node info file). `start_daemon` is the one place that knows how a station's daemon
is started (`qnode node serve`, `qnode midpoint serve`); `qnode entangle`, `qnode calibrate`,
the demo, the soak and the test fixtures use it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from controller.labconfig import LabConfig
from controller.messaging.serving import node_info_path, running_daemon_pid
from qnode.errors import QnodeError

QNODE = [sys.executable, "-m", "controller.cli"]
DAEMON_START_TIMEOUT_S = 30.0


class StartError(QnodeError, RuntimeError):
    """A command that exited, or was not ready in time; its message holds the log. A
    QnodeError, so that a command that starts daemons reports it as one error."""


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


def daemon_args(
    lab: LabConfig,
    station: str,
    *,
    resource_map: Path | None = None,
    allow_faults: bool = False,
) -> list[str]:
    """The `qnode` arguments that serve `station` of the lab: `node serve` for a memory
    node, `midpoint serve --name` for a midpoint (`allow_faults`: herald fault injection)."""
    if lab.nodes[station].kind == "midpoint":
        args = ["midpoint", "serve", "--lab", lab.source, "--name", station]
        if allow_faults:
            args.append("--allow-faults")
    else:
        if allow_faults:
            raise ValueError(f"{station} is a memory node: herald faults are the midpoint's")
        args = ["node", "serve", "--lab", lab.source, "--node", station]
    if resource_map is not None:
        args += ["--resource-map", str(resource_map)]
    return args


def link_stations(lab: LabConfig, a: str, b: str) -> list[str]:
    """The stations a session between memory nodes a and b needs: both, and the midpoint of
    their link (QnodeError naming the lab's links if they share none)."""
    return [a, b, lab.link_between(a, b)[1].midpoint]


def start_daemon(
    lab: LabConfig,
    station: str,
    *,
    log: Path,
    resource_map: Path | None = None,
    allow_faults: bool = False,
    append: bool = False,
    timeout_s: float = DAEMON_START_TIMEOUT_S,
) -> subprocess.Popen:
    """Start the daemon of `station` and return once it serves (its info file written).

    Its data folder is the lab's (`QNODE_DATA_DIR` is inherited). An info file left by a
    daemon that was killed is removed first, so that only the new one's counts as ready.
    `log` receives its output (`append`: after what is there, for a restart). Raises
    StartError, with the log, if it exits or is not ready in `timeout_s`.
    """
    args = daemon_args(lab, station, resource_map=resource_map, allow_faults=allow_faults)
    info = node_info_path(lab.data_dir, station)
    info.unlink(missing_ok=True)
    return spawn(args, info, log, timeout_s, append=append)


def ensure_daemons(
    lab: LabConfig, stations: list[str], resource_map: Path | None, log_dir: Path
) -> list[subprocess.Popen]:
    """Start the daemons that are not running yet (logs `log_dir/STATION.log`); returns the
    processes started, for the caller to stop (running ones are left alone)."""
    started: list[subprocess.Popen] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for station in stations:
            if running_daemon_pid(lab.data_dir, station) is not None:
                continue
            log = log_dir / f"{station}.log"
            started.append(start_daemon(lab, station, log=log, resource_map=resource_map))
    except BaseException:
        for proc in reversed(started):  # none left running that the caller cannot stop
            terminate(proc)
        raise
    return started
