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
    link: str | None = typer.Option(
        None,
        "--link",
        help="The link whose routines to run (its midpoint and peer); needed only for a node "
        "with several links. --all without it walks each of the node's links.",
    ),
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Calibrate a node: dependencies first, quick checks skip what is in spec, a failure stops
    what depends on it. The node's own routines run once; the routines of a link (its photons
    at the midpoint, the midpoint's detectors, sessions with the peer) per link. Ends with a
    summary table per link; exit code 1 if anything failed."""
    from calibration.graph import ROUTINES, GraphError, plan
    from calibration.routine import FAILED

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
    from controller.operator.calibration_access import resolve_link

    config = load_config(lab)
    require_memory_node(config, node, lab)
    on_links = any(is_link_routine(ROUTINES[name]) for name in order)
    mine = config.links_of(node)
    try:
        if link is not None or (on_links and not all_):
            links = [resolve_link(config, node, link)[0]]
        else:
            links = list(mine) if on_links else []
    except QnodeError as e:
        raise fail(str(e), 2) from None
    outcomes = walk(config, node, names, links, force, resource_map)
    if any(o.verdict == FAILED for per_link in outcomes.values() for o in per_link):
        raise typer.Exit(1)


def is_link_routine(routine) -> bool:
    """A routine of a link (the midpoint's, or sessions with the peer): run per link."""
    return bool(routine.needs_midpoint or routine.needs_link)


def walk(config, node: str, names: list[str], links: list[str], force: bool, resource_map):
    """The node's routines once, with its first link's; each further link's routines after
    (the node's outcomes stand for their dependencies). A table per pass; the outcomes by
    link ('' for a node without links)."""
    from calibration.graph import run_graph
    from controller.data.params import ParameterStore
    from controller.operator.calibration_access import ClientNodeAccess, link_access
    from controller.operator.client import NodeClient
    from controller.operator.daemons import terminate

    try:
        client = NodeClient.for_lab(config, node, timeout_s=30)
    except (QnodeError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    results: dict[str, list] = {}
    done: dict | None = None
    with client, ParameterStore(config.data_dir / "params.sqlite") as store:
        for name in links or [""]:
            midpoint, started, scope = None, [], f"node {node}"
            try:
                if name:
                    station = config.all_links[name].midpoint
                    scope = f"node {node}, link {name} (through {station})"
                    holder = f"calibrate {node} {name}"
                    midpoint, started = _midpoint(config, store, holder, resource_map, station)
                peers = link_access(config, node, store, name) if midpoint is not None else None
                access = ClientNodeAccess.for_lab(config, node, client, store, midpoint, peers)
                with console.status(f"calibrating {scope}") as status:

                    def progress(routine: str, what: str) -> None:
                        status.update(f"[bold]{routine}[/]: {what}")
                        if "out of spec" in what:
                            console.print(f"  {routine}: {what}")

                    outcomes = run_graph(access, names, force=force, progress=progress, done=done)
            finally:
                if midpoint is not None:
                    midpoint.close()
                for proc in reversed(started):
                    terminate(proc)
            if done is None:  # the node's own routines: not run again for the next link
                from calibration.graph import ROUTINES

                done = {o.routine: o for o in outcomes if not is_link_routine(ROUTINES[o.routine])}
            results[name] = outcomes
            show(outcomes, f"calibration of {scope}")
    return results


def show(outcomes, title: str) -> None:
    from calibration.routine import FAILED, IN_SPEC, SKIPPED, UPDATED

    colours = {IN_SPEC: "green", UPDATED: "cyan", FAILED: "red", SKIPPED: "yellow"}
    table = Table(title=title)
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


def _midpoint(config, store, holder: str, resource_map: Path | None, station: str):
    """The link's midpoint's instruments through its daemon, which is started if it is not
    running (as `qnode entangle` does; stopped again at the end). (None, []) with a note if it
    cannot be reached: the routines that need it are then skipped."""
    from controller.operator.calibration_access import DaemonMidpointAccess
    from controller.operator.daemons import ensure_daemons, terminate

    if resource_map is None and any(inst.simulated for _, _, inst in config.all_instruments()):
        resource_map = config.resource_map_path
    started = []
    try:
        with console.status(f"starting the midpoint daemon {station} if it is not running..."):
            started = ensure_daemons(config, [station], resource_map, config.data_dir / "logs")
        midpoint = DaemonMidpointAccess(config, store, holder, station)
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
        err_console.print(f"[yellow]midpoint {station} not available:[/] {e}")
        return None, []
    return midpoint, started
