"""Python client of a station's daemon, for scripts, notebooks and the CLI: a node's control API
(runs, sessions, parameters), and the midpoint's through `request` and `status`.

from controller.operator.client import NodeClient
from sequences.library import rabi
from sequences.operations import Sweep, SweepAxis

with NodeClient.for_lab("labs/sim_two_node.toml", "A") as node:
    data = node.run(rabi(), Sweep((SweepAxis.linspace("duration_ns", 0, 400, 41, "ns"),)))
data.bright_fraction()     # numpy array over the sweep, with data.axes for its axes
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from calibration.routine import bright_fraction
from controller.labconfig import LabConfig, dial_endpoint, load_lab
from controller.messaging.curve import client_socket
from controller.messaging.keys import DEFAULT_CLIENT, client_keys
from controller.messaging.serving import node_info_path
from controller.messaging.wire import REPLY, MessageError, pack, unpack, vocabulary
from qnode.errors import QnodeError
from sequences.operations import Sequence, Sweep, to_data

REPLIES = vocabulary(REPLY)


class NodeUnavailable(QnodeError):
    pass


class NodeRequestError(QnodeError):
    pass


@dataclass
class RunData:
    """A run's data as numpy arrays, with its axes (name -> (values, unit))."""

    run_id: str
    status: str
    reason: str
    axes: dict[str, tuple[np.ndarray, str]]
    counts: np.ndarray  # (points, shots, readouts)
    valid: np.ndarray  # (points, shots)
    check_counts: np.ndarray
    readouts: list[str]
    file: str = ""

    def bright_fraction(self, threshold: float = 1, readout: int = 0) -> np.ndarray:
        """P(counts >= threshold) per point over the shots whose check passed."""
        return bright_fraction(self, threshold, readout)


class NodeClient:
    def __init__(
        self, endpoint: str, server_public: Path, client_secret: Path, timeout_s: float = 10.0
    ) -> None:
        self.endpoint = endpoint
        self.server_public = server_public
        self.client_secret = client_secret
        self.timeout_s = timeout_s
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._ids = itertools.count(1)

    @classmethod
    def for_lab(
        cls,
        lab: LabConfig | str | Path,
        node: str,
        key: str = DEFAULT_CLIENT,
        timeout_s: float = 10.0,
    ) -> NodeClient:
        lab = lab if isinstance(lab, LabConfig) else load_lab(lab)
        info_path = node_info_path(lab.data_dir, node)
        try:
            info = json.loads(info_path.read_text())
        except FileNotFoundError:
            midpoint = node in lab.nodes and lab.nodes[node].kind == "midpoint"
            serve = "qnode midpoint serve" if midpoint else f"qnode node serve --node {node}"
            raise NodeUnavailable(
                f"node {node} is not running (no {info_path}): start it with `{serve}`"
            ) from None
        _, secret = client_keys(lab.data_dir, key)
        endpoint = dial_endpoint(node, info["endpoint"])
        return cls(endpoint, Path(info["server_public_key"]), secret, timeout_s)

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = client_socket(
                self._ctx, zmq.DEALER, self.client_secret, self.server_public
            )
            self._sock.connect(self.endpoint)
        return self._sock

    def request(self, kind: str, **fields) -> dict:
        msg_id = next(self._ids)
        sock = self._socket()
        sock.send(pack(kind, msg_id, **fields))
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000) + 1):
                continue
            try:
                reply = unpack(sock.recv(), REPLIES)
            except MessageError:
                continue
            if reply["id"] != msg_id:
                continue  # a late answer to an earlier request
            if not reply.get("ok"):
                raise NodeRequestError(reply.get("error", "unknown error"))
            return reply
        self.close()  # a fresh socket next time: nothing stale can arrive on it
        raise NodeUnavailable(f"no answer from {self.endpoint} within {self.timeout_s:g} s")

    # the API --------------------------------------------------------------------------------
    def status(self) -> dict:
        return self.request("status")["status"]

    def start(self, sequence: Sequence, sweep: Sweep | None = None) -> dict:
        return self.request("run", sequence=to_data(sequence, sweep or Sweep()))["run"]

    def wait(
        self,
        run_id: str,
        progress: Callable[[dict], None] | None = None,
        poll_s: float = 0.1,
        timeout_s: float | None = None,
    ) -> dict:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status()
            run = status.get("run") or {}
            if run.get("run_id") != run_id:
                raise NodeRequestError(f"run {run_id} is not the node's current run")
            if progress:
                progress(run)
            if run.get("finished"):
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise NodeUnavailable(f"run {run_id} still going after {timeout_s} s")
            time.sleep(poll_s)

    def result(self, run_id: str) -> RunData:
        r = self.request("result", run_id=run_id)["result"]
        axes = {name: (np.asarray(v[0]), v[1]) for name, v in r["axes"].items()}
        return RunData(
            r["run_id"],
            r["status"],
            r["reason"],
            axes,
            r["counts"],
            r["valid"],
            r["check_counts"],
            list(r["readouts"]),
        )

    def run(
        self,
        sequence: Sequence,
        sweep: Sweep | None = None,
        progress: Callable[[dict], None] | None = None,
    ) -> RunData:
        """Start, wait, fetch: the data of a completed (or aborted) run."""
        started = self.start(sequence, sweep)
        finished = self.wait(started["run_id"], progress)
        data = self.result(started["run_id"])
        data.file = finished["file"]
        if finished["status"] == "failed":
            raise NodeRequestError(f"run {started['run_id']} failed: {finished['reason']}")
        return data

    def abort(self, session: str | None = None) -> None:
        """Abort the node's run (and its session; with `session`, only if that one runs)."""
        self.request("abort", session=session)

    # entanglement (the node asked is the session's initiator) -------------------------------
    def entangle(
        self,
        pairs: int,
        protocol: str = "single_click",
        fidelity_min: float = 0.0,
        deadline_s: float = 600.0,
        delivery: str = "verify",
        alpha: float | None = None,
        peer: str | None = None,
        heralding: str = "hardware",
        peer_delivery: str | None = None,
        memory_basis: str = "",
    ) -> dict:
        """Start a session with the peer; returns its summary (session id, expectation).
        `delivery` is this node's, `peer_delivery` the peer's (default: the same); "memory"
        moves the half into the node's memory qubit right after the herald; with "ghz",
        `memory_basis` reads the memory in X, Y or Z right after the GHZ operation."""
        return self.request(
            "entangle",
            pairs=pairs,
            protocol=protocol,
            fidelity_min=fidelity_min,
            deadline_s=deadline_s,
            delivery=delivery,
            peer_delivery=peer_delivery,
            alpha=alpha,
            peer=peer,
            heralding=heralding,
            **({"memory_basis": memory_basis} if memory_basis else {}),
        )["session"]

    def memory(self) -> dict:
        """What the node's qubits hold (stored pairs, expected fidelities) and its discards."""
        return self.request("memory")["memory"]

    def memory_measure(self, basis: str, pair: str | None = None) -> dict:
        """Read a stored pair's half in X, Y or Z: its bit (+1 bright, Pauli frame applied),
        counts, run id; the memory qubit is free after."""
        return self.request("memory_measure", basis=basis, pair=pair)["measurement"]

    def bell_measurement(self) -> dict:
        """The Bell-state measurement of the node's electron pair and its stored pair: the
        two bits, the Bell state they name, both pairs; the qubits are free after."""
        return self.request("bell_measurement")["measurement"]

    def prepare_memory(self, state: str, peer: str) -> dict:
        """Write a cardinal state (+Z, -Z, +X, -X, +Y, -Y) into the node's memory, held as a
        stored pair so the next link session with `peer` protects it: its id, qubit, run."""
        return self.request("prepare_memory", state=state, peer=peer)["prepared"]

    def session(self, session_id: str) -> dict:
        return self.request("session", session=session_id)["session"]

    def session_data(self, session_id: str) -> dict:
        """The node's session file: heralds, pairs (numpy records), runs, status."""
        return self.request("session_data", session=session_id)["data"]

    def wait_session(
        self,
        session_id: str,
        progress: Callable[[dict], None] | None = None,
        poll_s: float = 0.2,
        timeout_s: float | None = None,
    ) -> dict:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            summary = self.session(session_id)
            if progress:
                progress(summary)
            if summary["state"] != "running":
                return summary
            if deadline is not None and time.monotonic() > deadline:
                raise NodeUnavailable(f"session {session_id} still going after {timeout_s} s")
            time.sleep(poll_s)

    def safe_state(self) -> list[str]:
        return self.request("safe_state")["problems"]

    def params(self) -> dict:
        return self.request("params")["params"]

    def shutdown(self) -> None:
        self.request("shutdown")
