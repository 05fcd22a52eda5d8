"""One entanglement session as one node sees it: the link protocol's decisions as pure code.

Fed events (its own shots, herald messages, the peer's checks and decisions, the clock), it
decides and records; what it must send goes out through the `send_to_peer` callback it was
built with. No sockets, no event loop of its own: controller/link/node_link.py does the I/O.

The protocol (docs/protocols.md): the initiator (the node the operator asked) decides, the
responder follows.
1. initiator -> responder `link_request`; initiator -> midpoint `session_start`.
2. Rounds: initiator -> responder `link_round`; both run the round's program in step (the
   midpoint's shared sync); each reports `round_done`.
3. Per heralded shot each node checks its own sequencer's herald (attempt count, outcome)
   against the midpoint's herald message (same shot, same attempt id, same outcome, within
   HERALD_TIMEOUT_S); the responder sends its verdict (`pair_check`), the initiator decides
   (delivered only if both verdicts are good and agree, and only up to the pairs asked
   for: a good pair beyond them is discarded) and sends `pair_decision`; the
   responder records it and answers `pair_recorded`. Every decision is written to the
   session file before it is sent or acknowledged; a delivered pair the responder never
   acknowledged is turned into a discard at the end, so both files agree.
4. initiator -> midpoint `session_end`, -> responder `link_end`.

The psi+/psi- correction is a Pauli frame: psi- is psi+ with Z on the responder, so its X
and Y results are flipped (a kept pair carries the frame in its record).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from controller.data.sessionfile import (
    DELIVERED,
    DISCARDED,
    HERALD_ROW,
    PAIR_ROW,
    SessionFile,
)
from controller.link.plan import Expectation, shares
from controller.link.shots import OwnShot
from controller.link.vocabulary import (
    BASES,
    HERALD_BATCH,
    HERALD_TIMEOUT_S,
    OUTCOMES,
    PEER_TIMEOUT_S,
)

log = logging.getLogger("qnode.link")

PSI_MINUS = OUTCOMES.index("psi_minus")

SendToPeer = Callable[..., None]
"""(message type, **fields) -> None: fire and forget, to this session's peer."""
ForwardOutcome = Callable[[str], None]
"""Software heralding: an attempt's outcome, to this node's sequencer at once."""


@dataclass
class Verdict:
    ok: bool
    attempt: int
    outcome: int
    reason: str = ""


@dataclass
class Stats:
    shots: int = 0
    heralded: int = 0
    attempts: int = 0
    delivered: int = 0
    discarded: int = 0
    virtual_ns: int = 0
    herald_messages: int = 0
    duplicates: int = 0
    gaps: int = 0
    unmatched: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class LinkSession:
    """One session as one node sees it; runs in the daemon's event loop."""

    def __init__(
        self,
        *,
        session: str,
        node: str,
        role: str,
        peer: str,
        nodes: list[str],
        request: dict,
        expected: Expectation,
        file: SessionFile,
        readout_threshold: float,
        send_to_peer: SendToPeer,
        forward: ForwardOutcome | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.node = node
        self.role = role
        self.peer = peer
        self.nodes = nodes
        self.request = request
        self.expected = expected
        self.file = file
        self.threshold = readout_threshold
        self.frame_node = nodes[1]  # psi- is corrected by Z on this node
        self.state = "running"  # until finish(): then completed, failed, aborted, deadline
        self.ending: tuple[str, str] | None = None  # why it is ending, before it has ended
        self.reason = ""
        self.stats = Stats()
        self.started = time.time()
        self.own: dict[int, OwnShot] = {}
        self.basis_of: dict[int, str] = {}
        self.next_shot = 0
        """The shot after this node's last round: a round that ends at its herald runs fewer
        shots than it asked, and the midpoint numbers shots by the syncs that ran."""
        self.heralds: dict[int, dict] = {}
        self.verdicts: dict[int, Verdict] = {}
        self.peer_verdicts: dict[int, Verdict] = {}
        self.decided: dict[int, int] = {}  # shot -> row index in the file
        self.acked: set[int] = set()
        self.waiting_herald: dict[int, float] = {}  # shot -> give up at (monotonic)
        self.waiting_peer: dict[int, float] = {}
        self.last_seq = 0
        self._herald_rows: list[tuple] = []  # written in batches: one HDF5 append per batch
        self.rows: list = []  # decided rows (numpy records), in file order
        self.delivered_by_basis: dict[str, int] = {}
        self.round_time_ns: dict[int, int] = {}  # virtual time each round's run took
        self.send_to_peer = send_to_peer
        self.software = request.get("heralding") == "software"
        if self.software and forward is None:
            raise ValueError("software heralding needs a way to forward outcomes")
        self.forward = forward
        self.clock = clock
        self.peer_round_status: str | None = None
        """How the peer's run of the current round ended (None: it has not said yet)."""
        self.peer_heard = clock()
        self.midpoint_heard = clock()
        self.opened = clock()
        self.midpoint_instance: str | None = None
        """The midpoint's instance whose heartbeats named this session (None: not yet)."""

    # the session's life ---------------------------------------------------------------------
    def end_with(self, state: str, reason: str) -> bool:
        """The session is to end (its run stopped first): the first reason given wins."""
        if self.ending is not None:
            return False
        self.ending = (state, reason)
        return True

    def expect_peer_round(self) -> None:
        """The initiator, before it asks its peer for a round: no round done yet."""
        self.peer_round_status = None

    def begin_round(self, first_shot: int, shots: int, basis: str) -> None:
        for shot in range(first_shot, first_shot + shots):
            self.basis_of[shot] = basis

    def on_peer_round_done(self, status: str) -> None:
        self.peer_round_status = status

    def on_peer_message(self) -> None:
        self.peer_heard = self.clock()

    def on_midpoint_message(self) -> None:
        self.midpoint_heard = self.clock()

    def on_midpoint_heartbeat(self, session: str, instance: str) -> bool:
        """A midpoint heartbeat; False if the midpoint restarted (a new instance that never
        heard of this session: it is gone there)."""
        self.on_midpoint_message()
        if session == self.session:
            self.midpoint_instance = instance
        return self.midpoint_instance is None or instance == self.midpoint_instance

    def silence(self, silence_s: float, midpoint: str) -> str | None:
        """Who fell silent (the peer or the midpoint, nothing heard for `silence_s`), or a
        midpoint that never confirmed the session (after twice that: a killed midpoint is
        silent first), or None."""
        now = self.clock()
        if now - self.peer_heard > silence_s:
            return f"peer {self.peer} fell silent"
        if now - self.midpoint_heard > silence_s:
            return f"midpoint {midpoint} fell silent"
        if self.midpoint_instance is None and now - self.opened > 2 * silence_s:
            return f"midpoint {midpoint} never confirmed the session"
        return None

    # inputs ---------------------------------------------------------------------------------
    def on_shots(self, round_index: int, shots: list[tuple[int, OwnShot]]) -> None:
        now = self.clock()
        for index, shot in shots:
            self.own[index] = shot
            self.stats.shots += 1
            self.stats.attempts += shot.attempts
            self.round_time_ns[round_index] = max(
                self.round_time_ns.get(round_index, 0), shot.time_ns
            )
            self.stats.virtual_ns = sum(self.round_time_ns.values())
            if shot.heralded:
                self.stats.heralded += 1
                self.waiting_herald.setdefault(index, now + HERALD_TIMEOUT_S)
            self._check(index)

    def on_herald(self, msg: dict) -> None:
        """A herald message (checked against its schema on receipt)."""
        if msg["session"] != self.session:
            self.stats.unmatched += 1
            log.warning("%s: herald of another session %s dropped", self.node, msg["session"])
            return
        self.midpoint_heard = self.clock()
        seq = msg["seq"]
        if seq <= self.last_seq:
            self.stats.duplicates += 1
            log.warning(
                "%s: herald seq %d again (last %d): duplicate dropped",
                self.node,
                seq,
                self.last_seq,
            )
            return
        if seq > self.last_seq + 1:
            self.stats.gaps += seq - self.last_seq - 1
            log.warning(
                "%s: heralds %d..%d never arrived: their pairs are discarded",
                self.node,
                self.last_seq + 1,
                seq - 1,
            )
        self.last_seq = seq
        if self.forward is not None and self.software:  # first: the sequencer waits for it
            self.forward(msg["outcome"])
        self.stats.herald_messages += 1
        self._herald_rows.append(
            (
                seq,
                msg["shot"],
                msg["sync"],
                msg["attempt"],
                OUTCOMES.index(msg["outcome"]),
                msg["t"],
                time.time(),
            )
        )
        if len(self._herald_rows) >= HERALD_BATCH:
            self.flush_heralds()
        if self.software and msg["outcome"] == "fail":
            return  # an attempt that did not herald: forwarded, recorded, nothing to check
        shot = msg["shot"]
        if shot in self.heralds or shot in self.verdicts:
            self.stats.unmatched += 1
            self._set_verdict(shot, Verdict(False, msg["attempt"], 0, "two heralds for one shot"))
            return
        self.heralds[shot] = msg
        self._check(shot)

    def on_peer_check(self, msg: dict) -> None:
        self.peer_verdicts[msg["shot"]] = Verdict(
            msg["ok"], msg["attempt"], msg["outcome"], msg["reason"]
        )
        self._decide(msg["shot"])

    def on_decision(self, msg: dict) -> None:
        """Responder: the initiator decided; record it, then acknowledge."""
        shot = msg["shot"]
        if shot not in self.decided:
            self._record(shot, msg["attempt"], msg["outcome"], msg["delivered"], msg["reason"])
        self.send_to_peer("pair_recorded", session=self.session, shot=shot)

    def on_recorded(self, msg: dict) -> None:
        self.acked.add(msg["shot"])

    # checks and decisions ----------------------------------------------------------------------
    def _check(self, shot: int) -> None:
        if shot in self.verdicts:
            return
        own, herald = self.own.get(shot), self.heralds.get(shot)
        if own is None:
            return
        if not own.heralded:
            if herald is not None:
                self.stats.unmatched += 1
                self._set_verdict(
                    shot,
                    Verdict(
                        False, herald["attempt"], 0, "the midpoint heralded, the sequencer did not"
                    ),
                )
            return
        if herald is None:
            return  # wait for it (or its timeout)
        said = OUTCOMES.index(herald["outcome"])
        if said == 0:
            verdict = Verdict(
                False, own.attempts, own.outcome, f"midpoint: fail, {herald.get('reason', '')}"
            )
        elif herald["attempt"] != own.attempts:
            verdict = Verdict(
                False,
                own.attempts,
                own.outcome,
                f"attempt id mismatch: sequencer {own.attempts}, midpoint {herald['attempt']}",
            )
        elif said != own.outcome:
            verdict = Verdict(
                False,
                own.attempts,
                own.outcome,
                f"outcome mismatch: sequencer {OUTCOMES[own.outcome]}, "
                f"midpoint {herald['outcome']}",
            )
        elif not own.valid:
            verdict = Verdict(
                False,
                own.attempts,
                own.outcome,
                "memory check failed",
            )
        else:
            verdict = Verdict(True, own.attempts, own.outcome)
        self._set_verdict(shot, verdict)

    def _set_verdict(self, shot: int, verdict: Verdict) -> None:
        self.verdicts[shot] = verdict
        self.waiting_herald.pop(shot, None)
        if self.role == "responder":
            self.send_to_peer(
                "pair_check",
                session=self.session,
                shot=shot,
                attempt=verdict.attempt,
                outcome=verdict.outcome,
                ok=verdict.ok,
                reason=verdict.reason,
            )
        else:
            self.waiting_peer.setdefault(shot, self.clock() + PEER_TIMEOUT_S)
            self._decide(shot)

    def _decide(self, shot: int) -> None:
        if self.role != "initiator" or shot in self.decided:
            return
        mine, theirs = self.verdicts.get(shot), self.peer_verdicts.get(shot)
        if mine is None or theirs is None:
            return
        if not mine.ok:
            delivered, reason = False, mine.reason
        elif not theirs.ok:
            delivered, reason = False, f"{self.peer}: {theirs.reason}"
        elif (mine.attempt, mine.outcome) != (theirs.attempt, theirs.outcome):
            delivered, reason = False, "the nodes disagree on the attempt or outcome"
        else:
            delivered, reason = True, ""
            beyond = self._beyond_the_request(self.basis_of.get(shot, "keep"))
            if beyond:
                delivered, reason = False, beyond
        self._conclude(shot, mine.attempt, mine.outcome, delivered, reason)

    def _beyond_the_request(self, basis: str) -> str:
        """Why a good pair is not delivered: the pairs asked for (in verification, the
        basis's share of them) are delivered already; or "" (it is delivered)."""
        pairs = self.request.get("pairs")
        if pairs is None:
            return ""
        delivery = self.request.get("delivery") or basis
        if delivery == "verify":
            share = shares(delivery, pairs).get(basis, 0)
            if self.delivered_by_basis.get(basis, 0) >= share:
                return f"beyond the {pairs} pairs asked for ({share} in {basis})"
            return ""
        return f"beyond the {pairs} pairs asked for" if self.stats.delivered >= pairs else ""

    def _conclude(self, shot: int, attempt: int, outcome: int, delivered: bool, reason: str):
        self.waiting_peer.pop(shot, None)
        self._record(shot, attempt, outcome, delivered, reason)
        self.send_to_peer(
            "pair_decision",
            session=self.session,
            shot=shot,
            attempt=attempt,
            outcome=outcome,
            delivered=delivered,
            reason=reason,
        )

    def pair_id(self, shot: int, attempt: int) -> str:
        return f"{self.session}:{shot}:{attempt}"

    def _record(self, shot: int, attempt: int, outcome: int, delivered: bool, reason: str):
        own = self.own.get(shot)
        basis = self.basis_of.get(shot, "keep")
        row = np.zeros(1, dtype=PAIR_ROW)
        r = row[0]
        r["id"] = self.pair_id(shot, attempt).encode()
        r["shot"], r["attempt"], r["outcome"] = shot, attempt, outcome
        r["bell_state"] = 1 if delivered else 0
        r["basis"] = BASES.index(basis)
        r["counts"] = own.counts if own is not None else -1
        r["counts_memory"] = own.counts_memory if own is not None else -1
        if delivered and own is not None and own.counts >= 0 and basis != "bsm":
            bit = 1 if own.counts >= self.threshold else -1
            if outcome == PSI_MINUS and self.node == self.frame_node and basis in ("X", "Y"):
                bit = -bit  # the Pauli frame: Z on this node turns psi- into psi+
            r["bit"] = bit
        r["status"] = DELIVERED if delivered else DISCARDED
        r["reason"] = reason.encode()[:80]
        r["t"] = time.time()
        r["fidelity_estimate"] = self.expected.fidelity if delivered else 0.0
        self.decided[shot] = len(self.rows)
        self.rows.append(row)
        self.flush_heralds()
        self.file.add_pairs(row)
        self.file.flush()
        if delivered:
            self.stats.delivered += 1
            self.delivered_by_basis[basis] = self.delivered_by_basis.get(basis, 0) + 1
        else:
            self.stats.discarded += 1
            key = re.sub(r"\d+(\.\d+)?", "N", reason)[:60] or "discarded"
            self.stats.reasons[key] = self.stats.reasons.get(key, 0) + 1

    def flush_heralds(self) -> None:
        """The heralds received so far, to the file (every decision and every heartbeat
        period calls this, so a crash loses at most half a second of herald records)."""
        if self._herald_rows:
            rows, self._herald_rows = self._herald_rows, []
            self.file.add_heralds(np.array(rows, dtype=HERALD_ROW))
            self.file.flush()

    def sweep_timeouts(self) -> None:
        now = self.clock()
        for shot, limit in list(self.waiting_herald.items()):
            if now > limit and shot not in self.verdicts:
                own = self.own[shot]
                self._set_verdict(
                    shot,
                    Verdict(
                        False,
                        own.attempts,
                        own.outcome,
                        f"no herald message within {HERALD_TIMEOUT_S:g} s",
                    ),
                )
        if self.role == "initiator":
            for shot, limit in list(self.waiting_peer.items()):
                if now > limit and shot not in self.decided:
                    mine = self.verdicts[shot]
                    self._conclude(
                        shot,
                        mine.attempt,
                        mine.outcome,
                        False,
                        f"no check from {self.peer} within {PEER_TIMEOUT_S:g} s",
                    )

    def pending(self) -> int:
        """Shots still waiting for a herald message or a peer's check."""
        return len(self.waiting_herald) + len(self.waiting_peer)

    def finish(self, state: str, reason: str = "") -> None:
        """Close the file; the initiator turns deliveries its peer never recorded into
        discards, so that both files hold the same delivered pairs."""
        if self.role == "initiator":
            for shot, index in self.decided.items():
                row = self.rows[index]
                if row[0]["status"] == DELIVERED and shot not in self.acked:
                    self.stats.delivered -= 1
                    basis = self.basis_of.get(shot, "keep")
                    self.delivered_by_basis[basis] = self.delivered_by_basis.get(basis, 1) - 1
                    self.stats.discarded += 1
                    self.stats.reasons["not recorded by the peer"] = (
                        self.stats.reasons.get("not recorded by the peer", 0) + 1
                    )
                    self.file.mark_discarded(index, f"{self.peer} never recorded it")
                    row[0]["status"] = DISCARDED
        self.state, self.reason = state, reason
        self.flush_heralds()
        self.file.close(state, reason)

    def summary(self) -> dict:
        wall = time.time() - self.started
        s = self.stats
        virtual_s = s.virtual_ns * 1e-9
        return {
            "session": self.session,
            "node": self.node,
            "role": self.role,
            "peer": self.peer,
            "protocol": self.request.get("protocol"),
            "state": self.state,
            "ending": list(self.ending) if self.ending else None,
            "reason": self.reason,
            "pairs_requested": self.request.get("pairs"),
            "expected": self.expected.as_dict(),
            "stats": s.as_dict(),
            "p_success": s.heralded / s.attempts if s.attempts else 0.0,
            "rate_per_virtual_s": s.delivered / virtual_s if virtual_s > 0 else 0.0,
            "rate_per_wall_s": s.delivered / wall if wall > 0 else 0.0,
            "wall_s": wall,
            "file": str(self.file.path),
        }
