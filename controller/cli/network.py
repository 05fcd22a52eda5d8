"""`qnode network ...`: end-to-end pairs, GHZ states and teleportation between nodes that
share no link, through the repeater (controller.operator.network)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SharedOptions:
    """The options every `qnode network` command takes after its own (SHARED_OPTIONS)."""

    protocol: str
    fidelity_min: float
    deadline_s: float
    lab: Path
    resource_map: Path | None

    def run(self, application: str, check: Callable[[LabConfig], object], **args: Any) -> None:
        """The link options checked, then the nodes the command names (`check` on the lab:
        its QnodeError a usage error, exit 2); the session run on the daemons with `args`,
        its state the exit code (130 aborted, 1 not completed or the nodes disagreeing)."""
        from controller.operator.network import network_command

        link = _link_args(self.protocol, self.fidelity_min, self.deadline_s)
        config = load_config(self.lab)
        try:
            check(config)
        except QnodeError as e:
            raise fail(str(e), 2) from None
        resource_map = self.resource_map
        if resource_map is None and any(inst.simulated for _, _, inst in config.all_instruments()):
            resource_map = config.resource_map_path
        try:
            report = network_command(config, resource_map, console, application, **args, **link)
        except QnodeError as e:
            raise fail(str(e)) from None
        state = report.summary["state"]
        if state == "aborted":
            raise typer.Exit(130)
        if state != "completed" or not report.agree:
            raise typer.Exit(1)


SHARED_OPTIONS: dict[str, tuple[Any, Any]] = {
    "protocol": (str, ProtocolOption),
    "fidelity_min": (float, FidelityOption),
    "deadline_s": (float, DeadlineOption),
    "lab": (Path, LabOption),
    "resource_map": (Path | None, ResourceMapOption),
}
"""SharedOptions' fields as typer declares them (name: type, option)."""


def _network_command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a `qnode network` command whose function takes its own options and
    `shared` (SharedOptions): typer sees its own options, then SHARED_OPTIONS (typer has no
    option groups; the command's signature is what it reads)."""

    def register(own: Callable[..., None]) -> Callable[..., None]:
        def command(**options: Any) -> None:
            shared = SharedOptions(**{k: options.pop(k) for k in SHARED_OPTIONS})
            own(**options, shared=shared)

        signature = inspect.signature(own, eval_str=True)
        parameters = [p for p in signature.parameters.values() if p.name != "shared"]
        parameters += [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
            for k, (kind, option) in SHARED_OPTIONS.items()
        ]
        command.__name__, command.__doc__ = own.__name__, own.__doc__
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        app.command(name)(command)
        return command

    return register


@_network_command("entangle")
def entangle(
    ends: tuple[str, str] = typer.Option(..., "--ends", help="The two end nodes, e.g. A C."),
    pairs: int = typer.Option(..., "--pairs", min=1, max=100_000, help="Pairs to deliver."),
    verify: bool = typer.Option(False, "--verify", help="Measure in XX, YY, ZZ: the fidelity."),
    *,
    shared: SharedOptions,
) -> None:
    """End-to-end entangled pairs between two nodes through the node linked to both."""
    from controller.operator.network import repeater_between

    args = {"ends": ends, "pairs": pairs, "verify": verify}
    shared.run("entangle", lambda config: repeater_between(config, *ends), **args)


@_network_command("ghz")
def ghz(
    shots: int = typer.Option(..., "--shots", min=1, max=100_000, help="GHZ states to make."),
    verify: bool = typer.Option(
        False, "--verify", help="Measure in the five stabiliser settings: the GHZ fidelity."
    ),
    repeater: str = typer.Option("B", "--repeater", help="The node linked to both ends."),
    *,
    shared: SharedOptions,
) -> None:
    """GHZ states on (end, the repeater's memory, end), as Pompili et al. 2021 make them."""
    from controller.operator.network import ghz_ends

    args = {"shots": shots, "verify": verify, "repeater": repeater}
    shared.run("ghz", lambda config: ghz_ends(config, repeater), **args)


@_network_command("teleport")
def teleport(
    sender: str = typer.Option(..., "--from", help="The node that teleports."),
    receiver: str = typer.Option(..., "--to", help="The node that receives."),
    states: str = typer.Option("cardinal", "--states", help="cardinal: the six +-X, +-Y, +-Z."),
    shots: int = typer.Option(
        10, "--shots", min=2, max=10_000, help="Teleportations per state (at least 2)."
    ),
    *,
    shared: SharedOptions,
) -> None:
    """Teleport the six cardinal states through the repeater: the average fidelity, 95 % CI."""
    from controller.operator.network import repeater_between

    if states != "cardinal":
        raise fail(f"--states {states!r}: cardinal (the one set so far)", 2)
    args = {"sender": sender, "receiver": receiver, "shots": shots, "states": states}
    shared.run("teleport", lambda config: repeater_between(config, sender, receiver), **args)
