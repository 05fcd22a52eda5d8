"""`make demo`: a simulated two-node lab that checks its instruments and calibrates itself.

Starts the simulated lab and the daemons of nodes A and B, checks every instrument, calibrates
both nodes from scratch (against hidden parameters the simulator drew from a seed), shows the
summary and compares it with the truth, and stops everything it started. Entanglement joins
the demo with its issue.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from calibration.graph import run_graph
from controller.calibrate import ClientNodeAccess, DirectMidpointAccess
from controller.client import NodeClient
from controller.instruments_check import check_lab, render_table
from controller.labconfig import DEFAULT_LAB, load_lab, read_resource_map
from controller.params import ParameterStore
from controller.processes import spawn, terminate
from controller.serving import node_info_path
from sim_backends.client import SimControl

console = Console()
NODES = ("A", "B")


def calibrate(lab, node: str, store: ParameterStore, midpoint: DirectMidpointAccess) -> list:
    with NodeClient.for_lab(lab, node, timeout_s=30) as client:
        return run_graph(ClientNodeAccess.for_lab(lab, node, client, store, midpoint))


def truth_of(routine: str, node: str, truth: dict, values: dict) -> str:
    t, m = truth[node], truth["M"]
    pi_v = 1 / (2e-9 * values["pi_duration_ns"] * t["rabi_hz_per_v"])
    dark = ", ".join(f"{rate:.1f}" for rate in m["dark_count_hz"].values())
    return {
        "detection_window": (
            f"delay {m['delay_ns'][node]:.2f} ns, lifetime {m['lifetime_ns'][node]:g} ns"
        ),
        "dark_counts": f"{dark} Hz",
        "phase_setpoint": f"{(-m['phase_offset_deg']) % 360:.1f} deg",
        "esr": f"{t['qubit_hz'] / 1e9:.6f} GHz",
        "rabi": f"pi at {pi_v:.4f} V",
        "ramsey": f"{t['qubit_hz'] / 1e9:.6f} GHz, T2* {t['t2star_s'] * 1e6:.2f} us",
        "check_threshold": f"mean {t['check_mean']:.1f} counts",
    }.get(routine, "-")


def main() -> int:
    started = time.monotonic()
    seed = os.environ.get("QNODE_SEED", "1")
    ok = False
    with tempfile.TemporaryDirectory(prefix="qnode-demo-") as tmp:
        os.environ["QNODE_DATA_DIR"] = str(Path(tmp) / "data")
        lab = load_lab(DEFAULT_LAB)
        resource_map = Path(tmp) / "resources.json"
        procs: list[subprocess.Popen] = []
        try:
            with console.status("starting the simulated lab..."):
                sim_args = ["sim", "up", "--seed", seed, "--resource-map", str(resource_map)]
                procs.append(spawn(sim_args, resource_map, Path(tmp) / "sim.log"))
            rows = check_lab(lab, read_resource_map(lab, resource_map))
            console.print(render_table(rows, "instruments of the simulated lab"))
            if not all(row.healthy for row in rows):
                return 1
            with console.status("starting the node daemons..."):
                for node in NODES:
                    args = ["node", "serve", "--node", node, "--resource-map", str(resource_map)]
                    info = node_info_path(lab.data_dir, node)
                    procs.append(spawn(args, info, Path(tmp) / f"node-{node}.log"))
            status = console.status("calibrating nodes A and B from scratch...")
            resources = read_resource_map(lab, resource_map)
            # one owner of the midpoint's instruments, shared by both nodes' calibrations
            store = ParameterStore(lab.data_dir / "params.sqlite")
            midpoint = DirectMidpointAccess(lab, resources, store)
            midpoint.open()
            try:
                with status, ThreadPoolExecutor(len(NODES)) as pool:
                    outcomes = list(pool.map(lambda n: calibrate(lab, n, store, midpoint), NODES))
            finally:
                midpoint.close()
                store.close()
            truth = SimControl(resource_map).truth()
            table = Table(title="calibrated vs the simulator's hidden truth")
            for column in ("node", "routine", "verdict", "result", "truth"):
                table.add_column(column)
            with ParameterStore(lab.data_dir / "params.sqlite") as store:
                for node, results in zip(NODES, outcomes, strict=True):
                    values = store.values(node, lab.nodes[node].platform)
                    for o in results:
                        truth_text = truth_of(o.routine, node, truth, values)
                        table.add_row(node, o.routine, o.verdict, o.reason, truth_text)
            console.print(table)
            ok = all(o.verdict in ("updated", "in spec") for results in outcomes for o in results)
        finally:
            for proc in reversed(procs):
                terminate(proc)
    console.print(
        f"demo {'done' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s "
        "(entanglement joins the demo with its issue)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
