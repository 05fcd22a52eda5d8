"""`qnode midpoint`: the midpoint station's daemon (serve, status)."""

from __future__ import annotations

from pathlib import Path

import typer

from controller.cli.app import (
    LabOption,
    ResourceMapOption,
    console,
    fail,
    load_config,
    serve_in_foreground,
)
from qnode.errors import QnodeError

app = typer.Typer(help="The midpoint station's daemon.", no_args_is_help=True)


@app.command("serve")
def midpoint_serve(
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
    endpoint: str = typer.Option(
        "tcp://127.0.0.1:0", help="Where to bind the ROUTER (port 0: any free port)."
    ),
    allow_faults: bool = typer.Option(
        False, "--allow-faults", help="Accept herald fault injection (tests, soak; sim labs)."
    ),
    accept_broken_history: bool = typer.Option(
        False,
        "--accept-broken-history",
        help="Serve even if `qnode params verify` finds the parameter history altered (logged).",
    ),
    name: str | None = typer.Option(
        None, "--name", help="The midpoint to serve (default: the lab's only one), e.g. M2."
    ),
) -> None:
    """Run a midpoint's daemon in the foreground: heralds for its link's sessions."""
    from controller.midpoint.daemon import serve, served_midpoint

    config = load_config(lab)
    try:
        station = served_midpoint(config, name)
    except QnodeError as e:
        raise fail(str(e), 2) from None
    serve_in_foreground(
        config,
        station,
        resource_map,
        lambda resources: serve(
            config, resources, endpoint, allow_faults, accept_broken_history, station
        ),
    )


@app.command("status")
def midpoint_status(
    lab: Path = LabOption,
    name: str | None = typer.Option(
        None, "--name", help="The midpoint (default: the lab's only one), e.g. M2."
    ),
) -> None:
    """A midpoint daemon: state, connected nodes, the session, counters."""
    from controller.midpoint.daemon import served_midpoint
    from controller.operator.client import NodeClient

    config = load_config(lab)
    try:
        station = served_midpoint(config, name)
        with NodeClient.for_lab(config, station, timeout_s=5) as client:
            status = client.status()
    except (QnodeError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    colour = {"idle": "green", "busy": "cyan", "fault": "red"}.get(status["state"], "white")
    console.print(f"midpoint {status['node']}: [{colour}]{status['state']}[/]")
    if status["fault_reason"]:
        console.print(f"  fault: {status['fault_reason']}")
    console.print(f"  connected nodes: {', '.join(status['connected']) or 'none'}")
    if status["session"]:
        s = status["session"]
        console.print(f"  session {s['session']} ({s['protocol']}): {s['heralds']} heralds")
    console.print(
        "  heralds sent {heralds}, undeliverable {undeliverable}, malformed {malformed}, "
        "forged {forged}".format(**status)
    )
    if status["state"] == "fault":
        raise typer.Exit(1)
