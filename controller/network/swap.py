"""Entanglement swapping as two state machines, sans I/O: `Repeater` (B) and `End` (A, C).

Fed events (a link pair the link layer delivered or discarded, a peer's message with the
station its key named, the BSM's parities, a node known down, the clock's time as an
argument), each returns the actions its daemon shell performs: send a message, do the BSM,
apply a Pauli, release a qubit, record an end-to-end pair's fate. No sockets, threads or
clocks here (h11's way); docs/network.md has the sequence and the frame's derivation.

1. B holds a link pair with one end (in its memory) and waits, up to `second_link_s`, for
   one with the other end; then it asks for the BSM (`MeasureBell`).
2. With the BSM's parities B sends `swap_outcome` to both ends: the link pairs' ids, their
   heralded states, the Paulis B applied, the parities, the time stamps and the goodness.
3. Each end, holding its link pair, derives its share of the frame, applies it with the
   Paulis it applied itself (`ApplyPauli`) and answers `swap_applied`; it waits up to
   `outcome_s` for the outcome, then up to `decision_s` for B's decision.
4. B, with both `swap_applied` within `ack_s`, records the pair delivered and sends
   `swap_delivered`; the ends record it delivered.
Any failure discards the pair on every node that knows of it: the node that sees it records
the discard and sends `swap_discard` (B to the ends, an end to B, which tells the other
end). A discard after a delivery turns the delivery into a discard (kind "conflict" at the
node it reaches; the same on every node). An outcome or decision after a discard is refused
and recorded; a duplicate is ignored (its answer sent again, idempotent). Every node keeps
`Ledger`: attempted == delivered + discarded (by reason) + open, always.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from controller.link.memory import StoredPair
from controller.network.messages import REASONS
from controller.network.pauli import Pauli, own_correction, swap_frame, werner_swap_fidelity

SECOND_LINK_S = 0.05
"""B waits this long with one link pair for the other (a cut-off of its own: NV memories
lose their coherence within tens of ms of attempts; the link layer's cut-off may be sooner)."""
OUTCOME_S = 0.1
"""An end waits this long for the BSM outcome after its link pair was delivered."""
ACK_S = 0.05
"""B waits this long, after sending the outcome, for both ends' swap_applied."""
DECISION_S = 0.1
"""An end waits this long, after applying its frame, for B's decision (longer than ACK_S, so
that B, which decides, gives up first)."""

WAITING, MEASURING, SENT, APPLIED, DELIVERED, DISCARDED = (
    "waiting",
    "measuring",
    "sent",
    "applied",
    "delivered",
    "discarded",
)
OPEN = (WAITING, MEASURING, SENT, APPLIED)
REFUSED = "refused"


def swap_id(first_pair: str, second_pair: str) -> str:
    """The end-to-end pair's id: its two link pairs' ids (unique, as those are), the first
    end's link first."""
    return f"{first_pair}|{second_pair}"


@dataclass(frozen=True)
class LinkPair:
    """A pair the link layer delivered into one of this node's qubits: its id, its two
    nodes, its heralded state, its goodness (expected fidelity, the planning model's), when it
    was made, and the Paulis this node applied to its qubit since the herald."""

    pair_id: str
    nodes: tuple[str, str]
    state: str
    goodness: float
    made: float
    applied: tuple[str, ...] = ()

    @classmethod
    def from_stored(cls, stored: StoredPair, node: str, applied: tuple[str, ...] = ()) -> LinkPair:
        """A pair the link layer's memory holds (`NodeMemory`), as this layer takes it: its
        heralded state, its goodness now, its herald's time as when it was made."""
        return cls(
            stored.pair_id,
            (node, stored.peer),
            stored.outcome,
            stored.goodness,
            stored.heralded_at,
            tuple(applied),
        )


# actions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    to: str
    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class MeasureBell:
    """B: do the BSM on the qubits holding these two link pairs; report `on_bsm`."""

    swap: str
    link_pairs: tuple[str, str]


@dataclass(frozen=True)
class ApplyPauli:
    """An end: apply this Pauli to the qubit holding its half of the pair."""

    swap: str
    link_pair: str
    pauli: str


@dataclass(frozen=True)
class Release:
    """Free the qubit holding this link pair (the pair is discarded)."""

    link_pair: str
    reason: str


@dataclass
class SwapRecord:
    """One end-to-end attempt as this node records it (the shell writes it to its file)."""

    swap: str
    link_pairs: tuple[str, ...]
    status: str
    kind: str = ""
    reason: str = ""
    goodness: float = 0.0
    made: tuple[float, ...] = ()
    t_bsm: float | None = None
    applied: tuple[float | None, float | None] = (None, None)
    pauli: str = ""


@dataclass(frozen=True)
class Record:
    entry: SwapRecord


Action = Send | MeasureBell | ApplyPauli | Release | Record


@dataclass
class Ledger:
    """Every attempt once: delivered, discarded by reason, or still open."""

    attempted: int = 0
    delivered: int = 0
    discarded: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    duplicates: int = 0
    foreign: int = 0

    def open(self) -> int:
        return self.attempted - self.delivered - sum(self.discarded.values())


@dataclass
class _Attempt:
    key: str
    pairs: dict[str, LinkPair] = field(default_factory=dict)  # end node -> its link pair
    status: str = WAITING
    deadline: float = 0.0
    wait: float = 0.0  # the repeater's wait for the second link pair (s)
    swap: str = ""
    t_bsm: float | None = None
    goodness: float = 0.0
    applied: dict[str, float] = field(default_factory=dict)
    pauli: str = ""
    discarded: tuple[str, str] = ("", "")  # (kind, reason), said again to a late message
    closed: float | None = None  # when it was delivered or discarded (this node's clock)


class _Machine:
    """What the repeater and the ends share: attempts, the ledger, records and discards."""

    def __init__(self, node: str, ends: tuple[str, str]) -> None:
        if len(set(ends)) != 2:
            raise ValueError(f"an end-to-end pair has two different ends, got {ends}")
        self.node = node
        self.ends = ends
        self.ledger = Ledger()
        self.attempts: dict[str, _Attempt] = {}
        self.by_link_pair: dict[str, _Attempt] = {}
        self.by_swap: dict[str, _Attempt] = {}

    def prune(self, now: float, keep_s: float = 600.0) -> int:
        """Forget attempts closed more than `keep_s` ago (a message about one later is then
        counted as foreign, not refused); the ledger keeps their counts. -> how many."""
        old = [
            k for k, a in self.attempts.items() if a.closed is not None and a.closed < now - keep_s
        ]
        for key in old:
            attempt = self.attempts.pop(key)
            for pair in attempt.pairs.values():
                self.by_link_pair.pop(pair.pair_id, None)
            self.by_swap.pop(attempt.swap, None)
        return len(old)

    def _open(self, key: str) -> _Attempt:
        attempt = _Attempt(key)
        self.attempts[key] = attempt
        self.ledger.attempted += 1
        return attempt

    def _link_pairs(self, attempt: _Attempt) -> tuple[str, ...]:
        return tuple(attempt.pairs[e].pair_id for e in self.ends if e in attempt.pairs)

    def _record(self, attempt: _Attempt, status: str, kind: str = "", reason: str = "") -> Record:
        return Record(
            SwapRecord(
                swap=attempt.swap,
                link_pairs=self._link_pairs(attempt),
                status=status,
                kind=kind,
                reason=reason,
                goodness=attempt.goodness,
                made=tuple(attempt.pairs[e].made for e in self.ends if e in attempt.pairs),
                t_bsm=attempt.t_bsm,
                applied=(attempt.applied.get(self.ends[0]), attempt.applied.get(self.ends[1])),
                pauli=attempt.pauli,
            )
        )

    def _discard(
        self, now: float, attempt: _Attempt, kind: str, reason: str, tell: tuple[str, ...]
    ) -> list[Action]:
        """Discard an attempt (a delivered one becomes a discard), release what it holds,
        record it and tell `tell`; a discarded one again: nothing (idempotent)."""
        if kind not in REASONS:
            raise ValueError(f"unknown discard kind {kind!r}")
        if attempt.status == DISCARDED:
            self.ledger.duplicates += 1
            return []
        if attempt.status == DELIVERED:
            self.ledger.delivered -= 1
        actions: list[Action] = [Release(p, reason) for p in self._held(attempt)]
        attempt.status = DISCARDED
        attempt.closed = now
        attempt.discarded = (kind, reason[:200])
        self.ledger.discarded[kind] += 1
        actions.append(self._record(attempt, DISCARDED, kind, reason))
        fields = {
            "swap": attempt.swap,
            "link_pairs": list(self._link_pairs(attempt)),
            "cause": kind,
            "reason": reason[:200],
        }
        actions += [Send(to, "swap_discard", dict(fields)) for to in tell if to != self.node]
        return actions

    def _held(self, attempt: _Attempt) -> list[str]:
        """The link pairs of the attempt still in this node's qubits."""
        raise NotImplementedError

    def _find(self, msg: dict) -> _Attempt | None:
        if msg.get("swap") and msg["swap"] in self.by_swap:
            return self.by_swap[msg["swap"]]
        for pair_id in msg.get("link_pairs", []):
            if pair_id in self.by_link_pair:
                return self.by_link_pair[pair_id]
        return None

    def _refuse(self, attempt: _Attempt, what: str) -> list[Action]:
        self.ledger.refused += 1
        return [self._record(attempt, REFUSED, reason=f"{what} after the pair was discarded")]

    def close(self, now: float, reason: str = "the network layer closed") -> list[Action]:
        """Shutdown: every open attempt discarded (kind shutdown), the peers told."""
        actions: list[Action] = []
        for attempt in list(self.attempts.values()):
            if attempt.status in OPEN:
                actions += self._discard(now, attempt, "shutdown", reason, self._peers(attempt))
        return actions

    def _peers(self, attempt: _Attempt) -> tuple[str, ...]:
        raise NotImplementedError

    def on_operation_failed(self, key: str, reason: str, now: float) -> list[Action]:
        """This node's operation for an open attempt (the BSM, a Pauli) failed: the attempt
        (named by its swap id or one of its link pairs) is discarded on every node."""
        attempt = self.by_swap.get(key) or self.by_link_pair.get(key)
        if attempt is None or attempt.status not in OPEN:
            return []
        return self._discard(now, attempt, "operation_failed", reason, self._peers(attempt))


class Repeater(_Machine):
    """B: holds a link pair with each end, measures them in the Bell basis, decides."""

    def __init__(
        self,
        node: str,
        ends: tuple[str, str],
        *,
        second_link_s: float = SECOND_LINK_S,
        ack_s: float = ACK_S,
    ) -> None:
        super().__init__(node, ends)
        if node in ends:
            raise ValueError(f"the repeater {node} is not one of the ends {ends}")
        self.second_link_s = second_link_s
        self.ack_s = ack_s
        self.current: _Attempt | None = None

    def _peers(self, attempt: _Attempt) -> tuple[str, ...]:
        """The ends that know of the attempt: each whose link pair it holds."""
        return tuple(e for e in self.ends if e in attempt.pairs)

    def _held(self, attempt: _Attempt) -> list[str]:
        """Before the BSM both are in B's qubits; after it, nothing is."""
        return [p.pair_id for p in attempt.pairs.values()] if attempt.status == WAITING else []

    # events ------------------------------------------------------------------------------------
    def on_link_pair(self, pair: LinkPair, now: float, wait_s: float | None = None) -> list[Action]:
        """A link pair in one of B's qubits. The first of an attempt opens it: B waits
        `wait_s` (default `second_link_s`: the stored pair's budget, as the shell derives it)
        for the other end's."""
        end = _end_of(pair, self.node, self.ends)
        if pair.pair_id in self.by_link_pair:
            self.ledger.duplicates += 1
            return []
        attempt = self.current
        if attempt is None or attempt.status != WAITING:
            attempt = self._open(pair.pair_id)
            attempt.wait = self.second_link_s if wait_s is None else wait_s
            attempt.deadline = now + attempt.wait
            self.current = attempt
        elif end in attempt.pairs:
            raise ValueError(
                f"a second link pair with {end} ({pair.pair_id}) while "
                f"{attempt.pairs[end].pair_id} is held: the link layer must not make it"
            )
        attempt.pairs[end] = pair
        self.by_link_pair[pair.pair_id] = attempt
        if len(attempt.pairs) < 2:
            return []
        first, second = (attempt.pairs[e].pair_id for e in self.ends)
        attempt.swap = swap_id(first, second)
        attempt.status = MEASURING
        self.by_swap[attempt.swap] = attempt
        return [MeasureBell(attempt.swap, (first, second))]

    def on_bsm(self, swap: str, zz: int, xx: int, now: float) -> list[Action]:
        """The BSM's parities (zz = 1: Z x Z gave -1; xx = 1: X x X gave -1)."""
        attempt = self.by_swap.get(swap)
        if attempt is None:
            raise ValueError(f"no BSM was asked for {swap}")
        if attempt.status != MEASURING:
            return self._refuse(attempt, "a BSM result") if attempt.status == DISCARDED else []
        first, second = (attempt.pairs[e] for e in self.ends)
        attempt.t_bsm = now
        attempt.goodness = werner_swap_fidelity(first.goodness, second.goodness)
        attempt.status = SENT
        attempt.deadline = now + self.ack_s
        fields = {
            "swap": attempt.swap,
            "ends": list(self.ends),
            "link_pairs": [first.pair_id, second.pair_id],
            "link_states": [first.state, second.state],
            "repeater_applied": [*first.applied, *second.applied],
            "zz": zz,
            "xx": xx,
            "made": [first.made, second.made],
            "t_bsm": now,
            "goodness": attempt.goodness,
        }
        return [Send(end, "swap_outcome", dict(fields)) for end in self.ends]

    def on_link_discarded(self, pair_id: str, reason: str, now: float) -> list[Action]:
        """B's link layer discarded a pair (its cut-off): the attempt holding it, if still
        waiting, is discarded; a pair already measured is no longer the link layer's."""
        attempt = self.by_link_pair.get(pair_id)
        if attempt is None or attempt.status != WAITING:
            return []
        reason = _cut_off_here(self.node, reason)
        actions = self._discard(now, attempt, "cutoff", reason, self._peers(attempt))
        return [a for a in actions if not (isinstance(a, Release) and a.link_pair == pair_id)]

    def on_message(self, sender: str, msg: dict, now: float) -> list[Action]:
        """A message from an end (`sender`: the station its key named)."""
        if sender not in self.ends:
            self.ledger.foreign += 1
            return []
        attempt = self._find(msg)
        if attempt is None or sender not in attempt.pairs:
            self.ledger.foreign += 1
            return []
        kind = msg["type"]
        if kind == "swap_applied":
            if attempt.status == DISCARDED:
                return [
                    *self._refuse(attempt, f"{sender}'s swap_applied"),
                    *self._tell_discarded(attempt, sender),
                ]
            if attempt.status == DELIVERED or sender in attempt.applied:
                self.ledger.duplicates += 1
                if attempt.status == DELIVERED:
                    return [Send(sender, "swap_delivered", self._delivered_fields(attempt))]
                return []
            if attempt.status != SENT:
                self.ledger.foreign += 1
                return []
            attempt.applied[sender] = float(msg["t_applied"])
            if len(attempt.applied) < 2:
                return []
            attempt.status = DELIVERED
            attempt.closed = now
            self.ledger.delivered += 1
            fields = self._delivered_fields(attempt)
            return [
                self._record(attempt, DELIVERED),
                *[Send(end, "swap_delivered", dict(fields)) for end in self.ends],
            ]
        if kind == "swap_discard":
            other = tuple(e for e in self._peers(attempt) if e != sender)
            why = f"{sender}: {msg['reason']}"
            if attempt.status == DELIVERED:
                return self._discard(now, attempt, "conflict", why, other)
            return self._discard(now, attempt, msg["cause"], why, other)
        self.ledger.foreign += 1
        return []

    def on_node_down(self, node: str, now: float) -> list[Action]:
        """A node known down (its heartbeats stopped): every open attempt it is in goes, and
        one that waits for its link pair (it will not come)."""
        actions: list[Action] = []
        for attempt in list(self.attempts.values()):
            waits_for = attempt.status == WAITING and node in self.ends
            if attempt.status in OPEN and (node in attempt.pairs or waits_for):
                tell = tuple(e for e in self._peers(attempt) if e != node)
                actions += self._discard(now, attempt, "node_down", node_down_reason(node), tell)
        return actions

    def on_tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for attempt in list(self.attempts.values()):
            if attempt.status == WAITING and now > attempt.deadline:
                actions += self._discard(
                    now,
                    attempt,
                    "timeout",
                    f"no second link pair within {attempt.wait:.3g} s",
                    self._peers(attempt),
                )
            elif attempt.status == SENT and now > attempt.deadline:
                silent = [e for e in self.ends if e not in attempt.applied]
                actions += self._discard(
                    now,
                    attempt,
                    "timeout",
                    f"no swap_applied from {', '.join(silent)} within {self.ack_s:g} s",
                    self._peers(attempt),
                )
        return actions

    def _delivered_fields(self, attempt: _Attempt) -> dict:
        return {"swap": attempt.swap, "applied": [attempt.applied[e] for e in self.ends]}

    def _tell_discarded(self, attempt: _Attempt, to: str) -> list[Action]:
        """Say again that an attempt was discarded (its first discard may have been lost)."""
        return [
            Send(
                to,
                "swap_discard",
                {
                    "swap": attempt.swap,
                    "link_pairs": list(self._link_pairs(attempt)),
                    "cause": attempt.discarded[0],
                    "reason": attempt.discarded[1],
                },
            )
        ]


class End(_Machine):
    """A or C: holds one link pair with the repeater, applies the frame, follows B's decision."""

    def __init__(
        self,
        node: str,
        ends: tuple[str, str],
        repeater: str,
        *,
        outcome_s: float = OUTCOME_S,
        decision_s: float = DECISION_S,
    ) -> None:
        super().__init__(node, ends)
        if node not in ends:
            raise ValueError(f"{node} is not one of the ends {ends}")
        self.repeater = repeater
        self.outcome_s = outcome_s
        self.decision_s = decision_s
        self.first = node == ends[0]

    def _peers(self, attempt: _Attempt) -> tuple[str, ...]:
        return (self.repeater,)

    def _held(self, attempt: _Attempt) -> list[str]:
        """This end's half, from its delivery until the pair is discarded (the shell ignores a
        release of a qubit an application has measured already)."""
        return [attempt.pairs[self.node].pair_id]

    def on_link_pair(self, pair: LinkPair, now: float) -> list[Action]:
        if set(pair.nodes) != {self.node, self.repeater}:
            raise ValueError(f"{pair.pair_id} is not a pair of {self.node} and {self.repeater}")
        if pair.pair_id in self.by_link_pair:
            self.ledger.duplicates += 1
            return []
        attempt = self._open(pair.pair_id)
        attempt.pairs[self.node] = pair
        attempt.deadline = now + self.outcome_s
        self.by_link_pair[pair.pair_id] = attempt
        return []

    def on_link_discarded(self, pair_id: str, reason: str, now: float) -> list[Action]:
        attempt = self.by_link_pair.get(pair_id)
        if attempt is None or attempt.status != WAITING:
            return []
        reason = _cut_off_here(self.node, reason)
        actions = self._discard(now, attempt, "cutoff", reason, (self.repeater,))
        return [a for a in actions if not (isinstance(a, Release) and a.link_pair == pair_id)]

    def on_message(self, sender: str, msg: dict, now: float) -> list[Action]:
        if sender != self.repeater:
            self.ledger.foreign += 1
            return []
        attempt = self._find(msg)
        if attempt is None:
            self.ledger.foreign += 1
            return []
        kind = msg["type"]
        if kind == "swap_outcome":
            return self._on_outcome(attempt, msg, now)
        if kind == "swap_delivered":
            if attempt.status == DISCARDED:
                return [*self._refuse(attempt, "B's decision"), *self._again(attempt)]
            if attempt.status != APPLIED:
                self.ledger.duplicates += attempt.status == DELIVERED
                return []
            attempt.applied = dict(zip(self.ends, msg["applied"], strict=True))
            attempt.status = DELIVERED
            attempt.closed = now
            self.ledger.delivered += 1
            return [self._record(attempt, DELIVERED)]
        if kind == "swap_discard":
            why = f"{sender}: {msg['reason']}"
            if msg["cause"] == "cutoff" and msg["reason"].startswith(cut_off_reason(sender)):
                why = msg["reason"]  # B's own cut-off: its reason names it already
            if attempt.status == DELIVERED:
                return self._discard(now, attempt, "conflict", why, ())
            return self._discard(now, attempt, msg["cause"], why, ())
        self.ledger.foreign += 1
        return []

    def _on_outcome(self, attempt: _Attempt, msg: dict, now: float) -> list[Action]:
        mine = attempt.pairs[self.node]
        if attempt.status == DISCARDED:
            return [*self._refuse(attempt, "a BSM outcome"), *self._again(attempt)]
        if attempt.status in (APPLIED, DELIVERED):
            self.ledger.duplicates += 1
            return [self._applied_message(attempt)] if attempt.status == APPLIED else []
        problem = self._outcome_problem(mine, msg)
        if problem:
            return self._discard(now, attempt, "conflict", problem, (self.repeater,))
        index = 0 if self.first else 1
        frame = swap_frame(
            msg["link_states"][0],
            msg["link_states"][1],
            msg["zz"],
            msg["xx"],
            tuple(msg["repeater_applied"]),
        )
        share: Pauli = frame.first if self.first else frame.second
        correction = own_correction(share, mine.applied)
        other_made = msg["made"][1 - index]
        attempt.pairs[self._other_end()] = LinkPair(
            msg["link_pairs"][1 - index],
            (self.repeater, self._other_end()),
            msg["link_states"][1 - index],
            0.0,
            float(other_made),
        )
        attempt.swap = msg["swap"]
        self.by_swap[attempt.swap] = attempt
        attempt.t_bsm = float(msg["t_bsm"])
        attempt.goodness = float(msg["goodness"])
        attempt.applied = {self.node: now}
        attempt.pauli = correction.name
        attempt.status = APPLIED
        attempt.deadline = now + self.decision_s
        return [
            ApplyPauli(attempt.swap, mine.pair_id, correction.name),
            self._applied_message(attempt),
        ]

    def _outcome_problem(self, mine: LinkPair, msg: dict) -> str:
        """Why an outcome does not fit this end's pair, or ""."""
        if tuple(msg["ends"]) != self.ends:
            return f"the outcome names the ends {msg['ends']}, this pair's are {list(self.ends)}"
        index = 0 if self.first else 1
        if len(msg["link_pairs"]) != 2 or msg["link_pairs"][index] != mine.pair_id:
            return f"the outcome's link pairs {msg['link_pairs']} do not hold {mine.pair_id}"
        if msg["swap"] != swap_id(*msg["link_pairs"]):
            return f"the outcome's id {msg['swap']!r} is not its link pairs'"
        if msg["link_states"][index] != mine.state:
            return f"the outcome says {msg['link_states'][index]}, the link layer {mine.state}"
        return ""

    def _applied_message(self, attempt: _Attempt) -> Send:
        return Send(
            self.repeater,
            "swap_applied",
            {"swap": attempt.swap, "t_applied": attempt.applied[self.node], "pauli": attempt.pauli},
        )

    def _again(self, attempt: _Attempt) -> list[Action]:
        return [
            Send(
                self.repeater,
                "swap_discard",
                {
                    "swap": attempt.swap,
                    "link_pairs": list(self._link_pairs(attempt)),
                    "cause": attempt.discarded[0],
                    "reason": attempt.discarded[1],
                },
            )
        ]

    def _other_end(self) -> str:
        return self.ends[1] if self.first else self.ends[0]

    def on_node_down(self, node: str, now: float) -> list[Action]:
        """The repeater or the other end known down: every open attempt goes."""
        if node not in (self.repeater, self._other_end()):
            return []
        tell = () if node == self.repeater else (self.repeater,)
        actions: list[Action] = []
        for attempt in list(self.attempts.values()):
            if attempt.status in OPEN:
                actions += self._discard(now, attempt, "node_down", node_down_reason(node), tell)
        return actions

    def on_tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for attempt in list(self.attempts.values()):
            if attempt.status == WAITING and now > attempt.deadline:
                why = f"no BSM outcome from {self.repeater} within {self.outcome_s:g} s"
                actions += self._discard(now, attempt, "timeout", why, (self.repeater,))
            elif attempt.status == APPLIED and now > attempt.deadline:
                why = f"no decision from {self.repeater} within {self.decision_s:g} s"
                actions += self._discard(now, attempt, "timeout", why, (self.repeater,))
        return actions


def node_down_reason(node: str) -> str:
    """The reason a node's discard gives when `node` is known down."""
    return f"node {node} down"


def cut_off_reason(node: str) -> str:
    """The start of the reason an end gives for a link pair `node` (its peer) cut off."""
    return f"cut-off at {node}"


def _cut_off_here(node: str, reason: str) -> str:
    """A link pair this node's link layer cut off: the reason says where (a peer told of it
    keeps it as it is, "cut-off at B: ...")."""
    return f"{cut_off_reason(node)}: {reason.removeprefix('cut-off: ')}"


class PeerWatch:
    """Which of a session's other nodes are alive, from what this node hears of them (their
    heartbeats, or any message): sans I/O, the shell feeds `heard` and `tick` with its clock.
    A node silent for `silence_s` is down (`tick` names it once); heard again, it is up (and
    `heard` says so). Before a node was ever heard it counts from `start`."""

    def __init__(self, nodes: tuple[str, ...], silence_s: float, now: float) -> None:
        if silence_s <= 0:
            raise ValueError(f"a silence is a positive time, got {silence_s!r}")
        self.silence_s = silence_s
        self.last: dict[str, float] = dict.fromkeys(nodes, now)
        self.down: dict[str, float] = {}
        """Node -> when it was found down (this node's clock)."""

    def heard(self, node: str, now: float) -> bool:
        """`node` spoke: True when it was down until now (it is back)."""
        if node not in self.last:
            return False
        self.last[node] = max(self.last[node], now)
        return self.down.pop(node, None) is not None

    def tick(self, now: float) -> list[str]:
        """The nodes found down at `now` (each once, until heard again)."""
        found = [n for n, t in self.last.items() if n not in self.down and now - t > self.silence_s]
        for node in found:
            self.down[node] = now
        return found

    def silent_s(self, node: str, now: float) -> float:
        return now - self.last[node]


def _end_of(pair: LinkPair, node: str, ends: tuple[str, str]) -> str:
    if node not in pair.nodes:
        raise ValueError(f"{pair.pair_id} is not a pair of {node}: {pair.nodes}")
    other = pair.nodes[1] if pair.nodes[0] == node else pair.nodes[0]
    if other not in ends:
        raise ValueError(f"{pair.pair_id} links {node} with {other}, not with {ends}")
    return other
