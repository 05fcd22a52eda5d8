"""Client of the simulated lab's control channel (tests and `qnode sim fault` use it)."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import numpy as np
import zmq

from sim_backends.control_keys import curve_socket


class SimControlError(Exception):
    pass


class SimControl:
    def __init__(self, resource_map: Path, timeout_s: float = 5.0) -> None:
        info = json.loads(Path(resource_map).read_text())
        control = info["control"]
        self.endpoint = control["endpoint"]
        self.server_key = Path(control["server_public_key"])
        self.client_secret = Path(control["client_secret_key"])
        self.resources: dict[str, str] = info["resources"]
        self.timeout_ms = int(timeout_s * 1000)
        self._ctx = zmq.Context.instance()

    def request(self, cmd: str, **fields) -> dict:
        """One request on a fresh REQ socket, so a lost reply can never wedge the next."""
        sock = curve_socket(self._ctx, zmq.REQ, self.client_secret, self.server_key)
        try:
            sock.rcvtimeo = sock.sndtimeo = self.timeout_ms
            sock.connect(self.endpoint)
            sock.send(msgpack.packb({"cmd": cmd, **fields}, use_bin_type=True))
            try:
                reply = msgpack.unpackb(sock.recv(), raw=False)
            except zmq.Again:
                raise SimControlError(
                    f"no reply from the simulated lab at {self.endpoint}"
                ) from None
        finally:
            sock.close(linger=0)
        if not reply.get("ok"):
            raise SimControlError(reply.get("error", "unknown error"))
        return reply

    def fault(self, instrument: str, fault: str, **options) -> None:
        self.request("fault", instrument=instrument, fault=fault, **options)

    def state(self, instrument: str) -> dict:
        return self.request("state", instrument=instrument)["state"]

    def log(self, instrument: str, since: int = 0) -> tuple[int, list[str]]:
        reply = self.request("log", instrument=instrument, since=since)
        return reply["total"], reply["commands"]

    def log_size(self, instrument: str) -> int:
        return self.log(instrument, since=1 << 60)[0]

    def set_collection(self, node: str, fraction: float) -> None:
        """Fraction of the node's photons reaching its detector (0: a blocked path)."""
        self.request("physics", node=node, collection=fraction)

    def scale_dark_counts(self, midpoint: str, factor: float) -> None:
        """A light leak: the midpoint's detectors' dark count rates times `factor`."""
        self.request("physics", node=midpoint, dark_count_scale=factor)

    def heralds(self, since: int = 0, midpoint: str | None = None) -> list[dict]:
        """Ground truth: every herald the physics produced at a midpoint (the lab's first if
        not named), from number `since` on."""
        fields = {"midpoint": midpoint} if midpoint else {}
        return self.request("heralds", since=since, **fields)["heralds"]

    def truth(self, node: str | None = None) -> dict:
        return self.request("truth", node=node)["truth"]

    def qubits(self, *names: str) -> np.ndarray:
        """Ground truth: the joint density matrix of register qubits (an electron is named by
        its node, a memory `<node>.<memory>`), the first named the most significant."""
        reply = self.request("qubits", names=list(names))
        return np.asarray(reply["real"]) + 1j * np.asarray(reply["imag"])
