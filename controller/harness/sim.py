"""The simulated lab from the host's side: serve it in this process (`qnode sim up`), start it
in a process of its own (the demo, the soak, the tests, the benchmarks), and its control
channel (fault injection, the hidden truth, the physics' heralds).

The rest of controller/ reaches sim_backends only through the harness; the CLI only through
this module, and only in the commands of `qnode sim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from controller.labconfig import LabConfig
from controller.operator.daemons import spawn, terminate
from sim_backends.client import SimControl, SimControlError

__all__ = ["SimControl", "SimControlError", "serve", "start_sim", "state_dir_of"]

SIM_START_TIMEOUT_S = 30.0


def state_dir_of(lab: LabConfig, resource_map: Path) -> Path:
    """Where the simulated lab keeps its state (beside its resource map)."""
    return resource_map.parent / f"{lab.lab.name}.state"


def serve(lab: LabConfig, seed: int, resource_map: Path, on_ready: Callable[[dict], None]) -> None:
    """Serve every simulated instrument of the lab until SIGINT/SIGTERM; `on_ready(info)` once
    they all listen (`info["resources"]`: instrument -> address, as in the resource map)."""
    from sim_backends.lab import SimLab

    sim = SimLab(lab.model_dump(), seed, state_dir_of(lab, resource_map), resource_map)
    asyncio.run(sim.run(on_ready=on_ready))


def start_sim(
    lab: LabConfig,
    resource_map: Path,
    *,
    seed: int | str,
    log: Path,
    timeout_s: float = SIM_START_TIMEOUT_S,
) -> subprocess.Popen:
    """`qnode sim up` in a process of its own; returns once its resource map is written (stop
    it with controller.operator.daemons.terminate). Raises StartError, with the log."""
    args = ["sim", "up", "--lab", lab.source, "--seed", str(seed)]
    args += ["--resource-map", str(resource_map)]
    return spawn(args, resource_map, log, timeout_s)


@contextlib.contextmanager
def lab_processes(data_dir: Path) -> Iterator[list]:
    """QNODE_DATA_DIR set to `data_dir` (the daemons started inside inherit it) and a list for
    the processes the caller starts: every one terminated, newest first, and the variable as
    it was, however the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("QNODE_DATA_DIR")
    os.environ["QNODE_DATA_DIR"] = str(data_dir)
    procs: list = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            terminate(proc)
        if old is None:
            os.environ.pop("QNODE_DATA_DIR", None)
        else:
            os.environ["QNODE_DATA_DIR"] = old
