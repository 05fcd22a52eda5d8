"""The network service (controller/network/service.py) as the I/O shell it is: three services
(A, B the repeater, C) in one asyncio loop, each over an in-memory fake of its node
(`LinkOperations`) that keeps the qubits' true state as state vectors, the messages passed
between them as the wire passes them (packed, unpacked and checked against the schemas, the
sender named by its key's station). The daemons' end-to-end test, with the node's link
layer, memory and BSM: hil_tests/test_network_daemons.py.

The fake's qubits are exact (no noise), so a verified fidelity of 1 says every frame was right:
any wrong Pauli anywhere flips a correlation. Its drawn herald misses what the simulator's
does too (docs/simulation.md "Herald waits in forwarded attempts (open)"): nothing here says
anything about fidelities on hardware."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.linalg import expm

from controller.data.networkfile import (
    BASIS_NAMES,
    CAUSES,
    DELIVERED,
    DISCARDED,
    REFUSED,
    read_network_session,
)
from controller.messaging.wire import MessageError, Refused, pack, unpack
from controller.network.estimators import CARDINAL_STATES
from controller.network.messages import NETWORK_OPERATOR, NETWORK_STATION, REASONS
from controller.network.pauli import PAULIS, bsm_parities, bsm_pauli, result_after
from controller.network.service import (
    LinkFailure,
    NetworkService,
    PairResult,
    PeerUnreachable,
    Timing,
)
from qnode.errors import QnodeError

# exact qubits ----------------------------------------------------------------------------------
SX = np.array([[0, 1], [1, 0]], dtype=complex)
SY = np.array([[0, -1j], [1j, 0]], dtype=complex)
SZ = np.array([[1, 0], [0, -1]], dtype=complex)
PAULI = {"I": np.eye(2, dtype=complex), "X": SX, "Y": SY, "Z": SZ}
H = np.array([[1, 1], [1, -1]], dtype=complex) / np.sqrt(2)
BELL = {
    "psi_plus": np.array([0, 1, 1, 0], dtype=complex) / np.sqrt(2),
    "psi_minus": np.array([0, 1, -1, 0], dtype=complex) / np.sqrt(2),
}
GHZ_GATE = expm(-1j * np.pi / 4 * np.kron(SZ, SX))
"""The DD gate at 90 degrees, exp(-i pi/4 Z_e X_m), on (electron, memory)."""
RX_MINUS_HALF = expm(1j * np.pi / 4 * SX)
CARDINAL_KETS = {
    "+Z": [1, 0],
    "-Z": [0, 1],
    "+X": [1 / np.sqrt(2), 1 / np.sqrt(2)],
    "-X": [1 / np.sqrt(2), -1 / np.sqrt(2)],
    "+Y": [1 / np.sqrt(2), 1j / np.sqrt(2)],
    "-Y": [1 / np.sqrt(2), -1j / np.sqrt(2)],
}


class Qubits:
    """Groups of entangled qubits, each a state vector over its keys (node, pair id)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.groups: list[tuple[list, np.ndarray]] = []

    def add(self, keys: list, psi: np.ndarray) -> None:
        self.groups.append((list(keys), np.asarray(psi, dtype=complex).reshape([2] * len(keys))))

    def _group(self, key) -> int:
        for i, (keys, _) in enumerate(self.groups):
            if key in keys:
                return i
        raise KeyError(f"no qubit {key}")

    def _merged(self, k1, k2) -> tuple[list, np.ndarray]:
        i, j = self._group(k1), self._group(k2)
        if i == j:
            return self.groups.pop(i)
        (ka, a), (kb, b) = self.groups[i], self.groups[j]
        for index in sorted((i, j), reverse=True):
            self.groups.pop(index)
        return ka + kb, np.multiply.outer(a, b)

    def apply(self, op: np.ndarray, key) -> None:
        keys, psi = self.groups.pop(self._group(key))
        axis = keys.index(key)
        psi = np.moveaxis(np.tensordot(op, psi, axes=([1], [axis])), 0, axis)
        self.groups.append((keys, psi))

    def cnot(self, control, target) -> None:
        keys, psi = self._merged(control, target)
        c, t = keys.index(control), keys.index(target)
        psi = psi.copy()
        index = [slice(None)] * len(keys)
        index[c] = 1
        sub = psi[tuple(index)]
        t_axis = t if t < c else t - 1
        psi[tuple(index)] = np.flip(sub, axis=t_axis)
        self.groups.append((keys, psi))

    def apply2(self, op: np.ndarray, k1, k2) -> None:
        """A two-qubit unitary (4 x 4, k1 the first factor)."""
        keys, psi = self._merged(k1, k2)
        a, b = keys.index(k1), keys.index(k2)
        moved = np.moveaxis(psi, (a, b), (0, 1))
        shape = moved.shape
        moved = (op @ moved.reshape(4, -1)).reshape(shape)
        self.groups.append((keys, np.moveaxis(moved, (0, 1), (a, b))))

    def measure(self, key, basis: str = "Z") -> int:
        """+1 or -1 with Born's probabilities; the qubit leaves its group."""
        keys, psi = self.groups.pop(self._group(key))
        axis = keys.index(key)
        values, vectors = np.linalg.eigh(PAULI[basis])
        moved = np.moveaxis(psi, axis, 0)
        amplitudes = [np.tensordot(vectors[:, k].conj(), moved, axes=([0], [0])) for k in (0, 1)]
        probs = np.array([np.vdot(a, a).real for a in amplitudes])
        k = int(self.rng.choice(2, p=probs / probs.sum()))
        rest = amplitudes[k] / np.sqrt(probs[k])
        if len(keys) > 1:
            self.groups.append((keys[:axis] + keys[axis + 1 :], rest))
        return 1 if values[k] > 0 else -1

    def bell_measurement(self, k1, k2) -> tuple[int, int]:
        """(zz, xx): zz = 1 when Z x Z gave -1, xx = 1 when X x X gave -1."""
        self.cnot(k1, k2)
        self.apply(H, k1)
        xx = self.measure(k1) == -1
        zz = self.measure(k2) == -1
        return int(zz), int(xx)


class World:
    """The three nodes' links and qubits, and the faults a test asks for."""

    def __init__(self, seed: int = 1) -> None:
        self.qubits = Qubits(seed)
        self.rng = np.random.default_rng(seed + 1)
        self.held: dict[str, dict[str, PairResult]] = {n: {} for n in "ABC"}
        self.count = itertools.count()
        self.services: dict[str, NetworkService] = {}
        self.push = True
        self.link_delay: dict[tuple[str, str], float] = {}
        self.link_fail: set[tuple[str, str]] = set()
        self.fail_bsm = 0
        self.in_link_operations = False
        """The repeater's second link delivers "bsm" (the daemon's way)."""
        self.consume_bsm = 0
        """That many BSMs in the link's program measure the stored pair and deliver no pair."""
        self.fail_teleport_bsm = 0
        self.memory_reads: list[tuple[str, str, str, str]] = []
        """(node, peer, its delivery, basis) of every link pair asked to read the memory."""
        self.made: list[tuple[str, str, str, str]] = []
        """(node, peer, its delivery, the peer's) of every link pair asked for."""
        self.prepared: dict[str, str] = {}
        self.fail_measure: dict[str, int] = {}
        self.on_bsm = None
        self.repeater_applied: tuple[str, ...] = ()
        self.applied_at: list[tuple[str, str, str]] = []
        self.frames: dict[tuple[str, str], list[str]] = {}  # a measured half's Paulis
        self.released: list[tuple[str, str, str]] = []  # (node, link pair, reason)
        self.cut_off: set[tuple[str, str]] = set()
        """(node, peer): that node's link layer cuts off its stored pair while it makes the
        link with the peer (as the daemon's does when the stored pair's budget runs out)."""


class FakeOps:
    x_sign = 1  # its qubits are the model's: X is X

    def __init__(self, node: str, world: World) -> None:
        self.node, self.world = node, world

    @property
    def in_link_operations(self) -> bool:
        """Delivery "bsm" is a kept half here, measured by bell_measurement (ideal either
        way), unless `consume_bsm` says the link's BSM consumed the stored pair."""
        return self.world.in_link_operations

    async def make_pair(
        self, peer, protocol, delivery, peer_delivery, fidelity_min, deadline_s, memory_basis=""
    ):
        w = self.world
        w.made.append((self.node, peer, delivery, peer_delivery))
        if memory_basis:
            w.memory_reads.append((self.node, peer, delivery, memory_basis))
        delay = w.link_delay.get((self.node, peer), 0.0)
        if delay:
            await asyncio.sleep(min(delay, deadline_s))
            if delay > deadline_s:
                raise LinkFailure(f"no pair with {peer} within {deadline_s:g} s")
        if (self.node, peer) in w.link_fail:
            raise LinkFailure(f"no pair with {peer}")
        if delivery == "bsm" and w.consume_bsm:
            w.consume_bsm -= 1
            stored = [p for p, h in w.held[self.node].items() if h.qubit == "memory"]
            w.held[self.node].pop(stored[0])
            w.qubits.measure((self.node, stored[0]))
            raise LinkFailure(
                f"link session with {peer}: the BSM after its herald measured {stored[0]} but "
                "delivered no pair (a readout flagged)",
                consumed=stored[0],
            )
        if (self.node, peer) in w.cut_off:
            stored = [p for p, h in w.held[self.node].items() if h.qubit == "memory"]
            w.held[self.node].pop(stored[0])
            w.qubits.measure((self.node, stored[0]))
            raise LinkFailure(
                f"link session with {peer}: cut-off (the stored pair's budget ran out)",
                cut_off=stored[0],
            )
        pair_id = f"{self.node}{peer}:{next(w.count)}"
        state = str(w.rng.choice(list(BELL)))
        mine, theirs = (self.node, pair_id), (peer, pair_id)
        w.qubits.add([mine, theirs], BELL[state])
        applied = w.repeater_applied
        for name in applied:  # a Pauli B's link layer applied (a known one of a move)
            w.qubits.apply(PAULI[name], mine)
        made = time.time()
        w.held[self.node][pair_id] = PairResult(pair_id, peer, state, 0.9, made, delivery, applied)
        peer_half = PairResult(pair_id, self.node, state, 0.9, made, peer_delivery)
        if peer_delivery in ("X", "Y", "Z"):
            # measured at once, as the daemon's ends do; the link layer's psi- frame (Z on
            # the responder) flips an X or Y bit and counts as a Pauli the end applied
            bit = w.qubits.measure(theirs, peer_delivery)
            frame = ("Z",) if state == "psi_minus" else ()
            if frame and peer_delivery in ("X", "Y"):
                bit = -bit
            peer_half = PairResult(
                pair_id, self.node, state, 0.9, made, "measured", frame, peer_delivery, bit
            )
        w.held[peer][pair_id] = peer_half
        if w.push and peer in w.services:
            await w.services[peer].link_pair_delivered(peer_half)
        return w.held[self.node][pair_id]

    def held_pair(self, pair_id):
        return self.world.held[self.node].get(pair_id)

    def second_link_wait_s(self, stored_pair, peer, protocol, fidelity_min):
        return None  # the service's Timing

    def _measured(self, pair_id) -> PairResult | None:
        held = self.world.held[self.node].get(pair_id)
        return held if held is not None and held.qubit == "measured" else None

    async def bell_measurement(self, memory_pair, electron_pair):
        w = self.world
        if w.on_bsm is not None:
            await w.on_bsm()
        if w.fail_bsm:
            w.fail_bsm -= 1
            raise QnodeError("the BSM's readout timed out")
        return w.qubits.bell_measurement((self.node, memory_pair), (self.node, electron_pair))

    async def ghz_measurement(self, memory_pair, electron_pair):
        """B's GHZ operation as sequences.network_ops derives it, ideal: exp(-i pi/4 Z_e X_m),
        the electron turned by -pi/2 about x (the model's sense of the compiled pi/2) and
        read in Z, Z on the memory; 1 when bright (+1). The memory's half as SwapToMemory
        wrote it is, in the gate's own axes, the pair's state with a Z on the memory
        (sequences.library.BELL_TABLE): a Z first."""
        q = self.world.qubits
        electron, memory = (self.node, electron_pair), (self.node, memory_pair)
        q.apply(SZ, memory)  # the write's frame, half a turn from the gate's axes
        q.apply2(GHZ_GATE, electron, memory)
        q.apply(RX_MINUS_HALF, electron)
        q.apply(SZ, memory)  # the memory's frame as the compiler keeps it (network_ops)
        return int(q.measure(electron) == 1)

    async def prepare_state(self, state, peer):
        """The state in this node's memory (its key), kept until the BSM."""
        key = (self.node, "memory-state")
        self.world.prepared[self.node] = state
        self.world.qubits.add([key], np.array(CARDINAL_KETS[state], dtype=complex))
        return f"state:{state}"

    async def teleport_measurement(self, pair_id, state):
        assert self.world.prepared.pop(self.node) == state
        if self.world.fail_teleport_bsm:
            self.world.fail_teleport_bsm -= 1
            self.world.qubits.measure((self.node, "memory-state"))
            raise QnodeError("the sender's BSM readout timed out")
        q = self.world.qubits
        return q.bell_measurement((self.node, "memory-state"), (self.node, pair_id))

    async def apply_pauli(self, pair_id, pauli):
        """As the daemon's: an end keeps the Pauli in software (its half measured at delivery,
        or the teleportation sender's, spent by its BSM); B's would be on its qubit."""
        self.world.applied_at.append((self.node, pair_id, pauli))
        if self.node != "B":
            self.world.frames.setdefault((self.node, pair_id), []).append(pauli)
        else:
            self.world.qubits.apply(PAULI[pauli], (self.node, pair_id))

    async def measure(self, pair_id, basis):
        if self.world.fail_measure.get(self.node):
            self.world.fail_measure[self.node] -= 1
            raise QnodeError("the readout's laser did not answer")
        measured = self._measured(pair_id)
        if measured is not None:
            assert measured.basis == basis, (measured.basis, basis)
            paulis = tuple(self.world.frames.get((self.node, pair_id), ()))
            return result_after(measured.bit, basis, paulis)
        paulis = tuple(self.world.frames.get((self.node, pair_id), ()))
        return result_after(self.world.qubits.measure((self.node, pair_id), basis), basis, paulis)

    async def release(self, pair_id, reason):
        self.world.released.append((self.node, pair_id, reason))
        held = self.world.held[self.node].pop(pair_id, None)
        if held is None or held.qubit != "measured":
            self.world.qubits.measure((self.node, pair_id))


class FakePeers:
    """The station links as the wire has them: every message packed, unpacked and checked
    against NETWORK_STATION; the sender is the station of the key it came with. Notifications
    to one node arrive in order; `drop` loses chosen ones."""

    def __init__(self, node: str, net: FakeNet) -> None:
        self.node, self.net = node, net

    def send(self, to, kind, fields):
        self.net.sent.append((self.node, to, kind, dict(fields)))
        if self.net.drop(self.node, to, kind) or {self.node, to} & self.net.down:
            return
        data = pack(kind, next(self.net.ids), **fields)
        item = (f"node-{self.node}", data)
        delay = self.net.delays.get((self.node, to, kind), 0.0)
        if delay:  # late: what the sender sent after it may arrive before it
            asyncio.get_running_loop().call_later(delay, self.net.queues[to].put_nowait, item)
        else:
            self.net.queues[to].put_nowait(item)

    async def request(self, to, kind, fields, timeout_s):
        data = pack(kind, next(self.net.ids), **fields)
        msg = unpack(data, NETWORK_STATION)
        if {self.node, to} & self.net.down:  # as a daemon that is gone: no answer
            raise PeerUnreachable(to, f"{to} did not answer {kind}: it is down")
        try:
            body = await asyncio.wait_for(
                self.net.services[to].handle_station(msg, f"node-{self.node}", True), timeout_s
            )
        except TimeoutError:
            raise PeerUnreachable(
                to, f"{to} did not answer {kind} within {timeout_s:g} s"
            ) from None
        except QnodeError as e:
            raise QnodeError(f"{to} refused {kind}: {e}") from None
        reply = unpack(pack("reply", msg["id"], ok=True, **body))
        return reply


class FakeNet:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.queues: dict[str, asyncio.Queue] = {n: asyncio.Queue() for n in "ABC"}
        self.services: dict[str, NetworkService] = {}
        self.sent: list[tuple[str, str, str, dict]] = []
        self.drops: list[tuple[str, str, int]] = []  # (from, kind, how many)
        self.delays: dict[tuple[str, str, str], float] = {}  # (from, to, kind) -> s
        self.errors: list[str] = []
        self.down: set[str] = set()
        """Nodes cut off (their daemon gone): nothing reaches them, nothing leaves them."""

    def drop(self, sender: str, to: str, kind: str) -> bool:
        for i, (who, what, left) in enumerate(self.drops):
            if who == sender and what == kind and left:
                self.drops[i] = (who, what, left - 1)
                return True
        return False

    async def deliver(self, node: str) -> None:
        while True:
            sender, data = await self.queues[node].get()
            msg = unpack(data, NETWORK_STATION)
            try:
                await self.services[node].handle_station(msg, sender, True)
            except QnodeError as e:
                self.errors.append(f"{node}: {e}")


TIMING = Timing(second_link_s=1.0, ack_s=1.0, outcome_s=2.0, decision_s=2.0, request_s=20.0)
"""Generous against a loaded machine (2 cores): every message here takes microseconds."""


class Lab:
    def __init__(self, data_dir: Path, seed: int = 1, timing: Timing = TIMING) -> None:
        self.world = World(seed)
        self.net = FakeNet()
        neighbours = {"A": ("B",), "B": ("A", "C"), "C": ("B",)}
        for node in "ABC":
            service = NetworkService(
                node,
                neighbours[node],
                FakeOps(node, self.world),
                FakePeers(node, self.net),
                data_dir / node,
                "test",
                timing,
            )
            self.net.services[node] = self.world.services[node] = service
        self.b = self.net.services["B"]
        self.workers: list[asyncio.Task] = []

    async def __aenter__(self) -> Lab:
        self.workers = [asyncio.create_task(self.net.deliver(n)) for n in "ABC"]
        return self

    async def __aexit__(self, *exc) -> None:
        for service in self.net.services.values():
            await service.close("test over")
        for task in self.workers:
            task.cancel()

    async def start(self, kind: str, **fields) -> str:
        msg = unpack(pack(kind, 1, **fields), NETWORK_OPERATOR)
        return (await self.b.handle_operator(msg))["session"]["session"]

    async def run(self, kind: str, timeout_s: float = 120.0, **fields) -> dict:
        session = await self.start(kind, **fields)
        limit = asyncio.get_running_loop().time() + timeout_s
        while self.b.sessions[session].state == "running":
            assert asyncio.get_running_loop().time() < limit, "session did not end"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the ends' last messages
        return self.b.sessions[session].summary()

    def data(self, summary: dict) -> dict[str, dict]:
        return {
            n: read_network_session(self.net.services[n].sessions[summary["session"]].file.path)
            for n in "ABC"
        }


def rows(data: dict, status: int) -> dict[str, np.void]:
    return {r["id"].decode(): r for r in data["pairs"] if r["status"] == status}


def check_counts(data: dict) -> None:
    ledger = data["ledger"]
    assert ledger["open"] == 0
    assert ledger["attempted"] == ledger["delivered"] + ledger["discarded"]
    assert ledger["delivered"] == len(rows(data, DELIVERED))
    assert ledger["discarded"] == len(rows(data, DISCARDED))
    assert ledger["discarded"] == sum(ledger[f"discarded_{c}"] for c in CAUSES)


def in_loop(test):
    """Run an async test in its own event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 300))

    return run


# tests -----------------------------------------------------------------------------------------
def test_the_file_codes_are_the_swap_reasons():
    assert CAUSES == REASONS


@in_loop
async def test_verified_end_to_end_pairs_reach_all_three_nodes(tmp_path):
    async with Lab(tmp_path) as lab:
        lab.world.repeater_applied = ("X",)  # B's link layer applied a Pauli: in the frame
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=9, verify=True)
        data = lab.data(summary)
    assert summary["state"] == "completed", summary
    assert summary["delivered"] == summary["done"] == 9
    ids = {n: set(rows(d, DELIVERED)) for n, d in data.items()}
    assert ids["A"] == ids["B"] == ids["C"] and len(ids["B"]) == 9
    for d in data.values():
        check_counts(d)
        assert d["status"] == "completed"
    signs = {"X": 1, "Y": 1, "Z": -1}
    for pair, row in rows(data["B"], DELIVERED).items():
        basis = BASIS_NAMES[row["basis_first"] - 1]
        assert row["basis_second"] == row["basis_first"]
        # exact qubits: every pair is psi+ once its frame is applied
        assert row["bit_first"] * row["bit_second"] == signs[basis], pair
        assert data["A"]["pairs"][data["A"]["pairs"]["id"] == row["id"]]["bit_first"] == [
            row["bit_first"]
        ]
        assert row["link_first"].decode().startswith("BA:")
        assert row["link_second"].decode().startswith("BC:")
        assert np.isfinite(row["t_bsm"]) and np.isfinite(row["t_applied_second"])
    fidelity = summary["figures"]["bell_fidelity"]
    assert fidelity["value"] == pytest.approx(1.0) and fidelity["shots"] == 9


@pytest.mark.parametrize("basis", ["X", "Y", "Z"])
@pytest.mark.parametrize("paulis", [(), *[(p,) for p in PAULIS], ("X", "Z"), ("Y", "Y", "Z")])
def test_a_frame_applied_to_a_recorded_bit_is_the_frame_applied_before_measuring(basis, paulis):
    """`result_after` against the state vector: for each eigenstate of the basis (the
    recorded result), the Paulis applied first turn it into the eigenstate of the result
    `result_after` gives (a Pauli maps an eigenstate of another Pauli to one of its two)."""
    values, vectors = np.linalg.eigh(PAULI[basis])
    for k in (0, 1):
        recorded = 1 if values[k] > 0 else -1
        state = vectors[:, k]
        for name in paulis:
            state = PAULI[name] @ state
        expectation = float(np.real(np.vdot(state, PAULI[basis] @ state)))
        assert expectation == pytest.approx(result_after(recorded, basis, paulis))


@pytest.mark.parametrize("state", ["phi_plus", "phi_minus", "psi_plus", "psi_minus"])
def test_the_bsm_s_parities_name_its_bell_state(state):
    """bsm_parities is bsm_pauli's inverse, and its zz/xx are the Bell state's ZZ and XX
    eigenvalues (checked on the state vector)."""
    zz, xx = bsm_parities(state)
    pauli = bsm_pauli(zz, xx)
    assert {"phi_plus": "I", "phi_minus": "Z", "psi_plus": "X", "psi_minus": "Y"}[state] == (
        pauli.name
    )
    vector = {
        "phi_plus": np.array([1, 0, 0, 1]),
        "phi_minus": np.array([1, 0, 0, -1]),
        "psi_plus": np.array([0, 1, 1, 0]),
        "psi_minus": np.array([0, 1, -1, 0]),
    }[state] / np.sqrt(2)
    for op, bit in ((np.kron(SZ, SZ), zz), (np.kron(SX, SX), xx)):
        assert np.real(np.vdot(vector, op @ vector)) == pytest.approx(-1 if bit else 1)
    with pytest.raises(ValueError, match="not a Bell state"):
        bsm_parities("psi")
    with pytest.raises(ValueError, match="result is"):
        result_after(0, "Z")


@in_loop
async def test_the_ends_measure_at_delivery_in_the_pair_s_verification_basis(tmp_path):
    """With --verify each end's half is measured as its link pair is delivered, in the basis
    chosen for that end-to-end pair (cycled X, Y, Z), and the swap's frame reaches the bit."""
    async with Lab(tmp_path, seed=9) as lab:
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=6, verify=True)
        data = lab.data(summary)
        held = {n: dict(lab.world.held[n]) for n in "AC"}
    assert summary["delivered"] == 6
    for row in rows(data["B"], DELIVERED).values():
        basis = BASIS_NAMES[row["basis_first"] - 1]
        first, second = (
            held[n][row[f"link_{w}"].decode()]
            for n, w in zip("AC", ("first", "second"), strict=True)
        )
        assert first.qubit == second.qubit == "measured"
        assert first.basis == second.basis == basis
    bases = [BASIS_NAMES[r["basis_first"] - 1] for r in rows(data["B"], DELIVERED).values()]
    assert sorted(bases) == sorted("XYZ" * 2)
    assert summary["figures"]["bell_fidelity"]["value"] == pytest.approx(1.0)
    assert set(summary["bsm"]) == set(rows(data["B"], DELIVERED))


@in_loop
async def test_the_ends_learn_their_pairs_from_the_link_layer_when_asked(tmp_path):
    """Without the link layer's push, an end asks it (`held_pair`) about the pair B names."""
    async with Lab(tmp_path, seed=5) as lab:
        lab.world.push = False
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=6, verify=True)
    assert summary["state"] == "completed" and summary["delivered"] == 6
    assert summary["figures"]["bell_fidelity"]["value"] == pytest.approx(1.0)


@in_loop
async def test_an_end_silent_after_the_outcome_is_a_timeout_on_all_three(tmp_path):
    async with Lab(tmp_path) as lab:
        lab.net.drops.append(("C", "swap_applied", 1))
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=2)
        data = lab.data(summary)
    assert summary["state"] == "completed" and summary["delivered"] == 2
    assert summary["reasons"] == {"timeout": 1}
    lost = {n: rows(d, DISCARDED) for n, d in data.items()}
    assert set(lost["A"]) == set(lost["B"]) == set(lost["C"]) and len(lost["B"]) == 1
    for node, discarded in lost.items():
        (row,) = discarded.values()
        assert CAUSES[row["cause"] - 1] == "timeout", node
        assert b"swap_applied from C" in row["reason"], (node, row["reason"])
        check_counts(data[node])


@in_loop
async def test_a_failed_bsm_is_discarded_on_all_three_with_its_reason(tmp_path):
    async with Lab(tmp_path) as lab:
        lab.world.fail_bsm = 1
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=1)
        data = lab.data(summary)
    assert summary["reasons"] == {"operation_failed": 1}
    for node, d in data.items():
        (row,) = rows(d, DISCARDED).values()
        assert CAUSES[row["cause"] - 1] == "operation_failed"
        assert b"BSM" in row["reason"], node
        check_counts(d)


@in_loop
async def test_a_bsm_in_the_link_without_a_pair_fails_the_attempt_and_the_next_one_runs(tmp_path):
    """The daemon's way: B's second link delivers "bsm" (its BSM right after the herald).
    One such session measures the stored pair but delivers no pair (a readout flagged): the
    attempt holding the stored pair is discarded on all three with cause operation_failed
    and the reason, and the session makes its pair with the next attempt."""
    async with Lab(tmp_path) as lab:
        lab.world.in_link_operations = True
        lab.world.consume_bsm = 1
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=1)
        data = lab.data(summary)
    assert summary["delivered"] == 1 and summary["reasons"] == {"operation_failed": 1}
    for node in "AB":
        (row,) = rows(data[node], DISCARDED).values()
        assert CAUSES[row["cause"] - 1] == "operation_failed", node
        assert b"delivered no pair" in row["reason"], (node, row["reason"])
    for node in "ABC":
        check_counts(data[node])


@in_loop
async def test_a_cut_off_while_waiting_for_the_second_link(tmp_path):
    """A's link layer discards its pair while B makes the second link: A and B record the
    cut-off; C, which never heard of the attempt, holds a link pair B let go of (B's memory
    was gone when it came): C's End discards it when the session closes (before its own
    wait for an outcome ran out), as shutdown."""
    async with Lab(tmp_path) as lab:
        lab.world.link_delay[("B", "C")] = 0.5

        async def cut_off_at_a():
            await asyncio.sleep(0.2)
            a = lab.net.services["A"]
            (pair,) = [p for p in lab.world.held["A"]]
            await a.link_pair_discarded(pair, "memory cut-off: expected fidelity 0.49")
            lab.world.link_delay.clear()

        cutter = asyncio.create_task(cut_off_at_a())
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=1)
        await cutter
        data = {
            n: read_network_session(s.sessions[summary["session"]].file.path)
            for n, s in lab.net.services.items()
        }
    assert summary["delivered"] == 1
    for node in "AB":
        causes = [CAUSES[r["cause"] - 1] for r in rows(data[node], DISCARDED).values()]
        assert causes == ["cutoff"], node
    c_lost = list(rows(data["C"], DISCARDED).values())
    assert [CAUSES[r["cause"] - 1] for r in c_lost] == ["shutdown"]
    for node in "ABC":
        check_counts(data[node])


@in_loop
async def test_a_node_down_mid_swap_and_a_late_bsm_refused(tmp_path):
    async with Lab(tmp_path) as lab:
        downs = [1]

        async def c_goes_down():
            if downs:
                downs.pop()
                await lab.b.node_down("C")

        lab.world.on_bsm = c_goes_down
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=1)
        await asyncio.sleep(TIMING.outcome_s + 0.5)
        data = lab.data(summary)
    assert summary["reasons"] == {"node_down": 1}
    for node in "AB":
        (row,) = rows(data[node], DISCARDED).values()
        assert CAUSES[row["cause"] - 1] == "node_down" and b"node C down" in row["reason"]
    assert len(rows(data["C"], DISCARDED)) == 1  # C was not told (down): its own timeout
    assert data["B"]["ledger"]["refused"] == 1  # the BSM result after the discard
    assert (data["B"]["pairs"]["status"] == REFUSED).sum() == 1


@in_loop
async def test_a_decision_lost_turns_the_delivery_into_a_discard_everywhere(tmp_path):
    """B's swap_delivered to A is lost: A gives up waiting (timeout) and tells B, which had
    delivered the pair: it becomes a discard there (conflict), and at C, which B tells."""
    async with Lab(tmp_path) as lab:
        lab.net.drops.append(("B", "swap_delivered", 1))
        lab.world.link_delay[("B", "A")] = 1.0  # the session outlasts A's wait for a decision
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=3)
        data = lab.data(summary)
        b_state = lab.b.sessions[summary["session"]]
    lost = {n: list(rows(d, DISCARDED).values()) for n, d in data.items()}
    assert {n: [CAUSES[r["cause"] - 1] for r in v] for n, v in lost.items()} == {
        "A": ["timeout"],
        "B": ["conflict"],
        "C": ["conflict"],
    }
    assert len({r["id"] for v in lost.values() for r in v}) == 1  # the same pair everywhere
    assert b"no decision from B" in lost["B"][0]["reason"]
    ids = {n: set(rows(d, DELIVERED)) for n, d in data.items()}
    assert ids["A"] == ids["B"] == ids["C"]
    assert b_state.ledger.delivered == len(ids["B"])


@in_loop
async def test_the_repeater_stopping_mid_swap_discards_as_shutdown(tmp_path):
    async with Lab(tmp_path) as lab:
        lab.world.link_delay[("B", "C")] = 5.0  # B waits for its second link

        async def stop_b():
            await asyncio.sleep(0.3)
            await lab.b.close("node stopped")

        stopper = asyncio.create_task(stop_b())
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=1)
        await stopper
        await asyncio.sleep(0.1)
        data = lab.data(summary)
    assert summary["state"] == "aborted" and summary["reason"] == "node stopped"
    for node in "AB":
        (row,) = rows(data[node], DISCARDED).values()
        assert CAUSES[row["cause"] - 1] == "shutdown", node
        check_counts(data[node])
    assert data["A"]["status"] == "aborted"
    assert len(data["C"]["pairs"]) == 0  # C never had a part in it


@in_loop
async def test_forged_senders_are_refused_and_counted(tmp_path):
    async with Lab(tmp_path) as lab:
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=1)
        a = lab.net.services["A"]
        outcome = next(m for f, t, k, m in lab.net.sent if k == "swap_outcome" and t == "A")
        msg = unpack(pack("swap_outcome", 9, **outcome), NETWORK_STATION)
        with pytest.raises(Refused, match="station key"):
            await a.handle_station(msg, "operator", False)  # a client key
        with pytest.raises(Refused, match="station key"):
            await a.handle_station(msg, None, True)  # a key not on the list
        with pytest.raises(Refused, match="not from a node of this network session"):
            await a.handle_station(msg, "node-D", True)
        assert a.refused == 3
        # C is in the session but sends no outcomes: its message is foreign, nothing recorded
        before = a.sessions[summary["session"]].ledger.foreign
        await a.handle_station(msg, "node-C", True)
        assert a.sessions[summary["session"]].ledger.foreign == before + 1
        close = unpack(
            pack("network_close", 3, session=summary["session"], state="failed", reason="x"),
            NETWORK_STATION,
        )
        with pytest.raises(Refused, match="only the repeater"):
            await a.handle_station(close, "node-C", True)


@in_loop
async def test_a_duplicate_outcome_is_ignored(tmp_path):
    async with Lab(tmp_path) as lab:
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=2)
        a = lab.net.services["A"]
        s = a.sessions[summary["session"]]
        outcomes = [m for f, t, k, m in lab.net.sent if k == "swap_outcome" and t == "A"]
        rows_before = len(read_network_session(s.file.path)["pairs"])
        duplicates = s.ledger.duplicates
        applied_before = list(lab.world.applied_at)
        for outcome in outcomes:
            msg = unpack(pack("swap_outcome", 7, **outcome), NETWORK_STATION)
            await a.handle_station(msg, "node-B", True)
        assert s.ledger.duplicates == duplicates + 2
        assert lab.world.applied_at == applied_before  # no Pauli applied twice
        assert s.ledger.delivered == 2
        assert len(read_network_session(s.file.path)["pairs"]) == rows_before


@in_loop
async def test_ghz_shots_verified_in_the_five_settings(tmp_path):
    async with Lab(tmp_path, seed=3) as lab:
        summary = await lab.run("network_ghz", shots=20, verify=True)
        data = lab.data(summary)
    assert summary["state"] == "completed" and summary["done"] == 20
    figures = summary["figures"]
    assert figures["ghz_fidelity"]["value"] == pytest.approx(1.0)
    assert figures["ghz_bound"]["value"] == pytest.approx(1.0)
    assert figures["ghz_fidelity"]["above"]
    assert set(rows(data["A"], DELIVERED)) == set(rows(data["B"], DELIVERED))
    check_counts(data["B"])


@in_loop
async def test_a_ghz_shot_whose_measurement_failed_is_discarded_on_all_three(tmp_path):
    async with Lab(tmp_path, seed=6) as lab:
        lab.world.fail_measure["C"] = 1
        summary = await lab.run("network_ghz", shots=10, verify=True)
        data = lab.data(summary)
    assert summary["done"] == 10 and summary["reasons"] == {"operation_failed": 1}
    lost = {n: list(rows(d, DISCARDED)) for n, d in data.items()}
    assert lost["A"] == lost["B"] == lost["C"] and len(lost["B"]) == 1
    assert summary["figures"]["ghz_fidelity"]["value"] == pytest.approx(1.0)
    for d in data.values():
        check_counts(d)


@in_loop
async def test_a_teleport_outcome_that_overtakes_the_decision_waits_for_it(tmp_path):
    """The sender's outcome reaches the receiver before B's decision about the pair (another
    sender, another path): the receiver holds it until the decision comes."""
    async with Lab(tmp_path, seed=8) as lab:
        lab.net.delays[("B", "C", "swap_delivered")] = 0.3
        summary = await lab.run("network_teleport", **{"from": "A", "to": "C"}, shots=2)
        receiver = lab.net.services["C"].sessions[summary["session"]].teleport_receiver
    assert summary["done"] == 12
    assert summary["figures"]["teleport_fidelity"]["value"] == pytest.approx(1.0)
    assert receiver is not None and receiver.ledger.refused == 0
    assert receiver.ledger.corrected == 12


@in_loop
async def test_a_failed_sender_bsm_is_discarded_on_all_three_and_the_next_state_is_sent(tmp_path):
    """The sender's BSM (at its link pair, before the swap) fails once: that end-to-end
    attempt is discarded on A, B and C with cause operation_failed and the sender's reason;
    the session goes on and teleports the six states twice, every one right."""
    async with Lab(tmp_path, seed=6) as lab:
        lab.world.fail_teleport_bsm = 1
        summary = await lab.run("network_teleport", **{"from": "A", "to": "C"}, shots=2)
        data = lab.data(summary)
    assert summary["state"] == "completed" and summary["done"] == 12
    assert summary["reasons"] == {"operation_failed": 1}
    assert summary["figures"]["teleport_fidelity"]["value"] == pytest.approx(1.0)
    discarded = {node: rows(d, DISCARDED) for node, d in data.items()}
    assert len(discarded["A"]) == len(discarded["B"]) == 1
    (row,) = discarded["A"].values()
    assert CAUSES[row["cause"] - 1] == "operation_failed"
    assert b"teleportation BSM failed" in row["reason"]
    assert set(discarded["C"]) <= set(discarded["B"])  # C only if it held the other half
    for d in data.values():
        check_counts(d)


@in_loop
async def test_teleport_prepare_only_from_the_repeater_and_only_a_cardinal_state(tmp_path):
    """teleport_prepare writes into the sender's memory: an end asking is refused (counted),
    a state that is not cardinal never passes the schema, and a node that does not send in
    the session says so."""
    async with Lab(tmp_path) as lab:
        summary = await lab.run("network_teleport", **{"from": "A", "to": "C"}, shots=2)
        session = summary["session"]
        a, c = lab.net.services["A"], lab.net.services["C"]
        msg = unpack(pack("teleport_prepare", 4, session=session, state="+X"), NETWORK_STATION)
        before = a.refused
        with pytest.raises(Refused, match="only the repeater"):
            await a.handle_station(msg, "node-C", True)
        with pytest.raises(Refused, match="station key"):
            await a.handle_station(msg, "operator", False)
        assert a.refused == before + 2
        with pytest.raises(QnodeError, match="does not send"):
            await c.handle_station(msg, "node-B", True)
    with pytest.raises(MessageError, match="state"):
        unpack(pack("teleport_prepare", 5, session=session, state="+W"), NETWORK_STATION)


@pytest.mark.parametrize("in_link", [False, True])
@in_loop
async def test_teleportation_of_the_cardinal_states(tmp_path, in_link):
    """Both ways of the sender's BSM: a program of its own after its link pair, or (the
    daemon's way) its link's program right after the herald (its delivery "bsm")."""
    async with Lab(tmp_path, seed=4) as lab:
        lab.world.in_link_operations = in_link
        summary = await lab.run("network_teleport", **{"from": "A", "to": "C"}, shots=8)
        data = lab.data(summary)
        made = set(lab.world.made)
    # A's half measured with its state, B's second half measured with its stored one: both
    # in the link's program, or both kept for a program of their own
    second = "bsm" if in_link else "keep"
    assert made == {("B", "A", "memory", second)} | {("B", "C", second, b) for b in "XYZ"}
    assert summary["state"] == "completed" and summary["done"] == 48
    assert summary["reasons"] == {}  # no attempt lost (a Pauli on a spent half would be)
    figure = summary["figures"]["teleport_fidelity"]
    # 48 of 48 right: the interval (Agresti-Coull per state) lies above 2/3 (with 2 shots a
    # state it would not: 12 shots cannot show that)
    assert figure["value"] == pytest.approx(1.0) and figure["above"]
    states = data["C"]["pairs"]["state"]
    assert sorted(np.bincount(states[states > 0])[1:]) == [8] * len(CARDINAL_STATES)


@in_loop
async def test_the_network_file_as_h5py_reads_it(tmp_path):
    async with Lab(tmp_path) as lab:
        summary = await lab.run("network_entangle", ends=["A", "C"], pairs=3, verify=True)
        path = lab.b.sessions[summary["session"]].file.path
    assert path.name.endswith("_B_network.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["kind"] == "network" and f.attrs["role"] == "repeater"
        for codes in ("status_codes", "cause_codes", "pauli_codes", "basis_codes", "state_codes"):
            assert json.loads(f.attrs[codes])
        assert json.loads(f.attrs["cause_codes"])["1"] == "cutoff"
        assert json.loads(f.attrs["request"])["pairs"] == 3
        names = json.loads(f["ledger"].attrs["names"])
        ledger = dict(zip(names, f["ledger"][:], strict=True))
        assert ledger["attempted"] == ledger["delivered"] == 3
        assert [s.decode() for s in f["status"][:]] == ["completed", ""]
        assert (f["pairs"]["status"] == DELIVERED).sum() == 3


@pytest.mark.parametrize(
    "kind,fields,problem",
    [
        ("network_entangle", {"ends": ["A"], "pairs": 3}, "ends"),
        ("network_entangle", {"ends": ["A", "C"], "pairs": 0}, "pairs"),
        ("network_entangle", {"ends": ["A", "C"], "pairs": 10**9}, "pairs"),
        ("network_entangle", {"ends": ["A", "C"], "pairs": True}, "pairs"),
        ("network_entangle", {"ends": ["A", "C"], "pairs": 3, "protocol": "x"}, "protocol"),
        ("network_entangle", {"ends": ["A", "C"], "pairs": 3, "fidelity_min": 1.5}, "fidelity"),
        ("network_entangle", {"ends": ["A", "C"], "pairs": 3, "deadline_s": -1}, "deadline"),
        ("network_ghz", {"shots": "many"}, "shots"),
        ("network_teleport", {"from": "A", "to": "C", "shots": 1, "states": "all"}, "states"),
        ("network_teleport", {"from": "A" * 65, "to": "C", "shots": 1}, "from"),
        ("network_session", {"session": ""}, "session"),
    ],
)
def test_operator_requests_with_bad_input_are_refused(kind, fields, problem):
    with pytest.raises(MessageError, match=problem):
        unpack(pack(kind, 1, **fields), NETWORK_OPERATOR)


@in_loop
async def test_operator_requests_the_repeater_cannot_serve(tmp_path):
    async with Lab(tmp_path) as lab:
        for fields, problem in [
            ({"ends": ["A", "D"], "pairs": 1}, "D is not a neighbour of B"),
            ({"ends": ["A", "A"], "pairs": 1}, "not two different nodes"),
            ({"ends": ["A", "B"], "pairs": 1}, "not one of them"),
        ]:
            msg = unpack(pack("network_entangle", 1, **fields), NETWORK_OPERATOR)
            with pytest.raises(QnodeError, match=problem):
                await lab.b.handle_operator(msg)
        a = lab.net.services["A"]
        msg = unpack(pack("network_entangle", 1, ends=["B", "C"], pairs=1), NETWORK_OPERATOR)
        with pytest.raises(QnodeError, match="C is not a neighbour of A"):
            await a.handle_operator(msg)
        with pytest.raises(QnodeError, match="no network session"):
            await lab.b.handle_operator({"type": "network_session", "session": "nothing"})


# the node daemons' wiring (uncalibrated: the link layer refuses) --------------------------------
def test_node_daemons_open_and_close_a_network_session_over_their_station_links(
    tmp_path, monkeypatch
):
    """Through the real transports: the three node daemons of the three-node lab (`qnode sim
    up` in its own process), nothing calibrated. B's operator request opens the session on A
    and C over their station links (CurveZMQ); B's link layer refuses the first link pair
    (the node is not calibrated), so the session fails with that reason on all three and
    every file is closed (a refusal to start is not waited out: it would not change); a
    network message with the operator's client key is refused and counted; bad operator
    input is refused at the door. The calibrated swap through the daemons:
    hil_tests/test_network_daemons.py."""
    from controller.harness.sim import start_sim
    from controller.labconfig import load_lab
    from controller.operator import daemons
    from controller.operator.client import NodeClient, NodeRequestError

    lab_file = Path(__file__).resolve().parent.parent / "labs" / "sim_three_node.toml"
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("QNODE_DATA_DIR", str(data))
    procs = []
    try:
        lab = load_lab(lab_file)
        resource_map = tmp_path / "resources.json"
        procs.append(start_sim(lab, resource_map, seed=7, log=tmp_path / "sim.log"))
        for node in "ABC":
            procs.append(
                daemons.start_daemon(
                    lab, node, log=tmp_path / f"{node}.log", resource_map=resource_map
                )
            )
        with NodeClient.for_lab(lab, "B", timeout_s=30) as b:
            with pytest.raises(NodeRequestError, match="malformed"):
                b.request("network_entangle", ends=["A", "C"], pairs=0)
            started = b.request("network_entangle", ends=["A", "C"], pairs=2)["session"]
            session = started["session"]
            assert started["nodes"] == ["A", "B", "C"]
            limit = time.monotonic() + 60
            summary = started
            while summary["state"] == "running" and time.monotonic() < limit:
                time.sleep(0.1)
                summary = b.request("network_session", session=session)["session"]
        assert summary["state"] == "failed", summary
        assert "node B is not calibrated" in summary["reason"]
        for node in "ABC":
            with NodeClient.for_lab(lab, node, timeout_s=30) as client:
                got = client.request("network_session_data", session=session)["data"]
                assert got["status"] == "failed" and got["node"] == node
                assert got["role"] == ("repeater" if node == "B" else "end")
        with NodeClient.for_lab(lab, "A", timeout_s=30) as a:
            with pytest.raises(NodeRequestError, match="station key"):
                a.request("network_close", session=session, state="failed", reason="forged")
            assert a.status()["refused_network_messages"] == 1
        # the operator's command: starts the midpoints it needs, reports the failure's reason
        args = ["network", "entangle", "--ends", "A", "C", "--pairs", "1", "--lab", str(lab_file)]
        result = subprocess.run(
            [sys.executable, "-m", "controller.cli", *args, "--resource-map", str(resource_map)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "250"},
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "failed" in result.stdout and "not calibrated" in result.stdout, result.stdout
        assert "the three nodes agree" in result.stdout
    finally:
        for proc in reversed(procs):
            daemons.terminate(proc)
