"""`qnode soak`: entanglement under random faults on the simulated lab (controller.harness.soak)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer

from controller.cli.app import LabOption, console, fail, load_config
from qnode.errors import QnodeError


def soak(
    minutes: float = typer.Option(..., "--minutes", min=0.1, help="How long to inject faults."),
    seed: int = typer.Option(1, "--seed", help="Seed of the simulated lab and of the faults."),
    lab: Path = LabOption,
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the lab data, logs and report (default soak-output/...)."
    ),
    interval_s: float = typer.Option(
        6.0, "--interval", min=0.5, help="Mean seconds between faults."
    ),
    calibration: str = typer.Option(
        "truth",
        "--calibration",
        help="truth (take it from the simulator: the soak is about robustness) or routines.",
    ),
) -> None:
    """Entanglement on the simulated lab under random faults, audited against the simulator's
    ground truth: pairs delivered, lost, double-counted; faults injected and recovered. A lab
    with a repeater (links and memories, labs/sim_three_node.toml) soaks end-to-end pairs
    through it under the three-node fault menu."""
    from controller.harness.soak import SoakReport, render, write_report
    from controller.harness.soak import soak as run_soak
    from controller.harness.soak_network import (
        NetworkSoakReport,
        has_repeater,
        render_network,
        soak_network,
    )

    config = load_config(lab)
    if not all(inst.simulated for _, _, inst in config.all_instruments()):
        raise fail(f"{lab}: the soak needs a fully simulated lab (it injects faults)", 2)
    if calibration not in ("truth", "routines"):
        raise fail(f"--calibration {calibration!r}: truth or routines", 2)
    if out is None:
        out = Path("soak-output") / time.strftime(f"%Y%m%d-%H%M%S-seed{seed}")

    def stop(signum, frame):  # SIGTERM as Ctrl-C: the soak stops what it started
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    network = has_repeater(config)
    if network and calibration != "truth":
        raise fail("--calibration routines: the network soak calibrates from the truth only", 2)
    try:
        if network:  # a repeater between two ends: end-to-end pairs under three-node faults
            report: SoakReport | NetworkSoakReport = soak_network(
                config, minutes, seed, out, interval_s, console
            )
        else:
            report = run_soak(config, minutes, seed, out, interval_s, calibration, console)
    except KeyboardInterrupt:
        raise fail(f"soak stopped before its end (no report); its files: {out}", 130) from None
    except QnodeError as e:
        raise fail(str(e)) from None
    if isinstance(report, NetworkSoakReport):
        render_network(report, console)
    else:
        render(report, console)
    console.print(f"report: {write_report(report, out / 'report.json')}")
    if not report.clean:
        raise typer.Exit(1)
