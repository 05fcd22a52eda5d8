"""`qnode instruments`: the instruments of a lab."""

from __future__ import annotations

from pathlib import Path

import typer

from controller.cli.app import (
    LabOption,
    ResourceMapOption,
    console,
    err_console,
    fail,
    load_config,
)
from controller.labconfig import read_resource_map
from qnode.errors import QnodeError

app = typer.Typer(help="Instruments of a lab.", no_args_is_help=True)


@app.command("check")
def instruments_check(lab: Path = LabOption, resource_map: Path | None = ResourceMapOption) -> None:
    """Connect to every instrument and print a health table; non-zero exit if any is unwell."""
    from controller.operator.instruments_check import check_lab, render_table

    config = load_config(lab)
    resources = None
    if any(inst.simulated for _, _, inst in config.all_instruments()):
        try:
            resources = read_resource_map(config, resource_map)
        except QnodeError as e:
            raise fail(str(e), 2) from None
    rows = check_lab(config, resources)
    console.print(render_table(rows, f"instruments of {config.lab.name}"))
    bad = [row.name for row in rows if not row.healthy]
    if bad:
        err_console.print(f"[red]{len(bad)} unhealthy:[/] {', '.join(bad)}")
        raise typer.Exit(1)
    stations = sorted({row.name.split(".")[0] for row in rows})
    console.print(
        f"[green]all {len(rows)} instruments healthy[/] "
        f"({len(stations)} stations: {', '.join(stations)})"
    )
