"""The simulated lab's control channel: fault injection, inspection and ground truth.

A CurveZMQ-authenticated REP socket on 127.0.0.1 (it can change the lab, so only allow-listed
keys get an answer). Requests and replies are msgpack maps; nothing is unpickled.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from sim_backends.control_keys import curve_socket

log = logging.getLogger("qnode.sim.control")

FAULTS = ("freeze", "unfreeze", "garble", "drop", "reset", "delay", "unplug", "plug", "clear")


class ControlServer:
    def __init__(self, lab, key_dir: Path) -> None:
        self.lab = lab
        self.key_dir = key_dir
        self.endpoint = ""
        self._ctx = zmq.asyncio.Context()
        self._auth: AsyncioAuthenticator | None = None
        self._sock: zmq.asyncio.Socket | None = None

    async def start(self) -> None:
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.allow("127.0.0.1")
        self._auth.configure_curve(domain="*", location=str(self.key_dir / "allowed"))
        self._sock = curve_socket(self._ctx, zmq.REP, self.key_dir / "server.key_secret", None)
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    async def serve(self) -> None:
        while True:
            raw = await self._sock.recv()
            try:
                request = msgpack.unpackb(raw, raw=False)
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    raise ValueError("a request is a map with a 'cmd' string")
                reply = {"ok": True, **self.handle(request)}
            except Exception as e:  # a bad request gets an error reply, never a dead lab
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            await self._sock.send(msgpack.packb(reply, use_bin_type=True))

    def handle(self, request: dict) -> dict:
        cmd = request["cmd"]
        lab = self.lab
        if cmd == "ping":
            return {"lab": lab.name, "seed": lab.seed}
        if cmd == "instruments":
            return {"instruments": sorted(lab.devices)}
        if cmd == "heralds":
            heralds = lab.midpoint.heralds if lab.midpoint else []
            return {"heralds": heralds[int(request.get("since", 0)) :], "total": len(heralds)}
        if cmd == "truth":
            return {"truth": lab.truth(request.get("node"))}
        if cmd == "physics":
            node = lab.nodes.get(request.get("node", ""))
            if node is None or node.physics is None:
                raise KeyError(f"no memory node {request.get('node')!r}")
            collection = float(request["collection"])
            if not 0.0 <= collection <= 1.0:
                raise ValueError(f"collection {collection} outside [0, 1]")
            node.physics.collection = collection
            return {}
        if cmd == "shutdown":
            lab.request_stop()
            return {}
        device = lab.device(request.get("instrument", ""))
        if cmd == "state":
            return {"state": device.state()}
        if cmd == "log":
            since = int(request.get("since", 0))
            entries = device.log[since:]
            return {
                "total": len(device.log),
                "commands": [e.text for e in entries],
                "blocks": [e.block_bytes for e in entries],
            }
        if cmd == "fault":
            fault = request.get("fault")
            faults = device.faults
            if fault == "freeze":
                faults.frozen = True
            elif fault == "unfreeze":
                faults.frozen = False
            elif fault == "garble":
                faults.garble_next += int(request.get("count", 1))
            elif fault == "delay":
                faults.delay_s = float(request.get("seconds", 0.0))
            elif fault == "drop":
                if not device.on_drop:
                    raise ValueError(
                        f"{device.name} is a serial device: it has no connection to drop"
                    )
                faults.drops += 1
                for hook in device.on_drop:
                    hook()
            elif fault == "reset":
                if not device.on_reset:
                    raise ValueError(f"{device.name} is not a serial device: it cannot be reset")
                faults.resets += 1
                for hook in device.on_reset:
                    hook()
            elif fault == "unplug":
                # a TCP instrument stops listening; a serial one goes silent
                for hook in device.on_unplug:
                    hook()
                if not device.on_unplug:
                    faults.frozen = True
            elif fault == "plug":
                for hook in device.on_plug:
                    hook()
                if not device.on_plug:
                    faults.frozen = False
            elif fault == "clear":
                faults.frozen, faults.garble_next, faults.delay_s = False, 0, 0.0
                for hook in device.on_plug:
                    hook()
            else:
                raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
            log.info("fault %s on %s", fault, device.name)
            return {}
        raise ValueError(f"unknown command {cmd!r}")

    async def stop(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
