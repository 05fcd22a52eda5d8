"""What calibration needs of a node, as a Protocol the controller implements.

Calibration imports nothing of the controller (imports point controller -> calibration);
the controller hands a `NodeAccess` to the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from sequences.operations import Sequence, Sweep


class Acquisition(Protocol):
    """A finished run's data (the controller's RunData fits)."""

    run_id: str
    status: str
    axes: dict[str, tuple[np.ndarray, str]]
    counts: np.ndarray  # (points, shots, readouts)
    valid: np.ndarray  # (points, shots)
    check_counts: np.ndarray
    readouts: list[str]
    file: str


class LinkAccess(Protocol):
    """Entanglement with the peer node through the midpoint, for the link routines."""

    peer: str

    def parameters(self, station: str) -> dict[str, float]:
        """A station's calibrated (stored) values: a node, the peer or the midpoint."""

    def pairs(
        self, protocol: str, pairs: int, delivery: str = "verify", alpha: float | None = None
    ) -> dict:
        """Run a session; returns its statistics: heralded, attempts, p_success, delivered,
        and with delivery 'verify' the readout-corrected correlators
        {basis: {n, value, sigma}}, fidelity and its sigma."""


class NodeAccess(Protocol):
    node: str
    platform: str
    awg_peak_v: float
    """The largest pulse amplitude the lab allows (V peak)."""

    @property
    def midpoint(self) -> MidpointAccess | None:
        """The lab's heralding station, if it has one."""

    @property
    def link(self) -> LinkAccess | None:
        """Sessions with the peer node, if its daemon and the midpoint's run."""

    @property
    def plot_dir(self) -> Path | None:
        """Where routines without a run file of their own keep their data and plot."""

    def values(self) -> dict[str, float]:
        """Every parameter a sequence may use now (stored values over defaults)."""

    def stored(self, name: str) -> float | None:
        """The stored (calibrated or set) value, or None if there is only a default."""

    def run(self, sequence: Sequence, sweep: Sweep) -> Acquisition: ...

    def record(
        self,
        name: str,
        value: float,
        *,
        routine: str,
        run_id: str | None,
        fit_quality: float | None,
    ) -> None:
        """Write an accepted value to the parameter store."""

    def annotate(self, acquisition: Acquisition, routine: str, info: dict) -> None:
        """Save the fit and verdict beside the raw data in the run's file."""


class MidpointAccess(Protocol):
    """The heralding station's detectors, as calibration needs them."""

    node: str
    detectors: dict[str, int]
    """detector name (psi_plus, psi_minus) -> tagger input"""

    def start_tags(self) -> None:
        """Arm the time tagger (its start input is every node's excitation sync)."""

    def stop_tags(self) -> np.ndarray:
        """Disarm and return the tags: time_ps, delay_ps (since the last sync), channel."""

    def dark_tags(self, seconds: float) -> np.ndarray:
        """Tags of the detectors alone, for `seconds`."""

    def fringe_sweep(self, points: int, seconds: float) -> tuple[list[float], list[dict]]:
        """The interferometer's reference light at `points` piezo voltages across the lab's
        range: the voltages, and the counts per detector of `seconds` at each."""

    def lock_samples(self, offset_deg: float, seconds: float, samples: int) -> list[dict]:
        """Counts per detector of `seconds` at random times between the midpoint's
        stabilisation bursts (the heralds' schedule), `offset_deg` of piezo from the lock
        point: the phase the heralds see, sampled."""

    def stored(self, name: str) -> float | None: ...

    def record(
        self,
        name: str,
        value: float,
        *,
        routine: str,
        run_id: str | None,
        fit_quality: float | None,
    ) -> None: ...
