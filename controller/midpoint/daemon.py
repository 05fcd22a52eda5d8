"""`qnode midpoint serve`: the midpoint station's controller.

It owns the midpoint's instruments (the time tagger with its herald logic and sync output,
the interferometer's phase stabiliser). A session, opened by the initiating node: arm the
tagger, lock the interferometer (single-click), let the sync fire whenever both nodes wait
for it; then read the clicks of each heralding attempt, classify them (herald_logic) and
send each node of the session a herald message. The nodes connect DEALERs with their node
name as identity and their station key; ROUTER_MANDATORY makes an unreachable node an error
that is counted, never a silent drop. Heartbeats both ways; a session whose nodes fall
silent is closed and the instruments go to their safe state.

Messages: see docs/protocols.md ("Midpoint").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq
import zmq.asyncio

from controller.data.params import ParameterStore
from controller.data.sessionfile import HERALD_ROW, OUTCOMES, SessionFile
from controller.labconfig import LabConfig
from controller.messaging.keys import KeyNames, ensure_default_client
from controller.messaging.serving import SecureRouter, claim, remove_info, write_info
from controller.messaging.wire import MessageError, pack, require, unpack
from controller.midpoint.herald_logic import PROTOCOLS, classify
from qnode import __version__
from qnode.errors import QnodeError

log = logging.getLogger("qnode.midpoint")

REQUESTS = {
    "hello",
    "heartbeat",
    "status",
    "session_start",
    "session_end",
    "herald_fault",
    "shutdown",
    "tags_start",
    "tags_stop",
    "dark_tags",
    "reference_counts",
    "reference_off",
}
CALIBRATION = {"tags_start", "tags_stop", "dark_tags", "reference_counts", "reference_off"}
HEARTBEAT_S = 0.5
SESSION_SILENCE_S = 10.0
"""A session whose nodes send nothing for this long is closed (its initiator is gone)."""
POLL_S = 0.005
SOFTWARE_POLL_S = 0.0005  # every attempt waits for its outcome: poll fast
FAULT_MODES = ("drop", "duplicate", "delay", "garble")


def midpoint_name(lab: LabConfig) -> str:
    names = [n for n, cfg in lab.nodes.items() if cfg.kind == "midpoint"]
    if not names:
        raise QnodeError(f"the lab {lab.lab.name} has no midpoint station")
    return names[0]


@dataclass
class MidpointSession:
    session: str
    protocol: str
    nodes: list[str]
    windows: list[tuple[float, float]]
    sync_base: int
    file: SessionFile
    software: bool = False
    seq: int = 0
    sent: int = 0
    last_heard: float = field(default_factory=time.monotonic)


@dataclass
class HeraldFault:
    """Test and soak hook (daemon started with --allow-faults): spoil the next heralds."""

    node: str
    mode: str
    count: int
    delay_s: float = 0.0
    after: int = 0  # heralds to let through first


class MidpointDaemon:
    def __init__(
        self,
        lab: LabConfig,
        resources: dict[str, str] | None,
        endpoint: str,
        allow_faults: bool = False,
    ) -> None:
        self.lab = lab
        self.node = midpoint_name(lab)
        cfg = lab.nodes[self.node]
        self.detectors = dict(cfg.channels.detectors)
        if "psi_plus" not in self.detectors or "psi_minus" not in self.detectors:
            raise QnodeError(
                f"{lab.source}: nodes.{self.node}.channels.detectors needs psi_plus and "
                "psi_minus inputs"
            )
        self.data_dir = lab.data_dir
        self.endpoint_requested = endpoint
        self.allow_faults = allow_faults
        tagger = next(iter(cfg.by_role("time_tagger")))
        self.tagger = lab.make_driver(self.node, tagger, resources)
        stabilisers = list(cfg.by_role("phase_stabiliser"))
        self.stabiliser = (
            lab.make_driver(self.node, stabilisers[0], resources) if stabilisers else None
        )
        self.store = ParameterStore(self.data_dir / "params.sqlite")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="midpoint")
        self._ctx = zmq.asyncio.Context()
        self.router = SecureRouter(self._ctx, self.data_dir, self.node, f"midpoint {self.node}")
        self.key_names = KeyNames(self.data_dir)  # read once, again only for a new key
        self.endpoint = ""
        self.state = "idle"
        self.fault_reason = ""
        self.session: MidpointSession | None = None
        self.connected: dict[str, float] = {}  # node -> last heard (monotonic)
        self.counters = {"malformed": 0, "forged": 0, "undeliverable": 0, "heralds": 0}
        self.faults: list[HeraldFault] = []
        self.tags_holder: str | None = None  # the calibration that armed the tagger
        self._ids = itertools.count(1)
        self.instance = uuid.uuid4().hex[:12]
        """Told in every heartbeat: a node whose session this midpoint never heard of (it
        restarted) learns so from a new instance."""
        self._stop = asyncio.Event()
        self._sock: zmq.asyncio.Socket | None = None

    # lifecycle ------------------------------------------------------------------------------
    async def serve(self) -> None:
        claim(self.data_dir, self.node)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        ensure_default_client(self.data_dir)
        self._sock = self.router.bind(self.endpoint_requested)
        self.endpoint = self.router.endpoint
        await self._in_worker(self._open_instruments)
        write_info(self.data_dir, self.node, self.endpoint, kind="midpoint")
        log.info("midpoint %s serving on %s (state %s)", self.node, self.endpoint, self.state)
        tasks = [
            loop.create_task(self._receive()),
            loop.create_task(self._heartbeats()),
            loop.create_task(self._poll()),
        ]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            if self.session is not None:
                await self._end_session("midpoint stopped")
            await self._in_worker(self._safe_state)
            await self._in_worker(self._close_instruments)
            self.router.close()
            self._ctx.term()
            remove_info(self.data_dir, self.node)
            self.store.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            log.info("midpoint %s stopped", self.node)

    async def _in_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _instruments(self) -> list:
        return [d for d in (self.tagger, self.stabiliser) if d is not None]

    def _open_instruments(self) -> None:
        try:
            for driver in self._instruments():
                driver.open()
            for channel in self.detectors.values():
                self.tagger.set_enabled(channel, True)
            self._safe_state()
        except Exception as e:
            self._enter_fault(f"instruments did not open: {e}")

    def _close_instruments(self) -> None:
        for driver in self._instruments():
            with contextlib.suppress(Exception):
                driver.close()

    def _safe_state(self) -> list[str]:
        """Sync output off, tagger disarmed, interferometer unlocked; returns the problems."""
        problems = []
        for driver in self._instruments():
            try:
                if not driver.is_open:
                    driver.open()
                if driver is self.tagger:
                    driver.set_sync_auto(False)
                    driver.set_click_mode(False)
                driver.safe_state()
            except Exception as e:
                problems.append(f"{driver.name}: {e}")
        return problems

    def _recover(self) -> None:
        """Leaving fault before a new session: reconnect and check every instrument."""
        for driver in self._instruments():
            try:
                driver.close()
                driver.open()
                driver.identity()
            except Exception as e:
                raise QnodeError(
                    f"midpoint {self.node} is in fault ({self.fault_reason}); "
                    f"{driver.name} still does not answer: {e}"
                ) from e
        problems = self._safe_state()
        if problems:
            raise QnodeError(f"midpoint {self.node} still in fault: {'; '.join(problems)}")
        log.info("midpoint %s: fault cleared (%s)", self.node, self.fault_reason)
        self.state, self.fault_reason = "idle", ""

    def _enter_fault(self, reason: str) -> None:
        log.error("midpoint %s fault: %s", self.node, reason)
        self.state, self.fault_reason = "fault", reason
        problems = self._safe_state()
        if problems:
            self.fault_reason += " | safe state incomplete: " + "; ".join(problems)

    # messages -------------------------------------------------------------------------------
    def _sender(self, user_key: str | None) -> str | None:
        """The allow-list name of the key a message came with (node-A, operator, ...)."""
        return self.key_names.name(user_key)

    async def _receive(self) -> None:
        sock = self._sock
        while True:
            frames = await sock.recv_multipart(copy=False)
            identity, payload = frames[0].bytes, frames[-1].bytes
            try:
                user_key = frames[-1].get("User-Id")
            except zmq.ZMQError:
                user_key = None
            try:
                msg = unpack(payload, REQUESTS)
            except MessageError as e:
                self.counters["malformed"] += 1
                log.warning("midpoint: malformed message dropped (%s)", e)
                continue
            try:
                body = await self._handle(msg, identity, self._sender(user_key))
                reply = pack("reply", msg["id"], ok=True, **body)
            except MessageError as e:
                self.counters["malformed"] += 1
                log.warning("midpoint: malformed %s dropped (%s)", msg["type"], e)
                reply = pack("reply", msg["id"], ok=False, error=f"malformed: {e}")
            except QnodeError as e:
                reply = pack("reply", msg["id"], ok=False, error=str(e))
            except Exception as e:
                log.exception("midpoint: request %s failed", msg.get("type"))
                reply = pack("reply", msg["id"], ok=False, error=f"{type(e).__name__}: {e}")
            if msg["type"] == "heartbeat":
                continue  # heartbeats are not answered: the midpoint sends its own
            with contextlib.suppress(zmq.ZMQError):
                await sock.send_multipart([identity, reply])

    def _require_node(self, msg: dict, identity: bytes, sender: str | None) -> str:
        node = require(msg, {"node": str})["node"]
        if node not in self.lab.nodes or self.lab.nodes[node].kind != "memory":
            raise QnodeError(f"{node!r} is not a memory node of {self.lab.lab.name}")
        if sender != f"node-{node}" or identity != node.encode():
            self.counters["forged"] += 1
            log.warning(
                "midpoint: %s claims to be node %s (key %s, identity %r): refused",
                msg["type"],
                node,
                sender,
                identity,
            )
            raise QnodeError(f"not node {node}: its station key and identity are required")
        self.connected[node] = time.monotonic()
        session = self.session
        if session is not None and node in session.nodes and msg.get("session") == session.session:
            session.last_heard = time.monotonic()  # a node in another session keeps none alive
        return node

    async def _handle(self, msg: dict, identity: bytes, sender: str | None) -> dict:
        kind = msg["type"]
        if kind in ("hello", "heartbeat"):
            self._require_node(msg, identity, sender)
            return {"midpoint": self.node}
        if kind == "status":
            return {"status": self.status()}
        if kind == "session_start":
            node = self._require_node(msg, identity, sender)
            return await self._start_session(msg, node)
        if kind == "session_end":
            self._require_node(msg, identity, sender)
            session = require(msg, {"session": str})["session"]
            if self.session is None or self.session.session != session:
                raise QnodeError(f"no session {session!r} at the midpoint")
            return await self._end_session("ended by " + msg["node"], by_node=True)
        if kind in CALIBRATION:
            return await self._calibration(msg, sender)
        if kind == "herald_fault":
            return self._add_fault(msg, sender)
        if kind == "shutdown":
            self._stop.set()
            return {}
        raise QnodeError(f"unknown request {kind!r}")

    def status(self) -> dict:
        s = self.session
        return {
            "node": self.node,
            "state": self.state,
            "fault_reason": self.fault_reason,
            "connected": sorted(self.connected),
            "refused_clients": self.router.allow_list.refused,
            "session": None
            if s is None
            else {"session": s.session, "protocol": s.protocol, "heralds": s.seq},
            **self.counters,
        }

    def _stored(self, node: str, name: str) -> float | None:
        row = self.store.current(node).get(name)
        return None if row is None else row.value

    # sessions -------------------------------------------------------------------------------
    async def _start_session(self, msg: dict, initiator: str) -> dict:
        require(msg, {"session": str, "protocol": str, "nodes": list})
        current = self.session
        if current is not None and initiator in current.nodes:
            # a node runs one session at a time: asking for another, it has left this one
            # (it failed, or crashed and restarted) and the session cannot go on
            await self._end_session(f"superseded: {initiator} started {msg['session']}")
        elif current is not None:
            raise QnodeError(f"midpoint {self.node} is busy with session {current.session}")
        if self.state == "fault":
            await self._in_worker(self._recover)
        if self.tags_holder is not None:
            raise QnodeError(f"midpoint {self.node} is calibrating ({self.tags_holder})")
        protocol, nodes = msg["protocol"], msg["nodes"]
        software = msg.get("heralding", "hardware") == "software"
        if protocol not in PROTOCOLS:
            raise QnodeError(f"unknown protocol {protocol!r} ({', '.join(PROTOCOLS)})")
        if software and protocol != "single_click":
            raise QnodeError("software heralding is single-click only")
        if initiator not in nodes or len(nodes) != 2 or not all(isinstance(n, str) for n in nodes):
            raise QnodeError(f"a session joins two nodes, the initiator among them: {nodes}")
        windows = []
        for node in nodes:
            start = self._stored(node, "detection_window_start_ns")
            length = self._stored(node, "detection_window_ns")
            if start is None or length is None:
                raise QnodeError(
                    f"node {node}'s detection window is not calibrated "
                    f"(`qnode calibrate --node {node} detection_window`)"
                )
            windows.append((start, length))
        setpoint = self._stored(self.node, "phase_setpoint_deg")
        if protocol == "single_click" and self.stabiliser is not None and setpoint is None:
            raise QnodeError(
                "single-click needs the interferometer phase set point "
                f"(`qnode calibrate --node {self.node} phase_setpoint`)"
            )
        base = await self._in_worker(self._arm, protocol, setpoint, software)
        day = time.strftime("%Y-%m-%d")
        file = SessionFile(
            self.data_dir / "runs" / day / f"{msg['session']}_{self.node}_heralds.h5",
            session=msg["session"],
            node=self.node,
            role="midpoint",
            protocol=protocol,
            request={k: v for k, v in msg.items() if k not in ("v", "id", "t")},
            lab_text=Path(self.lab.source).read_text() if Path(self.lab.source).exists() else "",
            parameters={
                name: {"value": row.value, "unit": row.unit}
                for name, row in self.store.current(self.node).items()
            },
            software_version=__version__,
        )
        self.session = MidpointSession(
            msg["session"], protocol, list(nodes), windows, base, file, software=software
        )
        log.info("midpoint: session %s (%s) for %s", msg["session"], protocol, nodes)
        return {"sync_base": base, "windows": windows}

    def _arm(self, protocol: str, setpoint: float | None, software: bool = False) -> int:
        try:
            self.tagger.set_sync_auto(False)
            self.tagger.set_click_mode(software)
            self.tagger.arm_clicks(True)  # and nothing from before the session
            if protocol == "single_click" and self.stabiliser is not None:
                self.stabiliser.set_setpoint(setpoint)
                self.stabiliser.set_lock(True)
            base = self.tagger.sync_count()
            self.tagger.set_sync_auto(True)
            return base
        except Exception as e:
            self._enter_fault(f"arming for the session failed: {e}")
            raise QnodeError(f"midpoint could not arm: {e}") from e

    async def _end_session(self, reason: str, by_node: bool = False) -> dict:
        """Close the session; one the midpoint ends itself (a fault, silent nodes), it tells
        its nodes, so that they stop at once rather than at their herald timeouts."""
        session, self.session = self.session, None
        if session is None:
            return {}
        if not by_node:
            ended = pack("session_ended", next(self._ids), session=session.session, reason=reason)
            for node in session.nodes:
                await self._send(node, ended)
        try:
            await self._in_worker(self.tagger.set_sync_auto, False)
            await self._dispatch(session, await self._in_worker(self.tagger.read_clicks))
        except Exception as e:
            self._enter_fault(f"closing session {session.session}: {e}")
        problems = await self._in_worker(self._safe_state)
        session.file.close("completed" if not problems else "failed", reason)
        log.info(
            "midpoint: session %s closed (%s), %d heralds", session.session, reason, session.seq
        )
        return {"heralds": session.seq, "undeliverable": self.counters["undeliverable"]}

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(
                SOFTWARE_POLL_S if self.session and self.session.software else POLL_S
            )
            session = self.session
            if session is None:
                continue
            if time.monotonic() - session.last_heard > SESSION_SILENCE_S:
                log.warning("midpoint: session %s: its nodes fell silent", session.session)
                await self._end_session("the nodes fell silent")
                continue
            try:
                clicks = await self._in_worker(self.tagger.read_clicks)
            except Exception as e:
                self._enter_fault(f"reading the herald clicks: {e}")
                await self._end_session(f"fault: {e}")
                continue
            if self.session is session:
                await self._dispatch(session, clicks)

    async def _dispatch(self, session: MidpointSession, clicks: np.ndarray) -> None:
        verdicts = classify(clicks, session.protocol, session.windows, self.detectors)
        rows = np.zeros(len(verdicts), dtype=HERALD_ROW)
        for k, verdict in enumerate(verdicts):
            session.seq += 1
            shot = int(verdict.sync) - session.sync_base - 1
            t = time.time()
            fields = dict(
                session=session.session,
                seq=session.seq,
                shot=shot,
                sync=int(verdict.sync),
                attempt=int(verdict.attempt),
                outcome=verdict.outcome,
                reason=verdict.reason,
            )
            rows[k] = (session.seq, shot, verdict.sync, verdict.attempt, 0, t, t)
            rows[k]["outcome"] = OUTCOMES.index(verdict.outcome)
            for node in session.nodes:
                await self._send_herald(node, fields)
            self.counters["heralds"] += 1
        session.file.add_heralds(rows)
        if len(rows):
            session.file.flush()

    async def _send_herald(self, node: str, fields: dict) -> None:
        fault = next((f for f in self.faults if f.node == node and f.count > 0), None)
        copies, delay = 1, 0.0
        if fault is not None and fault.after > 0:
            fault.after -= 1
            fault = None
        if fault is not None:
            fault.count -= 1
            if fault.mode == "drop":
                log.warning(
                    "midpoint: fault injected: herald %d to %s dropped", fields["seq"], node
                )
                return
            if fault.mode == "garble":  # what a corrupted message looks like on arrival
                broken = {k: v for k, v in fields.items() if k != "attempt"}
                await self._send(node, b"\x00garbled")
                await self._send(node, pack("herald", next(self._ids), **broken))
                return
            copies = 2 if fault.mode == "duplicate" else 1
            delay = fault.delay_s if fault.mode == "delay" else 0.0
        payload = pack("herald", next(self._ids), **fields)
        if delay:
            asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._send(node, payload))
            )
            return
        for _ in range(copies):
            await self._send(node, payload)

    async def _send(self, node: str, payload: bytes) -> None:
        try:
            await self._sock.send_multipart([node.encode(), payload])
        except zmq.ZMQError as e:  # ROUTER_MANDATORY: the node is not connected
            self.counters["undeliverable"] += 1
            log.warning("midpoint: node %s unreachable (%s): message not delivered", node, e)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            session = self.session.session if self.session else ""
            beat = dict(session=session, instance=self.instance)
            for node in list(self.connected):
                try:
                    await self._sock.send_multipart(
                        [node.encode(), pack("heartbeat", next(self._ids), **beat)]
                    )
                except zmq.ZMQError:
                    self.connected.pop(node, None)  # gone; it says hello when it is back

    # calibration's use of the midpoint's instruments ------------------------------------
    async def _calibration(self, msg: dict, sender: str | None) -> dict:
        """The midpoint routines (detection window, dark counts, phase set point) through
        the one owner of the instruments; never during a session, one armed acquisition at
        a time (a second caller is told to wait)."""
        kind = msg["type"]
        if self.session is not None:
            raise QnodeError(f"midpoint {self.node} is busy with session {self.session.session}")
        if self.state == "fault":
            await self._in_worker(self._recover)
        if kind == "tags_start":
            if self.tags_holder is not None:
                raise QnodeError(f"busy: the tagger is armed for {self.tags_holder}")
            self.tags_holder = str(msg.get("holder") or sender)
            await self._in_worker(self.tagger.start_tags)
            return {}
        if self.tags_holder is not None and kind != "tags_stop":
            raise QnodeError(f"busy: the tagger is armed for {self.tags_holder}")
        if kind == "tags_stop":
            if self.tags_holder is None:
                raise QnodeError("the tagger is not armed")
            try:
                tags = await self._in_worker(self.tagger.stop_tags)
            finally:
                self.tags_holder = None
            return {"tags": tags}
        if kind == "dark_tags":
            seconds = float(require(msg, {"seconds": (int, float)})["seconds"])
            return {"tags": await self._in_worker(self.tagger.acquire_tags, seconds)}
        if self.stabiliser is None:
            raise QnodeError(f"midpoint {self.node} has no phase stabiliser")
        if kind == "reference_counts":
            require(msg, {"setpoint_deg": (int, float), "seconds": (int, float)})
            counts = await self._in_worker(
                self._reference_counts, float(msg["setpoint_deg"]), float(msg["seconds"])
            )
            return {"counts": counts}
        await self._in_worker(self.stabiliser.set_reference, False)
        return {}

    def _reference_counts(self, setpoint_deg: float, seconds: float) -> dict[str, int]:
        self.stabiliser.set_reference(True)
        self.stabiliser.set_setpoint(setpoint_deg)
        self.stabiliser.set_lock(True)
        self.tagger.set_integration(seconds)
        return {name: self.tagger.count(ch) for name, ch in self.detectors.items()}

    def _add_fault(self, msg: dict, sender: str | None) -> dict:
        if not self.allow_faults:
            raise QnodeError("herald faults are off (start the midpoint with --allow-faults)")
        require(msg, {"node": str, "mode": str, "count": int})
        if msg["mode"] not in FAULT_MODES:
            raise QnodeError(f"fault mode {msg['mode']!r}: one of {', '.join(FAULT_MODES)}")
        delay, after = float(msg.get("delay_s", 0.0)), int(msg.get("after", 0))
        self.faults.append(HeraldFault(msg["node"], msg["mode"], msg["count"], delay, after))
        log.warning("midpoint: %s asked for %s", sender, self.faults[-1])
        return {}


def serve(
    lab: LabConfig, resources: dict[str, str] | None, endpoint: str, allow_faults: bool = False
) -> None:
    asyncio.run(MidpointDaemon(lab, resources, endpoint, allow_faults).serve())
