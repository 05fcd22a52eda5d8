"""The link layer inside a node daemon: sessions with the peer node and the midpoint.

Peer messages arrive on the daemon's ROUTER from the peer's DEALER and are accepted only with
the peer's station key; heralds arrive on this node's DEALER to the midpoint. The protocol is
described in controller/link.py and docs/protocols.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from controller.data.sessionfile import delivered_ids, find_session_files, read_session
from controller.data.sessionfile import reconcile as reconcile_file
from controller.link.session import (
    DELIVERY,
    HEARTBEAT_S,
    HERALDING,
    PROTOCOLS,
    SILENCE_S,
    Expectation,
    LinkSession,
    ShotParser,
    alpha_amplitude,
    expectation,
    link_from_calibration,
    max_attempts,
    new_session_id,
    open_session_file,
    plan_round,
    round_sequence,
)
from controller.messaging.station_link import StationLink
from controller.messaging.wire import MessageError, require
from controller.midpoint.daemon import midpoint_name
from qnode.errors import QnodeError
from sequences.operations import Sweep

log = logging.getLogger("qnode.link")

PEER_MESSAGES = {
    "link_request",
    "link_round",
    "round_done",
    "pair_check",
    "pair_decision",
    "pair_recorded",
    "link_end",
    "peer_heartbeat",
    "session_pairs",
}
NOTIFICATIONS = {"round_done", "pair_check", "pair_decision", "pair_recorded", "peer_heartbeat"}
"""Fire-and-forget: no reply."""
OPERATOR_REQUESTS = {"entangle", "session", "session_data"}
ROUND_DONE_TIMEOUT_S = 30.0
RECONCILE_WAIT_S = 120.0
DRAIN_TIMEOUT_S = 15.0


class NodeLink:
    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.node = daemon.node
        self.lab = daemon.lab
        self.midpoint = midpoint_name(self.lab)
        self.session: LinkSession | None = None
        self.finished: dict[str, dict] = {}
        self.links: dict[str, StationLink] = {}
        self.forged = 0
        self._tasks: set[asyncio.Task] = set()
        self._round_task: asyncio.Task | None = None
        self._alpha_amplitude: float | None = None
        self._herald_line = ThreadPoolExecutor(1, thread_name_prefix=f"herald-{self.node}")

    # stations -----------------------------------------------------------------------------
    def link_to(self, target: str) -> StationLink:
        link = self.links.get(target)
        if link is None:
            accepted = (
                {"herald", "heartbeat", "session_ended"} if target == self.midpoint else set()
            )
            link = StationLink(
                self.daemon._ctx,
                self.daemon.data_dir,
                self.node,
                target,
                self._from_midpoint if target == self.midpoint else (lambda msg: None),
                accepted,
            )
            self.links[target] = link
        return link

    def _from_midpoint(self, msg: dict) -> None:
        session = self.session
        if session is None:
            return
        session.midpoint_heard = time.monotonic()
        kind = msg["type"]
        if kind == "herald":
            session.on_herald(msg)
        elif kind == "heartbeat":
            instance = msg.get("instance")
            if msg.get("session") == session.session:
                session.midpoint_instance = instance
            elif session.midpoint_instance is not None and instance != session.midpoint_instance:
                self._lose(session, f"midpoint {self.midpoint} restarted: the session is gone")
        elif kind == "session_ended" and msg.get("session") == session.session:
            reason = msg.get("reason", "?")
            self._lose(session, f"midpoint {self.midpoint} ended the session: {reason}")

    def _forward(self, outcome: str) -> None:
        """Software heralding: the outcome to this node's sequencer, in order, at once."""
        asyncio.get_running_loop().run_in_executor(self._herald_line, self._send_herald, outcome)

    def _send_herald(self, outcome: str) -> None:
        try:
            with self.daemon.runtime.role("sequencer") as seq:
                seq.send_herald(outcome)
        except Exception as e:  # the attempt then times out: a fail, not a fault
            log.warning("%s: herald not forwarded to the sequencer: %s", self.node, e)

    def _to_peer(self, kind: str, **fields) -> None:
        session = self.session
        if session is not None:
            self.link_to(session.peer).send(kind, **fields)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for link in self.links.values():
            link.close()

    # requests from the operator -----------------------------------------------------------
    async def handle_operator(self, msg: dict) -> dict:
        kind = msg["type"]
        if kind == "entangle":
            return await self._entangle(msg)
        require(msg, {"session": str})
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
        raise QnodeError(f"no session {session_id!r} on node {self.node}")

    def _params(self, node: str) -> dict[str, float]:
        platform = self.lab.nodes[node].platform or "nv"
        if self.lab.nodes[node].kind == "midpoint":
            return {n: r.value for n, r in self.daemon.store.current(node).items()}
        return self.daemon.store.values(node, platform)

    def _check_request(self, request: dict, peer: str) -> None:
        require(
            request,
            {
                "pairs": int,
                "protocol": str,
                "fidelity_min": (int, float),
                "deadline_s": (int, float),
            },
        )
        if request["protocol"] not in PROTOCOLS:
            raise QnodeError(f"unknown protocol {request['protocol']!r} ({', '.join(PROTOCOLS)})")
        if not 1 <= request["pairs"] <= 10**7:
            raise QnodeError(f"pairs must be 1..1e7, got {request['pairs']}")
        if not 0.0 <= request["fidelity_min"] < 1.0:
            raise QnodeError(f"minimum fidelity must be in [0, 1), got {request['fidelity_min']}")
        if request["deadline_s"] <= 0:
            raise QnodeError("the deadline must be positive (seconds)")
        if request.get("delivery", "verify") not in DELIVERY:
            raise QnodeError(f"delivery must be one of {', '.join(DELIVERY)}")
        heralding = request.get("heralding", "hardware")
        if heralding not in HERALDING:
            raise QnodeError(f"heralding must be one of {', '.join(HERALDING)}")
        if heralding == "software" and request["protocol"] != "single_click":
            raise QnodeError("software heralding is single-click only (one outcome per attempt)")
        if peer == self.node or peer not in self.lab.nodes or self.lab.nodes[peer].kind != "memory":
            raise QnodeError(f"{peer!r} is not another memory node of {self.lab.lab.name}")
        if self.session is not None:
            raise QnodeError(f"node {self.node} is busy with session {self.session.session}")
        if self.daemon.runtime.state == "busy":
            raise QnodeError(f"node {self.node} is busy with a run")
        values = self._params(self.node)
        needed = ["mw_frequency_hz", "pi_amplitude_v"]
        if request["protocol"] == "barrett_kok" or request.get("delivery") in ("X", "Y", "verify"):
            needed.append("pi2_amplitude_v")
        missing = [n for n in needed if n not in values]
        if missing:
            raise QnodeError(f"node {self.node} is not calibrated: {', '.join(missing)}")

    async def _entangle(self, msg: dict) -> dict:
        request = {
            "pairs": msg.get("pairs"),
            "protocol": msg.get("protocol"),
            "fidelity_min": msg.get("fidelity_min", 0.0),
            "deadline_s": msg.get("deadline_s", 600.0),
            "delivery": msg.get("delivery", "verify"),
            "alpha": msg.get("alpha"),
            "heralding": msg.get("heralding", "hardware"),
        }
        peer = msg.get("peer") or next(
            n for n, c in self.lab.nodes.items() if c.kind == "memory" and n != self.node
        )
        self._check_request(request, peer)
        nodes = [self.node, peer]
        values = {n: self._params(n) for n in (*nodes, self.midpoint)}
        link, notes = link_from_calibration(values, nodes, self.midpoint)
        alpha = request["alpha"]
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise QnodeError(f"alpha must be in (0, 1), got {alpha!r}")
        calibrated = values[self.midpoint].get("single_click_alpha")
        if alpha is None and not request["fidelity_min"] and calibrated:
            alpha = calibrated  # the alpha routine's choice for its target fidelity
            notes = (*notes, f"alpha {calibrated:.4f} from calibration (routine 'alpha')")
        expected = expectation(request["protocol"], link, request["fidelity_min"], alpha, notes)
        request["alpha"] = expected.alpha
        session_id = new_session_id()
        full = {**request, "session": session_id, "nodes": nodes, "expected": expected.as_dict()}
        self._alpha_amplitude = self._alpha_amplitude_for(expected.alpha)
        # the peer first: it refuses with a reason, or it is in
        await self.link_to(peer).request("link_request", timeout_s=10.0, **full)
        session = self._open(session_id, "initiator", peer, nodes, full, expected)
        try:
            await self.link_to(self.midpoint).request(
                "session_start",
                node=self.node,
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

    def _alpha_amplitude_for(self, alpha: float | None) -> float | None:
        if alpha is None:
            return None
        return alpha_amplitude(self._params(self.node)["pi_amplitude_v"], alpha)

    def _open(self, session_id, role, peer, nodes, request, expected) -> LinkSession:
        file = open_session_file(self.daemon, session_id, role, request)
        session = LinkSession(
            session=session_id,
            node=self.node,
            role=role,
            peer=peer,
            nodes=nodes,
            request=request,
            expected=expected,
            file=file,
            readout_threshold=self._params(self.node)["readout_threshold"],
        )
        session.send_to_peer = self._to_peer
        session.forward = self._forward
        self.session = session
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
                    request["delivery"], request["pairs"], session.delivered_by_basis
                )
                session.peer_round_done.clear()
                await self.link_to(session.peer).request(
                    "link_round",
                    session=session.session,
                    round=round_index,
                    first_shot=first_shot,
                    shots=shots,
                    basis=basis,
                )
                progress = await self._run_round(session, round_index, first_shot, shots, basis)
                if progress.status != "completed":
                    state, reason = session.ending or (
                        "failed",
                        f"{self.node}: run {progress.status}: {progress.reason}",
                    )
                    break
                if not await self._peer_finished_round(session):
                    state, reason = session.ending or (
                        "failed",
                        f"{session.peer} did not finish round {round_index}",
                    )
                    break
                if session.peer_round_status != "completed":
                    state, reason = "failed", f"{session.peer}: {session.peer_round_status}"
                    break
                await self._drain(session)
                first_shot += shots
                round_index += 1
        except QnodeError as e:
            state, reason = session.ending or ("failed", str(e))
        except Exception as e:  # never leave the session hanging
            log.exception("%s: session %s", self.node, session.session)
            state, reason = "failed", f"{type(e).__name__}: {e}"
        if session.ending is not None and state == "completed":
            state, reason = session.ending
        await self._drain(session)
        with contextlib.suppress(QnodeError):
            await self.link_to(self.midpoint).request(
                "session_end", node=self.node, session=session.session, timeout_s=5.0
            )
        with contextlib.suppress(QnodeError):
            await self.link_to(session.peer).request(
                "link_end", session=session.session, state=state, reason=reason, timeout_s=5.0
            )
        await self._end(session, state, reason)

    async def _peer_finished_round(self, session: LinkSession) -> bool:
        limit = time.monotonic() + ROUND_DONE_TIMEOUT_S
        while not session.peer_round_done.is_set():
            if session.ending is not None or time.monotonic() > limit:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _drain(self, session: LinkSession) -> None:
        """Wait until every heralded shot so far is decided (or has timed out)."""
        limit = time.monotonic() + DRAIN_TIMEOUT_S
        while session.pending() and time.monotonic() < limit:
            session.sweep_timeouts()
            await asyncio.sleep(0.02)

    async def _run_round(self, session, round_index, first_shot, shots, basis):
        daemon, runtime = self.daemon, self.daemon.runtime
        loop = asyncio.get_running_loop()
        sequence = round_sequence(
            runtime.cfg.platform or "nv",
            session.request["protocol"],
            shots,
            basis,
            self._alpha_amplitude,
            max_attempts(session.expected.p_success),
            session.request.get("heralding", "hardware"),
        )
        prepared = await loop.run_in_executor(
            None, runtime.prepare, sequence, Sweep(), daemon.data_dir
        )
        if session.ending is not None:  # it ended while preparing (prepare clears the abort)
            runtime.abort_event.set()
        session.file.add_run(prepared.progress.run_id)
        for k in range(first_shot, first_shot + shots):
            session.basis_of[k] = basis
        parser = ShotParser(first_shot, measured=basis != "keep")

        def on_events(events: list) -> None:  # the worker thread: hand over to the loop
            loop.call_soon_threadsafe(
                lambda: (
                    session.on_shots(round_index, parser.feed(events))
                    if self.session is session
                    else None
                )
            )

        daemon.run_future = loop.run_in_executor(
            daemon.executor, runtime.execute, prepared, None, on_events
        )
        progress = await daemon.run_future
        await asyncio.sleep(0)  # let the last events' callbacks run
        return progress

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
                midpoint.send("heartbeat", node=self.node, session=session.session)
            now = time.monotonic()
            if now - session.peer_heard > SILENCE_S:
                self._lose(session, f"peer {session.peer} fell silent")
            elif now - session.midpoint_heard > SILENCE_S:
                self._lose(session, f"midpoint {self.midpoint} fell silent")
            elif session.midpoint_instance is None and now - session.opened > 2 * SILENCE_S:
                # (after the silence check has had its chance: a killed midpoint is silent)
                self._lose(session, f"midpoint {self.midpoint} never confirmed the session")

    def _lose(self, session: LinkSession, reason: str) -> None:
        """The peer or the midpoint is gone (or the peer's round failed): stop the run; the
        session ends as failed."""
        if session.ending is not None or self.session is not session:
            return
        log.error("%s: session %s: %s", self.node, session.session, reason)
        session.ending = ("failed", reason)
        self.daemon.runtime.abort_event.set()
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
        self.finished[session.session] = session.summary()
        self.session = None
        log.info(
            "%s: session %s %s (%s): %d delivered, %d discarded",
            self.node,
            session.session,
            state,
            reason or "ok",
            session.stats.delivered,
            session.stats.discarded,
        )

    # messages from the peer ---------------------------------------------------------------
    async def handle_peer(self, msg: dict, sender: str | None) -> dict:
        kind = msg["type"]
        session = self.session
        if kind == "session_pairs":
            return await self._session_pairs(msg, sender)
        if kind == "link_request":
            return await self._accept(msg, sender)
        peer = session.peer if session is not None else None
        ended = self.finished.get(msg.get("session"))
        if ended is not None and sender == f"node-{ended['peer']}":
            if kind in NOTIFICATIONS:
                return {}  # the peer's last words after the session ended here
            raise QnodeError(
                f"session {ended['session']} has ended on {self.node}: "
                f"{ended['state']} ({ended['reason'] or 'ok'})"
            )
        if kind == "peer_heartbeat" and (session is None or msg.get("session") != session.session):
            return {}  # a peer's last beats after its session ended here
        if sender is None or sender != f"node-{peer}":
            self.forged += 1
            log.warning(
                "%s: %s from %s refused: not the session's peer (%s)", self.node, kind, sender, peer
            )
            raise QnodeError(f"{kind} refused: not from this session's peer")
        if msg.get("session") != session.session:
            raise MessageError(f"{kind}: session {msg.get('session')!r} is not {session.session}")
        session.peer_heard = time.monotonic()
        if kind == "peer_heartbeat":
            return {}
        if kind == "link_round":
            require(msg, {"round": int, "first_shot": int, "shots": int, "basis": str})
            if self._round_task is not None and not self._round_task.done():
                raise QnodeError(f"node {self.node} is still running the previous round")
            self._round_task = self._spawn(self._responder_round(session, msg))
            return {}
        if kind == "round_done":
            require(msg, {"round": int, "status": str})
            session.peer_round_status = msg["status"]
            session.peer_round_done.set()
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
            require(msg, {"state": str, "reason": str})
            if msg["state"] != "completed":
                self.daemon.runtime.abort_event.set()
            self._spawn(self._end_after_run(session, msg["state"], msg["reason"]))
            return {"delivered": session.stats.delivered}
        raise QnodeError(f"unknown peer message {kind!r}")

    # after a crash -------------------------------------------------------------------------
    async def _session_pairs(self, msg: dict, sender: str | None) -> dict:
        """The pairs this node kept in a session, for a peer reconciling after its crash."""
        session = require(msg, {"session": str})["session"]
        files = find_session_files(self.daemon.data_dir, session, self.node)
        if not files:
            raise QnodeError(f"no session {session} on node {self.node}")
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(None, read_session, files[0])
        peers = [n for n in info["request"].get("nodes", []) if n != self.node]
        if sender not in [f"node-{n}" for n in peers]:
            self.forged += 1
            log.warning("%s: session_pairs from %s refused", self.node, sender)
            raise QnodeError("session_pairs refused: not from that session's peer")
        if self.session is not None and self.session.session == session:
            raise QnodeError(f"busy: session {session} is still ending on {self.node}")
        ids = await loop.run_in_executor(None, delivered_ids, files[0])
        return {"delivered": ids, "status": info["status"]}

    async def reconcile(self) -> None:
        """Session files this node left `running` (it crashed): keep only the pairs its peer
        also kept, so that both files agree. Asks the peer until it answers (or gives up,
        leaving the file as it is and saying so)."""
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(
            None, find_session_files, self.daemon.data_dir, None, self.node
        )
        for path in files:
            info = await loop.run_in_executor(None, read_session, path)
            if info["status"] != "running":
                continue
            peer = next((n for n in info["request"].get("nodes", []) if n != self.node), None)
            if peer is None:
                continue
            deadline = time.monotonic() + RECONCILE_WAIT_S
            while True:
                try:
                    reply = await self.link_to(peer).request(
                        "session_pairs", session=info["session"], timeout_s=5.0
                    )
                    break
                except QnodeError as e:
                    if time.monotonic() > deadline:
                        log.error(
                            "%s: session %s not reconciled (%s): its file stays as the crash "
                            "left it",
                            self.node,
                            info["session"],
                            e,
                        )
                        reply = None
                        break
                    await asyncio.sleep(1.0)
            if reply is None:
                continue
            mine = set(await loop.run_in_executor(None, delivered_ids, path))
            keep = mine & set(reply["delivered"])
            reason = (
                f"{self.node} crashed; reconciled with {peer}: {len(keep)} pairs kept, "
                f"{len(mine) - len(keep)} discarded"
            )
            await loop.run_in_executor(None, reconcile_file, path, keep, reason)
            log.warning("%s: session %s: %s", self.node, info["session"], reason)

    async def _accept(self, msg: dict, sender: str | None) -> dict:
        require(msg, {"session": str, "nodes": list})
        nodes = msg["nodes"]
        initiator = nodes[0] if nodes else None
        if sender != f"node-{initiator}" or self.node not in nodes or len(nodes) != 2:
            self.forged += 1
            log.warning("%s: link_request from %s for %s refused", self.node, sender, nodes)
            raise QnodeError("link_request refused: not from the node that initiates it")
        self._check_request(msg, initiator)
        expected = msg.get("expected") or {}
        exp = Expectation(
            expected.get("alpha"),
            float(expected.get("p_success", 0.0)),
            float(expected.get("fidelity", 0.0)),
            tuple(expected.get("notes", ())),
        )
        self._alpha_amplitude = self._alpha_amplitude_for(exp.alpha)
        await self.link_to(self.midpoint).request("hello", node=self.node, timeout_s=5.0)
        request = {k: v for k, v in msg.items() if k not in ("v", "id", "t", "type")}
        self._open(msg["session"], "responder", initiator, list(nodes), request, exp)
        return {"accepted": True}

    async def _responder_round(self, session: LinkSession, msg: dict) -> None:
        try:
            progress = await self._run_round(
                session, msg["round"], msg["first_shot"], msg["shots"], msg["basis"]
            )
            if progress.status == "completed":
                status = "completed"
            elif session.ending is not None:  # aborted because the session ended: say why
                status = f"run {progress.status}: {session.ending[1]}"
            else:
                status = f"run {progress.status}: {progress.reason}"
        except Exception as e:
            status = f"round failed: {e}"
        self._to_peer("round_done", session=session.session, round=msg["round"], status=status)
