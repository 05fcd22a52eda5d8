"""`qnode node`: the node daemon (serve, status); `qnode run`: a sequence on a node."""

from __future__ import annotations

from pathlib import Path

import typer

from controller.cli.app import (
    LabOption,
    NodeOption,
    ResourceMapOption,
    console,
    fail,
    load_config,
    require_memory_node,
    serve_in_foreground,
)
from qnode.errors import QnodeError

app = typer.Typer(help="The node daemon.", no_args_is_help=True)


@app.command("serve")
def node_serve(
    lab: Path = LabOption,
    node: str = NodeOption,
    resource_map: Path | None = ResourceMapOption,
    endpoint: str = typer.Option(
        "tcp://127.0.0.1:0", help="Where to bind the control API (port 0: any free port)."
    ),
    accept_broken_history: bool = typer.Option(
        False,
        "--accept-broken-history",
        help="Serve even if `qnode params verify` finds the parameter history altered (logged).",
    ),
) -> None:
    """Run the node daemon in the foreground (Ctrl-C / SIGTERM: safe state, clean exit)."""
    from controller.node.daemon import serve

    config = load_config(lab)
    require_memory_node(config, node, lab)
    serve_in_foreground(
        config,
        node,
        resource_map,
        lambda resources: serve(config, node, resources, endpoint, accept_broken_history),
    )


@app.command("status")
def node_status(lab: Path = LabOption, node: str = NodeOption) -> None:
    """State of a node daemon: idle, busy or fault (with the reason), and its current run."""
    from controller.operator.client import NodeClient

    try:
        with NodeClient.for_lab(load_config(lab), node, timeout_s=5) as client:
            status = client.status()
    except (QnodeError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    colour = {"idle": "green", "busy": "yellow", "fault": "red"}.get(status["state"], "white")
    console.print(f"node {node}: [{colour}]{status['state']}[/]")
    if status["fault_reason"]:
        console.print(f"  fault: {status['fault_reason']}")
    run = status.get("run")
    if run:
        console.print(
            f"  run {run['run_id']} ({run['name']}): {run['status']}, "
            f"{run['points_done']}/{run['points_total']} points, file {run['file']}"
        )
    if status["state"] == "fault":
        raise typer.Exit(1)


def parse_sweep(specs: list[str]):
    """--sweep NAME=START:STOP:N options as a Sweep (exit 2 on a malformed one)."""
    from sequences.operations import Sweep, SweepAxis
    from sequences.parameters import unit_of

    axes = []
    for spec in specs:
        name, eq, rest = spec.partition("=")
        parts = rest.split(":")
        if not eq or not name or len(parts) != 3:
            raise fail(f"--sweep {spec!r}: write NAME=START:STOP:N, e.g. duration_ns=0:400:41", 2)
        try:
            start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
            axes.append(SweepAxis.linspace(name, start, stop, n, unit_of(name)))
        except ValueError as e:
            raise fail(f"--sweep {spec!r}: {e}", 2) from None
    return Sweep(tuple(axes))


def run_sequence(
    sequence: str = typer.Argument(..., help="rabi, esr, ramsey or readout"),
    sweep: list[str] = typer.Option([], "--sweep", help="NAME=START:STOP:N (repeatable)."),
    shots: int = typer.Option(200, "--shots", min=1),
    lab: Path = LabOption,
    node: str = NodeOption,
    plot: bool = typer.Option(True, help="Save a PNG of the bright fraction beside the run file."),
) -> None:
    """Run a named sequence on a node with a progress bar; the run file is saved by the node."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from controller.operator.client import NodeClient
    from sequences.library import LIBRARY

    if sequence not in LIBRARY:
        raise fail(f"unknown sequence {sequence!r} (known: {', '.join(LIBRARY)})", 2)
    config = load_config(lab)
    require_memory_node(config, node, lab)
    seq = LIBRARY[sequence](config.nodes[node].platform, shots=shots)
    sweep_ = parse_sweep(sweep)
    try:
        with NodeClient.for_lab(config, node) as client:
            started = client.start(seq, sweep_)
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task(f"{sequence} on {node}", total=started["points_total"])

                def show(run: dict) -> None:
                    bar.update(task, completed=run["points_done"])

                try:
                    finished = client.wait(started["run_id"], show)
                except KeyboardInterrupt:
                    client.abort()
                    finished = client.wait(started["run_id"])
            data = client.result(started["run_id"])
    except (QnodeError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    console.print(
        f"run {finished['run_id']}: {finished['status']} "
        f"({finished['points_done']}/{finished['points_total']} points) -> {finished['file']}"
    )
    if finished["status"] == "failed":
        raise fail(finished["reason"])
    if plot and data.counts.shape[0] and len(data.axes) == 1:
        from controller.operator.plots import plot_sweep

        png = plot_sweep(data, Path(finished["file"]).with_suffix(".png"))
        console.print(f"plot: {png}")
