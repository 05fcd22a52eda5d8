"""`qnode node serve`: the node daemon and its control API over ZeroMQ.

One process per node, the one owner of that node's instruments. Requests arrive on a ROUTER
socket (CurveZMQ, allow-listed client keys; an unknown key gets nothing and is logged);
runs execute in one worker thread so status and abort stay responsive. Any fault puts the
instruments in their safe state and the daemon stays up. SIGTERM / Ctrl-C: abort the run,
safe state, close the run file, exit 0.

Requests (msgpack, see controller.messaging.wire): status, run {sequence}, abort, safe_state, result
{run_id}, params, shutdown. Every reply: {type: "reply", id, ok, ...} or ok false + error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq
import zmq.asyncio

from controller.data.params import ParameterStore
from controller.data.runfile import read_run
from controller.labconfig import LabConfig
from controller.link.node_link import NOTIFICATIONS, OPERATOR_REQUESTS, PEER_MESSAGES, NodeLink
from controller.messaging.keys import KeyNames, ensure_default_client
from controller.messaging.serving import (
    SecureRouter,
    claim,
    remove_info,
    write_info,
)
from controller.messaging.wire import MessageError, pack, unpack
from controller.node.runtime import NodeRuntime
from qnode.errors import QnodeError
from sequences.operations import from_data

log = logging.getLogger("qnode.daemon")

REQUESTS = {"status", "run", "abort", "safe_state", "result", "params", "shutdown"}
ALL_MESSAGES = REQUESTS | PEER_MESSAGES | OPERATOR_REQUESTS
SHUTDOWN_GRACE_S = 10.0


class NodeDaemon:
    def __init__(
        self, lab: LabConfig, node: str, resources: dict[str, str] | None, endpoint: str
    ) -> None:
        self.lab = lab
        self.node = node
        self.data_dir = lab.data_dir
        self.endpoint_requested = endpoint
        self.store = ParameterStore(self.data_dir / "params.sqlite")
        self.runtime = NodeRuntime(lab, node, resources, self.store)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"node-{node}")
        self.run_future: asyncio.Future | None = None
        self.malformed = 0
        self._stop = asyncio.Event()
        self._ctx = zmq.asyncio.Context()
        self.router = SecureRouter(self._ctx, self.data_dir, node, f"node {node}")
        self.allow_list = self.router.allow_list
        self.key_names = KeyNames(self.data_dir)
        self.link = NodeLink(self)
        self.endpoint = ""

    # lifecycle ------------------------------------------------------------------------------
    async def serve(self) -> None:
        claim(self.data_dir, self.node)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        ensure_default_client(self.data_dir)
        sock = self.router.bind(self.endpoint_requested)
        self.endpoint = self.router.endpoint
        await loop.run_in_executor(self.executor, self._open_instruments)
        write_info(self.data_dir, self.node, self.endpoint)
        log.info("node %s serving on %s (state %s)", self.node, self.endpoint, self.runtime.state)
        receiver = loop.create_task(self._receive(sock))
        self.link._spawn(self.link.reconcile())  # a session this node crashed out of
        try:
            await self._stop.wait()
        finally:
            receiver.cancel()
            session = self.link.session
            if session is not None:
                session.ending = ("aborted", "node stopped")
                await self.link._end(session, "aborted", "node stopped")
            self.link.close()
            await self._shutdown()
            self.router.close()
            self._ctx.term()
            remove_info(self.data_dir, self.node)
            self.store.close()
            log.info("node %s stopped", self.node)

    def _open_instruments(self) -> None:
        try:
            self.runtime.open()
            problems = self.runtime.safe_state()
            if problems:
                self.runtime.enter_fault("safe state at start failed: " + "; ".join(problems))
        except Exception as e:
            self.runtime.enter_fault(f"instruments did not open: {e}")

    async def _shutdown(self) -> None:
        """Abort any run, wait for it to close its file, then safe state and close drivers."""
        self.runtime.abort_event.set()
        if self.run_future is not None and not self.run_future.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.run_future), SHUTDOWN_GRACE_S)
        loop = asyncio.get_running_loop()
        problems = await loop.run_in_executor(None, self.runtime.safe_state)
        if problems:
            log.error("node %s: safe state at shutdown incomplete: %s", self.node, problems)
        await loop.run_in_executor(None, self.runtime.close)
        self.executor.shutdown(wait=False, cancel_futures=True)

    # requests -------------------------------------------------------------------------------
    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=False)
            identity, payload = frames[0].bytes, frames[-1].bytes
            try:
                sender = self.key_names.name(frames[-1].get("User-Id"))
            except zmq.ZMQError:
                sender = None
            try:
                msg = unpack(payload, ALL_MESSAGES)
            except MessageError as e:
                self.malformed += 1
                log.warning("node %s: malformed request dropped (%s)", self.node, e)
                continue
            try:
                if msg["type"] in PEER_MESSAGES:
                    body = await self.link.handle_peer(msg, sender)
                elif msg["type"] in OPERATOR_REQUESTS:
                    body = await self.link.handle_operator(msg)
                else:
                    body = await self._handle(msg)
                reply = pack("reply", msg["id"], ok=True, **body)
            except MessageError as e:
                self.malformed += 1
                log.warning("node %s: malformed %s dropped (%s)", self.node, msg["type"], e)
                reply = pack("reply", msg["id"], ok=False, error=f"malformed: {e}")
            except QnodeError as e:
                reply = pack("reply", msg["id"], ok=False, error=str(e))
            except Exception as e:
                log.exception("node %s: request %s failed", self.node, msg.get("type"))
                reply = pack("reply", msg["id"], ok=False, error=f"{type(e).__name__}: {e}")
            if msg["type"] in NOTIFICATIONS:
                continue
            with contextlib.suppress(zmq.ZMQError):  # the client left: nothing to tell
                await sock.send_multipart([identity, reply])

    async def _handle(self, msg: dict) -> dict:
        kind = msg["type"]
        runtime = self.runtime
        if kind == "status":
            return {
                "status": {
                    **runtime.status(),
                    "malformed": self.malformed,
                    "refused_clients": self.allow_list.refused,
                    "refused_peer_messages": self.link.forged,
                    "link_malformed": sum(k.malformed for k in self.link.links.values()),
                    "session": self.link.session.summary() if self.link.session else None,
                }
            }
        if kind == "run":
            sequence, sweep = from_data(msg.get("sequence"))
            loop = asyncio.get_running_loop()
            # compile in the worker: a bad sequence is an error reply, never a fault
            if runtime.state == "busy":
                raise QnodeError(f"node {self.node} is busy with run {runtime.run_progress.run_id}")
            if self.link.session is not None:
                raise QnodeError(f"node {self.node} is in session {self.link.session.session}")
            prepared = await loop.run_in_executor(
                None, runtime.prepare, sequence, sweep, self.data_dir
            )
            self.run_future = loop.run_in_executor(self.executor, runtime.execute, prepared)
            return {"run": prepared.progress.as_dict()}
        if kind == "abort":
            runtime.abort_event.set()
            session = self.link.session
            if session is not None and session.ending is None:
                session.ending = ("aborted", "aborted by the operator")
            return {}
        if kind == "safe_state":
            problems = await asyncio.get_running_loop().run_in_executor(None, runtime.safe_state)
            return {"problems": problems}
        if kind == "result":
            run = runtime.run_progress
            if run is None or run.run_id != msg.get("run_id"):
                raise QnodeError(f"no run {msg.get('run_id')!r} on node {self.node}")
            data = await asyncio.get_running_loop().run_in_executor(None, read_run, Path(run.file))
            return {"result": data}
        if kind == "params":
            return {"params": self.store.snapshot(self.node, self.runtime.cfg.platform)}
        if kind == "shutdown":
            self._stop.set()
            return {}
        raise QnodeError(f"unknown request {kind!r}")


def serve(lab: LabConfig, node: str, resources: dict[str, str] | None, endpoint: str) -> None:
    asyncio.run(NodeDaemon(lab, node, resources, endpoint).serve())
