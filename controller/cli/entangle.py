"""`qnode entangle`: N heralded pairs between the two nodes (controller.operator.entangle)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from controller.cli.app import (
    LabOption,
    ResourceMapOption,
    console,
    fail,
    load_config,
    require_memory_node,
)
from qnode.errors import QnodeError


def entangle(
    lab: Path = LabOption,
    pairs: int = typer.Option(..., "--pairs", min=1, help="Pairs to deliver."),
    protocol: str | None = typer.Option(
        None,
        "--protocol",
        help="single-click, barrett-kok (NV labs) or two-photon (ion labs); default: the "
        "first the lab's midpoint detectors herald.",
    ),
    fidelity_min: float = typer.Option(
        0.0, "--fidelity-min", min=0.0, max=0.999, help="Alpha is chosen to meet it."
    ),
    verify: bool = typer.Option(False, "--verify", help="Measure in XX, YY, ZZ: the fidelity."),
    basis: str = typer.Option(
        "keep", "--basis", help="Without --verify: keep the pairs, or measure in X, Y or Z."
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Override the chosen alpha."),
    deadline_s: float = typer.Option(600.0, "--deadline", help="Give up after this (s)."),
    node: str = typer.Option("A", "--node", help="The initiating node."),
    peer: str | None = typer.Option(
        None,
        "--peer",
        help="The node to entangle with (through their link's midpoint); needed only when "
        "the initiating node has several links.",
    ),
    delivery: str | None = typer.Option(
        None,
        "--delivery",
        help="This node's delivery: keep, X, Y, Z, verify, memory (its half moved into its "
        "memory qubit at the herald; one pair), bsm or ghz (its half and the stored pair's "
        "measured in the Bell basis, or its GHZ operation, at the herald; one pair); default: "
        "--verify / --basis.",
    ),
    peer_delivery: str | None = typer.Option(
        None, "--peer-delivery", help="The peer's delivery (default: the same as this node's)."
    ),
    heralding: str = typer.Option(
        "hardware",
        "--heralding",
        help="hardware (the herald line) or software (every attempt's outcome via ZeroMQ).",
    ),
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Heralded entanglement between two neighbouring nodes: N pairs, a live view, a
    summary."""
    from controller.operator.entangle import entangle_command, lab_protocols, resolve_peer

    config = load_config(lab)
    from controller.link.vocabulary import BASES, DELIVERY, HERALDING, PROTOCOLS

    require_memory_node(config, node, lab)
    try:
        peer = resolve_peer(config, node, peer)
    except QnodeError as e:
        raise fail(str(e), 2) from None
    midpoint = config.link_between(node, peer)[1].midpoint
    names = {p.replace("_", "-"): p for p in PROTOCOLS}
    possible = [p.replace("_", "-") for p in lab_protocols(config, midpoint)]
    if protocol is None:
        if not possible:
            raise fail("the lab's midpoint detectors herald no protocol", 2)
        protocol = possible[0]
    if protocol not in names:
        raise fail(f"--protocol {protocol!r}: {' or '.join(names)}", 2)
    if protocol not in possible:
        raise fail(
            f"--protocol {protocol}: the detectors of {config.lab.name}'s midpoint {midpoint} "
            "herald "
            f"{' or '.join(possible) or 'none'}",
            2,
        )
    if heralding not in HERALDING:
        raise fail(f"--heralding {heralding!r}: {' or '.join(HERALDING)}", 2)
    if basis not in BASES or basis in ("memory", "bsm", "ghz"):
        raise fail(f"--basis {basis!r}: keep, X, Y or Z (into memory: --delivery memory)", 2)
    for flag, chosen in (("--delivery", delivery), ("--peer-delivery", peer_delivery)):
        if chosen is not None and chosen not in DELIVERY:
            raise fail(f"{flag} {chosen!r}: {', '.join(DELIVERY)}", 2)
    for option, value in (("--deadline", deadline_s), ("--fidelity-min", fidelity_min)):
        if not math.isfinite(value):
            raise fail(f"{option} {value}: must be a number", 2)
    if alpha is not None and not 0 < alpha < 1:  # before any daemon is started for it
        raise fail(f"--alpha {alpha}: must be in (0, 1)", 2)
    if resource_map is None and any(inst.simulated for _, _, inst in config.all_instruments()):
        resource_map = config.resource_map_path
    try:
        report = entangle_command(
            config,
            resource_map,
            console,
            pairs=pairs,
            protocol=names[protocol],
            fidelity_min=fidelity_min,
            delivery=delivery or ("verify" if verify else basis),
            peer_delivery=peer_delivery,
            alpha=alpha,
            deadline_s=deadline_s,
            node=node,
            peer=peer,
            heralding=heralding,
        )
    except QnodeError as e:
        raise fail(str(e)) from None
    if report.summary["state"] == "aborted":
        raise typer.Exit(130)
    if report.summary["state"] != "completed" or not report.agree:
        raise typer.Exit(1)
