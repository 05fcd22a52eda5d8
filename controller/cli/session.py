"""`qnode session`: the entanglement sessions of a lab (list, attach to one, abort one)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from controller.cli.app import LabOption, console, fail, load_config
from qnode.errors import QnodeError

app = typer.Typer(help="Entanglement sessions: list, attach, abort.", no_args_is_help=True)


@app.command("list")
def session_list(
    lab: Path = LabOption,
    last: int = typer.Option(20, "--last", min=1, help="How many of the newest sessions."),
) -> None:
    """The newest sessions in the lab's data folder, with each node's state and pairs."""
    from controller.operator.sessions import list_sessions

    config = load_config(lab)
    rows = list_sessions(config.data_dir, last)
    if not rows:
        console.print(f"no sessions in {config.data_dir}")
        return
    table = Table(title=f"sessions of {config.lab.name} (newest first)")
    for column in ("session", "protocol", "initiator", "node", "state", "delivered", "discarded"):
        table.add_column(
            column, justify="right" if column in ("delivered", "discarded") else "left"
        )
    for row in rows:
        for k, view in enumerate(sorted(row.views, key=lambda v: v.role != "initiator")):
            table.add_row(
                row.session if k == 0 else "",
                row.protocol if k == 0 else "",
                row.initiator if k == 0 else "",
                view.station,
                view.state + (f" ({view.reason})" if view.reason else ""),
                str(view.delivered),
                str(view.discarded),
            )
    console.print(table)


def _initiator_client(lab: Path, session: str):
    from controller.operator.client import NodeClient
    from controller.operator.sessions import initiator_of

    config = load_config(lab)
    try:
        return NodeClient.for_lab(config, initiator_of(config.data_dir, session), timeout_s=30)
    except QnodeError as e:
        raise fail(str(e)) from None


@app.command("attach")
def session_attach(
    session: str = typer.Argument(..., help="The session id."), lab: Path = LabOption
) -> None:
    """The live view of a running session again (Ctrl-C detaches; `session abort` stops it)."""
    from controller.operator.entangle import follow

    with _initiator_client(lab, session) as client:
        try:
            summary = client.session(session)
            if summary["state"] == "running":
                summary = follow(client, session, summary["pairs_requested"], console)
        except KeyboardInterrupt:
            console.print(f"detached; the session runs on (`qnode session abort {session}`)")
            raise typer.Exit(130) from None
        except QnodeError as e:
            raise fail(str(e)) from None
    stats = summary["stats"]
    console.print(
        f"session {session}: {summary['state']}"
        + (f" ({summary['reason']})" if summary["reason"] else "")
        + f", {stats['delivered']} delivered, {stats['discarded']} discarded -> {summary['file']}"
    )


@app.command("abort")
def session_abort(
    session: str = typer.Argument(..., help="The session id."), lab: Path = LabOption
) -> None:
    """Abort a running session on both nodes and the midpoint (its files closed as aborted)."""
    from controller.operator.entangle import abort_session

    with _initiator_client(lab, session) as client:
        try:
            summary = abort_session(client, session, console)
        except QnodeError as e:
            raise fail(str(e)) from None
    console.print(f"session {session}: {summary['state']} ({summary['reason'] or 'ok'})")
