"""The `qnode` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from controller.labconfig import DEFAULT_LAB, LabConfig, load_lab, read_resource_map
from qnode.errors import QnodeError

app = typer.Typer(help="qnode: control software of a quantum-network node.", no_args_is_help=True)
sim_app = typer.Typer(help="The simulated lab.", no_args_is_help=True)
instruments_app = typer.Typer(help="Instruments of a lab.", no_args_is_help=True)
lab_app = typer.Typer(help="Lab configuration files.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
app.add_typer(instruments_app, name="instruments")
app.add_typer(lab_app, name="lab")

console = Console()
err_console = Console(stderr=True)

LabOption = typer.Option(DEFAULT_LAB, "--lab", help="Lab configuration file (TOML).")
ResourceMapOption = typer.Option(
    None,
    "--resource-map",
    help="Resource map of the simulated lab (default: in the lab's data dir).",
)


def _load(lab_path: Path) -> LabConfig:
    try:
        return load_lab(lab_path)
    except QnodeError as e:
        err_console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


@lab_app.command("check")
def lab_check(lab: Path = typer.Argument(..., help="Lab file to validate.")) -> None:
    """Validate a lab file without touching any instrument."""
    config = _load(lab)
    n = sum(1 for _ in config.all_instruments())
    console.print(f"{lab}: valid ({len(config.nodes)} nodes, {n} instruments)")


@sim_app.command("up")
def sim_up(
    lab: Path = LabOption,
    seed: int = typer.Option(1, "--seed", help="Seed of the hidden true parameters."),
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Serve every simulated instrument of the lab in the foreground, until Ctrl-C/SIGTERM."""
    from sim_backends.lab import SimLab

    config = _load(lab)
    map_path = resource_map or config.resource_map_path
    state_dir = map_path.parent / f"{config.lab.name}.state"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sim = SimLab(config.model_dump(), seed, state_dir, map_path)

    def ready(info: dict) -> None:
        table = Table(title=f"simulated lab '{config.lab.name}' (seed {seed}): Ctrl-C stops it")
        table.add_column("instrument")
        table.add_column("resource")
        for name, resource in info["resources"].items():
            table.add_row(name, resource)
        console.print(table)
        console.print(f"resource map: {map_path}")
        sys.stdout.flush()

    asyncio.run(sim.run(on_ready=ready))


@sim_app.command("fault")
def sim_fault(
    instrument: str = typer.Argument(..., help="e.g. A.mw"),
    fault: str = typer.Argument(..., help="freeze, unfreeze, garble, drop, reset, delay, clear"),
    seconds: float = typer.Option(0.0, help="Reply delay, for 'delay'."),
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Inject a fault into a running simulated lab."""
    from sim_backends.client import SimControl, SimControlError

    config = _load(lab)
    try:
        control = SimControl(resource_map or config.resource_map_path)
        control.fault(instrument, fault, seconds=seconds)
    except (SimControlError, OSError, KeyError) as e:
        err_console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None
    console.print(f"{fault} -> {instrument}")


@instruments_app.command("check")
def instruments_check(lab: Path = LabOption, resource_map: Path | None = ResourceMapOption) -> None:
    """Connect to every instrument and print a health table; non-zero exit if any is unwell."""
    from controller.instruments_check import check_lab, render_table

    config = _load(lab)
    resources = None
    if any(inst.simulated for _, _, inst in config.all_instruments()):
        try:
            resources = read_resource_map(config, resource_map)
        except QnodeError as e:
            err_console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
    rows = check_lab(config, resources)
    console.print(render_table(rows, f"instruments of {config.lab.name}"))
    bad = [row.name for row in rows if not row.healthy]
    if bad:
        err_console.print(f"[red]{len(bad)} unhealthy:[/] {', '.join(bad)}")
        raise typer.Exit(1)
    console.print(f"[green]all {len(rows)} instruments healthy[/]")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
