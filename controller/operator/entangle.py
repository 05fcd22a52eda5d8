"""`qnode entangle`: what an operator runs. Starts (or finds) the daemons of both nodes and the
midpoint, asks the initiating node for N pairs, shows progress, verifies, and reports.

Daemons this command started are stopped at the end; running ones are left running.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from calibration.fits import FitFailed, fit_preparation
from calibration.routines.readout import pure_readout
from controller.data.sessionfile import DELIVERED
from controller.labconfig import LabConfig
from controller.link.plan import memory_still_there
from controller.link.vocabulary import PROTOCOLS
from controller.midpoint.herald_logic import missing_detectors
from controller.operator.client import NodeClient, NodeRequestError
from controller.operator.daemons import ensure_daemons, link_stations, terminate
from controller.operator.verify import Z95, Verification, verify
from qnode.errors import QnodeError
from sequences.operations import Readout, Sequence, SpinInit, memory_check, pi_pulse

POLL_S = 0.25


@dataclass
class EntangleReport:
    summary: dict
    peer_summary: dict
    delivered_ids: dict[str, set[str]]
    verification: Verification | None
    files: dict[str, str]
    started_daemons: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        sets = list(self.delivered_ids.values())
        return all(s == sets[0] for s in sets)

    @property
    def delivered(self) -> int:
        return len(next(iter(self.delivered_ids.values())))


READOUT_SHOTS = 2000


def readout_of(client: NodeClient, platform: str = "nv") -> tuple[float, float] | None:
    """The readout's own F0, F1 for the verification's readout correction, measured now in the
    verification's own conditions: the memory checked before and after its readout (as the
    entanglement rounds do), so that a memory that lost its charge state or its cooling is
    not mistaken for a readout error. What prepared |0> and |1> read is the readout's error
    mixed with the preparation's (an initialisation error is the state's, not the readout's:
    corrected away it would bias the verified fidelity up); it is taken out with the
    calibrated init_fidelity (routine 'readout'; the pi pulse's error is left in F1, which
    under-corrects a little), or, if none is stored, with the preparation fit of these
    shots' histograms."""
    params = client.params()
    threshold = params["readout_threshold"]["value"]
    check = memory_check(platform)
    after = memory_still_there(check)
    shots = {
        "f0": Sequence("verify_f0", (check, SpinInit(), Readout(), after), READOUT_SHOTS),
        "f1": Sequence(
            "verify_f1", (check, SpinInit(), pi_pulse(), Readout(), after), READOUT_SHOTS
        ),
    }
    counts = {}
    for name, sequence in shots.items():
        data = client.run(sequence)
        counts[name] = data.counts[0, :, 0][data.valid[0]]
        if len(counts[name]) < READOUT_SHOTS // 4:
            return None
    bright0 = float(np.mean(counts["f0"] >= threshold))
    dark1 = float(np.mean(counts["f1"] < threshold))
    init = (params.get("init_fidelity") or {}).get("value")
    if init is not None:
        return pure_readout(bright0, dark1, init, init)
    try:
        prep = fit_preparation(counts["f0"], counts["f1"])
    except FitFailed:
        return bright0, dark1  # uncorrected for the preparation: biased up a little
    return pure_readout(bright0, dark1, prep.init, prep.prep1)


def measure_readout(lab: LabConfig, clients: dict[str, NodeClient]) -> dict:
    return {n: readout_of(c, lab.nodes[n].platform or "nv") for n, c in clients.items()}


def peers_of(lab: LabConfig, node: str) -> list[str]:
    """The memory nodes `node` shares a link with (each through its link's midpoint)."""
    return [link.peer(node) for link in lab.links_of(node).values() if node in link.nodes]


def resolve_peer(lab: LabConfig, node: str, peer: str | None) -> str:
    """The peer of a session: the one named (a neighbour of `node`), or the only one.
    QnodeError listing the possible peers if there are several and none is named."""
    peers = peers_of(lab, node)
    if peer is not None:
        if peer not in peers:
            raise QnodeError(
                f"node {node} has no link to {peer!r} in {lab.lab.name} "
                f"(its peers: {', '.join(peers) or 'none'})"
            )
        return peer
    if len(peers) == 1:
        return peers[0]
    if not peers:
        raise QnodeError(f"node {node} has no link in {lab.lab.name}: no peer to entangle with")
    raise QnodeError(
        f"node {node} has {len(peers)} peers ({', '.join(peers)}): name one with --peer"
    )


def run_session(
    lab: LabConfig,
    *,
    pairs: int,
    protocol: str,
    fidelity_min: float = 0.0,
    delivery: str = "verify",
    alpha: float | None = None,
    deadline_s: float = 600.0,
    node: str = "A",
    console: Console | None = None,
    readout: dict[str, tuple[float, float] | None] | None = None,
    heralding: str = "hardware",
    peer: str | None = None,
    peer_delivery: str | None = None,
) -> EntangleReport:
    """One session through running daemons; progress on `console` if given. `readout`:
    F0/F1 per node measured beforehand (else the verification measures them). `peer`: the
    node to entangle with, needed only where `node` has several (resolve_peer)."""
    peer = resolve_peer(lab, node, peer)
    with (
        NodeClient.for_lab(lab, node, timeout_s=30) as client,
        NodeClient.for_lab(lab, peer, timeout_s=30) as peer_client,
    ):
        if delivery == "verify" and readout is None:
            # measured first, so that the live view can show the verified fidelity so far
            if console is not None:
                console.print("measuring F0/F1 of both nodes for the readout correction...")
            readout = measure_readout(lab, {node: client, peer: peer_client})
        started = client.entangle(
            pairs,
            protocol,
            fidelity_min,
            deadline_s,
            delivery,
            alpha,
            peer,
            heralding,
            peer_delivery=peer_delivery,
        )
        session = started["session"]
        expected = started["expected"]
        if console is not None:
            for note in expected["notes"]:
                console.print(f"[yellow]note:[/] {note}")
            alpha_text = f"alpha {expected['alpha']:.4f}, " if expected["alpha"] else ""
            console.print(
                f"session {session}: {protocol}, {alpha_text}expected fidelity "
                f"{expected['fidelity']:.3f}, success probability {expected['p_success']:.3g}"
            )
        live = (
            (
                lambda: verify(
                    *(c.session_data(session)["pairs"] for c in (client, peer_client)),
                    readout[node],
                    readout[peer],
                    READOUT_SHOTS,
                )
            )
            if delivery == "verify"
            else None
        )
        try:
            summary = follow(client, session, pairs, console, live)
        except KeyboardInterrupt:
            summary = abort_session(client, session, console)
        data = {node: client.session_data(session), peer: peer_client.session_data(session)}
        peer_summary = peer_client.session(session)
        ids = {
            n: {r["id"].decode() for r in d["pairs"] if r["status"] == DELIVERED}
            for n, d in data.items()
        }
        verification = None
        if delivery == "verify":
            verification = verify(
                data[node]["pairs"],
                data[peer]["pairs"],
                readout[node],
                readout[peer],
                READOUT_SHOTS,
            )
        files = {node: summary["file"], peer: peer_summary["file"]}
    return EntangleReport(summary, peer_summary, ids, verification, files)


LIVE_VERIFY_S = 1.0
ABORT_WAIT_S = 30.0


def abort_session(client: NodeClient, session: str, console: Console | None) -> dict:
    """Ctrl-C: the session ends on both nodes and the midpoint (the initiator stops its run,
    tells its peer and the midpoint), its files closed as aborted; the pairs so far are kept."""
    if console is not None:
        console.print(f"[yellow]aborting session {session} on both nodes and the midpoint...[/]")
    with contextlib.suppress(NodeRequestError):  # it ended meanwhile: nothing to abort
        client.abort(session)
    return client.wait_session(session, timeout_s=ABORT_WAIT_S)


def follow(
    client: NodeClient,
    session: str,
    pairs: int,
    console: Console | None,
    live: Callable[[], Verification] | None = None,
) -> dict:
    """Live progress; with `live`, the verified fidelity of the pairs so far (each second)."""
    if console is None:
        return client.wait_session(session, poll_s=POLL_S)
    estimate, last = "", 0.0
    progress = Progress(
        TextColumn("[bold]pairs"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[rates]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("pairs", total=pairs, rates="")
        while True:
            summary = client.session(session)
            stats = summary["stats"]
            if live is not None and time.monotonic() - last > LIVE_VERIFY_S and stats["delivered"]:
                last = time.monotonic()
                v = live()
                if np.isfinite(v.fidelity):
                    estimate = f"F {v.fidelity:.3f}±{Z95 * v.sigma:.3f} (model "
            progress.update(
                task,
                completed=min(stats["delivered"], pairs),
                rates=(
                    f"{summary['rate_per_virtual_s']:.1f}/s virtual, "
                    f"{summary['rate_per_wall_s']:.1f}/s wall, "
                    f"p {summary['p_success']:.3g}, discarded {stats['discarded']}, "
                    + (estimate or "F model ")
                    + f"{summary['expected']['fidelity']:.3f}"
                    + (")" if estimate else "")
                ),
            )
            if summary["state"] != "running":
                return summary
            time.sleep(POLL_S)


def p_success_sigma(summary: dict) -> float:
    n, p = summary["stats"]["attempts"], summary["p_success"]
    return float(np.sqrt(p * (1 - p) / n)) if n else float("inf")


def render(report: EntangleReport, console: Console) -> None:
    s, e = report.summary, report.summary["expected"]
    stats = s["stats"]
    table = Table(title=f"session {s['session']} ({s['protocol']}): {s['state']}")
    table.add_column("")
    table.add_column("measured")
    table.add_column("expected (calibrated values)")
    table.add_row(
        "pairs delivered",
        f"{report.delivered} of {s['pairs_requested']} asked",
        "both nodes agree" if report.agree else "[red]THE NODES DISAGREE[/]",
    )
    reasons = ", ".join(f"{k}: {v}" for k, v in stats["reasons"].items()) or "none"
    table.add_row("discarded", f"{stats['discarded']} ({reasons})", "")
    table.add_row(
        "success per attempt",
        f"{s['p_success']:.3g} ± {p_success_sigma(s):.2g} ({stats['attempts']} attempts)",
        f"{e['p_success']:.3g}",
    )
    table.add_row(
        "rate",
        f"{s['rate_per_virtual_s']:.2f} pairs/s virtual, {s['rate_per_wall_s']:.1f} pairs/s wall",
        "",
    )
    v = report.verification
    if v is not None:
        corr = ", ".join(f"{b}{b} {c.value:+.3f}±{c.sigma:.3f}" for b, c in v.correlators.items())
        table.add_row(
            "Bell-state fidelity" + ("" if v.corrected else " (readout not corrected)"),
            f"{v.fidelity:.3f}  [95 % CI {v.low:.3f}..{v.high:.3f}]",
            f"{e['fidelity']:.3f}",
        )
        table.add_row("correlators", corr, "")
    if e["alpha"]:
        table.add_row("alpha", f"{e['alpha']:.4f}", "")
    for name, path in report.files.items():
        table.add_row(f"session file {name}", path, "")
    console.print(table)
    if v is not None:
        for warning in v.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
    if s["reason"]:
        console.print(f"reason: {s['reason']}")


def lab_protocols(lab: LabConfig, midpoint: str | None = None) -> list[str]:
    """The protocols a midpoint's detectors can herald (`midpoint`, or every midpoint of the
    lab: those all of them herald), the lab's default first: an NV lab (psi_plus,
    psi_minus) single_click and barrett_kok, an ion lab (four detectors behind polarising
    beam splitters) two_photon."""
    names = [midpoint] if midpoint else [n for n, c in lab.nodes.items() if c.kind == "midpoint"]
    if not names:
        return []
    return [
        p
        for p in PROTOCOLS
        if not any(missing_detectors(p, dict(lab.nodes[m].channels.detectors)) for m in names)
    ]


def entangle_command(
    lab: LabConfig,
    resource_map: Path | None,
    console: Console,
    **session_args,
) -> EntangleReport:
    """Start what is missing (the two nodes and their link's midpoint), run the session,
    stop what was started."""
    node = session_args.setdefault("node", "A")
    peer = session_args["peer"] = resolve_peer(lab, node, session_args.get("peer"))
    stations = link_stations(lab, node, peer)
    procs = []
    try:
        with console.status("starting the daemons that are not running..."):
            procs = ensure_daemons(lab, stations, resource_map, lab.data_dir / "logs")
        report = run_session(lab, console=console, **session_args)
    finally:
        for proc in reversed(procs):
            terminate(proc)
    render(report, console)
    return report
