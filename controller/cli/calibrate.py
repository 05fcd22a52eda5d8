"""`qnode calibrate`: walk a node's calibration graph and show what changed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from controller.cli.app import (
    LabOption,
    NodeOption,
    console,
    err_console,
    fail,
    load_config,
    require_memory_node,
)
from controller.labconfig import read_resource_map
from qnode.errors import QnodeError


def calibrate(
    routines: list[str] = typer.Argument(None, help="Routines to run (with their dependencies)."),
    all_: bool = typer.Option(False, "--all", help="Walk the whole graph."),
    force: bool = typer.Option(False, "--force", help="Full calibration even if in spec."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the order; run nothing."),
    lab: Path = LabOption,
    node: str = NodeOption,
) -> None:
    """Calibrate a node: dependencies first, quick checks skip what is in spec, a failure stops
    what depends on it. Ends with a summary table; exit code 1 if anything failed."""
    from calibration.graph import ROUTINES, GraphError, plan
    from calibration.routine import FAILED, IN_SPEC, SKIPPED, UPDATED

    names = [] if all_ or not routines else list(routines)
    if not all_ and not routines and not plan_only:
        raise fail("name routines to run, or --all (see --plan for the graph)", 2)
    try:
        order = plan(names)
    except GraphError as e:
        raise fail(str(e), 2) from None
    if plan_only:
        for k, name in enumerate(order, start=1):
            r = ROUTINES[name]
            deps = f" (after {', '.join(r.depends)})" if r.depends else ""
            console.print(f"{k}. {name}: {r.title}{deps} -> updates {', '.join(r.updates)}")
        return
    from calibration.graph import run_graph
    from controller.data.params import ParameterStore
    from controller.operator.calibration_access import (
        ClientNodeAccess,
        link_access,
        midpoint_access,
    )
    from controller.operator.client import NodeClient

    config = load_config(lab)
    require_memory_node(config, node, lab)
    try:
        client = NodeClient.for_lab(config, node, timeout_s=30)
    except (QnodeError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    with client, ParameterStore(config.data_dir / "params.sqlite") as store:
        midpoint = None
        if any(cfg.kind == "midpoint" for cfg in config.nodes.values()):
            try:
                resources = (
                    read_resource_map(config)
                    if any(i.simulated for _, _, i in config.all_instruments())
                    else None
                )
                midpoint = midpoint_access(config, store, resources, f"calibrate {node}")
                midpoint.open()
            except QnodeError as e:
                err_console.print(f"[yellow]midpoint not available:[/] {e}")
                midpoint = None
        link = link_access(config, node, store) if midpoint is not None else None
        access = ClientNodeAccess.for_lab(config, node, client, store, midpoint, link)
        with console.status(f"calibrating node {node}") as status:

            def progress(routine: str, what: str) -> None:
                status.update(f"[bold]{routine}[/]: {what}")
                if "out of spec" in what:
                    console.print(f"  {routine}: {what}")

            try:
                outcomes = run_graph(access, names, force=force, progress=progress)
            finally:
                if midpoint is not None:
                    midpoint.close()
    colours = {IN_SPEC: "green", UPDATED: "cyan", FAILED: "red", SKIPPED: "yellow"}
    table = Table(title=f"calibration of node {node}")
    for column in ("routine", "verdict", "old -> new", "fit quality", "reason", "plot"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        changes = "\n".join(
            f"{p}: {'-' if old is None else f'{old:.6g}'} -> {new:.6g}"
            for p, (old, new) in o.changes.items()
        )
        quality = "-" if o.quality is None else f"{o.quality:.3f}"
        table.add_row(
            o.routine,
            f"[{colours[o.verdict]}]{o.verdict}[/]",
            changes or "-",
            quality,
            o.reason,
            o.plot or "-",
        )
    console.print(table)
    if any(o.verdict == FAILED for o in outcomes):
        raise typer.Exit(1)
