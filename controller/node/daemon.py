"""`qnode node serve`: the node daemon and its control API over ZeroMQ.

One process per node, the one owner of that node's instruments. Requests arrive on a ROUTER
socket (CurveZMQ, allow-listed keys; an unknown key gets nothing and is logged): operator
requests only with a client key, peer messages only with a station key (docs/security.md);
runs execute in one worker thread so status and abort stay responsive. Any fault puts the
instruments in their safe state and the daemon stays up. SIGTERM / Ctrl-C: abort the run,
safe state, close the run file, exit 0.

Requests (controller/node/messages.py): status, run {sequence}, abort, safe_state, result
{run_id}, params, shutdown; the operator's entangle/session requests and the peer's link
messages go to the link layer. Every reply: {type: "reply", id, ok, ...} or ok false + error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from controller.data.params import open_intact
from controller.data.repair import repair_own
from controller.data.runfile import read_run, retry_parked
from controller.labconfig import LabConfig
from controller.link.messages import OPERATOR, PEER
from controller.link.node_link import NodeLink
from controller.messaging.serving import Request, StationServer
from controller.messaging.station_link import StationDialer
from controller.messaging.wire import vocabulary
from controller.network.messages import NETWORK_OPERATOR, NETWORK_STATION
from controller.network.node_operations import (
    DAEMON_TIMING,
    NodeLinkOperations,
    StationPeers,
    connect,
)
from controller.network.service import NetworkService
from controller.node.link_port import LinkPort
from controller.node.messages import NODE
from controller.node.runtime import InstrumentHandle, NodeRuntime
from controller.node.worker import RunWorker
from qnode import __version__
from qnode.errors import QnodeError
from sequences.operations import from_data

SHUTDOWN_GRACE_S = 10.0
SHUTDOWN_SAFE_S = 6.0
"""Every instrument's safe state at shutdown, at once: a gone one costs its own timeout and
back-off (a few seconds), not the others', and no more than this in all."""
SHUTDOWN_CLOSE_S = 2.0


STARTUP_S = 8.0


def _open_safe(handle: InstrumentHandle) -> None:
    with handle as driver:
        driver.open()
        driver.safe_state()


def _make_safe(handle: InstrumentHandle) -> None:
    with handle as driver:
        if not driver.is_open:
            driver.open()
        driver.safe_state()


def _close(handle: InstrumentHandle) -> None:
    with handle as driver:
        driver.close()


async def at_once(
    handles: dict[str, InstrumentHandle], job: Callable[[InstrumentHandle], None], limit_s: float
) -> dict[str, str]:
    """`job` on every instrument in a thread of its own, waiting at most `limit_s` in all;
    returns what failed or did not finish, by instrument. The threads are daemons: one that
    hangs on a dead instrument cannot keep the daemon from exiting."""
    failed: dict[str, str] = {name: f"no answer within {limit_s:g} s" for name in handles}
    lock = threading.Lock()

    def run(name: str, handle: InstrumentHandle) -> None:
        try:
            job(handle)
            outcome = None
        except Exception as e:
            outcome = str(e)
        with lock:
            if outcome is None:
                del failed[name]
            else:
                failed[name] = outcome

    threads = [
        threading.Thread(target=run, args=item, name=f"shutdown-{item[0]}", daemon=True)
        for item in handles.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + limit_s
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    with lock:
        return dict(failed)


class NodeDaemon(StationServer):
    concurrent = frozenset(
        {"run", "network_measure", "teleport_prepare", "teleport_send", "teleport_receive"}
    )
    """Answered in a task of their own: compiling a long sweep, or a network measurement,
    holds up no other request (a teleport_receive waits for the sender's outcome; the
    repeater's heartbeats are heard while a teleport_prepare runs its program)."""

    def __init__(
        self,
        lab: LabConfig,
        node: str,
        resources: dict[str, str] | None,
        endpoint: str,
        accept_broken_history: bool = False,
    ) -> None:
        # before anything else: a broken history refuses the start
        store = open_intact(lab.data_dir / "params.sqlite", f"node {node}", accept_broken_history)
        accepted = vocabulary(NODE, NETWORK_OPERATOR, NETWORK_STATION)
        super().__init__(lab.data_dir, node, f"node {node}", endpoint, accepted)
        self.lab = lab
        self.node = node
        self.store = store
        self.runtime = NodeRuntime(lab, node, resources, self.store)
        self.worker = RunWorker(self.runtime)
        self.link = NodeLink(
            lab,
            LinkPort(lab, self.runtime, self.store, self.worker),
            StationDialer(self.ctx, self.data_dir, node),
        )
        neighbours = tuple(link.peer(node) for link in lab.links_of(node).values())
        self.network = NetworkService(
            node,
            neighbours,
            NodeLinkOperations(self.link),
            StationPeers(self.link),
            self.data_dir,
            __version__,
            DAEMON_TIMING,
        )
        connect(self.link, self.network)  # an end hears of its link pairs as they end

    # lifecycle ------------------------------------------------------------------------------
    def state(self) -> str:
        return self.runtime.state

    async def open(self) -> None:
        """Every instrument opened and put in its safe state at once (a gone one costs its own
        back-off, not the others'; the daemon is up, in fault, within STARTUP_S)."""
        failed = await at_once(self.runtime.instruments, _open_safe, STARTUP_S)
        if failed:
            self.runtime.mark_fault(
                "instruments did not open in their safe state: "
                + "; ".join(f"{name}: {problem}" for name, problem in failed.items())
            )
        await asyncio.get_running_loop().run_in_executor(None, self._repair_crash_left)
        self.link.start()  # a session this node crashed out of: reconcile it with the peer

    def _repair_crash_left(self) -> None:
        """Run files a killed daemon of this node left open: closed as crashed, its network
        session files as interrupted (its link session files are its reconciliation's)."""
        try:
            for line in repair_own(
                self.data_dir, self.node, ("run", "network"), f"node {self.node} as it restarted"
            ):
                self.log.warning("node %s: crash-left %s", self.node, line)
        except Exception as e:  # never stops the start
            self.log.error("node %s: crash-left files not repaired: %s", self.node, e)

    async def close(self) -> None:
        """End the session, abort any run and wait for it to close its file, then safe
        state and close the drivers."""
        await self.network.close("node stopped")
        await self.link.stop("node stopped")
        self.runtime.abort_event.set()
        await self.worker.finish(SHUTDOWN_GRACE_S)
        loop = asyncio.get_running_loop()
        handles = self.runtime.instruments
        self.log.warning(
            "node %s stopping: safe state of %d instruments (at most %g s)...",
            self.node,
            len(handles),
            SHUTDOWN_SAFE_S,
        )
        for name, problem in (await at_once(handles, _make_safe, SHUTDOWN_SAFE_S)).items():
            self.log.error("node %s: %s did not reach the safe state: %s", self.node, name, problem)
        for problem in await loop.run_in_executor(None, retry_parked):
            self.log.error("node %s: a run file stays unclosed at shutdown: %s", self.node, problem)
        await at_once(handles, _close, SHUTDOWN_CLOSE_S)
        self.store.close()

    # requests -------------------------------------------------------------------------------
    async def handle(self, request: Request) -> dict:
        kind = request.kind
        if kind in NETWORK_STATION:  # the service refuses (and counts) a client's key
            return await self.network.handle_station(
                request.msg, request.sender, request.from_station
            )
        if kind in PEER:
            if not request.from_station:  # a client key never speaks for a station
                raise self.link.refuse(
                    "not from a station (a station key is required)", kind, request.sender
                )
            notification = PEER[kind].notification
            return await self.link.handle_peer(request.msg, request.sender, notification)
        if kind != "status":
            request.require_client(self.who)  # a station may ask status, nothing else
        if kind in OPERATOR:
            return await self.link.handle_operator(request.msg)
        if kind in NETWORK_OPERATOR:
            return await self.network.handle_operator(request.msg)
        return await self._control(request.msg)

    async def _control(self, msg: dict) -> dict:
        kind = msg["type"]
        runtime = self.runtime
        loop = asyncio.get_running_loop()
        if kind == "status":
            return {
                "status": {
                    **runtime.status(),
                    "malformed": self.malformed,
                    "refused_clients": self.router.allow_list.refused,
                    "refused_handshakes": self.router.refused_handshakes,
                    "identity_conflicts": self.routing_ids.conflicts,
                    "refused_peer_messages": self.link.forged,
                    "link_malformed": self.link.link_malformed,
                    "session": self.link.session.summary() if self.link.session else None,
                    **self.network.status(),
                }
            }
        if kind == "run":
            sequence, sweep = from_data(msg.get("sequence"))
            runtime.check_sweep(sweep)  # at the door: before a point is made or compiled
            if runtime.state == "busy" and runtime.run_progress is not None:
                raise QnodeError(f"node {self.node} is busy with run {runtime.run_progress.run_id}")
            if self.link.session is not None:
                raise QnodeError(f"node {self.node} is in session {self.link.session.session}")
            # compiled off the loop (and `run` is answered in its own task, so the loop
            # serves status and abort meanwhile): a bad sequence is an error reply, never a
            # fault
            prepared = await loop.run_in_executor(
                None, runtime.prepare, sequence, sweep, self.data_dir
            )
            self.worker.start(prepared)
            return {"run": prepared.progress.as_dict()}
        if kind == "abort":
            wanted, current = msg.get("session"), self.link.session
            if wanted is not None and (current is None or current.session != wanted):
                raise QnodeError(f"no running session {wanted} on node {self.node}")
            runtime.abort_event.set()
            self.link.abort("aborted by the operator")
            return {}
        if kind == "safe_state":
            return {"problems": await loop.run_in_executor(None, runtime.safe_state)}
        if kind == "result":
            run = runtime.run_progress
            if run is None or run.run_id != msg["run_id"]:
                raise QnodeError(f"no run {msg['run_id']!r} on node {self.node}")
            return {"result": await loop.run_in_executor(None, read_run, Path(run.file))}
        if kind == "params":
            return {"params": self.store.snapshot(self.node, self.runtime.platform)}
        if kind == "shutdown":
            self.request_stop()
            return {}
        raise QnodeError(f"unknown request {kind!r}")


def serve(
    lab: LabConfig,
    node: str,
    resources: dict[str, str] | None,
    endpoint: str,
    accept_broken_history: bool = False,
) -> None:
    asyncio.run(NodeDaemon(lab, node, resources, endpoint, accept_broken_history).serve())
