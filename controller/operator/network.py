"""`qnode network ...`: end-to-end pairs, GHZ states and teleportation through the repeater,
what an operator runs (and the same from Python: `network_entangle`, `network_ghz`,
`network_teleport` on running daemons; `network_command` starts what is missing).

The repeater (the memory node linked to both ends) runs the session
(controller/network/service.py); this asks it, follows its progress, reads the three nodes'
network session files and reports, with each figure's 95 % interval (estimators.py): the
verified Bell-state fidelity of the end-to-end pairs, the GHZ fidelity against 0.5 (a GHZ
state is genuinely three-partite entangled above it), the teleportation's average fidelity
against the classical 2/3. The network service runs every operation on an electron's half
in its link's program, right after the herald (B's BSM, B's GHZ operation and its memory's
readout, the teleportation sender's BSM: docs/network.md, "Delivery into memory").
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controller.data.networkfile import DELIVERED
from controller.labconfig import LabConfig
from controller.operator.client import NodeClient, NodeRequestError
from controller.operator.daemons import ensure_daemons, terminate
from qnode.errors import QnodeError

POLL_S = 0.25
ABORT_WAIT_S = 30.0
SIMULATION_NOTE = (
    "on a simulated lab the time between two programs is not counted (a stored memory "
    "half would lose little there: milliseconds against its T2 of seconds); how these figures "
    'compare with the simulator\'s own state: docs/network.md, "Delivery into memory"'
)
FIGURE_NAMES = {
    "bell_fidelity": "end-to-end Bell-state fidelity (psi+)",
    "ghz_fidelity": "GHZ fidelity",
    "ghz_bound": "GHZ fidelity bound (XXX, ZZI, IZZ)",
    "teleport_fidelity": "teleportation average fidelity",
}


@dataclass
class NetworkReport:
    summary: dict[str, Any]
    """The repeater's summary (counts, figures with their intervals, file)."""
    data: dict[str, dict[str, Any]]
    """Each node's network session file, read back (rows and counts)."""
    started_daemons: list[str] = field(default_factory=list)

    def delivered_ids(self, node: str) -> set[str]:
        pairs = self.data[node]["pairs"]
        return {r["id"].decode() for r in pairs if r["status"] == DELIVERED}

    @property
    def agree(self) -> bool:
        """The three nodes hold the same delivered end-to-end pairs (or GHZ shots)."""
        sets = [self.delivered_ids(n) for n in self.data]
        return all(s == sets[0] for s in sets)


def memory_neighbours(lab: LabConfig, node: str) -> list[str]:
    return [link.peer(node) for link in lab.links_of(node).values()]


def repeater_between(lab: LabConfig, first: str, second: str) -> str:
    """The memory node linked to both ends (QnodeError naming the lab's links if none)."""
    for end in (first, second):
        if end not in lab.nodes or lab.nodes[end].kind != "memory":
            raise QnodeError(f"{end!r} is not a memory node of {lab.lab.name}")
    if first == second:
        raise QnodeError(f"the ends are the same node {first}")
    candidates = [
        n
        for n, c in lab.nodes.items()
        if c.kind == "memory" and {first, second} <= set(memory_neighbours(lab, n))
    ]
    if not candidates:
        raise QnodeError(
            f"no node of {lab.lab.name} has a link to both {first} and {second} (links: "
            + ", ".join(f"{a}-{b}" for a, b in (link.nodes for link in lab.all_links.values()))
            + ")"
        )
    return candidates[0]


def network_stations(lab: LabConfig, ends: tuple[str, str], repeater: str) -> list[str]:
    """The five stations a network session needs: the three nodes and the two midpoints."""
    midpoints = [lab.link_between(repeater, end)[1].midpoint for end in ends]
    return [ends[0], repeater, ends[1], *midpoints]


def ghz_ends(lab: LabConfig, repeater: str) -> tuple[str, str]:
    peers = memory_neighbours(lab, repeater)
    if len(peers) != 2:
        raise QnodeError(
            f"node {repeater} has {len(peers)} neighbours ({', '.join(peers) or 'none'}): "
            "a GHZ state needs exactly two (name the repeater)"
        )
    return peers[0], peers[1]


def follow(client: NodeClient, session: str, total: int, console: Console | None) -> dict:
    """Poll the repeater's summary until the session ends; a progress bar on `console`."""
    if console is None:
        while True:
            summary = client.request("network_session", session=session)["session"]
            if summary["state"] != "running":
                return summary
            time.sleep(POLL_S)
    progress = Progress(
        TextColumn("[bold]{task.fields[what]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[rates]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        summary = client.request("network_session", session=session)["session"]
        task = progress.add_task("network", total=total, what=summary["application"], rates="")
        while True:
            progress.update(task, completed=min(summary["done"], total), rates=_rates(summary))
            if summary["state"] != "running":
                return summary
            time.sleep(POLL_S)
            summary = client.request("network_session", session=session)["session"]


def _rates(summary: dict) -> str:
    text = (
        f"{summary['rate_per_wall_s']:.2f}/s wall, discarded {summary['discarded']}, "
        f"link failures {summary['link_failures']}"
    )
    for name, figure in summary["figures"].items():
        text += (
            f", {name.split('_')[0]} F {figure['value']:.3f}±{figure['high'] - figure['value']:.3f}"
        )
    return text


def run_network(
    lab: LabConfig,
    kind: str,
    repeater: str,
    console: Console | None = None,
    **fields: Any,
) -> NetworkReport:
    """One network session through running daemons: ask the repeater, follow it, read the
    three nodes' files. Ctrl-C aborts it on all three nodes."""
    with NodeClient.for_lab(lab, repeater, timeout_s=30) as client:
        started = client.request(kind, **fields)["session"]
        session = started["session"]
        if console is not None:
            console.print(
                f"network session {session}: {started['application']} through {repeater} "
                f"({' - '.join(started['nodes'])}), {started['requested']} asked"
            )
        try:
            summary = follow(client, session, started["requested"], console)
        except KeyboardInterrupt:
            if console is not None:
                console.print(f"[yellow]aborting network session {session}...[/]")
            with contextlib.suppress(NodeRequestError):
                client.request("network_abort", session=session)
            limit = time.monotonic() + ABORT_WAIT_S
            summary = client.request("network_session", session=session)["session"]
            while summary["state"] == "running" and time.monotonic() < limit:
                time.sleep(POLL_S)
                summary = client.request("network_session", session=session)["session"]
        data = {}
        for node in summary["nodes"]:
            with NodeClient.for_lab(lab, node, timeout_s=30) as node_client:
                data[node] = node_client.request("network_session_data", session=session)["data"]
    return NetworkReport(summary, data)


def _link_fields(protocol: str, fidelity_min: float, deadline_s: float) -> dict[str, Any]:
    return {"protocol": protocol, "fidelity_min": fidelity_min, "deadline_s": deadline_s}


def network_entangle(
    lab: LabConfig,
    ends: tuple[str, str],
    pairs: int,
    *,
    verify: bool = False,
    protocol: str = "single_click",
    fidelity_min: float = 0.0,
    deadline_s: float = 600.0,
    console: Console | None = None,
) -> NetworkReport:
    """N end-to-end pairs between `ends` through the node linked to both; `verify`: both
    ends measure each pair in XX, YY or ZZ in turn (the Bell-state fidelity)."""
    repeater = repeater_between(lab, *ends)
    return run_network(
        lab,
        "network_entangle",
        repeater,
        console,
        ends=list(ends),
        pairs=pairs,
        verify=verify,
        **_link_fields(protocol, fidelity_min, deadline_s),
    )


def network_ghz(
    lab: LabConfig,
    shots: int,
    *,
    repeater: str = "B",
    verify: bool = True,
    protocol: str = "single_click",
    fidelity_min: float = 0.0,
    deadline_s: float = 600.0,
    console: Console | None = None,
) -> NetworkReport:
    """N GHZ states on (first end, the repeater's memory, second end); `verify`: measured in
    the five stabiliser settings in turn (the fidelity and its bound)."""
    ends = ghz_ends(lab, repeater)
    return run_network(
        lab,
        "network_ghz",
        repeater,
        console,
        shots=shots,
        verify=verify,
        ends=list(ends),
        **_link_fields(protocol, fidelity_min, deadline_s),
    )


def network_teleport(
    lab: LabConfig,
    sender: str,
    receiver: str,
    shots: int,
    *,
    states: str = "cardinal",
    protocol: str = "single_click",
    fidelity_min: float = 0.0,
    deadline_s: float = 600.0,
    console: Console | None = None,
) -> NetworkReport:
    """Teleport each of the six cardinal states `shots` times from `sender` to `receiver`
    over end-to-end pairs (the average fidelity against 2/3)."""
    repeater = repeater_between(lab, sender, receiver)
    fields = {"from": sender, "to": receiver, "shots": shots, "states": states}
    return run_network(
        lab,
        "network_teleport",
        repeater,
        console,
        **fields,
        **_link_fields(protocol, fidelity_min, deadline_s),
    )


def render(report: NetworkReport, console: Console) -> None:
    s = report.summary
    table = Table(title=f"network session {s['session']} ({s['application']}): {s['state']}")
    table.add_column("")
    table.add_column("measured")
    table.add_column("")
    table.add_row(
        "done",
        f"{s['done']} of {s['requested']} asked",
        "the three nodes agree" if report.agree else "[red]THE NODES DISAGREE[/]",
    )
    table.add_row(
        "end-to-end attempts",
        f"{s['attempted']}: {s['delivered']} delivered, {s['discarded']} discarded",
        ", ".join(f"{k}: {v}" for k, v in s["reasons"].items()) or "",
    )
    table.add_row("link pairs not made", str(s["link_failures"]), "")
    table.add_row("rate", f"{s['rate_per_wall_s']:.2f} per wall second", "")
    for name, f in s["figures"].items():
        verdict = "above" if f["above"] else "[yellow]not above[/]"
        table.add_row(
            FIGURE_NAMES.get(name, name),
            f"{f['value']:.3f}  [95 % CI {f['low']:.3f}..{f['high']:.3f}] ({f['shots']} shots)",
            f"{verdict} {f['bound']:.3f}",
        )
    for node, data in report.data.items():
        table.add_row(f"counts {node}", _counts(data["ledger"]), "")
    table.add_row("session file (repeater)", s["file"], "")
    console.print(table)
    if s["figures"]:
        console.print(f"[yellow]note:[/] {SIMULATION_NOTE}")
    if s["reason"]:
        console.print(f"reason: {s['reason']}")


def _counts(ledger: dict[str, int]) -> str:
    return (
        f"attempted {ledger['attempted']}, delivered {ledger['delivered']}, discarded "
        f"{ledger['discarded']}, refused {ledger['refused']}, open {ledger['open']}"
    )


def network_command(
    lab: LabConfig,
    resource_map: Path | None,
    console: Console,
    application: str,
    **args: Any,
) -> NetworkReport:
    """Start the five daemons that are not running, run the session, stop what was started,
    print the summary."""
    if application == "entangle":
        ends = tuple(args["ends"])
        repeater = repeater_between(lab, *ends)
    elif application == "teleport":
        ends = (args["sender"], args["receiver"])
        repeater = repeater_between(lab, *ends)
    else:
        repeater = args["repeater"]
        ends = ghz_ends(lab, repeater)
    stations = network_stations(lab, (ends[0], ends[1]), repeater)
    procs = []
    try:
        with console.status("starting the daemons that are not running..."):
            procs = ensure_daemons(lab, stations, resource_map, lab.data_dir / "logs")
        if application == "entangle":
            report = network_entangle(lab, console=console, **args)
        elif application == "teleport":
            report = network_teleport(lab, console=console, **args)
        else:
            report = network_ghz(lab, console=console, **args)
    finally:
        for proc in reversed(procs):
            terminate(proc)
    render(report, console)
    return report
