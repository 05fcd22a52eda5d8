"""`qnode midpoint serve`: the midpoint station's controller.

It owns the midpoint's instruments (the time tagger, the herald logic with the sync output,
the piezo driver of the interferometer's fibre stretcher and the reference laser). A
session, opened by the initiating node: arm the herald logic, stabilise the interferometer
(single-click: phase_lock.py, in bursts between heralding periods, the sync paused), let
the sync fire whenever both nodes wait for it; then read the clicks of each heralding
attempt, classify them (herald_logic) and send each node of the session a herald message.
A single-click herald goes out once the next burst found the phase where the last one left
it (the phase it was made at is only known then); a fail goes out at once.

The nodes connect DEALERs with their station key; a node is known by that key (never by its
routing id), and the midpoint sends to the routing id its last authenticated message came
from (a node that reconnects takes its place back with its next message). ROUTER_MANDATORY
makes an unreachable node an error that is counted, never a silent drop. Heartbeats both
ways; a session whose nodes fall silent is closed and the instruments go to their safe state.

Messages: controller/midpoint/messages.py; docs/protocols.md ("Midpoint").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import zmq

from controller.data.names import session_path
from controller.data.params import open_intact
from controller.data.repair import repair_own
from controller.data.sessionfile import HERALD_ROW, SessionFile
from controller.labconfig import LabConfig
from controller.link.vocabulary import (
    HEARTBEAT_S,
    MIDPOINT_SILENCE_S,
    ONE_ROUND,
    OUTCOMES,
    PROTOCOLS,
)
from controller.messaging.keys import RateLimitedLog, station_key_name
from controller.messaging.serving import Request, StationServer
from controller.messaging.wire import pack
from controller.midpoint.calibration import REFERENCE_POWER_W, LockLight, MidpointCalibration
from controller.midpoint.calibration import SETTLE_S as LOCK_SETTLE_S
from controller.midpoint.faults import HeraldFaults
from controller.midpoint.herald_logic import classify, missing_detectors
from controller.midpoint.messages import CALIBRATION, MIDPOINT
from controller.midpoint.phase_lock import (
    COUNT_S,
    DEFAULT_INTERVAL_S,
    BurstResult,
    Fringe,
    LockSettings,
    run_burst,
    share_of,
)
from drivers.protocols import HeraldLogic, Laser, PhaseStabiliser, TimeTagger
from qnode import __version__
from qnode.errors import QnodeError

log = logging.getLogger("qnode.midpoint")

POLL_S = 0.005
SOFTWARE_POLL_S = 0.0005  # every attempt waits for its outcome: poll fast
UNLOCKED = "interferometer lock lost: the phase jumped since the last stabilisation burst"
REFERENCE_ON = "reference light on: heralded during a stabilisation burst"
SETTLE_S = 0.005
"""After the sync pauses, before the reference light goes on: attempt blocks synced just
before draw their photons first."""
RESET_TOLERANCE_V = 1.0
RESET_TOLERANCE_DEG = 10.0
"""The piezo reads back further than max(RESET_TOLERANCE_V, RESET_TOLERANCE_DEG of phase)
from what the lock set: the unit reset (or someone turned its knob). A unit's read-back is
measured, off the set value by a few tenths of a volt; a reset to 0 V is volts away."""


def piezo_reset(read_back_v: float, set_v: float, fringe: Fringe) -> bool:
    """Whether the piezo's read-back says it is no longer where the lock left it."""
    tolerance = max(RESET_TOLERANCE_V, RESET_TOLERANCE_DEG / abs(fringe.deg_per_volt))
    return abs(read_back_v - set_v) > tolerance


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
    last_heard: float = field(default_factory=time.monotonic)
    watch_lock: bool = False
    """Single-click with a piezo: the heralded states carry the interferometer phase."""
    lock_checked: float = 0.0
    """When the last stabilisation burst ended (monotonic)."""
    relocks: int = 0
    lock: tuple[Fringe, LockSettings, float] | None = None
    """Single-click: the fringe, the lab's piezo range and the interval between bursts."""
    lock_voltage: float = 0.0
    """Where the last burst left the piezo."""
    pending: list = field(default_factory=list)
    """Verdicts in order, not yet sent: from the first heralded one on, they wait for the next
    burst to say whether the phase held."""


def heraldable(lab: LabConfig, node: str) -> tuple[str, ...]:
    """The protocols the midpoint's detectors (its channel map) can herald; none is an error
    naming what each protocol lacks."""
    detectors = dict(lab.nodes[node].channels.detectors)
    protocols = tuple(p for p in PROTOCOLS if not missing_detectors(p, detectors))
    if not protocols:
        needs = "; ".join(f"{p}: {', '.join(missing_detectors(p, detectors))}" for p in PROTOCOLS)
        raise QnodeError(
            f"{lab.source}: nodes.{node}.channels.detectors ({', '.join(detectors) or 'none'}) "
            f"can herald no protocol; missing per protocol: {needs}"
        )
    return protocols


def served_midpoint(lab: LabConfig, name: str | None = None) -> str:
    """The midpoint station a daemon serves: the one named, or the lab's only one. QnodeError
    listing the lab's midpoints when the name is none of them, or when the lab has several
    and none is named."""
    midpoints = [n for n, cfg in lab.nodes.items() if cfg.kind == "midpoint"]
    if not midpoints:
        raise QnodeError(f"the lab {lab.lab.name} has no midpoint station")
    known = ", ".join(
        f"{m} ({' and '.join('-'.join(k.nodes) for k in lab.links_of(m).values()) or 'no link'})"
        for m in midpoints
    )
    if name is None:
        if len(midpoints) > 1:
            raise QnodeError(
                f"the lab {lab.lab.name} has {len(midpoints)} midpoints: name the one to serve "
                f"(--name), one of {known}"
            )
        return midpoints[0]
    if name not in midpoints:
        raise QnodeError(
            f"{name!r} is not a midpoint of the lab {lab.lab.name} (its midpoints: {known})"
        )
    return name


def link_nodes(lab: LabConfig, midpoint: str) -> list[str]:
    """The memory nodes a midpoint heralds for: the two ends of its link."""
    return [n for link in lab.links_of(midpoint).values() for n in link.nodes]


class MidpointDaemon(StationServer):
    def __init__(
        self,
        lab: LabConfig,
        resources: dict[str, str] | None,
        endpoint: str,
        allow_faults: bool = False,
        accept_broken_history: bool = False,
        name: str | None = None,
    ) -> None:
        name = served_midpoint(lab, name)
        # before anything else: a broken history refuses the start
        store = open_intact(
            lab.data_dir / "params.sqlite", f"midpoint {name}", accept_broken_history
        )
        super().__init__(lab.data_dir, name, f"midpoint {name}", endpoint, MIDPOINT)
        self.lab = lab
        self.node = name
        self.link_nodes = link_nodes(lab, name)
        """The two nodes of this midpoint's link: it heralds for them only."""
        cfg = lab.nodes[self.node]
        self.detectors = dict(cfg.channels.detectors)
        self.protocols = heraldable(lab, self.node)
        """The protocols this midpoint's detectors can herald."""
        tagger = next(iter(cfg.by_role("time_tagger")))
        self.tagger = lab.make_instrument(self.node, tagger, TimeTagger, resources)
        herald = next(iter(cfg.by_role("herald_logic")))
        self.herald = lab.make_instrument(self.node, herald, HeraldLogic, resources)
        piezos = list(cfg.by_role("phase_stabiliser"))
        self.piezo = (
            lab.make_instrument(self.node, piezos[0], PhaseStabiliser, resources)
            if piezos
            else None
        )
        lasers = list(cfg.by_role("laser"))
        self.reference = (
            lab.make_instrument(self.node, lasers[0], Laser, resources) if lasers else None
        )
        """The reference laser whose light through the interferometer the lock reads."""
        self.calibration = MidpointCalibration(
            self.node,
            self.tagger,
            self.piezo,
            self.reference,
            self.detectors,
            self._lock_setup,
            self._lock_light,
        )
        self._light: LockLight | None = None
        """The session's lock I/O (its laser prepared when the session armed)."""
        self.store = store
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="midpoint")
        self.fault_reason = ""
        self._state = "idle"
        self.session: MidpointSession | None = None
        self.connected: dict[str, float] = {}  # node -> last heard (monotonic)
        self.routes: dict[str, bytes] = {}
        """node -> the routing id its last message with its station key came from."""
        self.counters = {"forged": 0, "undeliverable": 0, "heralds": 0, "relocks": 0}
        self.faults = HeraldFaults(allow_faults)
        self._forged_log = RateLimitedLog(log)
        self._ids = itertools.count(1)
        self.instance = uuid.uuid4().hex[:12]
        """Told in every heartbeat: a node whose session this midpoint never heard of (it
        restarted) learns so from a new instance."""

    # lifecycle ------------------------------------------------------------------------------
    def state(self) -> str:
        return self._state

    def info(self) -> dict:
        return {"kind": "midpoint"}

    def background(self) -> list:
        return [self._heartbeats(), self._poll()]

    async def open(self) -> None:
        await self._in_worker(self._open_instruments)
        await self._in_worker(self._repair_crash_left)

    def _repair_crash_left(self) -> None:
        """Heralds files a killed daemon of this midpoint left open: closed as crashed."""
        try:
            for line in repair_own(
                self.data_dir, self.node, ("heralds",), f"midpoint {self.node} as it restarted"
            ):
                log.warning("midpoint: crash-left %s", line)
        except Exception as e:  # never stops the start
            log.error("midpoint: crash-left files not repaired: %s", e)

    async def close(self) -> None:
        if self.session is not None:
            await self._end_session("midpoint stopped")
        await self._in_worker(self._safe_state)
        await self._in_worker(self._close_instruments)
        self.store.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _in_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _instruments(self) -> list:
        return [d for d in (self.tagger, self.herald, self.piezo, self.reference) if d is not None]

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
        """Sync output off, herald logic and tagger disarmed, reference light off, piezo at
        0 V; returns the problems."""
        problems = []
        for driver in self._instruments():
            try:
                if not driver.is_open:
                    driver.open()
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
        self._state, self.fault_reason = "idle", ""

    def _enter_fault(self, reason: str) -> None:
        log.error("midpoint %s fault: %s", self.node, reason)
        self._state, self.fault_reason = "fault", reason
        problems = self._safe_state()
        if problems:
            self.fault_reason += " | safe state incomplete: " + "; ".join(problems)

    # messages -------------------------------------------------------------------------------
    def _require_node(self, msg: dict, request: Request) -> str:
        """The node a station message speaks for, if it came with that node's station key;
        where the midpoint reaches it from now on (the routing id it came from)."""
        node = msg["node"]
        if node not in self.lab.nodes or self.lab.nodes[node].kind != "memory":
            raise QnodeError(f"{node!r} is not a memory node of {self.lab.lab.name}")
        if self.link_nodes and node not in self.link_nodes:
            raise QnodeError(
                f"midpoint {self.node} heralds the link {'-'.join(self.link_nodes)}, "
                f"not node {node}"
            )
        if not request.from_station or request.sender != station_key_name(node):
            self.counters["forged"] += 1
            self._forged_log.warning(
                f"{request.sender}:{node}",
                "midpoint: %s from key %s (role %s, routing id %r) claims to be node %s: refused",
                msg["type"],
                request.sender or "unknown",
                request.role or "none",
                request.identity,
                node,
            )
            raise QnodeError(f"not node {node}: its station key is required")
        previous = self.routes.get(node)
        if previous != request.identity:
            self.routes[node] = request.identity
            if previous is not None:
                log.info("midpoint: node %s reconnected: messages go to its new connection", node)
        self.connected[node] = time.monotonic()
        session = self.session
        if session is not None and node in session.nodes and msg.get("session") == session.session:
            session.last_heard = time.monotonic()  # a node in another session keeps none alive
        return node

    async def handle(self, request: Request) -> dict:
        msg, sender = request.msg, request.sender
        kind = msg["type"]
        if kind in ("hello", "heartbeat"):
            self._require_node(msg, request)
            return {"midpoint": self.node}
        if kind == "status":
            return {"status": self.status()}
        if kind == "session_start":
            node = self._require_node(msg, request)
            return await self._start_session(msg, node)
        if kind == "session_end":
            self._require_node(msg, request)
            session = msg["session"]
            if self.session is None or self.session.session != session:
                raise QnodeError(f"no session {session!r} at the midpoint")
            return await self._end_session("ended by " + msg["node"], by_node=True)
        request.require_client(f"midpoint {self.node}")  # the rest is the operator's
        if kind in CALIBRATION:
            if self.session is not None:
                raise QnodeError(
                    f"midpoint {self.node} is busy with session {self.session.session}"
                )
            if self._state == "fault":
                await self._in_worker(self._recover)
            return await self.calibration.handle(msg, sender, self._in_worker)
        if kind == "herald_fault":
            fault = self.faults.add(
                msg["node"],
                msg["mode"],
                msg["count"],
                float(msg.get("delay_s") or 0.0),
                int(msg.get("after") or 0),
            )
            log.warning("midpoint: %s asked for %s", sender, fault)
            return {}
        if kind == "shutdown":
            self.request_stop()
            return {}
        raise QnodeError(f"unknown request {kind!r}")

    def status(self) -> dict:
        s = self.session
        return {
            "node": self.node,
            "state": "busy" if s is not None and self._state != "fault" else self._state,
            "fault_reason": self.fault_reason,
            "connected": sorted(self.connected),
            "refused_clients": self.router.allow_list.refused,
            "refused_handshakes": self.router.refused_handshakes,
            "identity_conflicts": self.routing_ids.conflicts,
            "malformed": self.malformed,
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
        path = session_path(self.data_dir, msg["session"], self.node, "heralds")  # id checked
        current = self.session
        if current is not None and initiator in current.nodes:
            # a node runs one session at a time: asking for another, it has left this one
            # (it failed, or crashed and restarted) and the session cannot go on
            await self._end_session(f"superseded: {initiator} started {msg['session']}")
        elif current is not None:
            raise QnodeError(f"midpoint {self.node} is busy with session {current.session}")
        if self._state == "fault":
            await self._in_worker(self._recover)
        if self.calibration.holder is not None:
            raise QnodeError(f"midpoint {self.node} is calibrating ({self.calibration.holder})")
        protocol, nodes = msg["protocol"], msg["nodes"]
        software = msg.get("heralding") == "software"
        if software and protocol not in ONE_ROUND:
            raise QnodeError(
                f"software heralding is for one-round protocols only ({', '.join(ONE_ROUND)})"
            )
        missing = missing_detectors(protocol, self.detectors)
        if missing:
            raise QnodeError(
                f"midpoint {self.node} cannot herald {protocol}: its detectors "
                f"({', '.join(self.detectors)}) lack {', '.join(missing)}; it heralds "
                f"{', '.join(self.protocols)}"
            )
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
        lock = None
        if protocol == "single_click" and self.piezo is not None:
            lock = self._lock_setup()
        base, lock_voltage = await self._in_worker(self._arm, software, windows, lock)
        file = SessionFile(
            path,
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
            msg["session"],
            protocol,
            list(nodes),
            windows,
            base,
            file,
            software=software,
            watch_lock=lock is not None,
            lock=lock,
            lock_checked=time.monotonic(),
            lock_voltage=lock_voltage,
        )
        log.info("midpoint: session %s (%s) for %s", msg["session"], protocol, nodes)
        return {"sync_base": base, "windows": windows}

    def _lock_setup(self) -> tuple[Fringe, LockSettings, float]:
        """The lock's calibrated fringe, the lab's piezo range and the burst interval; an
        error naming what is missing."""
        if self.piezo is None or self.reference is None:
            missing = "piezo driver (role phase_stabiliser)" if self.piezo is None else ""
            missing = missing or "reference laser (role laser)"
            raise QnodeError(f"midpoint {self.node} has no {missing}: it cannot hold the phase")
        k = self._stored(self.node, "piezo_deg_per_volt")
        contrast = self._stored(self.node, "fringe_contrast")
        if k is None or contrast is None:
            raise QnodeError(
                "single-click needs the interferometer's fringe calibrated "
                f"(`qnode calibrate --node {self.node} phase_fringe`)"
            )
        low, high = self.piezo.limits["voltage_v"]
        interval = self._stored(self.node, "phase_lock_interval_s") or DEFAULT_INTERVAL_S
        target = self._stored(self.node, "phase_setpoint_deg") or 0.0
        return Fringe(k, contrast), LockSettings(low, high, target_deg=target), interval

    def _lock_light(self) -> LockLight:
        """The lock's I/O with the midpoint's parameters (reference power, settle time)."""
        assert self.piezo is not None and self.reference is not None
        power = self._stored(self.node, "reference_power_w")
        settle = self._stored(self.node, "piezo_settle_s")
        return LockLight(
            self.tagger,
            self.piezo,
            self.reference,
            list(self.detectors.values()),
            REFERENCE_POWER_W if power is None else power,
            LOCK_SETTLE_S if settle is None else settle,
        )

    def _stabilise(self, fringe: Fringe, settings: LockSettings, start_v: float) -> BurstResult:
        """One burst (the sync already paused): reference light on (and emitting), count,
        step the piezo, until the phase is at the fringe's top; the light off again whatever
        happens."""
        assert self.piezo is not None and self._light is not None
        names = list(self.detectors)
        light = self._light

        def share_at(volts: float) -> float:
            counts = light.counts_at(volts, COUNT_S)
            return share_of({n: counts[self.detectors[n]] for n in names}, names)

        try:
            light.on()
            result = run_burst(fringe, settings, start_v, share_at)
            self.piezo.set_voltage(result.voltage_v)
            return result
        finally:
            light.off()

    def _arm(
        self,
        software: bool,
        windows: list[tuple[float, float]],
        lock: tuple[Fringe, LockSettings, float] | None,
    ) -> tuple[int, float]:
        """The herald logic armed and, single-click, the phase stabilised before the first
        sync; the sync base and where the piezo was left."""
        try:
            self.herald.set_sync_auto(False)
            self.herald.set_click_mode(software)
            self.herald.set_herald_windows(windows)
            voltage = 0.0
            if lock is not None:
                assert self.piezo is not None
                fringe, settings, _ = lock
                self._light = self._lock_light()
                self._light.prepare()  # constant power at the lab-limited power, checked
                result = self._stabilise(fringe, settings, (settings.low_v + settings.high_v) / 2)
                if not result.converged:
                    raise QnodeError(f"the interferometer could not be stabilised: {result.reason}")
                voltage = result.voltage_v
            self.herald.arm_clicks(True)  # and nothing from before the session
            base = self.herald.sync_count()
            self.herald.set_sync_auto(True)
            return base, voltage
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
            await self._in_worker(self.herald.set_sync_auto, False)
            await self._dispatch(session, await self._in_worker(self.herald.read_clicks))
            if session.pending:  # the phase since the last burst: one more look
                await self._burst(session, final=True)
        except Exception as e:
            self._enter_fault(f"closing session {session.session}: {e}")
        await self._release(session, everything=True, reason=UNLOCKED)
        problems = await self._in_worker(self._safe_state)
        if session.relocks:
            reason += f"; the interferometer's phase jumped {session.relocks} times"
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
            if time.monotonic() - session.last_heard > MIDPOINT_SILENCE_S:
                log.warning("midpoint: session %s: its nodes fell silent", session.session)
                await self._end_session("the nodes fell silent")
                continue
            try:
                clicks = await self._in_worker(self.herald.read_clicks)
                if self.session is not session:
                    continue  # ended meanwhile: its end read what was left
                await self._dispatch(session, clicks)
                lock = session.lock
                if lock is not None and time.monotonic() - session.lock_checked >= lock[2]:
                    await self._burst(session)
            except Exception as e:
                self._enter_fault(f"reading the herald clicks or holding the phase: {e}")
                await self._end_session(f"fault: {e}")
                continue

    async def _burst(self, session: MidpointSession, final: bool = False) -> None:
        """A stabilisation burst between heralding periods: the sync paused, the clicks made
        before it classified, the phase found and corrected. Found where the last burst left
        it, the heralds waiting since then go out; found far off (or the piezo not where it
        was left: the unit reset), they go out as fail. The clicks of the burst itself (made
        with the reference light on) are fails. A burst that cannot find the phase ends the
        session."""
        assert session.lock is not None
        fringe, settings, _ = session.lock
        outcome = await self._in_worker(self._burst_io, session, fringe, settings, final)
        before, reset, result, during = outcome
        if not final and self.session is not session:
            log.info("midpoint: session %s ended during a burst", session.session)
            return  # its end classified and released what it had; the file is closed
        session.lock_checked = time.monotonic()
        await self._dispatch(session, before)
        jumped = reset or result.far_off(settings.jump_deg)
        if jumped:
            session.relocks += 1
            self.counters["relocks"] += 1
            log.warning(
                "midpoint: session %s: the phase jumped (%s); %d heralds since the last burst "
                "discarded",
                session.session,
                "the piezo driver reset" if reset else f"{result.first_phase_deg:.0f} deg",
                sum(v.outcome != "fail" for v in session.pending),
            )
        await self._release(session, everything=True, reason=UNLOCKED if jumped else "")
        await self._dispatch(session, during, reason=REFERENCE_ON)
        if not result.converged:
            await self._end_session(f"the interferometer's phase is lost: {result.reason}")
            return
        session.lock_voltage = result.voltage_v

    def _burst_io(
        self, session: MidpointSession, fringe: Fringe, settings: LockSettings, final: bool
    ) -> tuple[np.ndarray, bool, BurstResult, np.ndarray]:
        """In the worker: the clicks before, whether the piezo reset, the burst, the clicks
        during it; the sync resumed after (unless the session is ending)."""
        assert self.piezo is not None
        self.herald.set_sync_auto(False)
        time.sleep(SETTLE_S)
        before = self.herald.read_clicks()
        reset = piezo_reset(self.piezo.voltage(), session.lock_voltage, fringe)
        result = self._stabilise(fringe, settings, session.lock_voltage)
        during = self.herald.read_clicks()
        if not final and result.converged:
            self.herald.set_sync_auto(True)
        return before, reset, result, during

    async def _dispatch(
        self, session: MidpointSession, clicks: np.ndarray, reason: str = ""
    ) -> None:
        """Classify the clicks and queue their verdicts (a heralded one as a fail with
        `reason` if given); send what need not wait for the next burst."""
        verdicts = classify(clicks, session.protocol, session.windows, self.detectors)
        for verdict in verdicts:
            if reason and verdict.outcome != "fail":
                verdict = replace(verdict, outcome="fail", reason=reason)
            session.pending.append(verdict)
        await self._release(session, everything=not session.watch_lock)

    async def _release(
        self, session: MidpointSession, everything: bool = False, reason: str = ""
    ) -> None:
        """Send the queued verdicts in order: all of them (`everything`: a burst found the
        phase, or no phase matters), else those before the first heralded one. With `reason`,
        every heralded one goes out as a fail with it."""
        count = len(session.pending)
        if not everything:
            count = next((k for k, v in enumerate(session.pending) if v.outcome != "fail"), count)
        if not count:
            return
        verdicts, session.pending = session.pending[:count], session.pending[count:]
        rows = np.zeros(len(verdicts), dtype=HERALD_ROW)
        for k, verdict in enumerate(verdicts):
            if reason and verdict.outcome != "fail":
                verdict = replace(verdict, outcome="fail", reason=reason)
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
        session.file.flush()

    async def _send_herald(self, node: str, fields: dict) -> None:
        fault = self.faults.next_for(node)
        copies, delay = 1, 0.0
        if fault is not None:
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
            await self.send_to(self._route(node), payload)
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
                    payload = pack("heartbeat", next(self._ids), **beat)
                    await self.send_to(self._route(node), payload)
                except zmq.ZMQError:
                    self.connected.pop(node, None)  # gone; it says hello when it is back

    def _route(self, node: str) -> bytes:
        route = self.routes.get(node)
        if route is None:
            raise zmq.ZMQError(zmq.EHOSTUNREACH, f"node {node} has not said hello")
        return route


def serve(
    lab: LabConfig,
    resources: dict[str, str] | None,
    endpoint: str,
    allow_faults: bool = False,
    accept_broken_history: bool = False,
    name: str | None = None,
) -> None:
    daemon = MidpointDaemon(lab, resources, endpoint, allow_faults, accept_broken_history, name)
    asyncio.run(daemon.serve())
