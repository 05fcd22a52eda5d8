"""`qnode network ...`: end-to-end pairs, GHZ states and teleportation between nodes that
share no link, through the repeater (controller.operator.network)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from controller.cli.app import LabOption, ResourceMapOption, console, fail, load_config
from qnode.errors import QnodeError

if TYPE_CHECKING:
    from controller.labconfig import LabConfig

app = typer.Typer(
    help="Networks of three nodes: end-to-end pairs, GHZ states, teleportation.",
    no_args_is_help=True,
)

PROTOCOLS = {"single-click": "single_click", "barrett-kok": "barrett_kok"}
ProtocolOption = typer.Option(
    "single-click", "--protocol", help="The links' protocol: single-click or barrett-kok."
)
FidelityOption = typer.Option(
    0.0, "--fidelity-min", help="Each link's minimum fidelity (its alpha is chosen to meet it)."
)
DeadlineOption = typer.Option(600.0, "--deadline", help="Give up after this (s).")


def _link_args(protocol: str, fidelity_min: float, deadline_s: float) -> dict[str, Any]:
    if protocol not in PROTOCOLS:
        raise fail(f"--protocol {protocol!r}: {' or '.join(PROTOCOLS)}", 2)
    if not (math.isfinite(fidelity_min) and 0.0 <= fidelity_min < 1.0):
        raise fail(f"--fidelity-min {fidelity_min}: must be in [0, 1)", 2)
    if not (math.isfinite(deadline_s) and deadline_s > 0):
        raise fail(f"--deadline {deadline_s}: must be a positive number of seconds", 2)
    return {"protocol": PROTOCOLS[protocol], "fidelity_min": fidelity_min, "deadline_s": deadline_s}


def _run(
    application: str,
    check: Callable[[LabConfig], object],
    lab: Path,
    resource_map: Path | None,
    link: tuple[str, float, float],
    **args: Any,
) -> None:
    """One `qnode network` command: the link options (protocol, minimum fidelity, deadline)
    checked, then the nodes it names (`check` on the lab: its QnodeError a usage error,
    exit 2); the session run on the daemons, its state the exit code (130 aborted, 1 not
    completed or the three nodes disagreeing)."""
    from controller.operator.network import network_command

    link_args = _link_args(*link)
    config = load_config(lab)
    try:
        check(config)
    except QnodeError as e:
        raise fail(str(e), 2) from None
    if resource_map is None and any(inst.simulated for _, _, inst in config.all_instruments()):
        resource_map = config.resource_map_path
    try:
        report = network_command(config, resource_map, console, application, **args, **link_args)
    except QnodeError as e:
        raise fail(str(e)) from None
    state = report.summary["state"]
    if state == "aborted":
        raise typer.Exit(130)
    if state != "completed" or not report.agree:
        raise typer.Exit(1)


@app.command("entangle")
def entangle(
    ends: tuple[str, str] = typer.Option(..., "--ends", help="The two end nodes, e.g. A C."),
    pairs: int = typer.Option(..., "--pairs", min=1, max=100_000, help="Pairs to deliver."),
    verify: bool = typer.Option(False, "--verify", help="Measure in XX, YY, ZZ: the fidelity."),
    protocol: str = ProtocolOption,
    fidelity_min: float = FidelityOption,
    deadline_s: float = DeadlineOption,
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """End-to-end entangled pairs between two nodes through the node linked to both."""
    from controller.operator.network import repeater_between

    link = (protocol, fidelity_min, deadline_s)
    args = {"ends": ends, "pairs": pairs, "verify": verify}
    _run("entangle", lambda c: repeater_between(c, *ends), lab, resource_map, link, **args)


@app.command("ghz")
def ghz(
    shots: int = typer.Option(..., "--shots", min=1, max=100_000, help="GHZ states to make."),
    verify: bool = typer.Option(
        False, "--verify", help="Measure in the five stabiliser settings: the GHZ fidelity."
    ),
    repeater: str = typer.Option("B", "--repeater", help="The node linked to both ends."),
    protocol: str = ProtocolOption,
    fidelity_min: float = FidelityOption,
    deadline_s: float = DeadlineOption,
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """GHZ states on (end, the repeater's memory, end), as Pompili et al. 2021 make them."""
    from controller.operator.network import ghz_ends

    link = (protocol, fidelity_min, deadline_s)
    args = {"shots": shots, "verify": verify, "repeater": repeater}
    _run("ghz", lambda c: ghz_ends(c, repeater), lab, resource_map, link, **args)


@app.command("teleport")
def teleport(
    sender: str = typer.Option(..., "--from", help="The node that teleports."),
    receiver: str = typer.Option(..., "--to", help="The node that receives."),
    states: str = typer.Option("cardinal", "--states", help="cardinal: the six +-X, +-Y, +-Z."),
    shots: int = typer.Option(
        10, "--shots", min=2, max=10_000, help="Teleportations per state (at least 2)."
    ),
    protocol: str = ProtocolOption,
    fidelity_min: float = FidelityOption,
    deadline_s: float = DeadlineOption,
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Teleport the six cardinal states through the repeater: the average fidelity, 95 % CI."""
    from controller.operator.network import repeater_between

    if states != "cardinal":
        raise fail(f"--states {states!r}: cardinal (the one set so far)", 2)
    link = (protocol, fidelity_min, deadline_s)
    args = {"sender": sender, "receiver": receiver, "shots": shots, "states": states}
    _run(
        "teleport", lambda c: repeater_between(c, sender, receiver), lab, resource_map, link, **args
    )
