"""The simulated lab's control channel: fault injection, inspection and ground truth.

A CurveZMQ-authenticated REP socket on 127.0.0.1 (it can change the lab, so only allow-listed
keys get an answer). Requests and replies are msgpack maps; nothing is unpickled. Refused
clients (unknown keys; no CURVE or another server key) are counted and logged, at most a line
per key or kind per 10 s; a request of more than one frame gets an error reply. `ping`
answers the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from sim_backends.control_keys import curve_socket

log = logging.getLogger("qnode.sim.control")

FAULTS = ("freeze", "unfreeze", "garble", "drop", "reset", "delay", "unplug", "plug", "clear")
LOG_INTERVAL_S = 10.0
MAX_DARK_SCALE = 10_000.0
"""A light leak into the detectors' fibres, for tests: the midpoint's dark counts times this."""
HANDSHAKE_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
HANDSHAKE_FAILURES = {
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "a client without CURVE",
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "a client with another server key",
}


class RateLimitedLog:
    """At most one warning per topic per LOG_INTERVAL_S; the ones held back are counted."""

    def __init__(self) -> None:
        self._topics: dict[str, tuple[float, int]] = {}

    def warning(self, topic: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, held = self._topics.get(topic, (-math.inf, 0))
        if now - last < LOG_INTERVAL_S:
            self._topics[topic] = (last, held + 1)
            return
        if len(self._topics) > 4096:
            self._topics.clear()
        if held:
            message += " (%d more like it since the last line)"
            args = (*args, held)
        log.warning(message, *args)
        self._topics[topic] = (now, 0)


class AllowedKeys:
    """ZAP credentials provider: the keys in `allowed/`; every refusal counted and logged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.refused = 0
        self._log = RateLimitedLog()

    def callback(self, domain: str, key: bytes | str) -> bool:
        text = key.decode() if isinstance(key, bytes) else key
        allowed = zmq.auth.load_certificates(str(self.folder))
        if text.encode() in allowed or text in allowed:
            return True
        self.refused += 1
        self._log.warning(
            text, "control channel: refused a client with unknown CurveZMQ key %s", text
        )
        return False


class ControlServer:
    def __init__(self, lab, key_dir: Path) -> None:
        self.lab = lab
        self.key_dir = key_dir
        self.endpoint = ""
        self._ctx = zmq.asyncio.Context()
        self._auth: AsyncioAuthenticator | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._allowed = AllowedKeys(key_dir / "allowed")
        self._log = RateLimitedLog()
        self.refused_handshakes = 0
        self.malformed = 0
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        self._sock = curve_socket(self._ctx, zmq.REP, self.key_dir / "server.key_secret", None)
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.allow("127.0.0.1")
        self._auth.configure_curve_callback("*", credentials_provider=self._allowed)
        self._monitor = self._sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self._watch = asyncio.get_running_loop().create_task(self._watch_handshakes())
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    async def _watch_handshakes(self) -> None:
        while self._monitor is not None:
            frames = await self._monitor.recv_multipart()
            if len(frames) != 2 or len(frames[0]) != 6:
                continue
            event, value = struct.unpack("=hi", frames[0])
            if not event & HANDSHAKE_EVENTS:
                continue
            self.refused_handshakes += 1
            what = HANDSHAKE_FAILURES.get(value, f"protocol error 0x{value & 0xFFFFFFFF:08x}")
            self._log.warning(
                what,
                "control channel: refused a connection that failed the CurveZMQ handshake (%s)",
                what,
            )

    async def serve(self) -> None:
        """Answer requests until cancelled. A request of one frame is answered; one of more
        frames (a DEALER that sent its body in parts) gets an error reply: each request is
        read whole, so the REP socket is always ready for its reply."""
        while True:
            frames = await self._sock.recv_multipart()
            try:
                if len(frames) != 1:
                    self.malformed += 1
                    self._log.warning(
                        "frames", "control channel: a request of %d frames refused", len(frames)
                    )
                    raise ValueError(f"a request is one frame, not {len(frames)}")
                request = msgpack.unpackb(frames[0], raw=False)
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    self.malformed += 1
                    raise ValueError("a request is a map with a 'cmd' string")
                reply = {"ok": True, **self.handle(request)}
            except Exception as e:  # a bad request gets an error reply, never a dead lab
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                await self._sock.send(msgpack.packb(reply, use_bin_type=True))
            except zmq.ZMQError as e:  # never a dead channel for one client's reply
                log.warning("control channel: reply not sent (%s)", e)

    def handle(self, request: dict) -> dict:
        cmd = request["cmd"]
        lab = self.lab
        if cmd == "ping":
            return {
                "lab": lab.name,
                "seed": lab.seed,
                "refused_clients": self._allowed.refused,
                "refused_handshakes": self.refused_handshakes,
                "malformed": self.malformed,
            }
        if cmd == "instruments":
            return {"instruments": sorted(lab.devices)}
        if cmd == "heralds":  # of one midpoint (`midpoint`; default: the first)
            name = request.get("midpoint") or lab.midpoint_name
            if lab.midpoints and name not in lab.midpoints:
                known = ", ".join(sorted(lab.midpoints))
                raise KeyError(f"no midpoint {name!r} (the lab's midpoints: {known})")
            heralds = lab.midpoints[name].heralds if lab.midpoints else []
            return {"heralds": heralds[int(request.get("since", 0)) :], "total": len(heralds)}
        if cmd == "truth":
            return {"truth": lab.truth(request.get("node"))}
        if cmd == "qubits":  # ground truth: the joint state of named qubits of the register
            return _joint_state(lab.register, request.get("names"))
        if cmd == "physics" and request.get("node") in lab.midpoints:
            scale = float(request["dark_count_scale"])
            if not 0.0 <= scale <= MAX_DARK_SCALE:
                raise ValueError(f"dark_count_scale {scale} outside [0, {MAX_DARK_SCALE:g}]")
            lab.midpoints[request["node"]].scale_dark_counts(scale)
            return {}
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
                faults.delay_s = _seconds(request.get("seconds", 0.0))
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
        if self._watch is not None:
            self._watch.cancel()
        if self._monitor is not None and self._sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()


MAX_TRUTH_QUBITS = 3
"""The qubits a `qubits` query may name: a pair, or a GHZ state's three."""


def _joint_state(register, names: object) -> dict:
    """The reduced density matrix of `names` (each qubit as of its node's last step: a node
    that ran no program since holds its state unchanged), real and imaginary parts."""
    if (
        not isinstance(names, list)
        or not 1 <= len(names) <= MAX_TRUTH_QUBITS
        or not all(isinstance(name, str) for name in names)
    ):
        raise ValueError(f"qubits: `names` must list 1 to {MAX_TRUTH_QUBITS} qubit names")
    unknown = [name for name in names if name not in register.index]
    if unknown:
        have = ", ".join(register.names)
        raise KeyError(f"no qubit {', '.join(unknown)} in the register (it holds {have})")
    rho = register.reduced_joint(names)
    return {"names": names, "real": rho.real.tolist(), "imag": rho.imag.tolist()}


def _seconds(value: object) -> float:
    """A delay's `seconds`: a finite number, not negative (NaN would pass for no delay, and
    inf would freeze the instrument for good)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"seconds must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"seconds must be finite and not negative, got {value!r}")
    return float(value)
