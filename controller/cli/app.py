"""What every `qnode` command shares: the root typer app, the consoles, the common options, and
loading a lab file or failing with one clear line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from controller.labconfig import DEFAULT_LAB, LabConfig, load_lab, read_resource_map
from qnode.errors import QnodeError

app = typer.Typer(help="qnode: control software of a quantum-network node.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)

LabOption = typer.Option(DEFAULT_LAB, "--lab", help="Lab configuration file (TOML).")
ResourceMapOption = typer.Option(
    None,
    "--resource-map",
    help="Resource map of the simulated lab (default: in the lab's data dir).",
)
NodeOption = typer.Option("A", "--node", help="Node name in the lab file.")


def load_config(lab_path: Path) -> LabConfig:
    """The lab file, or exit 2 with its one error."""
    try:
        return load_lab(lab_path)
    except QnodeError as e:
        err_console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print the error; the caller raises what this returns."""
    err_console.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


def require_memory_node(config: LabConfig, node: str, lab: Path) -> None:
    if node not in config.nodes or config.nodes[node].kind != "memory":
        raise fail(f"{node!r} is not a memory node of {lab}", 2)


def serve_in_foreground(
    config: LabConfig,
    station: str,
    resource_map: Path | None,
    run: Callable[[dict[str, str] | None], None],
) -> None:
    """A daemon in the foreground: its simulated instruments' addresses, logging, and any
    error it stops with as one clear line (exit code 2)."""
    try:
        resources = None
        if any(inst.simulated for inst in config.nodes[station].instruments.values()):
            resources = read_resource_map(config, resource_map)
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        run(resources)
    except QnodeError as e:
        raise fail(str(e), 2) from None
