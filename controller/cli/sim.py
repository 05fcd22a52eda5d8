"""`qnode sim`: the simulated lab (through controller.harness.sim, imported when used)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.table import Table

from controller.cli.app import LabOption, ResourceMapOption, console, fail, load_config

app = typer.Typer(help="The simulated lab.", no_args_is_help=True)


@app.command("up")
def sim_up(
    lab: Path = LabOption,
    seed: int = typer.Option(1, "--seed", help="Seed of the hidden true parameters."),
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Serve every simulated instrument of the lab in the foreground, until Ctrl-C/SIGTERM."""
    from controller.harness.sim import serve

    config = load_config(lab)
    map_path = resource_map or config.resource_map_path
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def ready(info: dict) -> None:
        table = Table(title=f"simulated lab '{config.lab.name}' (seed {seed}): Ctrl-C stops it")
        table.add_column("instrument")
        table.add_column("resource")
        for name, resource in info["resources"].items():
            table.add_row(name, resource)
        console.print(table)
        console.print(f"resource map: {map_path}")
        sys.stdout.flush()

    serve(config, seed, map_path, ready)


@app.command("fault")
def sim_fault(
    instrument: str = typer.Argument(..., help="e.g. A.mw"),
    fault: str = typer.Argument(..., help="freeze, unfreeze, garble, drop, reset, delay, clear"),
    seconds: float = typer.Option(0.0, help="Reply delay, for 'delay'."),
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Inject a fault into a running simulated lab."""
    from controller.harness.sim import SimControl, SimControlError

    config = load_config(lab)
    try:
        control = SimControl(resource_map or config.resource_map_path)
        control.fault(instrument, fault, seconds=seconds)
    except (SimControlError, OSError, KeyError) as e:
        raise fail(str(e)) from None
    console.print(f"{fault} -> {instrument}")
