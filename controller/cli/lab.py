"""`qnode lab`: lab configuration files."""

from __future__ import annotations

from pathlib import Path

import typer

from controller.cli.app import console, load_config

app = typer.Typer(help="Lab configuration files.", no_args_is_help=True)


@app.command("check")
def lab_check(lab: Path = typer.Argument(..., help="Lab file to validate.")) -> None:
    """Validate a lab file without touching any instrument."""
    config = load_config(lab)
    n = sum(1 for _ in config.all_instruments())
    console.print(f"{lab}: valid ({len(config.nodes)} nodes, {n} instruments)")
