"""`qnode keys`: the CurveZMQ keys of the lab and its allow-list."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from controller.cli.app import LabOption, console, fail, load_config

app = typer.Typer(help="CurveZMQ keys of the lab.", no_args_is_help=True)


@app.command("generate")
def keys_generate(
    name: str,
    lab: Path = LabOption,
    force: bool = typer.Option(
        False, "--force", help="replace an existing client key (the old one is then refused)"
    ),
) -> None:
    """Make a client key pair and put its public key on the lab's allow-list (as a client).
    Station names are reserved; an existing key is replaced only with --force."""
    from controller.messaging.keys import KeyRefused, client_files, generate_client

    config = load_config(lab)
    stations = tuple(config.nodes)
    existing = client_files(config.data_dir, name)
    try:
        public = generate_client(config.data_dir, name, force=force, stations=stations)
    except KeyRefused as e:
        raise fail(str(e), 2) from None
    if existing:
        console.print(
            f"[yellow]warning:[/] client key '{name}' replaced: "
            + ", ".join(map(str, existing))
            + " (the old key is refused from now on)"
        )
    console.print(f"client key '{name}': {public} (allowed as a client)")


@app.command("list")
def keys_list(lab: Path = LabOption) -> None:
    """The allow-list: who may command this lab's daemons (clients), and the stations."""
    from controller.messaging.keys import CLIENT, STATION, allowed_dir, fingerprint, stations_dir

    config = load_config(lab)
    table = Table(title=f"allowed keys of {config.lab.name}")
    table.add_column("name")
    table.add_column("role")
    table.add_column("fingerprint")
    table.add_column("file")
    for role, folder in (
        (CLIENT, allowed_dir(config.data_dir)),
        (STATION, stations_dir(config.data_dir)),
    ):
        for path in sorted(folder.glob("*.key")):
            table.add_row(path.stem, role, fingerprint(path), str(path))
    console.print(table)
