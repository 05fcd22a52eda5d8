"""The `qnode` command line: one module per command group, assembled here in the order
`qnode --help` lists them. Modules that are slow to import are imported by the commands that
use them, so that `qnode --help` and a daemon's start stay quick."""

from __future__ import annotations

import signal

from controller.cli import (
    calibrate,
    data,
    entangle,
    instruments,
    keys,
    lab,
    midpoint,
    network,
    node,
    params,
    session,
    sim,
    soak,
)
from controller.cli.app import app

app.command("entangle")(entangle.entangle)
app.command("run")(node.run_sequence)
app.command("calibrate")(calibrate.calibrate)
app.command("soak")(soak.soak)
app.add_typer(sim.app, name="sim")
app.add_typer(instruments.app, name="instruments")
app.add_typer(lab.app, name="lab")
app.add_typer(node.app, name="node")
app.add_typer(keys.app, name="keys")
app.add_typer(params.app, name="params")
app.add_typer(data.app, name="data")
app.add_typer(midpoint.app, name="midpoint")
app.add_typer(session.app, name="session")
app.add_typer(network.app, name="network")


def main() -> None:
    # Ctrl-C means stop (an entangle session aborts, an attach detaches), however the
    # command was started: a shell that starts it in the background leaves SIGINT ignored,
    # and Python then never raises KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app()


__all__ = ["app", "main"]
