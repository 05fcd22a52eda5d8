"""The network service's view of its node daemon: `LinkOperations` over today's link layer,
`Peers` over the station links the link layer dials.

CONNECT AT MERGE (branch memory-delivery): today's link layer opens a session per request and
keeps a pair's half in the electron only; the delivery into the 13C memory (`delivery` =
"memory", SwapToMemory) and the node requests `bell_measurement` and `memory_measure` are
being added on the branch memory-delivery. Each operation that needs them raises
`PendingOperation`, naming what it waits for, so that a network session in a daemon fails
with that reason rather than pretending; the coordinator connects them when both branches
are merged. The service itself is tested with an exact in-memory fake of `LinkOperations`
(hil_tests/test_network_service.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from controller.data.sessionfile import DELIVERED, read_session
from controller.link.node_link import NodeLink
from controller.link.vocabulary import OUTCOMES
from controller.network.service import ELECTRON, LinkFailure, PairResult, Timing
from qnode.errors import QnodeError

DAEMON_TIMING = Timing(second_link_s=20.0, ack_s=5.0, outcome_s=30.0, decision_s=10.0)
"""Today's link layer opens a link session per pair (seconds, through two daemons and a
midpoint), so B's wait for the second link is that, not the memory's coherence budget (tens
of ms of attempts): to be set from the memory model when the memory delivery is merged."""
SESSION_END_MARGIN_S = 30.0


class PendingOperation(QnodeError):
    """An operation the merge of branch memory-delivery provides."""


def _pending(what: str) -> PendingOperation:
    return PendingOperation(
        f"{what} is not available in this node daemon yet: it comes with the 13C memory "
        "delivery and the node's BSM and memory readout (branch memory-delivery)"
    )


class NodeLinkOperations:
    """`LinkOperations` over the node's `NodeLink` (see the module's docstring)."""

    def __init__(self, link: NodeLink) -> None:
        self.link = link

    async def make_pair(
        self,
        peer: str,
        protocol: str,
        delivery: str,
        peer_delivery: str,
        fidelity_min: float,
        deadline_s: float,
    ) -> PairResult:
        if delivery != ELECTRON or peer_delivery != ELECTRON:
            raise _pending(f"delivering a link pair into the memory ({delivery}/{peer_delivery})")
        started = await self.link.handle_operator(
            {
                "type": "entangle",
                "pairs": 1,
                "protocol": protocol,
                "fidelity_min": fidelity_min,
                "deadline_s": deadline_s,
                "delivery": "keep",
                "peer": peer,
            }
        )
        session = started["session"]["session"]
        limit = time.monotonic() + deadline_s + SESSION_END_MARGIN_S
        while session not in self.link.finished:
            if time.monotonic() > limit:
                raise LinkFailure(f"link session {session} with {peer} did not end in time")
            await asyncio.sleep(0.02)
        summary = self.link.finished[session]
        pair = self._delivered(summary, peer)
        if pair is None:
            raise LinkFailure(
                f"link session {session} with {peer}: {summary['state']} "
                f"({summary['reason'] or 'no pair delivered'})"
            )
        return pair

    def _delivered(
        self, summary: dict[str, Any], peer: str, pair_id: str = ""
    ) -> PairResult | None:
        for row in read_session(summary["file"])["pairs"]:
            if row["status"] != DELIVERED or (pair_id and row["id"].decode() != pair_id):
                continue
            return PairResult(
                row["id"].decode(),
                peer,
                OUTCOMES[int(row["outcome"])],
                float(row["fidelity_estimate"]),
                float(row["t"]),
                "electron",
            )
        return None

    def held_pair(self, pair_id: str) -> PairResult | None:
        """A pair a neighbour's link session delivered here (read from its session file)."""
        session = pair_id.split(":", 1)[0]
        summary = self.link.finished.get(session)
        if summary is None:
            return None
        return self._delivered(summary, summary["peer"], pair_id)

    async def bell_measurement(self, memory_pair: str, electron_pair: str) -> tuple[int, int]:
        raise _pending("the Bell-state measurement (node request bell_measurement)")

    async def ghz_measurement(self, memory_pair: str, electron_pair: str) -> int:
        raise _pending("the GHZ operation (CNOT memory -> electron, electron readout)")

    async def teleport_measurement(self, pair_id: str, state: str) -> tuple[int, int]:
        raise _pending("the teleportation BSM (a state prepared beside the pair's half)")

    async def apply_pauli(self, pair_id: str, pauli: str) -> None:
        raise _pending(f"a Pauli {pauli} on a held pair's qubit")

    async def measure(self, pair_id: str, basis: str) -> int:
        raise _pending("measuring a held pair's qubit (node request memory_measure)")

    async def release(self, pair_id: str, reason: str) -> None:
        """Nothing is held beyond its link session today: the electron is reset by the next
        run's initialisation."""


class StationPeers:
    """`Peers` over the link layer's station links (CurveZMQ; a node's station key)."""

    def __init__(self, link: NodeLink) -> None:
        self.link = link

    def send(self, to: str, kind: str, fields: dict[str, Any]) -> None:
        self.link.link_to(to).send(kind, **fields)

    async def request(
        self, to: str, kind: str, fields: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        return await self.link.link_to(to).request(kind, timeout_s=timeout_s, **fields)
