"""The network service: the I/O shell around the swap's and the applications' state machines.

One per node daemon. At the repeater (B) an operator's `network_entangle`, `network_ghz` or
`network_teleport` opens a network session on the three nodes (`network_open` to the ends)
and runs it: link pairs from the node's link layer (`LinkOperations.make_pair`, the first
end's into B's memory, the second's into its electron), fed to `Repeater`; at the ends `End`
follows B. The machines' actions become I/O here: messages to the other nodes (`Peers`: the
station links the link layer uses, CurveZMQ, the sender named by its station key), the
node's qubit operations (`LinkOperations`), the network session file's rows (written and
flushed before the message that announces a decision is sent) and timers (an asyncio task
per deadline, which ticks the machine). A network message with a client key, from an unknown
station or from a node that is not in the session is refused and counted (`refused`), as the
link layer's are.

The node's operations are behind `LinkOperations` (a typing.Protocol): the daemon's
(controller/network/node_operations.py) goes through the node's link layer (a link session
per link pair, the BSM, the ends' halves measured at delivery); the tests use an in-memory
fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from controller.data.networkfile import CAUSES, NetworkSessionFile, network_file_path
from controller.data.sessionfile import new_session_id
from controller.messaging.wire import Refused
from controller.network.applications import GhzTally, TeleportReceiver, TeleportSender, ghz_frame_of
from controller.network.estimators import (
    CARDINAL_STATES,
    CLASSICAL_BOUND,
    GHZ_SETTINGS,
    PSI_PLUS_CORRELATORS,
    Estimate,
    bell_fidelity,
    teleport_fidelity,
)
from controller.network.messages import NETWORK, NETWORK_OPERATOR, REASONS
from controller.network.pauli import Pauli, bsm_pauli, ghz_result
from controller.network.swap import (
    DELIVERED,
    DISCARDED,
    OPEN,
    WAITING,
    Action,
    ApplyPauli,
    End,
    Ledger,
    LinkPair,
    MeasureBell,
    PeerWatch,
    Record,
    Release,
    Repeater,
    Send,
    SwapRecord,
    node_down_reason,
    swap_id,
)
from qnode.errors import QnodeError
from sequences.network_ops import GHZ_BASES

log = logging.getLogger("qnode.network")

assert CAUSES == REASONS, "the network file's cause codes are the swap's discard reasons"

VERIFY_BASES = ("X", "Y", "Z")
"""An end-to-end pair's verification: both ends measure in the same basis, cycled per pair.
The basis is chosen before the pair's link pairs are made: an end's electron cannot wait for
the swap (T2* of microseconds), so each end's link session measures its half at once in it
(`peer_delivery`) and the swap's frame is applied to the recorded bit later."""
BSM_KEPT = 100
"""The repeater's summary keeps the newest BSM parities (per end-to-end pair) for checks."""
MEMORY, ELECTRON, BSM, GHZ = "memory", "keep", "bsm", "ghz"
"""Where a link pair's half is delivered: into the node's 13C memory, or kept in the electron."""


class PeerUnreachable(QnodeError):
    """A node did not answer (its daemon down, not served, or silent within the timeout), as
    opposed to one that answered with a refusal. `Peers.request` raises it."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node


class LinkFailure(QnodeError):
    """No link pair within the deadline (the link layer's session ended without one).
    `cut_off`: the link layer discarded this node's stored pair meanwhile (its attempt budget
    ran out), so the end-to-end attempt holding it is discarded with cause `cutoff` at once.
    `unstored`: a pair the link layer delivered (the peer holds its half) but could not keep
    (the move into memory would take it under its minimum): the attempt it opens is discarded
    at once with cause `cutoff`, so the peer learns of it."""

    def __init__(
        self,
        message: str,
        cut_off: str = "",
        unstored: PairResult | None = None,
        consumed: str = "",
    ) -> None:
        super().__init__(message)
        self.cut_off = cut_off
        """The stored pair the link layer cut off ("" when none)."""
        self.unstored = unstored
        self.consumed = consumed
        """The stored pair a BSM in the link's program measured without a delivered pair
        (its heralded shot discarded): the attempt holding it failed (`operation_failed`)."""


@dataclass(frozen=True)
class PairResult:
    """A link pair the link layer delivered to this node: its id, the peer, the heralded state,
    its goodness (planning model), when it was heralded, where this node's half is
    ("memory", "electron" or "measured"), the Paulis this node applied to it since, and, if
    measured, the basis and the +1/-1 result, and the peer's basis."""

    pair_id: str
    peer: str
    state: str
    goodness: float
    made: float
    qubit: str = "electron"
    applied: tuple[str, ...] = ()
    basis: str = ""
    bit: int = 0
    peer_basis: str = ""

    def link_pair(self, node: str) -> LinkPair:
        return LinkPair(
            self.pair_id, (node, self.peer), self.state, self.goodness, self.made, self.applied
        )


class LinkOperations(Protocol):
    """What the network service asks of its node (its link layer and its qubits)."""

    x_sign: int
    """+1, or -1 where this node's X results are the model's negated (the daemon's: the link
    layer reads X as pi/2 about +y, bright = -x, and memory_measure follows it). GHZ's and
    teleportation's results in X are multiplied by it: their bases and frames are the
    model's (sequences/network_ops.py); a Bell pair's XX product does not see it."""

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
        """One link pair with the neighbour `peer` (this node initiates); `delivery` where
        this node's half goes (MEMORY, ELECTRON, BSM or GHZ: with the stored pair right after
        the herald, where `in_link_operations`), `peer_delivery` the peer's; with GHZ,
        `memory_basis` reads the memory's half right after the operation (`measure` then
        returns that bit). LinkFailure when none within `deadline_s`."""
        ...

    def held_pair(self, pair_id: str) -> PairResult | None:
        """A link pair this node holds (the peer initiated it), or None."""
        ...

    def second_link_wait_s(
        self, stored_pair: str, peer: str, protocol: str, fidelity_min: float
    ) -> float | None:
        """How long the repeater may wait for the link pair with `peer` while `stored_pair`
        waits in its memory (the stored pair's attempt budget and the link layer's overhead),
        or None: the service's `Timing.second_link_s`."""
        ...

    in_link_operations: bool
    """make_pair takes delivery BSM (GHZ) for the second link of a swap (a GHZ shot), and
    peer delivery BSM for a teleportation sender's half: the link layer operates on the new
    half and the stored pair (or prepared state) right after the herald, in the link's
    program; bell_measurement, ghz_measurement and teleport_measurement then return what it
    measured."""

    async def bell_measurement(self, memory_pair: str, electron_pair: str) -> tuple[int, int]:
        """The BSM on the qubits holding the two pairs: the parities (zz, xx)."""
        ...

    async def ghz_measurement(self, memory_pair: str, electron_pair: str) -> int:
        """CNOT (memory control, electron target), the electron measured in Z: its bit."""
        ...

    async def prepare_state(self, state: str, peer: str) -> str:
        """The sender: write the cardinal `state` into its memory before its link with `peer`
        (kept through the link session as a stored pair is): its id."""
        ...

    async def teleport_measurement(self, pair_id: str, state: str) -> tuple[int, int]:
        """The sender: the BSM of its half of `pair_id` (in its electron) and the prepared
        `state` (in its memory), at once after the link pair: (zz, xx)."""
        ...

    async def apply_pauli(self, pair_id: str, pauli: str) -> None: ...

    async def measure(self, pair_id: str, basis: str) -> int:
        """This node's half measured in `basis`: +1 or -1, as if after the Paulis applied to
        it (a half measured at its delivery, in the basis its link session was asked for:
        that result with the frame applied to the bit, `pauli.result_after`)."""
        ...

    async def release(self, pair_id: str, reason: str) -> None: ...


class Peers(Protocol):
    """The other nodes' daemons (their station keys): notifications and requests."""

    def send(self, to: str, kind: str, fields: dict[str, Any]) -> None: ...

    async def request(
        self, to: str, kind: str, fields: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """The answer; PeerUnreachable when `to` does not answer (down), QnodeError with its
        reason when it refuses."""
        ...


@dataclass(frozen=True)
class Timing:
    """The machines' deadlines and the service's request timeouts (s). The defaults are the
    swap's (tens of ms: an NV memory's coherence budget); a link layer that takes longer per
    pair needs a longer `second_link_s`.

    `heartbeat_s`, `silence_s`: while a session runs its nodes beat to each other (the
    repeater to both ends, each end to the repeater) and a node silent for `silence_s` is
    known down at once, not after a machine's deadline (the link layer's 0.5 s beat; a
    silence longer than its 3 s, as a network node's loop also runs its link sessions).
    `open_try_s`, `open_retry_s`: an end that does not answer `network_open` (down) is asked
    again every `open_retry_s`, each time waiting `open_try_s`, until the request's deadline."""

    second_link_s: float = 0.05
    ack_s: float = 0.05
    outcome_s: float = 0.1
    decision_s: float = 0.1
    request_s: float = 10.0
    heartbeat_s: float = 0.5
    silence_s: float = 5.0
    open_try_s: float = 5.0
    open_retry_s: float = 1.0


@dataclass
class NetworkSession:
    """One network session as this node runs it."""

    session: str
    application: str
    role: str  # "repeater" or "end"
    ends: tuple[str, str]
    repeater: str
    request: dict[str, Any]
    file: NetworkSessionFile
    machine: Repeater | End | None
    sender: str = ""
    receiver: str = ""
    state: str = "running"
    reason: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    done: int = 0
    link_failures: int = 0
    stop: str = ""
    ghz_ledger: Ledger = field(default_factory=Ledger)
    correlations: dict[str, list[int]] = field(default_factory=dict)
    ghz: GhzTally = field(default_factory=GhzTally)
    teleported: dict[str, list[int]] = field(default_factory=dict)
    teleport_sender: TeleportSender | None = None
    teleport_receiver: TeleportReceiver | None = None
    ghz_status: dict[str, str] = field(default_factory=dict)
    second_link_wait_s: float | None = None
    """The repeater's last wait for a second link pair (derived from the stored pair's budget)."""
    bsm: dict[str, tuple[int, int]] = field(default_factory=dict)
    """The repeater's BSM parities (zz, xx) per end-to-end pair (the newest BSM_KEPT)."""
    ghz_outcomes: dict[str, dict] = field(default_factory=dict)
    """The repeater's ghz_outcome per GHZ shot (the newest BSM_KEPT), for checks."""
    ghz_results: dict[str, dict] = field(default_factory=dict)
    """The repeater's GHZ shots' physical bases and raw results (the newest BSM_KEPT)."""
    prepared: str = ""
    """The sender: the cardinal state its memory holds for the next link pair."""
    sender_bsms: dict[str, asyncio.Task] = field(default_factory=dict)
    """The sender: its BSM per link pair (started as the pair is delivered; the newest kept)."""
    teleports: dict[str, dict] = field(default_factory=dict)
    """The repeater: each teleported state's raw facts from the sender (the newest BSM_KEPT)."""
    last_link_failure: LinkFailure | None = None
    """The repeater's last link pair not made, with its reason (a GHZ shot's discard says it)."""
    armed: set[float] = field(default_factory=set)
    task: asyncio.Task | None = None
    watch: PeerWatch | None = None
    """The other nodes this one watches (the repeater: the ends it opened the session at; an
    end: the repeater), from their heartbeats and messages."""
    unopened: dict[str, str] = field(default_factory=dict)
    """The repeater: ends that did not answer `network_open` yet (down), with why."""

    @property
    def nodes(self) -> tuple[str, str, str]:
        return (self.ends[0], self.repeater, self.ends[1])

    @property
    def ledger(self) -> Ledger:
        return self.machine.ledger if self.machine is not None else self.ghz_ledger

    def counts(self) -> dict[str, int]:
        ledger = self.ledger
        return {
            "attempted": ledger.attempted,
            "delivered": ledger.delivered,
            "discarded": sum(ledger.discarded.values()),
            "refused": ledger.refused,
            "duplicates": ledger.duplicates,
            "foreign": ledger.foreign,
            "open": ledger.open(),
            **{f"discarded_{c}": ledger.discarded[c] for c in CAUSES},
        }

    def figures(self) -> dict[str, dict]:
        """The application's estimates so far, each with its 95 % interval (where there are
        enough shots)."""
        out: dict[str, dict] = {}
        estimates: list[tuple[str, Callable[[], Estimate], float]] = []
        if self.correlations:
            products = {b: np.array(v) for b, v in self.correlations.items()}
            estimates.append(("bell_fidelity", lambda: bell_fidelity(products), 0.5))
        if self.application == "ghz" and self.ghz.shots.total():
            estimates.append(("ghz_bound", self.ghz.bound, 0.5))
            estimates.append(("ghz_fidelity", self.ghz.fidelity, 0.5))
        if self.teleported:
            tally = {s: (g, n) for s, (g, n) in self.teleported.items()}
            estimates.append(
                ("teleport_fidelity", lambda: teleport_fidelity(tally), CLASSICAL_BOUND)
            )
        for name, estimate, bound in estimates:
            with contextlib.suppress(ValueError, KeyError):  # too few shots so far
                out[name] = _as_dict(estimate(), bound)
        return out

    def summary(self) -> dict[str, Any]:
        elapsed = (self.ended or time.time()) - self.started
        counts = self.counts()
        return {
            "session": self.session,
            "application": self.application,
            "role": self.role,
            "nodes": list(self.nodes),
            "state": self.state,
            "reason": self.reason,
            "request": self.request,
            "requested": _requested(self.application, self.request),
            "done": self.done,
            **counts,
            "reasons": {c: counts[f"discarded_{c}"] for c in CAUSES if counts[f"discarded_{c}"]},
            "link_failures": self.link_failures,
            "elapsed_s": elapsed,
            "rate_per_wall_s": self.done / elapsed if elapsed > 0 else 0.0,
            "file": str(self.file.path),
            "figures": self.figures(),
            "bsm": {swap: list(bits) for swap, bits in self.bsm.items()},
            "ghz_outcomes": dict(self.ghz_outcomes),
            "ghz_results": dict(self.ghz_results),
            "teleports": dict(self.teleports),
            "second_link_wait_s": self.second_link_wait_s,
            "down": sorted(self.watch.down) if self.watch is not None else [],
            "unopened": dict(self.unopened),
        }


def _as_dict(estimate: Estimate, bound: float) -> dict[str, float | int | bool]:
    return {
        "value": estimate.value,
        "sigma": estimate.sigma,
        "low": estimate.low,
        "high": estimate.high,
        "shots": estimate.shots,
        "bound": bound,
        "above": estimate.above(bound),
    }


def _requested(application: str, request: dict) -> int:
    if application == "entangle":
        return int(request["pairs"])
    if application == "ghz":
        return int(request["shots"])
    return int(request["shots"]) * len(CARDINAL_STATES)


class NetworkService:
    """See the module's docstring. `neighbours`: the memory nodes this node has a link to."""

    def __init__(
        self,
        node: str,
        neighbours: tuple[str, ...],
        ops: LinkOperations,
        peers: Peers,
        data_dir: Path,
        software_version: str,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.neighbours = tuple(neighbours)
        self.ops = ops
        self.peers = peers
        self.data_dir = Path(data_dir)
        self.software_version = software_version
        self.timing = timing or Timing()
        self.clock = clock
        self.current: NetworkSession | None = None
        self.sessions: dict[str, NetworkSession] = {}
        self.last: NetworkSession | None = None
        self.refused = 0
        self._tasks: set[asyncio.Task] = set()

    # helpers ------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _refuse(self, kind: str, sender: str | None, why: str) -> Refused:
        self.refused += 1
        log.warning("%s: network %s from %s refused: %s", self.node, kind, sender, why)
        return Refused(f"{kind} refused: {why}")

    def _open_file(self, session: str, role: str, application: str, request: dict) -> Any:
        return NetworkSessionFile(
            network_file_path(self.data_dir, session, self.node),
            session=session,
            node=self.node,
            role=role,
            application=application,
            request=request,
            software_version=self.software_version,
        )

    def status(self) -> dict[str, Any]:
        current = self.current
        return {
            "refused_network_messages": self.refused,
            "network_session": current.session if current is not None else None,
        }

    # the machines' actions ------------------------------------------------------------------
    async def _act(self, s: NetworkSession, actions: list[Action]) -> None:
        """Perform the machine's actions in order: a record is written (and flushed) before
        the message after it is sent; an operation that fails discards its attempt and the
        rest of the list is dropped (a swap_applied is never sent for a Pauli not applied).
        The file's counts follow the machine's after each event (an attempt opened too)."""
        try:
            await self._perform(s, actions)
        finally:
            if s.file.is_open:
                s.file.ledger(s.counts())

    async def _perform(self, s: NetworkSession, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Record):
                self._write(s, action.entry)
            elif isinstance(action, Send):
                self.peers.send(action.to, action.kind, dict(action.fields))
            elif isinstance(action, Release):
                try:
                    await self.ops.release(action.link_pair, action.reason)
                except Exception as e:  # measured already, or gone: nothing held
                    log.info("%s: release of %s: %s", self.node, action.link_pair, e)
            elif isinstance(action, MeasureBell):
                try:
                    zz, xx = await self.ops.bell_measurement(*action.link_pairs)
                except Exception as e:
                    await self._failed(s, action.swap, f"{self.node}: the BSM failed: {e}")
                    return
                s.bsm[action.swap] = (zz, xx)
                for old in list(s.bsm)[:-BSM_KEPT]:
                    del s.bsm[old]
                assert isinstance(s.machine, Repeater)
                await self._act(s, s.machine.on_bsm(action.swap, zz, xx, self.clock()))
            elif isinstance(action, ApplyPauli):
                try:
                    if action.pauli != "I":
                        await self.ops.apply_pauli(action.link_pair, action.pauli)
                except Exception as e:
                    await self._failed(s, action.swap or action.link_pair, f"{self.node}: {e}")
                    return
        self._arm(s)

    async def _failed(self, s: NetworkSession, key: str, reason: str) -> None:
        if s.machine is not None:
            await self._act(s, s.machine.on_operation_failed(key, reason[:200], self.clock()))

    def _write(self, s: NetworkSession, entry: SwapRecord) -> None:
        pair = entry.swap or "|".join(entry.link_pairs)
        status = entry.status if entry.status in ("delivered", "discarded") else "refused"
        s.file.record(
            pair,
            status,
            link_pairs=entry.link_pairs,
            cause=entry.kind,
            reason=entry.reason,
            pauli=entry.pauli or "I",
            goodness=entry.goodness,
            made=entry.made,
            t_bsm=entry.t_bsm,
            applied=entry.applied,
        )
        s.file.ledger(s.counts())
        receiver = s.teleport_receiver
        if receiver is not None and entry.swap:
            if entry.status == DELIVERED:
                receiver.on_pair_delivered(entry.swap, self._my_link_pair(s, entry))
            elif entry.status == DISCARDED:
                receiver.on_pair_discarded(entry.swap)

    def _my_link_pair(self, s: NetworkSession, entry: SwapRecord) -> str:
        index = 0 if self.node == s.ends[0] else 1
        return entry.link_pairs[index]

    def _arm(self, s: NetworkSession) -> None:
        """A timer task for each open attempt's deadline not yet armed: it ticks the machine
        just after it."""
        if s.machine is None:
            return
        for attempt in s.machine.attempts.values():
            if attempt.status in OPEN and attempt.deadline not in s.armed:
                s.armed.add(attempt.deadline)
                self._spawn(self._tick_at(s, attempt.deadline))

    async def _tick_at(self, s: NetworkSession, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self.clock()) + 0.002)
        s.armed.discard(deadline)
        if s.machine is not None:
            await self._act(s, s.machine.on_tick(self.clock()))

    # events from the link layer (the ends: pairs a neighbour initiated) -----------------------
    async def link_pair_delivered(self, pair: PairResult) -> None:
        """The link layer delivered a pair to this node for the current session's end."""
        s = self.current
        if s is not None and isinstance(s.machine, End) and pair.peer == s.repeater:
            await self._act(s, s.machine.on_link_pair(pair.link_pair(self.node), self.clock()))
            if s.teleport_sender is not None and s.prepared and pair.qubit != "measured":
                state, s.prepared = s.prepared, ""
                s.sender_bsms[pair.pair_id] = self._spawn(self._sender_bsm(s, pair, state))
                for old in list(s.sender_bsms)[:-BSM_KEPT]:
                    del s.sender_bsms[old]

    async def _sender_bsm(self, s: NetworkSession, pair: PairResult, state: str) -> dict | None:
        """The sender's BSM of its new half and the prepared state, at once (its electron
        cannot wait for the swap). A failure discards the end-to-end attempt everywhere."""
        try:
            zz, xx = await self.ops.teleport_measurement(pair.pair_id, state)
        except Exception as e:
            await self._failed(s, pair.pair_id, f"{self.node}: the teleportation BSM failed: {e}")
            return None
        return {"state": state, "zz": zz, "xx": xx, "t_bsm": self.clock()}

    def push_link_pair(self, pair: PairResult) -> None:
        """`link_pair_delivered` from outside the loop's tasks (the link layer's listener)."""
        self._spawn(self.link_pair_delivered(pair))

    async def link_pair_discarded(self, pair_id: str, reason: str) -> None:
        """The link layer discarded a pair (its cut-off) the network may hold."""
        s = self.current
        if s is not None and s.machine is not None:
            await self._act(s, s.machine.on_link_discarded(pair_id, reason, self.clock()))

    async def node_down(self, node: str) -> None:
        """A node of the session known down (its heartbeats stopped)."""
        s = self.current
        if s is not None:
            await self._node_down(s, node)

    async def _node_down(self, s: NetworkSession, node: str) -> None:
        """Every open attempt `node` has a part in is discarded here (node_down, "node X
        down") and the survivors the machine names are told; the repeater's session stops at
        its next step (`_run`) with that reason."""
        log.warning("%s: network session %s: %s", self.node, s.session, node_down_reason(node))
        if s.watch is not None and node in s.watch.last:
            s.watch.down.setdefault(node, self.clock())
        if s.machine is not None:
            await self._act(s, s.machine.on_node_down(node, self.clock()))

    def _start_watch(self, s: NetworkSession, nodes: tuple[str, ...]) -> None:
        """Watch `nodes` (beat to them, hear them) while the session runs here."""
        if s.watch is None:
            s.watch = PeerWatch(nodes, self.timing.silence_s, self.clock())
            self._spawn(self._beat(s))
        else:
            for node in nodes:
                s.watch.last.setdefault(node, self.clock())

    async def _beat(self, s: NetworkSession) -> None:
        """The session's heartbeats to the nodes watched, and the watch's ticks: a node
        silent for `silence_s` is known down (`_node_down`)."""
        while s.state == "running" and s.watch is not None:
            for node in list(s.watch.last):
                try:
                    self.peers.send(node, "network_heartbeat", {"session": s.session})
                except Exception as e:  # not served (its daemon down): the watch sees it
                    log.debug("%s: heartbeat to %s: %s", self.node, node, e)
            for node in s.watch.tick(self.clock()):
                await self._node_down(s, node)
            await asyncio.sleep(self.timing.heartbeat_s)

    def _heard(self, s: NetworkSession, node: str) -> None:
        if s.watch is not None and s.watch.heard(node, self.clock()):
            log.warning("%s: network session %s: node %s is back", self.node, s.session, node)

    # operator requests (the repeater) -------------------------------------------------------
    async def handle_operator(self, msg: dict) -> dict:
        kind = msg["type"]
        if kind == "network_session":
            return {"session": self._session(msg["session"]).summary()}
        if kind == "network_session_data":
            from controller.data.networkfile import read_network_session

            path = self._session(msg["session"]).file.path
            loop = asyncio.get_running_loop()
            return {"data": await loop.run_in_executor(None, read_network_session, path)}
        if kind == "network_abort":
            s = self._session(msg["session"])
            if s.state == "running":
                s.stop = "aborted by the operator"
            return {}
        if kind not in NETWORK_OPERATOR:
            raise QnodeError(f"unknown network request {kind!r}")
        return await self._start(kind, msg)

    def _session(self, session: str) -> NetworkSession:
        s = self.sessions.get(session)
        if s is None:
            raise QnodeError(f"no network session {session!r} on node {self.node}")
        return s

    def _ends_of(self, kind: str, msg: dict) -> tuple[str, str]:
        if kind == "network_teleport":
            ends = [msg["from"], msg["to"]]
        elif msg.get("ends"):
            ends = list(msg["ends"])
        elif len(self.neighbours) == 2:
            ends = list(self.neighbours)
        else:
            raise QnodeError(
                f"node {self.node} has {len(self.neighbours)} neighbours "
                f"({', '.join(self.neighbours) or 'none'}): name the ends"
            )
        if len(set(ends)) != 2:
            raise QnodeError(f"the ends {ends} are not two different nodes")
        for end in ends:
            if end == self.node:
                raise QnodeError(f"{self.node} repeats between the ends: it is not one of them")
            if end not in self.neighbours:
                raise QnodeError(
                    f"{end} is not a neighbour of {self.node} (its links: "
                    f"{', '.join(self.neighbours) or 'none'}): {self.node} cannot repeat for it"
                )
        return ends[0], ends[1]

    async def _start(self, kind: str, msg: dict) -> dict:
        if self.current is not None:
            raise QnodeError(
                f"node {self.node} is busy with network session {self.current.session}"
            )
        ends = self._ends_of(kind, msg)
        application = kind.removeprefix("network_")
        request = {k: v for k, v in msg.items() if k not in ("v", "id", "t", "type")}
        request.setdefault("protocol", "single_click")
        request.setdefault("fidelity_min", 0.0)
        request.setdefault("deadline_s", 600.0)
        request.setdefault("verify", application != "entangle" or bool(msg.get("verify")))
        request["ends"] = list(ends)
        session_id = new_session_id()
        machine = None
        if application != "ghz":
            machine = Repeater(
                self.node, ends, second_link_s=self.timing.second_link_s, ack_s=self.timing.ack_s
            )
        s = NetworkSession(
            session_id,
            application,
            "repeater",
            ends,
            self.node,
            request,
            self._open_file(session_id, "repeater", application, request),
            machine,
            sender=ends[0] if application == "teleport" else "",
            receiver=ends[1] if application == "teleport" else "",
        )
        opened: list[str] = []
        try:
            for end in ends:
                try:
                    await self._open_at(end, s)
                    opened.append(end)
                except PeerUnreachable as e:  # down: asked again as the session runs
                    s.unopened[end] = str(e)
        except QnodeError as e:  # an end refused: waiting would not change it
            for end in opened:
                with contextlib.suppress(QnodeError):
                    await self._close_at(end, s, "failed", f"{self.node}: {e}")
            s.file.close("failed", str(e))
            raise QnodeError(f"network session not opened: {e}") from None
        self.current = self.last = s
        self.sessions[session_id] = s
        if opened:
            self._start_watch(s, tuple(opened))
        s.task = self._spawn(self._run(s))
        return {"session": s.summary()}

    async def _open_at(self, end: str, s: NetworkSession) -> None:
        await self.peers.request(
            end,
            "network_open",
            {
                "session": s.session,
                "application": s.application,
                "ends": list(s.ends),
                "repeater": self.node,
                "outcome_s": self.timing.outcome_s,
                "decision_s": self.timing.decision_s,
                "sender": s.sender or None,
                "receiver": s.receiver or None,
            },
            min(self.timing.open_try_s, self.timing.request_s),
        )

    async def _open_unopened(self, s: NetworkSession, deadline: float) -> str:
        """Ask the ends that were down at the start again, every `open_retry_s`, until the
        request's deadline: "" once all are open, else why not (naming the node)."""
        started = time.monotonic()
        while s.unopened:
            for end in list(s.unopened):
                try:
                    await self._open_at(end, s)
                except PeerUnreachable as e:
                    s.unopened[end] = str(e)
                    continue
                except QnodeError as e:  # it answered, and refused
                    return f"{end} refused network_open: {e}"
                del s.unopened[end]
                log.warning("%s: %s answered network_open at last", self.node, end)
                self._start_watch(s, (end,))
            if not s.unopened:
                break
            if s.stop:
                return s.stop
            if time.monotonic() + self.timing.open_retry_s > deadline:
                down = ", ".join(sorted(s.unopened))
                waited = time.monotonic() - started
                last = "; ".join(s.unopened.values())
                return (
                    f"node {down} down: no answer to network_open within the request's "
                    f"deadline ({waited:.0f} s of retries; {last})"
                )
            await asyncio.sleep(self.timing.open_retry_s)
        return ""

    def _down_end(self, s: NetworkSession) -> str:
        """Why the repeater cannot go on ("" when it can): an end known down."""
        if s.watch is None:
            return ""
        down = [e for e in s.ends if e in s.watch.down]
        return node_down_reason(down[0]) if down else ""

    async def _close_at(self, end: str, s: NetworkSession, state: str, reason: str) -> dict:
        fields = {"session": s.session, "state": state, "reason": reason[:200]}
        return await self.peers.request(end, "network_close", fields, self.timing.request_s)

    async def _run(self, s: NetworkSession) -> None:
        deadline = time.monotonic() + float(s.request["deadline_s"])
        state, reason = "completed", ""
        try:
            target = _requested(s.application, s.request)
            unopened = await self._open_unopened(s, deadline)
            if unopened:
                state, reason = ("aborted" if unopened == s.stop else "failed"), unopened
                target = 0
            while s.done < target:
                if s.stop:
                    state, reason = "aborted", s.stop
                    break
                down = self._down_end(s)
                if down:
                    state, reason = "failed", down
                    break
                if time.monotonic() > deadline:
                    state, reason = "deadline", f"deadline of {s.request['deadline_s']:g} s passed"
                    break
                if s.application == "ghz":
                    await self._ghz_shot(s, deadline)
                    continue
                if s.application == "teleport":
                    await self._teleport_once(s, deadline)
                    continue
                verify = s.request["verify"]
                basis = VERIFY_BASES[s.done % len(VERIFY_BASES)] if verify else ELECTRON
                swap = await self._swap_once(s, deadline, basis, basis)
                if swap is None:
                    continue
                if verify:
                    await self._verify_pair(s, swap, basis)
                s.done = s.ledger.delivered  # a delivery a late discard took back is not
        except QnodeError as e:
            log.warning("%s: network session %s failed: %s", self.node, s.session, e)
            state, reason = "failed", f"{type(e).__name__}: {e}"
        except Exception as e:
            log.exception("%s: network session %s", self.node, s.session)
            state, reason = "failed", f"{type(e).__name__}: {e}"
        await self._finish(s, state, reason)

    async def _finish(self, s: NetworkSession, state: str, reason: str) -> None:
        if s.machine is not None:
            await self._act(s, s.machine.close(self.clock(), f"session {state}"))
        s.file.ledger(s.counts())
        down = s.watch.down if s.watch is not None else {}
        for end in s.ends:
            if end in s.unopened or end in down:
                continue  # down: it never opened the session, or cannot hear the close
            try:
                await self._close_at(end, s, state, reason)
            except QnodeError as e:
                log.warning("%s: %s did not close session %s: %s", self.node, end, s.session, e)
        s.state, s.reason, s.ended = state, reason, time.time()
        s.file.close(state, reason)
        if self.current is s:
            self.current = None

    async def close(self, reason: str) -> None:
        """The daemon stops: a running session ends (shutdown), its file closed."""
        s = self.current
        if s is None:
            return
        if s.task is not None and s.role == "repeater":
            s.task.cancel()
        if s.role == "repeater":
            await self._finish(s, "aborted", reason)
        else:
            await self._end_close(s, "aborted", reason)
        for task in list(self._tasks):
            task.cancel()

    # the repeater's steps ---------------------------------------------------------------------
    async def _pair(
        self,
        s: NetworkSession,
        end: str,
        delivery: str,
        deadline_s: float,
        peer_delivery: str = ELECTRON,
        stored: str = "",
        memory_basis: str = "",
    ) -> PairResult | None:
        """A link pair with `end`, or None; a stored pair the link layer cut off meanwhile
        (`stored`) is discarded with cause cutoff on every node that knows it."""
        try:
            return await self.ops.make_pair(
                end,
                s.request["protocol"],
                delivery,
                peer_delivery,
                float(s.request["fidelity_min"]),
                max(deadline_s, 1e-3),
                memory_basis,
            )
        except LinkFailure as e:
            s.link_failures += 1
            s.last_link_failure = e
            log.info("%s: no link pair with %s: %s", self.node, end, e)
            machine, now = s.machine, self.clock()
            if stored and e.cut_off == stored and machine is not None:
                await self._act(s, machine.on_link_discarded(stored, str(e), now))
            if stored and e.consumed == stored and machine is not None:
                await self._failed(s, stored, f"{self.node}: {e}")
            if e.unstored is not None and isinstance(machine, Repeater):
                pair = e.unstored.link_pair(self.node)
                await self._act(s, machine.on_link_pair(pair, now))
                await self._act(s, machine.on_link_discarded(pair.pair_id, str(e), now))
            return None

    async def _wait_closed(self, s: NetworkSession, key: str) -> Any:
        assert s.machine is not None
        attempt = s.machine.by_link_pair[key]
        while attempt.status in OPEN:
            await asyncio.sleep(0.002)
        return attempt

    async def _swap_once(
        self,
        s: NetworkSession,
        deadline: float,
        first_deliver: str = ELECTRON,
        second_deliver: str = ELECTRON,
    ) -> str | None:
        """One end-to-end pair: its swap id once delivered, None once discarded. Each end's
        half is delivered as its `*_deliver` says (kept, or measured at once in X, Y, Z).
        B waits for the second link as long as its node allows the stored pair
        (`second_link_wait_s`: its attempt budget), at most `Timing.second_link_s`."""
        machine = s.machine
        assert isinstance(machine, Repeater)
        first, second = s.ends
        p1 = await self._pair(s, first, MEMORY, deadline - time.monotonic(), first_deliver)
        if p1 is None:
            return None
        wait = self._second_link_wait(s, p1.pair_id, second)
        await self._act(s, machine.on_link_pair(p1.link_pair(self.node), self.clock(), wait))
        attempt = machine.by_link_pair[p1.pair_id]
        left = min(deadline - time.monotonic(), wait)
        # the BSM in the second link's program, right after its herald, where the link
        # layer can (the electron's half would not keep its phase to a program of its own)
        here = BSM if self.ops.in_link_operations else ELECTRON
        p2 = await self._pair(s, second, here, left, second_deliver, stored=p1.pair_id)
        if p2 is not None and attempt.status != WAITING:
            # the memory's wait ran out while the second link was made: not this attempt's
            await self.ops.release(p2.pair_id, "the first link pair was discarded meanwhile")
            p2 = None
        if p2 is not None:
            await self._act(s, machine.on_link_pair(p2.link_pair(self.node), self.clock()))
        attempt = await self._wait_closed(s, p1.pair_id)
        return attempt.swap if attempt.status == DELIVERED else None

    async def _measure_at(
        self, node: str, s: NetworkSession, pair: str, link_pair: str, basis: str
    ) -> dict:
        fields = {"session": s.session, "pair": pair, "link_pair": link_pair, "basis": basis}
        return await self.peers.request(node, "network_measure", fields, self.timing.request_s)

    async def _verify_pair(self, s: NetworkSession, swap: str, basis: str) -> None:
        """Both ends' results of the delivered pair in one basis (XX, YY, ZZ in turn), each
        with its frame applied."""
        assert s.machine is not None
        link_pairs = s.machine.by_swap[swap].pairs
        try:
            first, second = await asyncio.gather(
                *(self._measure_at(end, s, swap, link_pairs[end].pair_id, basis) for end in s.ends)
            )
        except QnodeError as e:
            log.warning("%s: %s not verified: %s", self.node, swap, e)
            return
        s.file.measured(swap, first=(basis, first["result"]), second=(basis, second["result"]))
        s.correlations.setdefault(basis, []).append(
            PSI_PLUS_CORRELATORS[basis] * first["result"] * second["result"]
        )

    async def _teleport_once(self, s: NetworkSession, deadline: float) -> None:
        """Teleport the next cardinal state from the sender to the receiver (Hermans et al.
        2022): the sender writes it into its memory, then the swap runs with the sender's half
        measured with it in the Bell basis right after its link's herald (delivery BSM; kept
        in its electron and measured at once after its link pair where the link layer cannot)
        and the receiver's measured at once in the state's basis; once the pair is delivered the
        sender's outcome goes to the receiver, which applies both corrections to its bit."""
        states = list(CARDINAL_STATES)
        state = states[s.done % len(states)]
        basis, sign = CARDINAL_STATES[state]
        fields = {"session": s.session, "state": state}
        await self.peers.request(s.sender, "teleport_prepare", fields, self.timing.request_s)
        # the sender's BSM in its link's program, right after the herald, where its link layer
        # can (the electron's half would not keep its phase to a program of its own)
        sender_half = BSM if self.ops.in_link_operations else ELECTRON
        swap = await self._swap_once(s, deadline, sender_half, basis)
        if swap is None:
            return
        try:
            sent = await self.peers.request(
                s.sender,
                "teleport_send",
                {"session": s.session, "swap": swap, "state": state},
                self.timing.request_s,
            )
            answer = await self.peers.request(
                s.receiver,
                "teleport_receive",
                {"session": s.session, "swap": swap},
                self.timing.request_s,
            )
        except QnodeError as e:
            log.warning("%s: %s not teleported: %s", self.node, swap, e)
            return
        s.teleports[swap] = {"state": state, **sent, "result": answer["result"]}
        for old in list(s.teleports)[:-BSM_KEPT]:
            del s.teleports[old]
        s.file.measured(swap, state=state, second=(basis, answer["result"]))
        tally = s.teleported.setdefault(state, [0, 0])
        tally[0] += answer["result"] == sign
        tally[1] += 1
        s.done += 1

    def _second_link_wait(self, s: NetworkSession, stored: str, peer: str) -> float:
        """B's wait for its second link while `stored` is in its memory: the node's derived
        wait (the stored pair's budget), at most `Timing.second_link_s`."""
        wait = self.timing.second_link_s
        try:
            allowed = self.ops.second_link_wait_s(
                stored, peer, s.request["protocol"], float(s.request["fidelity_min"])
            )
        except (QnodeError, KeyError, ValueError) as e:  # not plannable: the service's cap
            log.warning("%s: no wait derived for the second link: %s", self.node, e)
            allowed = None
        if allowed is not None:
            wait = max(min(wait, allowed), 1e-3)
        s.second_link_wait_s = wait
        return wait

    async def _ghz_shot(self, s: NetworkSession, deadline: float) -> None:
        """A GHZ state on (first end, B's memory, second end) from two link pairs (Pompili et
        al. 2021), measured by all three in one of the five settings in turn. The setting is
        chosen before the link pairs are made: the ends measure their halves at once in it
        (their electrons cannot wait), in the physical bases of GHZ_BASES; B's memory is read
        after its operation; each result takes its basis's sign and the shot's frame."""
        first, second = s.ends
        ledger = s.ghz_ledger
        verify = bool(s.request["verify"])
        setting = list(GHZ_SETTINGS)[s.done % len(GHZ_SETTINGS)]
        physical = [GHZ_BASES[k][setting[k]][0] for k in range(3)]
        end_a = physical[0] if verify else ELECTRON
        end_c = physical[2] if verify else ELECTRON
        p1 = await self._pair(s, first, MEMORY, deadline - time.monotonic(), end_a)
        if p1 is None:
            return
        ledger.attempted += 1
        s.file.ledger(s.counts())  # the shot is open: the file counts it at once
        wait = self._second_link_wait(s, p1.pair_id, second)
        left = min(deadline - time.monotonic(), wait)
        s.last_link_failure = None
        # B's GHZ operation in the second link's program, right after its herald, where the
        # link layer can (the electron's half would not keep its phase to a program of its own)
        here = GHZ if self.ops.in_link_operations else ELECTRON
        # verifying, B's memory is read in its setting's basis in that program too (the frame
        # the program keeps; a later program's readout would need the operation's turn)
        read = physical[1] if verify and here == GHZ else ""
        p2 = await self._pair(s, second, here, left, end_c, stored=p1.pair_id, memory_basis=read)
        shot = swap_id(p1.pair_id, p2.pair_id if p2 is not None else "")
        if p2 is None:
            failure = s.last_link_failure
            cut = failure is not None and failure.cut_off == p1.pair_id
            used = failure is not None and failure.consumed == p1.pair_id
            why = f"no second link pair: {failure}" if failure else "no second link pair"
            cause = "cutoff" if cut else ("operation_failed" if used else "timeout")
            await self._ghz_discard(s, shot, (p1.pair_id,), cause, why)
            with contextlib.suppress(Exception):  # a pair cut off is gone already
                await self.ops.release(p1.pair_id, why)
            return
        links = (p1.pair_id, p2.pair_id)
        try:
            electron_bright = await self.ops.ghz_measurement(*links)
        except Exception as e:
            await self._ghz_discard(s, shot, links, "operation_failed", f"{self.node}: {e}")
            with contextlib.suppress(Exception):
                await self.ops.release(p1.pair_id, "the GHZ operation failed")
            return
        outcome = {
            "ghz": shot,
            "ends": list(s.ends),
            "link_pairs": list(links),
            "link_states": [p1.state, p2.state],
            "memory_applied": list(p1.applied),
            "electron_applied": list(p2.applied),
            "electron_bright": electron_bright,
            "setting": setting,
        }
        made = (p1.made, p2.made)
        s.ghz_outcomes[shot] = dict(outcome)
        for old in list(s.ghz_outcomes)[:-BSM_KEPT]:
            del s.ghz_outcomes[old]
        s.file.record(shot, "delivered", link_pairs=links, made=made, t_bsm=self.clock())
        for end in s.ends:
            self.peers.send(end, "ghz_outcome", outcome)
        if not verify:
            ledger.delivered += 1
            s.done += 1
            await self.ops.release(p1.pair_id, "GHZ shot kept, not measured")
            return
        try:
            answer_a, mine, answer_c = await asyncio.gather(
                self._measure_at(first, s, shot, p1.pair_id, physical[0]),
                self._memory_result(p1.pair_id, physical[1]),
                self._measure_at(second, s, shot, p2.pair_id, physical[2]),
            )
        except Exception as e:
            await self._ghz_discard(s, shot, links, "operation_failed", f"measurement: {e}")
            return
        raw = (answer_a["result"], mine, answer_c["result"])
        results = (
            ghz_result(raw[0], 0, setting[0]),
            ghz_result(raw[1], 1, setting[1]),
            ghz_result(raw[2], 2, setting[2]),
        )
        frame = ghz_frame_of(outcome, tuple(answer_a["applied"]), tuple(answer_c["applied"]))
        s.ghz.add(setting, results, frame)
        corrected = [
            -r if p.anticommutes_with(b) else r
            for r, p, b in zip(results, frame, setting, strict=True)
        ]
        s.ghz_results[shot] = {"physical": list(physical), "raw": list(raw)}
        for old in list(s.ghz_results)[:-BSM_KEPT]:
            del s.ghz_results[old]
        s.file.measured(
            shot,
            first=(setting[0], corrected[0]),
            repeater=(setting[1], corrected[1]),
            second=(setting[2], corrected[2]),
        )
        ledger.delivered += 1
        s.file.ledger(s.counts())
        s.done += 1

    async def _memory_result(self, pair_id: str, basis: str) -> int:
        """B's memory read in `basis`, in the model's bases (x_sign)."""
        result = await self.ops.measure(pair_id, basis)
        return result * self.ops.x_sign if basis == "X" else result

    async def _ghz_discard(
        self, s: NetworkSession, shot: str, links: tuple[str, ...], cause: str, reason: str
    ) -> None:
        s.ghz_ledger.discarded[cause] += 1
        s.file.record(shot, "discarded", link_pairs=links, cause=cause, reason=reason)
        s.file.ledger(s.counts())
        for end in s.ends:
            fields = {"swap": shot, "link_pairs": list(links), "cause": cause, "reason": reason}
            self.peers.send(end, "swap_discard", fields)

    # messages from the other nodes ------------------------------------------------------------
    async def handle_station(self, msg: dict, sender: str | None, from_station: bool) -> dict:
        """A network message (checked against its schema) with the allow-list name of its key
        and whether that key is a station's."""
        kind = msg["type"]
        if not from_station or sender is None or not sender.startswith("node-"):
            raise self._refuse(kind, sender, "not from a node's station key")
        name = sender.removeprefix("node-")
        if kind == "network_open":
            return await self._open_end(msg, name)
        s = self._route(msg)
        if kind == "network_heartbeat" and s is None:
            return {}  # a session this node never had or forgot (it restarted): nothing to do
        if s is None or name not in s.nodes or name == self.node:
            raise self._refuse(kind, sender, "not from a node of this network session")
        self._heard(s, name)
        if kind == "network_heartbeat":
            return {}
        now = self.clock()
        if kind in NETWORK and s.machine is not None:
            await self._known_pairs(s, msg)
            await self._act(s, s.machine.on_message(name, msg, now))
            return {}
        if kind == "swap_discard" and s.application == "ghz":  # a GHZ shot B discarded
            if name != s.repeater:
                raise self._refuse(kind, sender, "only the repeater discards a GHZ shot")
            links = tuple(msg["link_pairs"])
            self._ghz_shot_at_end(s, msg["swap"], links, msg["cause"], name, msg["reason"])
            return {}
        if kind == "ghz_outcome":
            if name != s.repeater:
                raise self._refuse(kind, sender, "only the repeater reports a GHZ shot")
            self._ghz_shot_at_end(s, msg["ghz"], tuple(msg["link_pairs"]))
            return {}
        if kind == "teleport_outcome":
            if s.teleport_receiver is None:
                raise self._refuse(kind, sender, f"{self.node} receives nothing in {s.session}")
            # it may overtake B's decision about its pair (another sender): held until then
            self._spawn(self._outcome_once_delivered(s, name, msg))
            return {}
        if name != s.repeater:
            raise self._refuse(kind, sender, "only the repeater asks this")
        if kind == "network_measure":
            return await self._measure(s, msg)
        if kind == "teleport_prepare":
            return await self._teleport_prepare(s, msg)
        if kind == "teleport_send":
            return await self._teleport_send(s, msg)
        if kind == "teleport_receive":
            return await self._teleport_receive(s, msg)
        if kind == "network_close":
            await self._end_close(s, msg["state"], f"{name}: {msg['reason']}")
            return {"counts": s.counts()}
        raise QnodeError(f"unknown network message {kind!r}")

    def _ghz_shot_at_end(
        self,
        s: NetworkSession,
        shot: str,
        links: tuple[str, ...],
        cause: str = "",
        sender: str = "",
        reason: str = "",
    ) -> None:
        """An end's record of a GHZ shot: delivered when B reports it, discarded when B
        discards it (a shot counted once, whichever comes first)."""
        before = s.ghz_status.get(shot)
        if before == "discarded" or (before == "delivered" and not cause):
            s.ghz_ledger.duplicates += 1
            return
        if before is None:
            s.ghz_ledger.attempted += 1
        if cause:
            s.ghz_ledger.delivered -= before == "delivered"
            s.ghz_ledger.discarded[cause] += 1
            s.ghz_status[shot] = "discarded"
            why = f"{sender}: {reason}"
            s.file.record(shot, "discarded", link_pairs=links, cause=cause, reason=why)
        else:
            s.ghz_ledger.delivered += 1
            s.ghz_status[shot] = "delivered"
            s.file.record(shot, "delivered", link_pairs=links)
        s.file.ledger(s.counts())

    async def _outcome_once_delivered(self, s: NetworkSession, sender: str, msg: dict) -> None:
        """The receiver takes a teleport_outcome once B's decision about its pair is here
        (up to `decision_s`); the receiver's machine refuses it if the pair never is."""
        receiver = s.teleport_receiver
        assert receiver is not None and isinstance(s.machine, End)
        limit = time.monotonic() + self.timing.decision_s
        while msg["swap"] not in receiver.resources and time.monotonic() < limit:
            attempt = s.machine.by_swap.get(msg["swap"])
            if attempt is not None and attempt.status == DISCARDED:
                break
            await asyncio.sleep(0.002)
        await self._act(s, receiver.on_message(sender, msg, self.clock()))

    def _route(self, msg: dict) -> NetworkSession | None:
        """The session a message is about: the one it names, else the current (or last)."""
        if "session" in msg:
            return self.sessions.get(msg["session"])
        return self.current or self.last

    async def _known_pairs(self, s: NetworkSession, msg: dict) -> None:
        """An end learns of a link pair the repeater initiated from the link layer (pushed,
        `link_pair_delivered`) or, when a message names one it has not heard of, by asking
        its link layer (`held_pair`)."""
        if not isinstance(s.machine, End) or msg.get("swap") in s.machine.by_swap:
            return
        for pair_id in msg.get("link_pairs", []):
            if pair_id in s.machine.by_link_pair:
                return
        for pair_id in msg.get("link_pairs", []):
            held = self.ops.held_pair(pair_id)
            if held is not None and held.peer == s.repeater:
                await self._act(s, s.machine.on_link_pair(held.link_pair(self.node), self.clock()))
                return

    async def _open_end(self, msg: dict, name: str) -> dict:
        ends = (str(msg["ends"][0]), str(msg["ends"][1]))
        if name != msg["repeater"] or name not in self.neighbours:
            raise self._refuse("network_open", f"node-{name}", "not from a neighbour that repeats")
        if self.node not in ends or name in ends:
            raise QnodeError(f"{self.node} is not an end of {ends} (repeater {name})")
        if msg["session"] in self.sessions:
            return {"opened": True}  # asked again: idempotent
        stale = self.current
        if stale is not None and stale.role == "end" and stale.repeater == name:
            # the repeater runs one session at a time: it opens a new one only once the old
            # one is over there (it never said so: it died, or its close was lost)
            await self._end_close(
                stale,
                "failed",
                f"{name} opened session {msg['session']} without closing this one "
                "(it restarted, or its close was lost)",
            )
        if self.current is not None:
            raise QnodeError(
                f"node {self.node} is busy with network session {self.current.session}"
            )
        application = msg["application"]
        request = {k: v for k, v in msg.items() if k not in ("v", "id", "t", "type")}
        s = NetworkSession(
            msg["session"],
            application,
            "end",
            ends,
            name,
            request,
            self._open_file(msg["session"], "end", application, request),
            None
            if application == "ghz"
            else End(
                self.node,
                ends,
                name,
                outcome_s=float(msg["outcome_s"]),
                decision_s=float(msg["decision_s"]),
            ),
            sender=msg.get("sender") or "",
            receiver=msg.get("receiver") or "",
        )
        if application == "teleport":
            if self.node == s.sender:
                s.teleport_sender = TeleportSender(self.node, s.receiver)
            elif self.node == s.receiver:
                s.teleport_receiver = TeleportReceiver(self.node, s.sender)
        self.current = self.last = s
        self.sessions[s.session] = s
        self._start_watch(s, (name,))
        return {"opened": True}

    async def _end_close(self, s: NetworkSession, state: str, reason: str) -> None:
        if s.state != "running":
            return
        if s.machine is not None:
            await self._act(s, s.machine.close(self.clock(), f"session {state}"))
        s.file.ledger(s.counts())
        s.state, s.reason, s.ended = state, reason, time.time()
        s.file.close(state, reason)
        if self.current is s:
            self.current = None

    async def _held_half(self, s: NetworkSession, pair: str, link_pair: str) -> tuple[str, tuple]:
        """This end's link pair of a delivered end-to-end pair or of a GHZ shot it recorded,
        and the Paulis this node applied to it. B's request may overtake B's decision (it is
        answered in a task of its own): it waits for the decision, up to `decision_s`."""
        limit = time.monotonic() + self.timing.decision_s
        while True:
            if isinstance(s.machine, End):
                attempt = s.machine.by_swap.get(pair)
                if attempt is not None and attempt.status == DELIVERED:
                    mine = attempt.pairs[self.node]
                    return mine.pair_id, mine.applied
                if attempt is not None and attempt.status == DISCARDED:
                    raise QnodeError(f"{pair} was discarded on {self.node}")
            elif s.file.has_row(pair):
                held = self.ops.held_pair(link_pair)
                if held is None or held.peer != s.repeater:
                    raise QnodeError(
                        f"{link_pair}: not a link pair {self.node} holds with {s.repeater}"
                    )
                return held.pair_id, held.applied
            if time.monotonic() > limit:
                raise QnodeError(f"{pair}: not delivered on {self.node}")
            await asyncio.sleep(0.002)

    async def _measure(self, s: NetworkSession, msg: dict) -> dict:
        link_pair, applied = await self._held_half(s, msg["pair"], msg["link_pair"])
        result = await self.ops.measure(link_pair, msg["basis"])
        if result not in (-1, 1):
            raise QnodeError(f"the measurement gave {result!r}, not +1 or -1")
        if s.application == "ghz":
            # a physical result in the model's bases, not yet the GHZ's Pauli's with its
            # frame: B records that (its row is the shot's); the link layer's bit is in this
            # node's link session file
            result *= self.ops.x_sign if msg["basis"] == "X" else 1
            return {"result": result, "applied": list(applied)}
        if self.node == s.ends[0]:
            s.file.measured(msg["pair"], first=(msg["basis"], result))
        else:
            s.file.measured(msg["pair"], second=(msg["basis"], result))
        return {"result": result, "applied": list(applied)}

    async def _teleport_prepare(self, s: NetworkSession, msg: dict) -> dict:
        if s.teleport_sender is None:
            raise QnodeError(f"{self.node} does not send in network session {s.session}")
        state_id = await self.ops.prepare_state(msg["state"], s.repeater)
        s.prepared = msg["state"]
        return {"prepared": state_id}

    async def _teleport_send(self, s: NetworkSession, msg: dict) -> dict:
        """The sender's outcome for a delivered pair: its BSM's parities (measured at its
        link pair) with its share of the swap's frame folded in (a Pauli Q on its half before
        the BSM turns the Bell state P it names into P Q), to the receiver."""
        sender = s.teleport_sender
        if sender is None:
            raise QnodeError(f"{self.node} does not send in network session {s.session}")
        link_pair, _ = await self._held_half(s, msg["swap"], "")
        task = s.sender_bsms.get(link_pair)
        if task is None:
            raise QnodeError(f"{self.node} made no BSM with {link_pair}")
        bsm = await asyncio.wait_for(asyncio.shield(task), self.timing.request_s / 2)
        if bsm is None:
            raise QnodeError(f"the BSM of {link_pair} failed (the pair was discarded)")
        if bsm["state"] != msg["state"]:
            raise QnodeError(f"{link_pair} was measured with {bsm['state']}, not {msg['state']}")
        assert isinstance(s.machine, End)
        share = s.machine.by_swap[msg["swap"]].pauli or "I"
        folded = bsm_pauli(bsm["zz"], bsm["xx"]) * Pauli.named(share)
        await self._act(
            s, sender.on_bsm(msg["swap"], folded.x, folded.z, self.clock(), msg["state"])
        )
        s.file.measured(msg["swap"], state=msg["state"])
        return {"zz": folded.x, "xx": folded.z, "raw": [bsm["zz"], bsm["xx"]], "share": share}

    async def _teleport_receive(self, s: NetworkSession, msg: dict) -> dict:
        receiver = s.teleport_receiver
        if receiver is None:
            raise QnodeError(f"{self.node} does not receive in network session {s.session}")
        limit = time.monotonic() + self.timing.request_s / 2
        while True:
            resource = receiver.resources.get(msg["swap"])
            if resource is not None and resource.status == "corrected":
                break
            if time.monotonic() > limit:
                raise QnodeError(f"{msg['swap']}: no teleport_outcome from {s.sender} in time")
            await asyncio.sleep(0.002)
        basis, _ = CARDINAL_STATES[resource.state]
        result = await self.ops.measure(resource.link_pair, basis)
        result *= self.ops.x_sign if basis == "X" else 1  # in the model's bases
        value = receiver.on_result(msg["swap"], basis, result, corrected=True)
        s.file.measured(msg["swap"], state=resource.state, second=(basis, value))
        return {"result": value, "state": resource.state}


__all__ = [
    "BSM",
    "ELECTRON",
    "GHZ",
    "MEMORY",
    "LinkFailure",
    "LinkOperations",
    "NetworkService",
    "NetworkSession",
    "PairResult",
    "PeerUnreachable",
    "Peers",
    "Timing",
]
