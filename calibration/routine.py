"""A calibration routine: acquisition -> fit -> verdict -> update (as Qibocal's Routine).

A routine declares what it depends on and which parameters it updates, offers a cheap quick
check of the stored values, acquires data with sweeps run on the node, fits them and decides.
Only an accepted analysis writes parameters; a failed or rejected one writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from calibration.interface import Acquisition, LinkAccess, MidpointAccess, NodeAccess
from qnode.errors import QnodeError

IN_SPEC, UPDATED, FAILED, SKIPPED = "in spec", "updated", "failed", "skipped"


@dataclass
class Analysis:
    values: dict[str, float]
    accepted: bool
    reason: str
    quality: float | None = None
    info: dict = field(default_factory=dict)
    plot: Callable[[Path, str], None] | None = None
    """plot(path, title) draws data, fit and the chosen value."""


@dataclass
class Outcome:
    routine: str
    verdict: str
    reason: str
    changes: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    quality: float | None = None
    plot: str | None = None
    run_ids: list[str] = field(default_factory=list)


class Routine:
    name: ClassVar[str]
    title: ClassVar[str]
    depends: ClassVar[tuple[str, ...]] = ()
    reads: ClassVar[tuple[str, ...]] = ()
    updates: ClassVar[tuple[str, ...]] = ()
    platforms: ClassVar[tuple[str, ...]] = ("nv", "ion")
    scope: ClassVar[str] = "node"
    """'node': parameters of the node; 'midpoint': parameters of the heralding station."""
    needs_midpoint: ClassVar[bool] = False
    needs_link: ClassVar[bool] = False
    """Runs entanglement sessions with the peer node (both daemons and the midpoint's)."""

    def updated_names(self, node: NodeAccess) -> tuple[str, ...]:
        return self.updates

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        """(in spec?, why). Called only when every updated parameter has a stored value."""
        return False, "no quick check: full calibration"

    def acquire(self, node: NodeAccess) -> list[Acquisition]:
        raise NotImplementedError

    def analyse(self, node: NodeAccess, data: list[Acquisition]) -> Analysis:
        raise NotImplementedError


def bright_fraction(acq: Acquisition, threshold: float, readout: int = 0):
    """P(counts >= threshold) per point over the shots whose check passed."""
    counts = acq.counts[:, :, readout]
    kept = acq.valid.sum(axis=1)
    safe = kept.clip(min=1)
    return ((counts >= threshold) & acq.valid).sum(axis=1) / safe


class Station(Protocol):
    """A node or the midpoint, as far as their stored parameters go."""

    def stored(self, name: str) -> float | None: ...


def stored_value(station: Station, name: str) -> float:
    """A stored value that a quick check compares with. The graph runs a quick check only when
    every value its routine updates is stored, so a missing one fails the quick check."""
    value = station.stored(name)
    if value is None:
        raise QnodeError(f"{name} has no stored value")
    return value


def midpoint_of(node: NodeAccess) -> MidpointAccess:
    """The lab's midpoint, for a routine that needs it (the graph skips it without one)."""
    if node.midpoint is None:
        raise QnodeError(f"{node.node}: no midpoint to measure with (no midpoint daemon reached)")
    return node.midpoint


def link_of(node: NodeAccess) -> LinkAccess:
    """Sessions with the peer, for a link routine (the graph skips it without them)."""
    if node.link is None:
        raise QnodeError(f"{node.node}: no sessions with the peer (its daemon and the midpoint's)")
    return node.link
