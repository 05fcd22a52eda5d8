"""The applications' protocol logic, sans I/O: teleportation's feed-forward and the GHZ
measurement's bookkeeping (docs/network.md, "GHZ states" and "Teleportation").

Teleportation A -> C over an end-to-end pair the swap delivered (psi+ once its frame is
applied): the sender measures (the state, its half) in the Bell basis and sends the parities
(`teleport_outcome`); the receiver applies the correction and, in a verification run, tallies
its result in the sent state's basis. GHZ on (A, B's memory, C): B reports its electron's
result and the links' states and Paulis (`ghz_outcome`); each shot's three results are
corrected by the frame and tallied per setting. The estimators are in `estimators.py`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from controller.network.estimators import (
    CARDINAL_STATES,
    GHZ_GENERATORS,
    GHZ_SETTINGS,
    Estimate,
    corrected_outcome,
    ghz_fidelity,
    ghz_fidelity_bound,
    stabiliser_values,
    teleport_fidelity,
)
from controller.network.pauli import (
    BELL_PAULI,
    TARGET,
    Pauli,
    ghz_frame,
    pair_pauli,
    teleport_correction,
)
from controller.network.swap import Action, ApplyPauli, Send


@dataclass
class TeleportLedger:
    sent: int = 0
    corrected: int = 0
    refused: int = 0
    duplicates: int = 0
    foreign: int = 0


class TeleportSender:
    """The sender: after its Bell-state measurement, the parities to the receiver."""

    def __init__(self, node: str, receiver: str) -> None:
        self.node, self.receiver = node, receiver
        self.ledger = TeleportLedger()

    def on_bsm(self, swap: str, zz: int, xx: int, now: float, state: str = "") -> list[Action]:
        """`state`: the cardinal state sent, named only in a verification run."""
        if state and state not in CARDINAL_STATES:
            raise ValueError(f"{state!r} is not one of {', '.join(CARDINAL_STATES)}")
        self.ledger.sent += 1
        fields = {"swap": swap, "zz": zz, "xx": xx, "t_bsm": now, "state": state or None}
        return [Send(self.receiver, "teleport_outcome", fields)]


@dataclass
class _Resource:
    link_pair: str
    status: str = "ready"  # ready, corrected, discarded
    correction: Pauli = field(default_factory=Pauli)
    state: str = ""


class TeleportReceiver:
    """The receiver: its delivered end-to-end pairs are the resources; an outcome about one
    is corrected once; a result in the sent state's basis is tallied."""

    def __init__(self, node: str, sender: str) -> None:
        self.node, self.sender = node, sender
        self.resources: dict[str, _Resource] = {}
        self.ledger = TeleportLedger()
        self.tally: dict[str, list[int]] = {s: [0, 0] for s in CARDINAL_STATES}

    def on_pair_delivered(self, swap: str, link_pair: str) -> None:
        self.resources.setdefault(swap, _Resource(link_pair))

    def on_pair_discarded(self, swap: str) -> None:
        if swap in self.resources:
            self.resources[swap].status = "discarded"

    def on_message(self, sender: str, msg: dict, now: float) -> list[Action]:
        if sender != self.sender or msg["type"] != "teleport_outcome":
            self.ledger.foreign += 1
            return []
        resource = self.resources.get(msg["swap"])
        if resource is None or resource.status == "discarded":
            self.ledger.refused += 1  # no delivered pair: nothing was teleported
            return []
        if resource.status == "corrected":
            self.ledger.duplicates += 1
            return []
        resource.correction = teleport_correction(BELL_PAULI[TARGET], msg["zz"], msg["xx"])
        resource.state = msg.get("state") or ""
        resource.status = "corrected"
        self.ledger.corrected += 1
        return [ApplyPauli(msg["swap"], resource.link_pair, resource.correction.name)]

    def on_result(self, swap: str, basis: str, result: int, corrected: bool = True) -> int:
        """The receiver's +1/-1 result in `basis`; `corrected`: the correction was applied to
        the qubit (else it is applied here, in software). Tallied when the state is known."""
        resource = self.resources[swap]
        if resource.status != "corrected":
            raise ValueError(f"{swap}: no outcome arrived for it, its result means nothing")
        value = result if corrected else corrected_outcome(basis, result, resource.correction)
        if resource.state:
            want_basis, sign = CARDINAL_STATES[resource.state]
            if basis != want_basis:
                raise ValueError(f"{resource.state} is verified in {want_basis}, not {basis}")
            self.tally[resource.state][0] += value == sign
            self.tally[resource.state][1] += 1
        return value

    def estimate(self) -> Estimate:
        return teleport_fidelity({s: (g, n) for s, (g, n) in self.tally.items()})


def ghz_frame_of(
    msg: dict, first_applied: tuple[str, ...], second_applied: tuple[str, ...]
) -> tuple[Pauli, ...]:
    """A GHZ shot's frame on (A, B's memory, C) from B's `ghz_outcome` and the Paulis each
    end applied to its qubit since its link's herald."""
    first = pair_pauli(msg["link_states"][0], (*msg["memory_applied"], *first_applied))
    second = pair_pauli(msg["link_states"][1], (*msg["electron_applied"], *second_applied))
    return ghz_frame(first, second, msg["electron_bright"])


class GhzTally:
    """Each shot's three +1/-1 results in its setting, corrected by the shot's frame."""

    def __init__(self) -> None:
        self.results: dict[str, list[tuple[int, int, int]]] = {s: [] for s in GHZ_SETTINGS}
        self.frames: dict[str, list[tuple[Pauli, ...]]] = {s: [] for s in GHZ_SETTINGS}
        self.shots: Counter[str] = Counter()

    def add(self, setting: str, results: tuple[int, int, int], frame: tuple[Pauli, ...]) -> None:
        if setting not in GHZ_SETTINGS:
            raise ValueError(f"{setting!r} is not a GHZ setting ({', '.join(GHZ_SETTINGS)})")
        self.results[setting].append(results)
        self.frames[setting].append(frame)
        self.shots[setting] += 1

    def _values(self, terms: dict) -> dict[str, np.ndarray]:
        return {
            s: stabiliser_values(s, np.array(self.results[s]).reshape(-1, 3), self.frames[s], terms)
            for s in terms
        }

    def fidelity(self) -> Estimate:
        return ghz_fidelity(self._values(GHZ_SETTINGS))

    def bound(self) -> Estimate:
        """From XXX, ZZI and IZZ only (the ZZZ and XXX settings)."""
        return ghz_fidelity_bound(self._values(GHZ_GENERATORS))
