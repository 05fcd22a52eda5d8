"""The link layer inside a node daemon: sessions with the peer node and the midpoint.

Peer messages arrive on the daemon's ROUTER from the peer's DEALER and are accepted only with
the peer's station key; heralds arrive on this node's DEALER to the midpoint. The decisions
are LinkSession's (controller/link/session.py); this is the I/O around them: the round loop,
keep-alive, and what the peer and the operator ask. It sees its node only through NodeView.

Its in-process API for a service inside the daemon (docs/network.md, "Delivery into memory"):
`handle_operator({"type": "entangle", ..., "delivery": ..., "peer_delivery": ...})` starts a
session; `session` / `finished[id]` hold its summary (with `memory` on a memory node);
`memory_measure(basis)`, `bell_measurement()` and `memory_state()` read and show the qubits
that `memory` (a NodeMemory) keeps; a session whose own delivery is "bsm" measures its new
pair's half with the stored pair's in the Bell basis right after the herald (one program:
the swap), its two bits in the summary's `bsm` and in `bsm_result(session_id)`; one whose
own delivery is "ghz" runs the GHZ operation there instead (the memory keeps its half), its
electron's bit in the summary's `ghz` and in `ghz_results`;
`session_listeners` are called with each ended session's summary (the network service
learns of the pairs a neighbour's session delivered here);
`link_expectation` and `attempt_budget` plan a session before it starts (the network
service's wait for a second link while a pair is stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from calibration.planning import memory_from_calibration
from controller.data.names import check_name, session_path
from controller.data.sessionfile import DELIVERED, SessionFile, new_session_id, read_session
from controller.labconfig import LabConfig
from controller.link.memory import (
    CUT_OFF,
    UNBOUNDED,
    Discard,
    Move,
    NodeMemory,
    StoredPair,
    hold_attempts,
)
from controller.link.messages import (
    FROM_MIDPOINT,
    FROM_PEER,
    check_request,
    own_delivery,
    request_from,
)
from controller.link.node_view import NodeView, RoundRun, RunOutcome
from controller.link.plan import (
    Expectation,
    alpha_amplitude,
    announced_delivery,
    attempt_window_ns,
    link_plan,
    max_attempts,
    memory_still_there,
    one_pair_round,
    one_pair_round_shots,
    plan_round,
    round_basis,
    round_sequence,
)
from controller.link.reconcile import reconcile_crashed, session_pairs
from controller.link.session import LinkSession
from controller.link.shots import ShotParser
from controller.link.vocabulary import (
    BASES,
    DRAIN_TIMEOUT_S,
    HEARTBEAT_S,
    HOLD_ROUNDS_MAX,
    OUTCOMES,
    ROUND_DONE_TIMEOUT_S,
    SILENCE_S,
    STORED_PAIR_DELIVERIES,
)
from controller.messaging.station_link import StationDialer, StationLink
from controller.messaging.wire import Refused
from qnode import __version__
from qnode.errors import QnodeError
from sequences.compiler import ATTEMPTS_EXHAUSTED, SHOT_END
from sequences.library import BELL_TABLE, bell_measurement
from sequences.memory import MemoryReadout
from sequences.network_ops import ghz_operation, prepare_memory_state
from sequences.operations import Sequence, SpinInit, memory_check

log = logging.getLogger("qnode.link")
ROUND_POLL_S = 0.002
"""How often the end of a round waits to look again at the peer's round_done and the shots
still undecided: a swap's feed-forward waits on both (a few wake-ups a round)."""
BSM_RESULTS_KEPT = 64
PREPARED = "state:"
"""The id prefix of a state prepared in memory (`prepare_memory`: "state:<run>")."""


@dataclass(frozen=True)
class _NoRun:
    """A round that did not run (or stopped) for the link layer's own reason."""

    status: str
    reason: str


@dataclass(frozen=True)
class HeldPairs:
    """What an operation on both held halves works on (NodeLink._electron_and_stored)."""

    memory: NodeMemory
    electron: StoredPair
    """The pair whose half is in the electron."""
    stored: StoredPair
    """The pair whose half is in a memory qubit (the first one)."""
    qubit: str
    """The memory qubit's name within the node ("c13")."""
    frame_deg: float
    """The stored state's known turn since it was written."""


def memory_alpha(session: LinkSession) -> tuple[float, int]:
    """(alpha, stored-pair attempts per attempt) of a session's attempts, as the memory's
    planning model takes them: single-click its alpha once; Barrett-Kok two excitations at
    half the population bright."""
    return memory_alpha_of(session.expected.alpha, str(session.request.get("protocol")))


def memory_alpha_of(alpha: float | None, protocol: str) -> tuple[float, int]:
    """`memory_alpha` of a planned session (its alpha and protocol)."""
    if protocol == "single_click" and alpha is not None:
        return float(alpha), 1
    return 0.5, 2


def memory_bit(bright: bool, basis: str, frame_node: bool, heralded: str) -> int:
    """A memory's readout as the link layer reports a measured half: +1 bright, but X
    negated (the link measures an electron's X as pi/2 about +y, plan.round_sequence: bright
    is -x there, +x in MemoryReadout), and the link's Pauli frame (Z on the frame node turns
    psi- into psi+) on X and Y."""
    bit = 1 if bright else -1
    if basis == "X":
        bit = -bit
    if heralded == "psi_minus" and frame_node and basis in ("X", "Y"):
        bit = -bit
    return bit


class NodeLink:
    def __init__(self, lab: LabConfig, node: NodeView[Any], dialer: StationDialer) -> None:
        self.lab = lab
        self.node = node
        self.name = node.name
        self.dialer = dialer
        mine = lab.links_of(self.name)
        self.midpoint = next(iter(mine.values())).midpoint if mine else ""
        """The midpoint of the current (or last) session's link: set per peer."""
        self.herald_port = lab.nodes[self.name].channels.port(next(iter(mine), ""))
        """The sequencer's herald input of that link (software heralding forwards there)."""
        self.session: LinkSession | None = None
        self.finished: dict[str, dict] = {}
        self.links: dict[str, StationLink] = {}
        self.forged = 0
        self._tasks: set[asyncio.Task] = set()
        self._round_task: asyncio.Task | None = None
        self._alpha_amplitude: float | None = None
        self._herald_line = ThreadPoolExecutor(1, thread_name_prefix=f"herald-{self.name}")
        config = lab.nodes[self.name]
        self.memory: NodeMemory | None = (
            NodeMemory.for_node(lab, self.name, None) if config.memories else None
        )
        """The pairs this node's qubits hold after a session delivered into memory."""
        self._budget_ran_out: str | None = None
        """Why this node's last round stopped at a stored pair's attempt budget (a cut-off)."""
        self.frames: dict[str, tuple[bool, str]] = {}
        """Stored pair -> (this node corrects its psi- with Z, the heralded outcome)."""
        self.memory_discards: list[dict] = []
        """Stored pairs discarded here, with their reasons (newest last)."""
        self.bsm_results: dict[str, dict] = {}
        """Session id -> its Bell-state measurement (delivery "bsm"), as bell_measurement()
        returns it (the newest BSM_RESULTS_KEPT sessions')."""
        self.ghz_results: dict[str, dict] = {}
        """Session id -> its GHZ operation (delivery "ghz"), as ghz_operation() returns it
        (the newest BSM_RESULTS_KEPT sessions')."""
        self._operation_shots: dict[str, tuple[int, Any, dict]] = {}
        """Session id -> (shot, own record, the stored pair and frame) of the heralded shot
        whose BSM or GHZ operation used the stored pair (one per session)."""
        self.session_listeners: list[Callable[[dict], None]] = []
        """Called (in the loop) with each session's summary once it has ended here."""

    # lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile the sessions this node crashed out of (in the background)."""
        self._spawn(reconcile_crashed(self.node.data_dir, self.name, self._ask_session_pairs))

    async def stop(self, reason: str) -> None:
        """The daemon stops: end the session (aborted), close the station links."""
        session = self.session
        if session is not None:
            session.end_with("aborted", reason)
            await self._end(session, "aborted", reason)
        for task in list(self._tasks):
            task.cancel()
        for link in self.links.values():
            link.close()
        self._herald_line.shutdown(wait=False, cancel_futures=True)

    def abort(self, reason: str) -> None:
        """The operator aborts: the session ends (after its run stops) with this reason."""
        session = self.session
        if session is not None:
            session.end_with("aborted", reason)

    @property
    def link_malformed(self) -> int:
        return sum(link.malformed for link in self.links.values())

    # stations -----------------------------------------------------------------------------
    def _only_peer(self) -> str:
        """The peer of a request that names none: this node's only neighbour."""
        peers = [link.peer(self.name) for link in self.lab.links_of(self.name).values()]
        if len(peers) != 1:
            raise QnodeError(
                f"node {self.name} has {len(peers)} peers ({', '.join(peers) or 'none'}): "
                "the request must name one"
            )
        return peers[0]

    def _towards(self, peer: str) -> None:
        """Sessions with this peer go through the midpoint of the link to it (a node between
        two midpoints has one per neighbour)."""
        link_name, link = self.lab.link_between(self.name, peer)
        self.midpoint = link.midpoint
        self.herald_port = self.lab.nodes[self.name].channels.port(link_name)

    def link_to(self, target: str) -> StationLink:
        link = self.links.get(target)
        if link is None:
            if self.lab.nodes[target].kind == "midpoint":
                link = self.dialer.dial(target, partial(self._from_midpoint, target), FROM_MIDPOINT)
            else:
                link = self.dialer.dial(target, lambda msg: None, FROM_PEER)
            self.links[target] = link
        return link

    async def _ask_session_pairs(self, peer: str, session: str) -> dict:
        return await self.link_to(peer).request(
            "session_pairs", session=session, timeout_s=5.0, idempotent=True
        )

    def _from_midpoint(self, midpoint: str, msg: dict) -> None:
        session = self.session
        if session is None or midpoint != self.midpoint:
            return  # another link's midpoint (a node between two): not this session's
        session.on_midpoint_message()
        kind = msg["type"]
        if kind == "herald":
            session.on_herald(msg)
        elif kind == "heartbeat":
            if not session.on_midpoint_heartbeat(msg["session"], msg["instance"]):
                self._lose(session, f"midpoint {self.midpoint} restarted: the session is gone")
        elif kind == "session_ended" and msg["session"] == session.session:
            self._lose(session, f"midpoint {self.midpoint} ended the session: {msg['reason']}")

    def _forward(self, outcome: str) -> None:
        """Software heralding: the outcome to this node's sequencer, in order, at once."""
        asyncio.get_running_loop().run_in_executor(self._herald_line, self._send_herald, outcome)

    def _send_herald(self, outcome: str) -> None:
        try:
            self.node.send_herald(outcome, self.herald_port)
        except Exception as e:  # the attempt then times out: a fail, not a fault
            log.warning("%s: herald not forwarded to the sequencer: %s", self.name, e)

    def _to_peer(self, kind: str, **fields: Any) -> None:
        session = self.session
        if session is not None:
            self.link_to(session.peer).send(kind, **fields)

    def _spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # requests from the operator -----------------------------------------------------------
    async def handle_operator(self, msg: dict) -> dict:
        kind = msg["type"]
        if kind == "entangle":
            return await self._entangle(msg)
        if kind == "memory":
            return {"memory": self.memory_state()}
        if kind == "bell_measurement":
            return {"measurement": await self.bell_measurement()}
        if kind == "memory_measure":
            return {"measurement": await self.memory_measure(msg["basis"], msg.get("pair"))}
        if kind == "bsm_result":
            return {"bsm": self.bsm_result(msg["session"])}
        if kind == "prepare_memory":
            return {"prepared": await self.prepare_memory(msg["state"], msg["peer"])}
        summary = self._summary(msg["session"])
        if kind == "session":
            return {"session": summary}
        data = await asyncio.get_running_loop().run_in_executor(None, read_session, summary["file"])
        return {"data": data}

    def _summary(self, session_id: str) -> dict:
        if self.session is not None and self.session.session == session_id:
            return self.session.summary()
        if session_id in self.finished:
            return self.finished[session_id]
        raise QnodeError(f"no session {session_id!r} on node {self.name}")

    def _check(self, request: dict, peer: str) -> None:
        check_request(request, self.lab, self.name, peer, self.node.parameters(self.name))
        if self.session is not None:
            raise QnodeError(f"node {self.name} is busy with session {self.session.session}")
        busy = self.node.busy_with()
        if busy is not None:
            raise QnodeError(f"node {self.name} is busy with {busy}")
        initiator = "nodes" not in request or list(request["nodes"])[:1] == [self.name]
        delivery = own_delivery(request, initiator)
        if delivery in STORED_PAIR_DELIVERIES:
            memory = self.memory
            stored = [p for p in memory.pairs() if p.in_memory] if memory is not None else []
            if memory is None or len(stored) != 1:
                held = memory.as_dict() if memory is not None else "no memory qubit"
                raise QnodeError(
                    f"the {delivery} delivery operates on a new pair and the one stored in "
                    f"memory: {self.name} holds {len(stored)} stored pairs ({held})"
                )
        if delivery == "memory":
            memory = self.memory
            if memory is None or memory.free_memory() is None:
                held = memory.as_dict() if memory is not None else {}
                raise QnodeError(
                    f"delivery into memory: no free memory qubit on {self.name} ({held}); "
                    "measure or discard the stored pair first (memory_measure)"
                )

    def link_expectation(
        self,
        peer: str,
        protocol: str,
        fidelity_min: float,
        alpha: float | None = None,
        deliveries: tuple[str, str] = ("keep", "keep"),
    ) -> Expectation:
        """What a session with `peer` would expect (alpha, success per attempt, fidelity) from
        the calibrated values, as `entangle` plans it (plan.link_plan: a half delivered into
        memory, `deliveries` being this node's and the peer's, planned after its move)."""
        return link_plan(
            self.lab,
            self.node.parameters,
            self.name,
            peer,
            protocol,
            fidelity_min,
            alpha,
            deliveries,
        )

    def attempt_budget(self, peer: str, protocol: str, expected: Expectation) -> tuple[int, float]:
        """(attempts, seconds per attempt) a session with `peer` may make now before a stored
        pair's cut-off (NodeMemory.may_attempt over the planning model; UNBOUNDED when no
        stored pair limits it), an attempt lasting the herald window plus the round trip."""
        link_name, link = self.lab.link_between(self.name, peer)
        window_s = attempt_window_ns(self.node.parameters(self.name)["herald_window_ns"], link)
        attempt_s = window_s * 1e-9
        if self.memory is None or not self._holds_stored():
            return UNBOUNDED, attempt_s
        alpha, per_attempt = memory_alpha_of(expected.alpha, protocol)
        permit = self.memory.may_attempt(link_name, alpha, time.monotonic(), 1, attempt_s)
        return permit.budget // per_attempt, attempt_s

    async def _entangle(self, msg: dict) -> dict:
        request = request_from(msg)
        peer = msg.get("peer") or self._only_peer()
        self._check(request, peer)
        self._towards(peer)
        nodes = [self.name, peer]
        expected = self.link_expectation(
            peer,
            request["protocol"],
            request["fidelity_min"],
            request["alpha"],
            (request["delivery"], request["peer_delivery"]),
        )
        request["alpha"] = expected.alpha
        session_id = new_session_id()
        full = {**request, "session": session_id, "nodes": nodes, "expected": expected.as_dict()}
        self._alpha_amplitude = self._alpha_amplitude_for(expected.alpha)
        # the peer first: it refuses with a reason, or it is in
        # a stored pair on either side: both electrons echo (one-sided, single-click's
        # psi+/psi- would turn into phi+/phi-: docs/network.md "Delivery into memory")
        full["echo"] = self._holds_stored()
        if "memory" in (request["delivery"], request["peer_delivery"]):
            full["hold_attempts"] = hold = self._hold_attempts(request["protocol"], expected)
            rounds = 1 / max(expected.p_success, 1e-300) / hold
            if rounds > HOLD_ROUNDS_MAX:
                raise QnodeError(
                    f"delivery into memory: {request['protocol']} needs ~"
                    f"{1 / max(expected.p_success, 1e-300):.1e} attempts a pair here, and the "
                    f"waiting memory is initialised again every {hold} attempts: ~{rounds:.0e} "
                    "rounds; single_click with a small alpha needs far fewer"
                )
        accepted = await self.link_to(peer).request("link_request", timeout_s=10.0, **full)
        full["echo"] = bool(full["echo"] or accepted.get("echo"))
        session = self._open(session_id, "initiator", peer, nodes, full, expected)
        try:
            await self.link_to(self.midpoint).request(
                "session_start",
                node=self.name,
                session=session_id,
                protocol=request["protocol"],
                nodes=nodes,
                heralding=request["heralding"],
            )
        except QnodeError as e:
            with contextlib.suppress(QnodeError):  # the peer is in: tell it, or it waits
                await self.link_to(peer).request(
                    "link_end", session=session_id, state="failed", reason=f"midpoint: {e}"
                )
            await self._end(session, "failed", f"midpoint: {e}")
            raise
        self._spawn(self._run_initiator(session))
        return {"session": session.summary()}

    def _hold_attempts(self, protocol: str, expected: Expectation) -> int:
        """memory.hold_attempts from this node's memory calibration (none: the default)."""
        memory = None
        if self.lab.nodes[self.name].memories:
            with contextlib.suppress(QnodeError):
                memory = memory_from_calibration(self.node.parameters(self.name), self.name)
        alpha, per_attempt = memory_alpha_of(expected.alpha, protocol)
        return hold_attempts(memory, alpha, per_attempt)

    def _alpha_amplitude_for(self, alpha: float | None) -> float | None:
        if alpha is None:
            return None
        return alpha_amplitude(self.node.parameters(self.name)["pi_amplitude_v"], alpha)

    def _open(
        self,
        session_id: str,
        role: str,
        peer: str,
        nodes: list[str],
        request: dict,
        expected: Expectation,
    ) -> LinkSession:
        file = SessionFile(
            session_path(self.node.data_dir, session_id, self.name),
            session=session_id,
            node=self.name,
            role=role,
            protocol=request["protocol"],
            request=request,
            lab_text=self.node.lab_text(),
            parameters=self.node.snapshot(),
            software_version=__version__,
        )
        session = LinkSession(
            session=session_id,
            node=self.name,
            role=role,
            peer=peer,
            nodes=nodes,
            request=request,
            expected=expected,
            file=file,
            readout_threshold=self.node.parameters(self.name)["readout_threshold"],
            send_to_peer=self._to_peer,
            forward=self._forward,
        )
        self.session = session
        memory = self.memory
        held = memory.holding[memory.electron] if memory is not None else None
        if memory is not None and held is not None:  # its attempts overwrite the electron
            reason = f"the electron was needed for session {session_id}"
            memory.discard(held.pair_id, reason)
            self._discarded(held.pair_id, reason)
        self._spawn(self._keep_alive(session))
        return session

    # the initiator's session ----------------------------------------------------------------
    async def _run_initiator(self, session: LinkSession) -> None:
        request = session.request
        deadline = time.monotonic() + request["deadline_s"]
        first_shot, round_index = 0, 0
        state, reason = "completed", ""
        try:
            while session.stats.delivered < request["pairs"]:
                if time.monotonic() > deadline:
                    state, reason = "deadline", f"deadline of {request['deadline_s']:g} s passed"
                    break
                if session.ending is not None:
                    state, reason = session.ending
                    break
                basis, shots = plan_round(
                    announced_delivery(request), request["pairs"], session.delivered_by_basis
                )
                if one_pair_round(request):
                    # a side keeps its half: the round's program ends at its herald (a later
                    # shot's attempts would overwrite it); with a stored pair on either node,
                    # one shot (its budget is checked between shots)
                    shots = one_pair_round_shots(
                        request, session.expected.p_success, self._shot_attempts(session)
                    )
                elif request.get("echo"):  # a stored pair's budget: one shot a round
                    shots = 1
                session.expect_peer_round()
                await self.link_to(session.peer).request(
                    "link_round",
                    session=session.session,
                    round=round_index,
                    first_shot=first_shot,
                    shots=shots,
                    basis=basis,
                )
                own = round_basis(request, True, basis)
                outcome = await self._run_round(session, round_index, first_shot, shots, own)
                if outcome.status != "completed":
                    state, reason = session.ending or (
                        "failed",
                        f"{self.name}: run {outcome.status}: {outcome.reason}",
                    )
                    break
                if not await self._peer_finished_round(session):
                    state, reason = session.ending or (
                        "failed",
                        f"{session.peer} did not finish round {round_index}",
                    )
                    break
                if session.peer_round_status != "completed":
                    status = session.peer_round_status or ""
                    state = "cut-off" if status.startswith("cut-off") else "failed"
                    state, reason = state, f"{session.peer}: {status}"
                    break
                await self._drain(session)
                first_shot = session.next_shot  # fewer than `shots` when it ended at its herald
                round_index += 1
        except QnodeError as e:
            state, reason = session.ending or ("failed", str(e))
        except Exception as e:  # never leave the session hanging
            log.exception("%s: session %s", self.name, session.session)
            state, reason = "failed", f"{type(e).__name__}: {e}"
        if session.ending is not None and state == "completed":
            state, reason = session.ending
        await self._drain(session)
        with contextlib.suppress(QnodeError):
            await self.link_to(self.midpoint).request(
                "session_end", node=self.name, session=session.session, timeout_s=5.0
            )
        with contextlib.suppress(QnodeError):
            await self.link_to(session.peer).request(
                "link_end", session=session.session, state=state, reason=reason, timeout_s=5.0
            )
        await self._end(session, state, reason)

    async def _peer_finished_round(self, session: LinkSession) -> bool:
        limit = time.monotonic() + ROUND_DONE_TIMEOUT_S
        while session.peer_round_status is None:
            if session.ending is not None or time.monotonic() > limit:
                return False
            await asyncio.sleep(ROUND_POLL_S)
        return True

    async def _drain(self, session: LinkSession) -> None:
        """Wait until every heralded shot so far is decided (or has timed out)."""
        limit = time.monotonic() + DRAIN_TIMEOUT_S
        while session.pending() and time.monotonic() < limit:
            session.sweep_timeouts()
            await asyncio.sleep(ROUND_POLL_S)

    async def _run_round(
        self, session: LinkSession, round_index: int, first_shot: int, shots: int, basis: str
    ) -> RunOutcome:
        loop = asyncio.get_running_loop()
        link_name, link = self.lab.link_between(self.name, session.peer)
        window = attempt_window_ns(self.node.parameters(self.name)["herald_window_ns"], link)
        memories = self.lab.nodes[self.name].memories
        bsm: dict = {}
        if basis in STORED_PAIR_DELIVERIES:
            if session.session in self._operation_shots or not self._holds_stored():
                operation = "Bell-state measurement" if basis == "bsm" else "GHZ operation"
                reason = (
                    f"the stored pair was consumed by this session's {operation}"
                    if session.session in self._operation_shots
                    else "no stored pair is left to measure with (cut off or discarded)"
                )
                session.end_with("failed", f"{self.name}: {reason}")
                return _NoRun("aborted", reason)
            bsm = self._bsm_frame(session)
        attempts = self._shot_attempts(session)
        budget = self._attempt_budget(session, link_name)
        if budget is not None:
            if budget < 1:
                self._budget_ran_out = "the stored pair's budget allows no attempt"
                session.end_with("cut-off", f"{self.name}: {self._budget_ran_out}")
                return _NoRun("aborted", self._budget_ran_out)
            attempts = min(attempts, budget)
        sequence = round_sequence(
            self.node.platform,
            session.request["protocol"],
            shots,
            basis,
            self._alpha_amplitude,
            attempts,
            session.request.get("heralding") or "hardware",
            window_ns=window,
            port=self.lab.nodes[self.name].channels.port(link_name),
            memory=memories[0] if memories else "c13",
            protect_memory=self._holds_stored(),
            echo=bool(session.request.get("echo")),
            frame_deg=bsm.get("frame_deg", 0.0),
            attempt_phase_deg=bsm.get("attempt_phase_deg", 0.0),
            memory_basis=str(session.request.get("memory_basis") or "") if basis == "ghz" else "",
            last_shot_on_herald=shots > 1 and one_pair_round(session.request),
        )
        run = await self.node.prepare(sequence)
        if session.ending is not None:  # it ended while preparing (preparing clears an abort)
            self.node.abort()
        session.file.add_run(run.run_id)
        session.begin_round(first_shot, shots, basis)
        parser = ShotParser(first_shot, measured=basis not in ("keep", "memory"))

        exhausted: list[int] = []  # attempts of the shots that gave up (seen in the thread)

        def on_shots(shots: list) -> None:
            if basis in STORED_PAIR_DELIVERIES:  # a heralded shot used the stored pair, whatever
                for shot, own in shots:  # the decision on the new pair will be
                    if own.heralded:
                        self._operation_shots.setdefault(session.session, (shot, own, bsm))
            if self.session is session:
                session.on_shots(round_index, shots)

        ended = [0]  # shots the program ran (seen in the thread: the parser's callbacks may
        # still be queued when the run returns)

        def on_events(events: list) -> None:  # the worker thread: hand over to the loop
            exhausted.extend(int(e.value) for e in events if e.code == ATTEMPTS_EXHAUSTED)
            ended[0] += sum(1 for e in events if e.code == SHOT_END)
            loop.call_soon_threadsafe(lambda: on_shots(parser.feed(events)))

        outcome = await self.node.execute(run, on_events)
        await asyncio.sleep(0)  # let the last events' callbacks run
        session.next_shot = first_shot + ended[0]
        ran_out = budget is not None and any(n >= budget for n in exhausted)
        if budget is not None and ran_out and outcome.status == "completed":
            self._budget_ran_out = (
                f"{budget} attempts (the stored pair's budget) ran out before a herald"
            )
            session.end_with("cut-off", f"{self.name}: {self._budget_ran_out}")
            return _NoRun("cut-off", self._budget_ran_out)
        return outcome

    def _holds_stored(self) -> bool:
        return self.memory is not None and any(p.in_memory for p in self.memory.pairs())

    def _bsm_frame(self, session: LinkSession) -> dict:
        """A bsm round's stored pair and its frame: the turn known before this program (its
        attempts so far, this session's earlier rounds too, x the calibrated phase per
        attempt) and the phase per attempt that the program feeds forward (0 until
        `<memory>_phase_per_attempt_deg` is calibrated)."""
        assert self.memory is not None
        kept = next(p for p in self.memory.pairs() if p.in_memory)
        qubit = kept.qubit.split(".", 1)[1]
        per_attempt = self._phase_per_attempt(qubit)
        _alpha, factor = memory_alpha(session)
        before = sum(kept.attempts.values()) + session.stats.attempts * factor
        return {
            "pair": kept,
            "frame_deg": per_attempt * before,
            "attempt_phase_deg": per_attempt,
            "attempts_before": before,
        }

    def _phase_per_attempt(self, qubit: str) -> float:
        per_attempt = self.node.parameters(self.name).get(f"{qubit}_phase_per_attempt_deg")
        if per_attempt is None or not math.isfinite(per_attempt):
            return 0.0
        return float(per_attempt)

    @staticmethod
    def _shot_attempts(session: LinkSession) -> int:
        """Attempts a shot makes before it gives up: ten expected waits, or a waiting memory's
        hold_attempts (both sides compute it from the same request)."""
        attempts = max_attempts(session.expected.p_success)
        if session.request.get("hold_attempts"):  # a memory waits in |0> through them
            attempts = min(attempts, int(session.request["hold_attempts"]))
        return attempts

    def _attempt_budget(self, session: LinkSession, link_name: str) -> int | None:
        """The attempts this node may make before a stored pair's cut-off (None: no stored
        pair). Barrett-Kok's attempt excites twice with half the population bright: counted
        as two attempts at alpha 1/2."""
        if self.memory is None or not self._holds_stored():
            return None
        alpha, per_attempt = memory_alpha(session)
        permit = self.memory.may_attempt(link_name, alpha, time.monotonic())
        # the session's attempts so far are charged to the stored pair when it ends
        return permit.budget // per_attempt - session.stats.attempts

    async def _keep_alive(self, session: LinkSession) -> None:
        """Heartbeats to the peer and the midpoint; a silent one ends the session."""
        while self.session is session:
            await asyncio.sleep(HEARTBEAT_S)
            session.sweep_timeouts()
            session.flush_heralds()
            with contextlib.suppress(Exception):
                peer, midpoint = self.link_to(session.peer), self.link_to(self.midpoint)
                peer.refresh()  # a restarted station: reconnect within a heartbeat period
                midpoint.refresh()
                peer.send("peer_heartbeat", session=session.session)
                midpoint.send("heartbeat", node=self.name, session=session.session)
            silent = session.silence(SILENCE_S, self.midpoint)
            if silent is not None:
                self._lose(session, silent)

    def _lose(self, session: LinkSession, reason: str) -> None:
        """The peer or the midpoint is gone (or the peer's round failed): stop the run; the
        session ends as failed."""
        if self.session is not session or not session.end_with("failed", reason):
            return
        log.error("%s: session %s: %s", self.name, session.session, reason)
        self.node.abort()
        if session.role == "responder":
            self._spawn(self._end_after_run(session, "failed", reason))

    async def _end_after_run(self, session: LinkSession, state: str, reason: str) -> None:
        if self._round_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._round_task), 30.0)
        await self._drain(session)
        await self._end(session, state, reason)

    async def _end(self, session: LinkSession, state: str, reason: str) -> None:
        if self.session is not session:
            return
        session.finish(state, reason)
        summary = session.summary()
        if self.memory is not None:
            summary["memory"] = self._memory_after(session)
            if session.session in self.bsm_results:
                summary["bsm"] = self.bsm_results[session.session]
            if session.session in self.ghz_results:
                summary["ghz"] = self.ghz_results[session.session]
        self.finished[session.session] = summary
        self.session = None
        for listener in list(self.session_listeners):
            try:
                listener(summary)
            except Exception:  # a listener's fault never ends a session differently
                log.exception("%s: session listener", self.name)
        log.info(
            "%s: session %s %s (%s): %d delivered, %d discarded",
            self.name,
            session.session,
            state,
            reason or "ok",
            session.stats.delivered,
            session.stats.discarded,
        )

    # the memory ---------------------------------------------------------------------------
    def _memory_after(self, session: LinkSession) -> dict:
        """After a session: its attempts cost every stored pair (cut-offs discarded with their
        reasons); a pair it delivered into this node's memory is recorded as stored. Returns
        what the memory holds, with each stored pair's expected fidelity (planning model)."""
        memory = self.memory
        assert memory is not None
        link_name, _ = self.lab.link_between(self.name, session.peer)
        now = time.monotonic()
        alpha, per_attempt = memory_alpha(session)
        stored_before = [p for p in memory.pairs() if p.in_memory]
        attempts = session.stats.attempts * per_attempt
        if stored_before and attempts:
            for cut in memory.on_attempts(link_name, attempts, alpha, now):
                self._discarded(cut.pair_id, cut.message, tell=cut.peer)
        ran_out, self._budget_ran_out = self._budget_ran_out, None
        if ran_out is not None:
            for pair in [p for p in memory.pairs() if p.in_memory]:
                detail = f"{CUT_OFF}: {ran_out} on link {link_name} (goodness {pair.goodness:.4f})"
                memory.discard(pair.pair_id, detail)
                self._discarded(pair.pair_id, detail, tell=pair.peer)
        initiator = session.role == "initiator"
        delivery = own_delivery(session.request, initiator)
        kept = [
            row[0]
            for row in session.rows
            if row[0]["status"] == DELIVERED and BASES[row[0]["basis"]] in ("memory", "keep")
        ]
        if delivery == "memory":
            for r in kept:
                self._store(session, link_name, r, now)
        elif delivery == "bsm":
            self._bsm_done(session, link_name)
        elif delivery == "ghz":
            self._ghz_done(session, link_name)
        elif delivery == "keep" and kept and memory.electron_free():
            r = kept[-1]  # the electron holds the last kept pair (each shot overwrites it)
            pair_id = r["id"].decode()
            memory.on_heralded(
                link=link_name,
                pair_id=pair_id,
                outcome=OUTCOMES[int(r["outcome"])],
                fidelity=session.expected.fidelity,
                fidelity_min=float(session.request.get("fidelity_min") or 0.0),
                now=now,
            )
            self.frames[pair_id] = (session.frame_node == self.name, OUTCOMES[int(r["outcome"])])
        return {
            "holds": memory.as_dict(),
            "discarded": list(self.memory_discards[-4:]),
            "note": "stored-pair fidelities are the planning model's, whose memory part is not "
            "yet checked against the simulator (docs/network.md)",
        }

    def _bsm_done(self, session: LinkSession, link_name: str) -> None:
        """After a bsm session: its heralded shot's two readouts as bell_measurement()
        returns them (`bsm_results`, the summary's `bsm`); the stored pair is released (the
        BSM consumed it) and the new pair never enters the memory's records."""
        memory = self.memory
        assert memory is not None
        found = self._operation_shots.pop(session.session, None)
        if found is None:
            return  # no herald: the stored pair is still there (cut-off or not)
        _shot, own, frame = found
        kept = frame["pair"]
        still_stored = any(p.pair_id == kept.pair_id for p in memory.pairs())
        if still_stored:
            memory.release(kept.pair_id)
        stored_frame = self.frames.pop(kept.pair_id, (False, kept.outcome))
        threshold = self.node.parameters(self.name)["readout_threshold"]
        measured = own.counts >= 0 and own.counts_memory >= 0
        bits = (
            (1 if own.counts >= threshold else -1, 1 if own.counts_memory >= threshold else -1)
            if measured
            else (0, 0)
        )
        used = self._used_pairs(session, link_name, found, still_stored, stored_frame[0])
        delivered = used.pop("delivered")
        self.bsm_results[session.session] = {
            "electron_bit": bits[0],
            "memory_bit": bits[1],
            "bell_state": BELL_TABLE.get(bits, ""),
            "counts": [own.counts, own.counts_memory],
            "valid": bool(own.valid and measured and delivered),
            **used,
        }
        for old in list(self.bsm_results)[:-BSM_RESULTS_KEPT]:
            del self.bsm_results[old]

    def _ghz_done(self, session: LinkSession, link_name: str) -> None:
        """After a ghz session: its heralded shot's electron readout as ghz_operation()
        returns it (`ghz_results`, the summary's `ghz`) and, with `memory_basis`, the
        memory's readout right after it (the bit as memory_measure gives it; the memory is
        free after); without, the memory keeps the stored pair's half (now the GHZ state's)
        for memory_measure. The new pair never enters the memory's records (its electron was
        read)."""
        memory = self.memory
        assert memory is not None
        found = self._operation_shots.pop(session.session, None)
        if found is None:
            return  # no herald: the stored pair is as it was
        _shot, own, frame = found
        kept = frame["pair"]
        still_stored = any(p.pair_id == kept.pair_id for p in memory.pairs())
        threshold = self.node.parameters(self.name)["readout_threshold"]
        memory_basis = str(session.request.get("memory_basis") or "")
        measured = own.counts >= 0 and (own.counts_memory >= 0 or not memory_basis)
        bit = (1 if own.counts >= threshold else -1) if measured else 0
        read_bit = 0
        frame_node, heralded = self.frames.get(kept.pair_id, (False, kept.outcome))
        if memory_basis:
            if still_stored:
                memory.release(kept.pair_id)  # read: the memory is free
            self.frames.pop(kept.pair_id, None)
            if measured:
                bright = own.counts_memory >= threshold
                read_bit = memory_bit(bright, memory_basis, frame_node, heralded)
        used = self._used_pairs(session, link_name, found, still_stored, frame_node)
        delivered = used.pop("delivered")
        self.ghz_results[session.session] = {
            "electron_bit": bit,
            "counts": own.counts,
            "memory_basis": memory_basis,
            "memory_bit": read_bit,
            "counts_memory": own.counts_memory,
            "valid": bool(own.valid and measured and delivered),
            **used,
        }
        for old in list(self.ghz_results)[:-BSM_RESULTS_KEPT]:
            del self.ghz_results[old]

    def _used_pairs(
        self,
        session: LinkSession,
        link_name: str,
        found: tuple[int, Any, dict],
        still_stored: bool,
        memory_frame_here: bool,
    ) -> dict:
        """What a bsm or ghz session's heralded shot (`found`: shot, own record, the stored
        pair and its frame) used: both pairs, the frame fed forward, and whether the new
        pair was delivered (not if the stored one was cut off meanwhile), with the reason."""
        shot, own, frame = found
        kept = frame["pair"]
        rows = [r[0] for r in session.rows if int(r[0]["shot"]) == shot]
        row = rows[0] if rows else None
        new_id = row["id"].decode() if row is not None else session.pair_id(shot, own.attempts)
        outcome = OUTCOMES[own.outcome] if 0 <= own.outcome < len(OUTCOMES) else ""
        delivered = row is not None and int(row["status"]) == DELIVERED
        reason = "" if delivered else (row["reason"].decode() if row is not None else "undecided")
        if not still_stored:  # cut off as the session's attempts were charged to it
            delivered, reason = False, f"the stored pair {kept.pair_id} was cut off"
        return {
            "delivered": delivered,
            "reason": reason,
            "pairs": {
                "electron": {
                    "pair_id": new_id,
                    "link": link_name,
                    "peer": session.peer,
                    "outcome": outcome,
                    "attempts": own.attempts,
                    "fidelity_heralded": session.expected.fidelity,
                    "frame_here": session.frame_node == self.name,
                },
                "memory": {**kept.as_dict(), "frame_here": memory_frame_here},
            },
            "frame_deg": frame["frame_deg"],
            "attempt_phase_deg": frame["attempt_phase_deg"],
            "attempts_fed_forward": own.attempts,
            "session": session.session,
        }

    def bsm_result(self, session_id: str) -> dict:
        """The Bell-state measurement a bsm session made (in-process API for the network
        service): the two bits (+1 bright), the Bell state of (electron, memory) they name
        (BELL_TABLE), both pairs' ids, heralded outcomes and psi- frames, the frame undone;
        `valid` only if both readouts passed their checks and the new pair was delivered."""
        result = self.bsm_results.get(session_id)
        if result is None:
            state = self.finished.get(session_id, {}).get("state", "unknown here")
            raise QnodeError(
                f"session {session_id!r} made no Bell-state measurement on {self.name} "
                f"(session: {state})"
            )
        return result

    def _store(self, session: LinkSession, link_name: str, row: Any, now: float) -> None:
        memory = self.memory
        assert memory is not None
        try:
            memory.model = memory_from_calibration(self.node.parameters(self.name), self.name)
        except QnodeError as e:
            log.error("%s: stored pair without a memory model: %s", self.name, e)
        pair_id = row["id"].decode()
        outcome = OUTCOMES[int(row["outcome"])]
        memory.on_heralded(
            link=link_name,
            pair_id=pair_id,
            outcome=outcome,
            fidelity=session.expected.fidelity,
            fidelity_min=float(session.request.get("fidelity_min") or 0.0),
            now=now,
        )
        move = memory.deliver_to_memory(pair_id, now)
        if not isinstance(move, Move):
            reason = move.message if isinstance(move, Discard) else move.reason
            if memory.holding[memory.electron] is not None:
                memory.discard(pair_id, reason)
            self._discarded(pair_id, reason, tell=session.peer if isinstance(move, Discard) else "")
            return
        self.frames[pair_id] = (session.frame_node == self.name, outcome)

    def discard_held(self, pair_id: str, reason: str) -> None:
        """A pair this node's qubits hold is no longer wanted (the network discarded the
        end-to-end pair using it): discarded in NodeMemory with the reason, the qubit free."""
        if self.memory is None:
            raise QnodeError(f"node {self.name} has no memory qubit (lab file `memories`)")
        self.memory.discard(pair_id, reason)
        self._discarded(pair_id, reason)

    def _discarded(self, pair_id: str, reason: str, tell: str = "") -> None:
        """Recorded with its reason; a cut-off is told to the peer (`tell`) holding the other
        half (`pair_cut_off`, over its station link: it discards its half)."""
        log.warning("%s: stored pair %s discarded: %s", self.name, pair_id, reason)
        self.memory_discards.append({"pair_id": pair_id, "reason": reason, "t": time.time()})
        del self.memory_discards[:-100]
        self.frames.pop(pair_id, None)
        if tell:
            try:
                self.link_to(tell).send("pair_cut_off", pair_id=pair_id, reason=reason[:200])
            except Exception as e:  # the peer not served: its own cut-off will come
                log.warning("%s: %s not told of the cut-off of %s: %s", self.name, tell, pair_id, e)

    def _peer_cut_off(self, msg: dict, sender: str | None) -> dict:
        """The peer cut off a stored pair whose other half this node holds: discarded here
        too, the reason saying where ("cut-off at B: ..."). Only from the pair's peer."""
        memory = self.memory
        held = [p for p in memory.pairs() if p.pair_id == msg["pair_id"]] if memory else []
        session = self.session
        if not held and session is not None and msg["pair_id"].startswith(f"{session.session}:"):
            # the peer ended the pair's session first: this node stores its half as it ends
            self._spawn(self._peer_cut_off_after(session, msg, sender))
            return {}
        if not held:
            return {}  # measured, released or cut off here already: nothing held
        if sender != f"node-{held[0].peer}":
            raise self.refuse(f"not from {held[0].peer}, the pair's peer", "pair_cut_off", sender)
        assert memory is not None
        reason = f"cut-off at {held[0].peer}: {msg['reason'][:200].removeprefix('cut-off: ')}"
        memory.discard(held[0].pair_id, reason)
        self._discarded(held[0].pair_id, reason)
        return {}

    async def _peer_cut_off_after(
        self, session: LinkSession, msg: dict, sender: str | None
    ) -> None:
        limit = time.monotonic() + 120.0  # a session's drain and link_end: seconds
        while self.session is session and time.monotonic() < limit:
            await asyncio.sleep(0.05)
        if self.session is not session:
            with contextlib.suppress(QnodeError):
                self._peer_cut_off(msg, sender)

    def memory_state(self) -> dict:
        """What this node's qubits hold, and the last discards with their reasons."""
        if self.memory is None:
            raise QnodeError(f"node {self.name} has no memory qubit (lab file `memories`)")
        for cut in self.memory.on_time(time.monotonic()):
            self._discarded(cut.pair_id, cut.message, tell=cut.peer)
        return {"holds": self.memory.as_dict(), "discarded": list(self.memory_discards)}

    async def memory_measure(self, basis: str, pair_id: str | None = None) -> dict:
        """Read a stored pair's half in X, Y or Z (MemoryReadout: the memory's state onto the
        electron, the electron read out); the bit (+1 bright) is corrected for the link's
        Pauli frame as a measured pair's is; the qubit is free after. The run file holds the
        counts. In-process API (the daemon's `memory_measure` request calls it)."""
        memory = self.memory
        if memory is None:
            raise QnodeError(f"node {self.name} has no memory qubit (lab file `memories`)")
        self._idle()
        stored = [p for p in memory.pairs() if p.in_memory]
        if pair_id is None:
            if len(stored) != 1:
                raise QnodeError(
                    f"node {self.name} holds {len(stored)} stored pairs: name one "
                    f"({', '.join(p.pair_id for p in stored) or 'none'})"
                )
            pair = stored[0]
        else:
            pair = memory.pair(pair_id)
            if not pair.in_memory:
                raise QnodeError(f"pair {pair_id} is in the electron, not in a memory qubit")
        qubit = pair.qubit.split(".", 1)[1]
        frame_deg = self._memory_frame_deg(qubit, pair)
        sequence = Sequence(
            f"memory_measure_{basis}",
            # the electron initialised first: MemoryReadout moves the memory's state onto an
            # electron in |0> (it may still hold a kept pair's half); the state was written on
            # the sequencer's Larmor epoch (SwapToMemory, epoch). The charge check comes after
            # the readout (a failed one flags the shot): before it, a repump would destroy
            # the memory's phase (NV0's hyperfine differs) and X, Y with it
            (
                SpinInit(),
                MemoryReadout(qubit, basis=basis.lower(), frame_deg=frame_deg, epoch=True),
                memory_still_there(memory_check(self.node.platform)),
            ),
            1,
        )
        cuts = memory.on_time(time.monotonic())
        for cut in cuts:
            self._discarded(cut.pair_id, cut.message, tell=cut.peer)
        if any(cut.pair_id == pair.pair_id for cut in cuts):
            raise QnodeError(f"pair {pair.pair_id} was cut off: {cuts[0].message}")
        goodness = pair.goodness
        run = await self.node.prepare(sequence)
        parser = ShotParser(0, measured=True)
        shots: list = []
        outcome = await self.node.execute(run, lambda events: shots.extend(parser.feed(events)))
        memory.release(pair.pair_id)
        frame_node, heralded = self.frames.pop(pair.pair_id, (False, pair.outcome))
        if outcome.status != "completed" or not shots:
            raise QnodeError(f"memory readout run {outcome.status}: {outcome.reason}")
        shot = shots[0][1]
        bright = shot.counts >= self.node.parameters(self.name)["readout_threshold"]
        bit = memory_bit(bright, basis, frame_node, heralded)
        return {
            "pair_id": pair.pair_id,
            "basis": basis,
            "bit": bit if shot.valid else 0,
            "counts": shot.counts,
            "valid": shot.valid,
            "outcome": heralded,
            "expected_fidelity": goodness,
            "frame_deg": frame_deg,
            "run_id": run.run_id,
        }

    def _memory_frame_deg(self, qubit: str, pair) -> float:
        """The stored state's known turn since it was written: its attempts (all links) x
        the calibrated mean phase per attempt (`<memory>_phase_per_attempt_deg`, 0 until
        calibrated), to be undone at its readout (Hermans et al. 2022 feed it forward)."""
        values = self.node.parameters(self.name)
        per_attempt = values.get(f"{qubit}_phase_per_attempt_deg")
        if per_attempt is None or not math.isfinite(per_attempt):
            return 0.0
        return float(per_attempt) * sum(pair.attempts.values())

    def _electron_and_stored(self, what: str) -> HeldPairs:
        """The preamble of an operation on both held halves (`what` names it in the error):
        the node idle, the cut-offs now due applied, a pair in the electron and one stored in
        memory, the stored state's known turn (`_memory_frame_deg`)."""
        memory = self.memory
        if memory is None:
            raise QnodeError(f"node {self.name} has no memory qubit (lab file `memories`)")
        self._idle()
        for cut in memory.on_time(time.monotonic()):
            self._discarded(cut.pair_id, cut.message, tell=cut.peer)
        electron = memory.holding[memory.electron]
        stored = [p for p in memory.pairs() if p.in_memory]
        if electron is None or not stored:
            raise QnodeError(
                f"{what} needs a pair in the electron and one stored in memory; "
                f"{self.name} holds {memory.as_dict()}"
            )
        kept = stored[0]
        qubit = kept.qubit.split(".", 1)[1]
        return HeldPairs(memory, electron, kept, qubit, self._memory_frame_deg(qubit, kept))

    async def _run_counts(
        self, sequence: Sequence, codes: tuple[int, ...]
    ) -> tuple[RoundRun, RunOutcome, dict[int, int], bool]:
        """Run a one-shot program and collect its readouts' counts by event code (`codes`)
        and whether its shot passed its checks: (run, outcome, counts, valid)."""
        run = await self.node.prepare(sequence)
        counts: dict[int, int] = {}
        valid: list[bool] = []

        def on_events(events: list) -> None:
            for e in events:
                if e.code in codes:
                    counts[e.code] = int(e.value)
                elif e.code == SHOT_END:
                    valid.append(e.value == 0)

        outcome = await self.node.execute(run, on_events)
        return run, outcome, counts, bool(valid and valid[0])

    async def bell_measurement(self) -> dict:
        """The Bell-state measurement of the electron's pair and the memory's stored pair
        (sequences.library.bell_measurement): two bits (+1 bright), the Bell state of
        (electron, memory) they name (BELL_TABLE), both pairs' ids, heralded outcomes and
        whether this node holds their psi- frame; both qubits are free after. The run file
        holds the counts. In-process API (the daemon's `bell_measurement` request calls it).
        The memory's frame comes from the sequencer's Larmor epoch (the pair was stored on it)
        and its known turn from the attempts since (`frame_deg`). The parity bit (memory) is
        sound; the phase bit (electron) also needs the electron's half coherent, which a
        program boundary does not keep (docs/network.md, "Delivery into memory")."""
        held = self._electron_and_stored("bell_measurement")
        memory, electron, kept = held.memory, held.electron, held.stored
        sequence = bell_measurement(held.qubit, frame_deg=held.frame_deg, epoch=True)
        run, outcome, counts, valid = await self._run_counts(sequence, (1, 2))
        memory.release(electron.pair_id)
        memory.release(kept.pair_id)
        frames = {p: self.frames.pop(p, (False, "")) for p in (electron.pair_id, kept.pair_id)}
        if outcome.status != "completed" or 1 not in counts or 2 not in counts:
            raise QnodeError(f"bell measurement run {outcome.status}: {outcome.reason}")
        threshold = self.node.parameters(self.name)["readout_threshold"]
        bits = tuple(1 if counts[k] >= threshold else -1 for k in (1, 2))
        return {
            "electron_bit": bits[0],
            "memory_bit": bits[1],
            "bell_state": BELL_TABLE[(bits[0], bits[1])],
            "counts": [counts[1], counts[2]],
            "valid": valid,
            "pairs": {
                "electron": {
                    **electron.as_dict(),
                    "frame_here": frames[electron.pair_id][0],
                },
                "memory": {**kept.as_dict(), "frame_here": frames[kept.pair_id][0]},
            },
            "frame_deg": held.frame_deg,
            "run_id": run.run_id,
        }

    async def ghz_operation(self) -> dict:
        """B's GHZ operation (sequences.network_ops.ghz_operation) on the electron's pair and
        the memory's stored pair: the DD gate on the memory's epoch frame with its known turn
        (`frame_deg`, as bell_measurement's), the electron read out sparing the memory (+1
        bright); the electron's qubit is free after, the memory keeps its half (read later by
        `memory_measure`). In-process API for the network service (no daemon request)."""
        held = self._electron_and_stored("the GHZ operation")
        electron = held.electron
        sequence = ghz_operation(held.qubit, frame_deg=held.frame_deg, epoch=True)
        run, outcome, counts, valid = await self._run_counts(sequence, (1,))
        held.memory.release(electron.pair_id)
        frame = self.frames.pop(electron.pair_id, (False, ""))
        if outcome.status != "completed" or 1 not in counts:
            raise QnodeError(f"GHZ operation run {outcome.status}: {outcome.reason}")
        threshold = self.node.parameters(self.name)["readout_threshold"]
        return {
            "electron_bit": 1 if counts[1] >= threshold else -1,
            "counts": counts[1],
            "valid": valid,
            "pairs": {
                "electron": {**electron.as_dict(), "frame_here": frame[0]},
                "memory": held.stored.as_dict(),
            },
            "run_id": run.run_id,
        }

    async def prepare_memory(self, state: str, peer: str) -> dict:
        """Teleportation's input: the cardinal `state` written into this node's free memory
        qubit (sequences.network_ops.prepare_memory_state) and held in NodeMemory as a stored
        pair is (id "state:<run>"), so the next link session with `peer` protects it (echo,
        whole Larmor periods, budget) and `bell_measurement()` measures it with the electron's
        pair. A state prepared earlier and not used is discarded first. The network service's
        teleportation calls it; the operator's `prepare_memory` request too (a teleportation
        to a neighbour through the link layer alone: the state, then a `bsm` session)."""
        memory = self.memory
        if memory is None:
            raise QnodeError(f"node {self.name} has no memory qubit (lab file `memories`)")
        self._idle()
        for old in [p for p in memory.pairs() if p.pair_id.startswith(PREPARED)]:
            memory.discard(old.pair_id, "a new state is prepared")
            self._discarded(old.pair_id, "a new state is prepared")
        link_name, _ = self.lab.link_between(self.name, peer)
        qubit = self.lab.nodes[self.name].memories[0]
        run = await self.node.prepare(prepare_memory_state(state, self.node.platform, qubit))
        outcome = await self.node.execute(run, lambda events: None)
        if outcome.status != "completed":
            raise QnodeError(f"preparing {state} in memory: run {outcome.status}: {outcome.reason}")
        state_id = f"{PREPARED}{run.run_id}"
        held = memory.on_prepared(state_id, link_name, time.monotonic())
        return {"state_id": state_id, "state": state, "qubit": held, "run_id": run.run_id}

    def _idle(self) -> None:
        if self.session is not None:
            raise QnodeError(f"node {self.name} is in session {self.session.session}")
        busy = self.node.busy_with()
        if busy is not None:
            raise QnodeError(f"node {self.name} is busy with {busy}")

    # messages from the peer ---------------------------------------------------------------
    def refuse(self, reason: str, kind: str, sender: str | None) -> Refused:
        """A peer message refused: counted (`refused_peer_messages`), logged, and the error to
        answer with."""
        self.forged += 1
        log.warning("%s: %s from %s refused: %s", self.name, kind, sender, reason)
        return Refused(f"{kind} refused: {reason}")

    async def handle_peer(self, msg: dict, sender: str | None, notification: bool) -> dict:
        """A message from a peer node (already checked against its schema); `sender` is the
        allow-list name of the key it came with."""
        kind = msg["type"]
        session = self.session
        if kind == "session_pairs":
            return await self._session_pairs(msg["session"], sender)
        if kind == "link_request":
            return await self._accept(msg, sender)
        if kind == "pair_cut_off":
            return self._peer_cut_off(msg, sender)
        ended = self.finished.get(msg["session"])
        if ended is not None and sender == f"node-{ended['peer']}":
            if notification:
                return {}  # the peer's last words after the session ended here
            raise QnodeError(
                f"session {ended['session']} has ended on {self.name}: "
                f"{ended['state']} ({ended['reason'] or 'ok'})"
            )
        if kind == "peer_heartbeat" and (session is None or msg["session"] != session.session):
            return {}  # a peer's last beats after its session ended here
        if session is None or sender != f"node-{session.peer}":
            peer = session.peer if session is not None else None
            raise self.refuse(f"not from this session's peer ({peer})", kind, sender)
        if msg["session"] != session.session:
            raise QnodeError(f"{kind}: session {msg['session']!r} is not {session.session}")
        session.on_peer_message()
        if kind == "peer_heartbeat":
            return {}
        if kind == "link_round":
            if self._round_task is not None and not self._round_task.done():
                raise QnodeError(f"node {self.name} is still running the previous round")
            self._round_task = self._spawn(self._responder_round(session, msg))
            return {}
        if kind == "round_done":
            session.on_peer_round_done(msg["status"])
            if msg["status"] != "completed":
                # the peer's run failed: this node's would wait for a sync that never comes
                self._lose(session, f"{session.peer}: {msg['status']}")
            return {}
        if kind == "pair_check":
            session.on_peer_check(msg)
            return {}
        if kind == "pair_decision":
            session.on_decision(msg)
            return {}
        if kind == "pair_recorded":
            session.on_recorded(msg)
            return {}
        if kind == "link_end":
            if msg["state"] != "completed":
                self.node.abort()
            self._spawn(self._end_after_run(session, msg["state"], msg["reason"]))
            return {"delivered": session.stats.delivered}
        raise QnodeError(f"unknown peer message {kind!r}")

    async def _session_pairs(self, session_id: str, sender: str | None) -> dict:
        try:
            reply = await session_pairs(self.node.data_dir, self.name, session_id, sender)
        except Refused as e:
            raise self.refuse(str(e), "session_pairs", sender) from None
        if self.session is not None and self.session.session == session_id:
            raise QnodeError(f"busy: session {session_id} is still ending on {self.name}")
        return reply

    async def _accept(self, msg: dict, sender: str | None) -> dict:
        check_name("session id", msg["session"])  # it becomes part of a file name
        nodes = msg["nodes"]
        initiator = str(nodes[0]) if nodes else ""
        if sender != f"node-{initiator}" or self.name not in nodes or len(nodes) != 2:
            raise self.refuse(
                f"not from the node that initiates it ({nodes})", "link_request", sender
            )
        self._check(msg, initiator)
        self._towards(initiator)
        # The initiator may have restarted since this node last spoke to it (a new port): the
        # pair messages and `round_done` go out fire-and-forget, without a look at its info
        # file, so the link must point at where it serves now before the first of them.
        self.link_to(initiator).refresh()
        exp = Expectation.from_dict(msg.get("expected") or {})
        self._alpha_amplitude = self._alpha_amplitude_for(exp.alpha)
        # twice 4 s at most (asked once more if unanswered): within the initiator's 10 s
        await self.link_to(self.midpoint).request(
            "hello", node=self.name, timeout_s=4.0, idempotent=True
        )
        request = {k: v for k, v in msg.items() if k not in ("v", "id", "t", "type")}
        mine = self._holds_stored()
        request["echo"] = bool(msg.get("echo") or mine)
        self._open(msg["session"], "responder", initiator, list(nodes), request, exp)
        return {"accepted": True, "echo": mine}

    async def _responder_round(self, session: LinkSession, msg: dict) -> None:
        try:
            own = round_basis(session.request, False, msg["basis"])
            outcome = await self._run_round(
                session, msg["round"], msg["first_shot"], msg["shots"], own
            )
            if outcome.status == "completed":
                status = "completed"
            elif outcome.status == "cut-off":
                status = f"cut-off: {outcome.reason}"
            elif session.ending is not None:  # aborted because the session ended: say why
                status = f"run {outcome.status}: {session.ending[1]}"
            else:
                status = f"run {outcome.status}: {outcome.reason}"
        except Exception as e:
            status = f"round failed: {e}"
        self._to_peer("round_done", session=session.session, round=msg["round"], status=status)
