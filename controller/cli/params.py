"""`qnode params`: the parameter store (show, history, manual overrides, verify)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from controller.cli.app import LabOption, NodeOption, console, err_console, fail, load_config

app = typer.Typer(help="The parameter store.", no_args_is_help=True)


def _store(lab: Path):
    from controller.data.params import ParameterStore

    config = load_config(lab)
    return ParameterStore(config.data_dir / "params.sqlite")


@app.command("show")
def params_show(lab: Path = LabOption, node: str = NodeOption) -> None:
    """Current value of every parameter of a node, and where it came from."""
    config = load_config(lab)
    platform = config.nodes[node].platform if node in config.nodes else None
    with _store(lab) as store:
        snapshot = store.snapshot(node, platform or "nv")
    table = Table(title=f"parameters of node {node}")
    for column in ("name", "value", "unit", "source", "set"):
        table.add_column(column)
    for name, info in sorted(snapshot.items()):
        when = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info["time"])) if "time" in info else "-"
        )
        table.add_row(name, f"{info['value']:.6g}", info["unit"], info["source"], when)
    console.print(table)


@app.command("history")
def params_history(name: str, lab: Path = LabOption, node: str = NodeOption) -> None:
    """Every value a parameter ever had, oldest first."""
    with _store(lab) as store:
        rows = store.history(node, name)
    if not rows:
        raise fail(f"no history for {node}.{name}")
    table = Table(title=f"history of {node}.{name}")
    for column in ("#", "time", "value", "unit", "source", "routine / reason", "accepted"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.time)),
            f"{row.value:.6g}",
            row.unit,
            row.source,
            row.routine or row.reason or "",
            "yes" if row.accepted else "no",
        )
    console.print(table)


@app.command("set", context_settings={"ignore_unknown_options": True})  # a value of -5
def params_set(
    name: str,
    value: float,
    reason: str = typer.Option(..., "--reason", help="Why (recorded)."),
    new: bool = typer.Option(
        False, "--new", help="A new, custom parameter: no sequence knows the name (yet)."
    ),
    lab: Path = LabOption,
    node: str = NodeOption,
) -> None:
    """Manual override, recorded as such with its reason. Refused at once, with nothing
    recorded: a node the lab does not have, a misspelt name (--new for a deliberate custom
    one), a value that is not finite or beyond the lab limit of its instrument."""
    from controller.data.params import (
        ParameterError,
        ParameterStore,
        check_manual,
        known_parameter,
    )

    config = load_config(lab)
    try:
        with ParameterStore(config.data_dir / "params.sqlite") as store:
            check_manual(config, store, node, name, value, new)
            row = store.set_manual(node, name, value, reason)
    except ParameterError as e:
        raise fail(str(e), 2) from None
    if new and not known_parameter(name):
        err_console.print(f"[yellow]note:[/] '{name}' is a custom parameter: no sequence uses it")
    console.print(f"{node}.{name} = {row.value:g} {row.unit} (manual: {reason})")


@app.command("verify")
def params_verify(
    lab: Path = LabOption,
    node: str | None = typer.Option(
        None, "--node", help="Report only this node's rows (the chain is checked whole)."
    ),
) -> None:
    """Check the history's hash chain: every row rewritten, removed or inserted since it was
    recorded, by row id. Exit code 1 if the chain is broken."""
    with _store(lab) as store:
        report = store.verify(node)
    if report.migrated:
        console.print(f"note: {report.migrated}")
    for problem in report.problems:
        err_console.print(f"[red]{problem}[/]")
    if not report.intact:
        raise fail(f"chain broken: {len(report.problems)} problem(s) in {report.rows} rows", 1)
    console.print(report.summary())
