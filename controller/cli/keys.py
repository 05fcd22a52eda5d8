"""`qnode keys`: the CurveZMQ keys of the lab and its allow-list."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from controller.cli.app import LabOption, console, fail, load_config

app = typer.Typer(help="CurveZMQ keys of the lab.", no_args_is_help=True)


@app.command("generate")
def keys_generate(name: str, lab: Path = LabOption) -> None:
    """Make a client key pair and put its public key on the lab's allow-list."""
    from controller.messaging.keys import generate_client

    config = load_config(lab)
    try:
        public = generate_client(config.data_dir, name)
    except ValueError as e:
        raise fail(str(e), 2) from None
    console.print(f"client key '{name}': {public} (allowed)")


@app.command("list")
def keys_list(lab: Path = LabOption) -> None:
    """The allow-list: who may command this lab's daemons."""
    from controller.messaging.keys import fingerprint, key_dir

    config = load_config(lab)
    table = Table(title=f"allowed client keys of {config.lab.name}")
    table.add_column("name")
    table.add_column("fingerprint")
    table.add_column("file")
    for path in sorted((key_dir(config.data_dir) / "allowed").glob("*.key")):
        table.add_row(path.stem, fingerprint(path), str(path))
    console.print(table)
