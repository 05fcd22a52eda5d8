"""The network service's view of its node daemon: `LinkOperations` over the node's link layer
(`NodeLink`'s in-process API, docs/network.md "Delivery into memory"), `Peers` over the station
links the link layer dials.

- A link pair is one link session of one pair (`handle_operator({"type": "entangle", ...})`,
  its summary in `finished`, its row in the session file). The repeater initiates both: the
  first end's half into its 13C memory (`delivery` "memory"), the second's kept in its
  electron ("keep"). The ends' halves follow the request's `peer_delivery`: measured at once
  in X, Y or Z (an end's electron cannot wait for the swap: T2* of microseconds, and these
  ends do not decouple), or kept.
- The swap's Pauli frame at an end is software: `apply_pauli` records it and `measure` applies
  it to the recorded bit (`pauli.result_after`). The link layer's own frame (Z on the
  responder for psi-, already in a measured bit) counts as a Pauli this end applied.
- The BSM is the node's `bell_measurement()` (sequences.library.bell_measurement); the Bell
  state it names gives the swap's parities (`pauli.bsm_parities`).
- An end learns of a link pair as its link session ends (`connect`: a session listener that
  pushes `link_pair_delivered` to the service), so a repeater that dies after the first link
  leaves a pair the end discards with a reason (timeout), never one it forgets.

- GHZ: B's operation is the node's `ghz_operation()` (sequences.network_ops: the DD gate and
  the electron's readout; the memory keeps its half), its bright/dark outcome the frame's bit
  (`pauli.ghz_frame`); the memory is then read by `measure` (`memory_measure`).

- Teleportation: the sender writes the state into its memory before its link
  (`prepare_state`: `NodeLink.prepare_memory`, protected through the link session as a
  stored pair is), and measures (electron, memory) in the Bell basis as soon as its link
  pair is delivered: in the link's program right after its herald where the service asks
  for it (its delivery `bsm`: the electron's half keeps no phase to a program of its own),
  else a program of its own (`teleport_measurement`: `NodeLink.bell_measurement`).

Timing in the daemon (`DAEMON_TIMING`, `second_link_wait_s`): B waits for the second link for
as many attempts as the stored pair's budget allows (`NodeMemory.may_attempt` over the
planning model; with no minimum fidelity, the link layer's one shot: ten expected waits),
each an attempt window (herald window plus round trip), plus a link session's own time
through the daemons (`LINK_SESSION_OVERHEAD_S`), at most `DAEMON_TIMING.second_link_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from controller.data.sessionfile import DELIVERED, read_session
from controller.link.memory import UNBOUNDED
from controller.link.node_link import PREPARED, NodeLink
from controller.link.plan import max_attempts
from controller.link.vocabulary import BASES, MEMORY_BASES, OUTCOMES
from controller.messaging.station_link import StationUnavailable
from controller.network.pauli import bsm_parities, result_after
from controller.network.service import (
    BSM,
    ELECTRON,
    GHZ,
    MEMORY,
    LinkFailure,
    NetworkService,
    PairResult,
    PeerUnreachable,
    Timing,
)
from qnode.errors import QnodeError

log = logging.getLogger("qnode.network")

LINK_SESSION_OVERHEAD_S = 20.0
"""A link session's own time through the daemons beyond its attempts: link_request to the
peer, the midpoint's session_start, the memory's init program, compiling and loading the
round, the last herald's drain and link_end. 1-3 s on the simulated three-node lab (a
protected B-C session of one pair: ~1.3 s, hil_tests/test_memory_delivery.py); 20 s leaves
room for a loaded machine (2 cores, five daemons and the simulator)."""
BSM_S = 20.0
"""The repeater's BSM through its daemon (a program of ~4 memory gates: 1-2 s simulated)."""
DAEMON_TIMING = Timing(
    second_link_s=40.0,
    ack_s=10.0,
    outcome_s=40.0 + BSM_S,
    decision_s=30.0,
    request_s=30.0,
)
"""`second_link_s` is the cap of B's derived wait (`second_link_wait_s`); an end waits for
the outcome longer than B can wait for its second link plus its BSM (`outcome_s`), and for
B's decision longer than B waits for the ends' `swap_applied` (`ack_s`)."""
assert DAEMON_TIMING.outcome_s >= DAEMON_TIMING.second_link_s + BSM_S
assert DAEMON_TIMING.decision_s > DAEMON_TIMING.ack_s
SESSION_END_MARGIN_S = 30.0
"""A link session ends this long after its deadline at the latest (its drain and link_end)."""
IDLE_WAIT_S = 10.0
"""The sender's BSM waits this long for its node to finish the link session's run."""
FRAMES_KEPT = 1000
"""The software frames of this many link pairs are kept (a long session's measured halves)."""
END_DELIVERIES = (ELECTRON, BSM, *MEMORY_BASES)
"""How an end's half is delivered: kept in its electron, measured with the state its memory
holds right after the herald (a teleportation sender's BSM), or measured at once in X, Y or
Z."""


LINK_X_SIGN = -1
"""The link layer reads an electron's X as pi/2 about +y then the readout (bright = -x in the
model's bases, controller/link/plan.py round_sequence), and memory_measure flips its X bit to
match: this node's X results are the model's negated."""


class NodeLinkOperations:
    """`LinkOperations` over the node's `NodeLink` (see the module's docstring)."""

    x_sign = LINK_X_SIGN
    in_link_operations = True

    def __init__(self, link: NodeLink) -> None:
        self.link = link
        self.frames: dict[str, list[str]] = {}
        """Link pair -> the Paulis the network applied to this node's half (in software)."""

    async def make_pair(
        self,
        peer: str,
        protocol: str,
        delivery: str,
        peer_delivery: str,
        fidelity_min: float,
        deadline_s: float,
        memory_basis: str = "",
    ) -> PairResult:
        if delivery not in (MEMORY, ELECTRON, BSM, GHZ) or peer_delivery not in END_DELIVERIES:
            raise QnodeError(
                f"a link pair for the network: this node's half into {MEMORY}, {ELECTRON}, "
                f"{BSM} or {GHZ}, the peer's {', '.join(END_DELIVERIES)}; got "
                f"{delivery}/{peer_delivery}"
            )
        memory = self.link.memory
        stored_before = {p.pair_id for p in memory.pairs() if p.in_memory} if memory else set()
        # a refusal to start (not calibrated, no free memory, a node busy) fails the network
        # session with its reason: waiting would not change it
        started = await self.link.handle_operator(
            {
                "type": "entangle",
                "pairs": 1,
                "protocol": protocol,
                "fidelity_min": fidelity_min,
                "deadline_s": deadline_s,
                "delivery": delivery,
                "peer_delivery": peer_delivery,
                "peer": peer,
                **({"memory_basis": memory_basis} if memory_basis else {}),
            }
        )
        session = started["session"]["session"]
        await self._session_end(session, peer, time.monotonic() + deadline_s + SESSION_END_MARGIN_S)
        summary = self.link.finished[session]
        cut = self._cut_off(stored_before)
        pair = self.delivered_pair(summary, peer)
        used = summary.get(delivery) if delivery in (BSM, GHZ) else None
        if used is not None and not cut and (pair is None or not used["valid"]):
            consumed = used["pairs"]["memory"]["pair_id"]
            why = used["reason"] or summary["reason"] or "a readout flagged"
            what = "the BSM" if delivery == BSM else "the GHZ operation"
            raise LinkFailure(
                f"link session {session} with {peer}: {what} after its herald used "
                f"{consumed} but delivered no pair ({why})",
                consumed=consumed,
            )
        if pair is None or cut:
            why = summary["reason"] or "no pair delivered"
            raise LinkFailure(
                f"link session {session} with {peer}: {summary['state']} ({why})",
                cut_off=cut,
            )
        if delivery == MEMORY:
            return self._stored(summary, pair)
        return pair

    async def _session_end(self, session: str, peer: str, limit: float) -> None:
        """Wait for the link session's end: woken by the link layer's session listener as it
        ends (the swap's feed-forward waits on this), at the latest at `limit` (monotonic),
        then aborted with LinkFailure."""
        ended: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_end(summary: dict) -> None:
            if summary.get("session") == session and not ended.done():
                ended.set_result(None)

        self.link.session_listeners.append(on_end)
        try:
            while session not in self.link.finished:
                left = limit - time.monotonic()
                if left <= 0:
                    current = self.link.session
                    if current is not None and current.session == session:
                        self.link.abort(f"the network's wait for session {session} ran out")
                    raise LinkFailure(f"link session {session} with {peer} did not end in time")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), min(left, 1.0))
        finally:
            self.link.session_listeners.remove(on_end)

    def _cut_off(self, stored_before: set[str]) -> str:
        """A pair stored before the session that the link layer discarded since ("" none)."""
        memory = self.link.memory
        if memory is None or not stored_before:
            return ""
        still = {p.pair_id for p in memory.pairs() if p.in_memory}
        gone = stored_before - still
        discarded = {d["pair_id"] for d in self.link.memory_discards}
        return next(iter(sorted(gone & discarded)), "")

    def _stored(self, summary: dict, pair: PairResult) -> PairResult:
        """The pair as the memory holds it (its goodness after the move), or LinkFailure
        with the reason the move refused or cut it off."""
        holds = (summary.get("memory") or {}).get("holds") or {}
        for qubit, held in holds.items():
            if "." in qubit and held is not None and held["pair_id"] == pair.pair_id:
                return PairResult(
                    pair.pair_id,
                    pair.peer,
                    pair.state,
                    float(held["goodness"]),
                    pair.made,
                    "memory",
                )
        reasons = [d["reason"] for d in self.link.memory_discards if d["pair_id"] == pair.pair_id]
        why = reasons[-1] if reasons else f"not in a memory qubit ({holds})"
        raise LinkFailure(f"link pair {pair.pair_id} not stored: {why}", unstored=pair)

    def delivered_pair(
        self, summary: dict[str, Any], peer: str, pair_id: str = ""
    ) -> PairResult | None:
        """The delivered pair of a one-pair link session, as the network takes it: where
        this node's half is, and for a half measured at once its basis and bit (the link
        layer's psi- frame, Z on the responder, is in that bit: counted as applied here)."""
        for row in read_session(summary["file"])["pairs"]:
            if row["status"] != DELIVERED or (pair_id and row["id"].decode() != pair_id):
                continue
            state = OUTCOMES[int(row["outcome"])]
            basis = BASES[int(row["basis"])]
            measured = basis in MEMORY_BASES
            frame_here = summary["role"] == "responder" and state == "psi_minus"
            return PairResult(
                row["id"].decode(),
                peer,
                state,
                float(row["fidelity_estimate"]),
                float(row["t"]),
                "measured" if measured else ("memory" if basis == "memory" else "electron"),
                ("Z",) if frame_here and measured else (),
                basis if measured else "",
                int(row["bit"]) if measured else 0,
            )
        return None

    def held_pair(self, pair_id: str) -> PairResult | None:
        """A pair a neighbour's link session delivered here (read from its session file)."""
        session = pair_id.split(":", 1)[0]
        summary = self.link.finished.get(session)
        if summary is None:
            return None
        return self.delivered_pair(summary, summary["peer"], pair_id)

    def second_link_wait_s(
        self, stored_pair: str, peer: str, protocol: str, fidelity_min: float
    ) -> float | None:
        """See the module's docstring: the stored pair's attempt budget on the link to
        `peer` in time, plus a link session's overhead."""
        expected = self.link.link_expectation(peer, protocol, fidelity_min)
        budget, attempt_s = self.link.attempt_budget(peer, protocol, expected)
        attempts = budget if budget < UNBOUNDED else max_attempts(expected.p_success)
        return attempts * attempt_s + LINK_SESSION_OVERHEAD_S

    def _checked(self, result: dict, expected: tuple[str, str], what: str, reading: str) -> None:
        """An operation on both held halves checked (it used `expected`: the memory's pair
        id, or PREPARED for the state prepared there, and the electron's; its shot valid) and
        logged as `what` with its `reading`."""
        measured = (result["pairs"]["memory"]["pair_id"], result["pairs"]["electron"]["pair_id"])
        memory, electron = expected
        memory_right = measured[0] == memory or (
            memory == PREPARED and measured[0].startswith(PREPARED)
        )
        if not memory_right or measured[1] != electron:
            raise QnodeError(f"{what} used {measured}, the network asked for {expected}")
        if not result["valid"]:
            raise QnodeError(f"{what}: the shot was not valid (run {result['run_id']})")
        log.info(
            "%s: %s: %s (counts %s, run %s)",
            self.link.name,
            what,
            reading,
            result["counts"],
            result["run_id"],
        )

    def _checked_bsm(self, result: dict, expected: tuple[str, str], what: str) -> tuple[int, int]:
        """A BSM's result checked and logged (`_checked`): the parities (zz, xx) of the Bell
        state it names."""
        self._checked(result, expected, what, result["bell_state"])
        return bsm_parities(result["bell_state"])

    async def bell_measurement(self, memory_pair: str, electron_pair: str) -> tuple[int, int]:
        """The BSM the electron pair's link session made after its herald (delivery BSM), or
        one in a program of its own now."""
        result = self._measured_in_link(electron_pair)
        if result is None:
            result = await self.link.bell_measurement()
        what = f"the BSM of {memory_pair} and {electron_pair}"
        return self._checked_bsm(result, (memory_pair, electron_pair), what)

    def _measured_in_link(self, pair_id: str) -> dict | None:
        """The BSM the link session of `pair_id` made right after its herald (delivery
        BSM, `NodeLink.bsm_results`), if it made one with that pair."""
        found = self.link.bsm_results.get(pair_id.split(":", 1)[0])
        if found is not None and found["pairs"]["electron"]["pair_id"] == pair_id:
            return {**found, "run_id": f"link session {found['session']}"}
        return None

    async def ghz_measurement(self, memory_pair: str, electron_pair: str) -> int:
        """B's GHZ operation (sequences.network_ops.ghz_operation): the one the electron
        pair's link session made right after its herald (delivery GHZ), or one in a program
        of its own now; 1 when the electron read bright. The electron's pair is spent; the
        memory keeps its half for `measure`."""
        found = self.link.ghz_results.get(electron_pair.split(":", 1)[0])
        if found is not None and found["pairs"]["electron"]["pair_id"] == electron_pair:
            result = {**found, "run_id": f"link session {found['session']}"}
        else:
            result = await self.link.ghz_operation()
        what = f"the GHZ operation on {memory_pair} and {electron_pair}"
        reading = f"electron {result['electron_bit']:+d}"
        self._checked(result, (memory_pair, electron_pair), what, reading)
        return int(result["electron_bit"] == 1)

    async def prepare_state(self, state: str, peer: str) -> str:
        """Teleportation's input written into this node's memory before its link with `peer`
        (`NodeLink.prepare_memory`): its id in NodeMemory."""
        result = await self.link.prepare_memory(state, peer)
        log.info(
            "%s: %s prepared in %s (run %s)",
            self.link.name,
            state,
            result["qubit"],
            result["run_id"],
        )
        return str(result["state_id"])

    async def teleport_measurement(self, pair_id: str, state: str) -> tuple[int, int]:
        """The sender's BSM of its electron's half of `pair_id` and the state its memory holds
        (`prepare_state`): the one its link session made right after the herald (delivery
        BSM), or one as soon as the link layer is idle after that session. The parities
        (zz, xx) of the Bell state it names."""
        result = self._measured_in_link(pair_id)
        if result is None:
            limit = time.monotonic() + IDLE_WAIT_S
            while self.link.session is not None or self.link.node.busy_with() is not None:
                if time.monotonic() > limit:
                    raise QnodeError(f"{self.link.name} stayed busy: the BSM of {pair_id} not run")
                await asyncio.sleep(0.005)
            result = await self.link.bell_measurement()
        what = f"the teleportation BSM of {state} and {pair_id}"
        return self._checked_bsm(result, (PREPARED, pair_id), what)

    async def apply_pauli(self, pair_id: str, pauli: str) -> None:
        """The network's Pauli on this node's half, kept in software (a Pauli frame): applied
        to the half's result when it is measured."""
        if self._held_here(pair_id) is None:
            raise QnodeError(f"{self.link.name} holds no half of link pair {pair_id}")
        self.frames.setdefault(pair_id, []).append(pauli)
        for old in list(self.frames)[:-FRAMES_KEPT]:
            del self.frames[old]

    def _held_here(self, pair_id: str) -> PairResult | None:
        held = self.held_pair(pair_id)
        if held is not None:
            return held
        memory = self.link.memory
        if memory is not None and any(p.pair_id == pair_id for p in memory.pairs()):
            return PairResult(pair_id, memory.pair(pair_id).peer, "", 0.0, 0.0, "memory")
        return None

    def _read_in_link(self, pair_id: str) -> dict | None:
        """The GHZ operation whose link session read the memory's half of `pair_id` right
        after it (delivery GHZ with a memory basis), if one did."""
        for result in reversed(list(self.link.ghz_results.values())):
            if result["memory_basis"] and result["pairs"]["memory"]["pair_id"] == pair_id:
                return result
        return None

    async def measure(self, pair_id: str, basis: str) -> int:
        read = self._read_in_link(pair_id)
        if read is not None:
            if basis != read["memory_basis"]:
                raise QnodeError(
                    f"{pair_id}: this half was read in {read['memory_basis']} right after the "
                    f"GHZ operation, not {basis}"
                )
            if not read["valid"] or read["memory_bit"] not in (-1, 1):
                raise QnodeError(f"{pair_id}: the memory's readout was not valid")
            paulis = tuple(self.frames.pop(pair_id, ()))
            return result_after(int(read["memory_bit"]), basis, paulis)
        held = self._held_here(pair_id)
        if held is None:
            raise QnodeError(f"{self.link.name} holds no half of link pair {pair_id}")
        paulis = tuple(self.frames.get(pair_id, ()))
        if held.qubit == "measured":  # asked again (a retried request): the same answer
            if basis != held.basis:
                raise QnodeError(
                    f"{pair_id}: this half was measured in {held.basis} at its delivery, "
                    f"not {basis}"
                )
            if held.bit not in (-1, 1):
                raise QnodeError(f"{pair_id}: no valid result was recorded for this half")
            return result_after(held.bit, basis, paulis)
        if held.qubit == "memory":
            result = await self.link.memory_measure(basis, pair_id)
            if not result["valid"]:
                raise QnodeError(f"{pair_id}: the memory's readout was not valid")
            return result_after(int(result["bit"]), basis, paulis)
        raise QnodeError(
            f"{pair_id}: this half was kept in the electron, which cannot be read after "
            "the swap here; ask the ends to measure at delivery (--verify)"
        )

    async def release(self, pair_id: str, reason: str) -> None:
        """A stored or kept half is discarded in NodeMemory with the reason; a measured one
        holds nothing."""
        self.frames.pop(pair_id, None)
        memory = self.link.memory
        if memory is not None and any(p.pair_id == pair_id for p in memory.pairs()):
            self.link.discard_held(pair_id, reason)


def connect(link: NodeLink, service: NetworkService) -> None:
    """The service learns of each pair a neighbour's link session delivered here as the
    session ends (the link layer's push, `link_pair_delivered`)."""
    ops = service.ops
    assert isinstance(ops, NodeLinkOperations)

    def on_session_end(summary: dict) -> None:
        if summary["role"] != "responder":
            return
        pair = ops.delivered_pair(summary, summary["peer"])
        if pair is not None:
            service.push_link_pair(pair)

    link.session_listeners.append(on_session_end)


class StationPeers:
    """`Peers` over the link layer's station links (CurveZMQ; a node's station key)."""

    def __init__(self, link: NodeLink) -> None:
        self.link = link

    def send(self, to: str, kind: str, fields: dict[str, Any]) -> None:
        self.link.link_to(to).send(kind, **fields)

    async def request(
        self, to: str, kind: str, fields: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """PeerUnreachable when `to` does not answer or is not served (down); QnodeError with
        its reason when it answers with a refusal."""
        try:
            return await self.link.link_to(to).request(kind, timeout_s=timeout_s, **fields)
        except StationUnavailable as e:
            raise PeerUnreachable(to, str(e)) from None
        except QnodeError as e:
            if str(e).startswith(f"{to} refused "):  # StationLink's words for a refusal
                raise
            raise PeerUnreachable(to, str(e)) from None  # its info file: not served
