"""`make demo`: a simulated two-node lab that checks its instruments, calibrates itself and
entangles its nodes.

Starts the simulated lab, checks every instrument, starts the daemons of nodes A and B and of
the midpoint; calibrates both nodes from scratch (against hidden parameters the simulator drew
from a seed; the midpoint's instruments through its daemon), then the link (visibility, alpha),
and compares the result with the truth; delivers and verifies 1000 single-click pairs (at four
values of alpha) and 200 Barrett-Kok pairs; prints a report, saves a plot of fidelity and
success probability against alpha over the model, and stops everything it started. The plot
goes to demo-output/ (or $QNODE_DEMO_OUTPUT).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from calibration.graph import ROUTINES, run_graph, run_routine
from calibration.planning import link_from_calibration, single_click
from controller.data.params import ParameterStore
from controller.harness.sim import SimControl, start_sim
from controller.labconfig import DEFAULT_LAB, load_lab, read_resource_map
from controller.operator.calibration_access import (
    ClientLinkAccess,
    ClientNodeAccess,
    DaemonMidpointAccess,
)
from controller.operator.client import NodeClient
from controller.operator.daemons import start_daemon, terminate
from controller.operator.entangle import measure_readout, p_success_sigma, run_session
from controller.operator.instruments_check import check_lab, render_table
from controller.operator.plots import plot_alpha_scan

console = Console()
NODES = ("A", "B")
SCAN_ALPHAS = (0.05, 0.1, 0.2, 0.3)
SCAN_PAIRS = 250  # 4 x 250 = 1000 single-click pairs
BK_PAIRS = 200


def calibrate(lab, node: str, store: ParameterStore) -> list:
    """The node's own graph (the link routines wait until both nodes are done)."""
    midpoint = DaemonMidpointAccess(lab, store, f"demo {node}")
    names = [n for n, r in ROUTINES.items() if not r.needs_link]
    try:
        with NodeClient.for_lab(lab, node, timeout_s=30) as client:
            access = ClientNodeAccess.for_lab(lab, node, client, store, midpoint)
            return run_graph(access, names)
    finally:
        midpoint.close()


def calibrate_link(lab, store: ParameterStore) -> list:
    """Visibility and alpha, from A, with B and the midpoint."""
    midpoint = DaemonMidpointAccess(lab, store, "demo link")
    link = ClientLinkAccess(lab, "A", store)
    try:
        with NodeClient.for_lab(lab, "A", timeout_s=30) as client:
            access = ClientNodeAccess.for_lab(lab, "A", client, store, midpoint, link)
            return [run_routine(access, ROUTINES[n], False, None) for n in ("visibility", "alpha")]
    finally:
        midpoint.close()


def truth_of(routine: str, node: str, truth: dict, values: dict) -> str:
    t, m = truth[node], truth["M"]
    pi_v = 1 / (2e-9 * values["pi_duration_ns"] * t["rabi_hz_per_v"])
    dark = ", ".join(f"{rate:.1f}" for rate in m["dark_count_hz"].values())
    return {
        "detection_window": (
            f"delay {m['delay_ns'][node]:.2f} ns, lifetime {m['lifetime_ns'][node]:g} ns, "
            f"detection probability {m['eta'][node]:.3g}, double excitation "
            f"{m['p_double'][node]:.3f}"
        ),
        "phase_noise": f"{m['phase_noise_deg']:.1f} deg",
        "dark_counts": f"{dark} Hz",
        "phase_fringe": f"{m['piezo_deg_per_volt']:.2f} deg/V",
        "esr": f"{t['qubit_hz'] / 1e9:.6f} GHz",
        "rabi": f"pi at {pi_v:.4f} V",
        "ramsey": f"{t['qubit_hz'] / 1e9:.6f} GHz, T2* {t['t2star_s'] * 1e6:.2f} us",
        "check_threshold": f"mean {t['check_mean']:.1f} counts",
        "visibility": f"V {m['visibility']:.3f}",
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
                procs.append(start_sim(lab, resource_map, seed=seed, log=Path(tmp) / "sim.log"))
            rows = check_lab(lab, read_resource_map(lab, resource_map))
            console.print(render_table(rows, "instruments of the simulated lab"))
            if not all(row.healthy for row in rows):
                return 1
            with console.status("starting the daemons of A, B and the midpoint..."):
                for node in (*NODES, "M"):
                    log = Path(tmp) / f"node-{node}.log"
                    procs.append(start_daemon(lab, node, log=log, resource_map=resource_map))
            status = console.status("calibrating nodes A and B from scratch...")
            # the midpoint daemon owns its instruments; both calibrations go through it
            store = ParameterStore(lab.data_dir / "params.sqlite")
            try:
                with status, ThreadPoolExecutor(len(NODES)) as pool:
                    outcomes = list(pool.map(lambda n: calibrate(lab, n, store), NODES))
                if all(o.verdict in ("updated", "in spec") for r in outcomes for o in r):
                    with console.status("calibrating the link: visibility, alpha..."):
                        outcomes[0] += calibrate_link(lab, store)
            finally:
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
            if ok:
                ok = entangle(lab, truth)
        finally:
            for proc in reversed(procs):
                terminate(proc)
    console.print(f"demo {'done' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


def entangle(lab, truth: dict) -> bool:
    """The alpha scan (single-click), Barrett-Kok, the report and the plot."""
    with (
        NodeClient.for_lab(lab, "A", timeout_s=30) as a,
        NodeClient.for_lab(lab, "B", timeout_s=30) as b,
        console.status("measuring F0/F1 for the verification's readout correction..."),
    ):
        readout = measure_readout(lab, {"A": a, "B": b})
    points, reports = [], []
    for alpha in SCAN_ALPHAS:
        console.print(f"[bold]single-click at alpha {alpha}[/]: {SCAN_PAIRS} pairs, verified")
        report = run_session(
            lab,
            pairs=SCAN_PAIRS,
            protocol="single_click",
            alpha=alpha,
            console=console,
            readout=readout,
        )
        reports.append(report)
        v, s = report.verification, report.summary
        points.append(
            {
                "alpha": alpha,
                "fidelity": v.fidelity,
                "low": v.low,
                "high": v.high,
                "p_success": s["p_success"],
                "p_sigma": p_success_sigma(s),
                "expected_f": s["expected"]["fidelity"],
                "expected_p": s["expected"]["p_success"],
                "rate": s["rate_per_virtual_s"],
                "wall_rate": s["rate_per_wall_s"],
                "agree": report.agree,
                "delivered": report.delivered,
            }
        )
    console.print(f"[bold]Barrett-Kok[/]: {BK_PAIRS} pairs, verified")
    bk = run_session(lab, pairs=BK_PAIRS, protocol="barrett_kok", console=console, readout=readout)
    reports.append(bk)
    table = Table(title="heralded entanglement A-B (verified in XX, YY, ZZ)")
    for column in (
        "protocol",
        "alpha",
        "pairs",
        "success/attempt (model)",
        "fidelity [95 % CI]",
        "model",
        "pairs/s virtual",
        "pairs/s wall",
    ):
        table.add_column(column)
    for p in points:
        table.add_row(
            "single-click",
            f"{p['alpha']:.2f}",
            str(p["delivered"]),
            f"{p['p_success']:.2e} ({p['expected_p']:.2e})",
            f"{p['fidelity']:.3f} [{p['low']:.3f}, {p['high']:.3f}]",
            f"{p['expected_f']:.3f}",
            f"{p['rate']:.2f}",
            f"{p['wall_rate']:.0f}",
        )
    v, s = bk.verification, bk.summary
    table.add_row(
        "Barrett-Kok",
        "-",
        str(bk.delivered),
        f"{s['p_success']:.2e} ({s['expected']['p_success']:.2e})",
        f"{v.fidelity:.3f} [{v.low:.3f}, {v.high:.3f}]",
        f"{s['expected']['fidelity']:.3f}",
        f"{s['rate_per_virtual_s']:.4f}",
        f"{s['rate_per_wall_s']:.0f}",
    )
    console.print(table)
    with ParameterStore(lab.data_dir / "params.sqlite") as store:
        values = {n: store.values(n, lab.nodes[n].platform or "nv") for n in NODES}
        values["M"] = {n: r.value for n, r in store.current("M").items()}
    link, _ = link_from_calibration(values, list(NODES), "M")
    grid = np.linspace(0.01, 0.5, 100)
    heralds = [single_click(a, link) for a in grid]
    curve = {
        "alpha": grid,
        "fidelity": [h.fidelity for h in heralds],
        "p_success": [h.p_success for h in heralds],
    }
    band = {
        "low": v.low,
        "high": v.high,
        "expected": s["expected"]["fidelity"],
        "p_success": s["p_success"],
    }
    out = Path(os.environ.get("QNODE_DEMO_OUTPUT", "demo-output"))
    out.mkdir(parents=True, exist_ok=True)
    png = plot_alpha_scan(out / "entanglement_vs_alpha.png", points, curve, band)
    console.print(f"plot: {png}  (true visibility {truth['M']['visibility']:.3f})")
    agree = all(r.agree for r in reports)
    complete = all(r.summary["state"] == "completed" for r in reports)
    if not agree:
        console.print("[red]the nodes disagree on the delivered pairs[/]")
    return agree and complete


if __name__ == "__main__":
    sys.exit(main())
