"""`qnode data`: the data folder's files (repair what a crash left open)."""

from __future__ import annotations

from pathlib import Path

import typer

from controller.cli.app import LabOption, console, err_console, load_config

app = typer.Typer(help="The data folder's files.", no_args_is_help=True)


@app.command("repair")
def data_repair(lab: Path = LabOption) -> None:
    """Close every run, session and heralds file a killed writer left open (plain h5py cannot
    open them): copied into a fresh file, status crashed with the reason. A file of a station
    whose daemon is running is left alone (a node's session file is then its reconciliation's;
    so it is too when that node's daemon starts again). Exit code 1 if a file could not be
    repaired."""
    from controller.data.repair import LeftFile, crash_left, repair_all
    from controller.messaging.serving import running_daemon_pid

    data_dir = load_config(lab).data_dir

    def writer_alive(left: LeftFile) -> str | None:
        pid = running_daemon_pid(data_dir, left.station)
        return None if pid is None else f"{left.station}'s daemon is running (pid {pid})"

    files = crash_left(data_dir)
    if not files:
        console.print(f"nothing to repair in {data_dir}")
        return
    done = repair_all(files, "qnode data repair", writer_alive)
    for left, what in done:
        line = f"{left.path.relative_to(data_dir)}: {what}"
        (err_console if what.startswith("could not") else console).print(
            line, highlight=False, soft_wrap=True
        )
    if any(what.startswith("could not") for _, what in done):
        raise typer.Exit(1)
