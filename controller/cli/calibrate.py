"""`qnode calibrate`: walk a node's calibration graph and show what changed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from controller.cli.app import (
    LabOption,
    NodeOption,
    ResourceMapOption,
    console,
    err_console,
    fail,
    load_config,
    require_memory_node,
)
from qnode.errors import QnodeError


def calibrate(
    routines: list[str] = typer.Argument(None, help="Routines to run (with their dependencies)."),
    all_: bool = typer.Option(False, "--all", help="Walk the whole graph."),
    force: bool = typer.Option(False, "--force", help="Full calibration even if in spec."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the order; run nothing."),
    lab: Path = LabOption,
    node: str = NodeOption,
    resource_map: Path | None = ResourceMapOption,
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
    from controller.operator.calibration_access import ClientNodeAccess, link_access
    from controller.operator.client import NodeClient
    from controller.operator.daemons import terminate

    config = load_config(lab)
    require_memory_node(config, node, lab)
    try:
        client = NodeClient.for_lab(config, node, timeout_s=30)
    except (QnodeError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    with client, ParameterStore(config.data_dir / "params.sqlite") as store:
        midpoint, started = None, []
        has_midpoint = any(cfg.kind == "midpoint" for cfg in config.nodes.values())
        try:
            if has_midpoint and any(ROUTINES[name].needs_midpoint for name in order):
                holder = f"calibrate {node}"
                midpoint, started = _midpoint(config, store, holder, resource_map)
            link = link_access(config, node, store) if midpoint is not None else None
            access = ClientNodeAccess.for_lab(config, node, client, store, midpoint, link)
            with console.status(f"calibrating node {node}") as status:

                def progress(routine: str, what: str) -> None:
                    status.update(f"[bold]{routine}[/]: {what}")
                    if "out of spec" in what:
                        console.print(f"  {routine}: {what}")

                outcomes = run_graph(access, names, force=force, progress=progress)
        finally:
            if midpoint is not None:
                midpoint.close()
            for proc in reversed(started):
                terminate(proc)
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


def _midpoint(config, store, holder: str, resource_map: Path | None):
    """The midpoint's instruments through its daemon, which is started if it is not running
    (as `qnode entangle` does; stopped again at the end). (None, []) with a note if it
    cannot be reached: the routines that need it are then skipped."""
    from controller.labconfig import midpoint_name
    from controller.operator.calibration_access import DaemonMidpointAccess
    from controller.operator.daemons import ensure_daemons, terminate

    if resource_map is None and any(inst.simulated for _, _, inst in config.all_instruments()):
        resource_map = config.resource_map_path
    started = []
    try:
        with console.status("starting the midpoint daemon if it is not running..."):
            started = ensure_daemons(
                config, [midpoint_name(config)], resource_map, config.data_dir / "logs"
            )
        midpoint = DaemonMidpointAccess(config, store, holder)
        try:
            midpoint.open()
        except BaseException:
            midpoint.close()
            raise
    except BaseException as e:
        for proc in reversed(started):
            terminate(proc)
        if not isinstance(e, QnodeError):  # a daemon that did not start is one too
            raise
        err_console.print(f"[yellow]midpoint not available:[/] {e}")
        return None, []
    return midpoint, started
