"""What the link layer needs of its node, as a small typed interface: the node daemon
implements it (controller/node/link_port.py); a test can implement it without instruments.

The link layer never reaches into the daemon: it runs round programs, forwards heralds to the
sequencer, reads calibrated parameters, the lab file and the parameter snapshot for its
session files only through this (it writes the files itself, controller/data/sessionfile.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from sequences.operations import Sequence


class RoundRun(Protocol):
    """A prepared run: compiled and the node claimed, not started."""

    @property
    def run_id(self) -> str: ...


class RunOutcome(Protocol):
    @property
    def status(self) -> str: ...  # completed, aborted, failed

    @property
    def reason(self) -> str: ...


RunT = TypeVar("RunT", bound=RoundRun)


class NodeView(Protocol[RunT]):
    """A node, as the link layer uses it; RunT is what its `prepare` returns and its
    `execute` takes."""

    @property
    def name(self) -> str: ...

    @property
    def platform(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...

    def parameters(self, station: str) -> dict[str, float]:
        """The current calibrated values of a station of this lab (this node, its peer, the
        midpoint): they share one parameter store."""
        ...

    def snapshot(self) -> dict[str, dict]:
        """This node's parameters with their provenance, for a session file."""
        ...

    def lab_text(self) -> str:
        """The lab file as text, for a session file."""
        ...

    def busy_with(self) -> str | None:
        """Why the node cannot start a session now (a run), or None."""
        ...

    async def prepare(self, sequence: Sequence) -> RunT:
        """Compile and claim the node (a bad program fails here, before anything moves)."""
        ...

    async def execute(self, run: RunT, on_events: Callable[[list], None]) -> RunOutcome:
        """Run it in the node's worker; `on_events` sees the sequencer's events as they
        arrive, in the worker's thread."""
        ...

    def abort(self) -> None:
        """Stop the current run (the session is ending)."""
        ...

    def send_herald(self, outcome: str, port: int = 0) -> None:
        """Software heralding: an attempt's outcome to the sequencer's herald input of the
        link's port (blocking)."""
        ...
