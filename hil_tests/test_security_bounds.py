"""Bounded resources for allowed keys (issue 12, item 7), through the real node daemon: a pulse
beyond the AWG's memory allocates nothing, a sweep beyond the lab's bound is refused at the
door, a long compile leaves the daemon's loop free for `status` and `abort`, and a message
beyond the bound never reaches the daemon."""

from __future__ import annotations

import asyncio
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import zmq

from controller.labconfig import DEFAULT_LAB, DEFAULT_MAX_SWEEP_POINTS, parse_lab
from controller.messaging.curve import MAXMSGSIZE, client_socket, ensure_keypair, server_socket
from controller.messaging.serving import Request, StationServer, read_info
from controller.messaging.wire import MAX_MESSAGE_BYTES, REPLY, Schema, pack, unpack
from controller.operator.client import NodeClient, NodeRequestError
from hil_tests.test_compiler import HW, PARAMS
from hil_tests.test_node_daemon import set_truth
from qnode.errors import LabConfigError
from sequences.compiler import CompileError, compile_sequence
from sequences.library import rabi
from sequences.operations import MwPulse, Readout, Sequence, Sweep, SweepAxis, Wait
from sequences.program import MAX_INSTRUCTIONS

pytestmark = pytest.mark.usefixtures("sim")

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """The resident memory of a process (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def daemon_pid(data_dir: Path, node: str) -> int:
    return int(read_info(data_dir, node)["pid"])


# ---- 1. limits before allocation -------------------------------------------------------------


def test_a_pulse_beyond_the_awg_memory_is_refused_before_any_array(start_daemon, data_dir, lab):
    daemon = start_daemon("A")
    pid = daemon_pid(data_dir, "A")
    daemon.client.status()
    before = rss_bytes(pid)
    # 2e7 ns at the AWG's 1.2 GS/s: 24 M samples, against a memory of 2 M points
    long_pulse = Sequence("long_pulse", (MwPulse(0.5, 2e7), Readout()), shots=1)
    with pytest.raises(NodeRequestError) as refused:
        daemon.client.start(long_pulse)
    grown = rss_bytes(pid) - before
    assert grown < 40 * MiB, f"the daemon grew by {grown / MiB:.0f} MiB"
    message = str(refused.value)
    memory = int(lab.nodes["A"].instruments["awg"].limits["waveform_points"][1])
    assert "operation 0 (MwPulse)" in message, message
    assert f"AWG memory limit of {memory} points" in message, message
    assert "24000000 for this 2e+07 ns pulse" in message, message  # the pulse's own samples
    assert daemon.client.status()["state"] == "idle"


def test_the_sequencer_memory_is_checked_as_the_program_grows(start_daemon):
    daemon = start_daemon("A")
    endless = Sequence("endless", tuple(Wait(10 + 4 * (k % 2)) for k in range(100_000)), shots=1)
    with pytest.raises(NodeRequestError) as refused:
        daemon.client.start(endless)
    message = str(refused.value)
    # the shot's SET comes first: operation k is instruction k + 2, refused at the 4097th
    assert f"operation {MAX_INSTRUCTIONS - 1} (Wait)" in message, message
    assert f"memory holds {MAX_INSTRUCTIONS}" in message, message
    assert daemon.client.status()["state"] == "idle"


def test_points_checked_without_waveforms_compile_to_the_same_program():
    sequence = rabi("nv", shots=5)
    for point in ({"duration_ns": 100.0}, {"duration_ns": 2000.0}):
        whole = compile_sequence(sequence, PARAMS, HW, point)
        checked = compile_sequence(sequence, PARAMS, HW, point, waveforms=False)
        assert checked.waveforms == {} and whole.waveforms
        assert checked.listing == whole.listing and checked.segments == whole.segments
        assert (
            checked.awg_points
            == whole.awg_points
            == sum(len(i) for i, _ in whole.waveforms.values())
        )
    too_long = {"duration_ns": 1e5}  # 120 000 samples, the memory holds 10 000
    for waveforms in (True, False):
        with pytest.raises(
            CompileError, match=r"operation 2 \(MwPulse\).*AWG memory limit of 10000"
        ):
            compile_sequence(sequence, PARAMS, HW, too_long, waveforms=waveforms)


# ---- 2. a bound on sweeps; compiling off the loop ---------------------------------------------


def test_the_lab_file_bounds_the_points_of_a_sweep():
    raw = tomllib.loads(Path(DEFAULT_LAB).read_text())
    assert parse_lab(raw, str(DEFAULT_LAB)).lab.max_sweep_points == DEFAULT_MAX_SWEEP_POINTS
    raw["lab"]["max_sweep_points"] = 200
    assert parse_lab(raw, str(DEFAULT_LAB)).lab.max_sweep_points == 200
    for bad in (0, -5, 10**9, 2.5, "many", True):
        raw["lab"]["max_sweep_points"] = bad
        with pytest.raises(LabConfigError) as err:
            parse_lab(raw, str(DEFAULT_LAB))
        assert err.value.key_path == "lab.max_sweep_points", str(err.value)


def test_a_sweep_beyond_the_bound_is_refused_at_the_door(start_daemon):
    daemon = start_daemon("A")
    n = DEFAULT_MAX_SWEEP_POINTS + 1
    sweep = Sweep((SweepAxis.linspace("duration_ns", 0, 400, n, "ns"),))
    t0 = time.monotonic()
    with pytest.raises(NodeRequestError, match=rf"sweep has {n} points.*max_sweep_points"):
        daemon.client.start(rabi("nv", shots=1), sweep)
    assert time.monotonic() - t0 < 2.0  # refused, not compiled
    # a grid whose axes are each small but whose product is not: refused without making it
    grid = Sweep(
        (
            SweepAxis.linspace("duration_ns", 0, 400, 1000, "ns"),
            SweepAxis.linspace("rabi_amplitude_v", 0.1, 0.5, 1000, "V"),
            SweepAxis.linspace("mw_power_dbm", -10, 0, 1000, "dBm"),
        )
    )
    with pytest.raises(NodeRequestError, match=r"sweep has 1000000000 points"):
        daemon.client.start(rabi("nv", shots=1), grid)
    assert daemon.client.status()["state"] == "idle"


def _start_in_thread(lab, node: str, sequence: Sequence, sweep: Sweep) -> tuple:
    """`run` from a client of its own, in a thread: (thread, outcome dict)."""
    outcome: dict = {}

    def start() -> None:
        with NodeClient.for_lab(lab, node, timeout_s=60) as runner:
            try:
                outcome["run"] = runner.start(sequence, sweep)
            except NodeRequestError as e:
                outcome["error"] = str(e)
        outcome["replied"] = time.monotonic()

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    return thread, outcome


def test_status_answers_while_a_long_sweep_compiles(start_daemon, data_dir, sim, lab):
    set_truth(data_dir, sim, "A")
    daemon = start_daemon("A")
    client = daemon.client
    sweep = Sweep((SweepAxis.linspace("duration_ns", 20, 4000, DEFAULT_MAX_SWEEP_POINTS, "ns"),))
    thread, outcome = _start_in_thread(lab, "A", rabi("nv", shots=1), sweep)
    round_trips, states = [], []
    while "replied" not in outcome:
        t0 = time.monotonic()
        status = client.status()
        round_trips.append(time.monotonic() - t0)
        run = status["run"] or {}
        states.append(run.get("status") if status["state"] == "busy" else status["state"])
        time.sleep(0.005)
    thread.join(10)
    assert "run" in outcome, outcome
    client.abort()
    client.wait(outcome["run"]["run_id"], timeout_s=60)
    preparing = states.count("preparing")
    assert preparing >= 20, f"only {preparing} status replies while the points compiled"
    trips = np.array(round_trips) * 1e3
    p95, worst = np.percentile(trips, 95), trips.max()
    assert p95 < 100 and worst < 500, (
        f"status round trips while compiling: p95 {p95:.0f} ms, max {worst:.0f} ms "
        f"({len(trips)} requests)"
    )


def test_an_abort_while_the_points_compile_ends_the_run_before_it_starts(
    start_daemon, data_dir, sim, lab
):
    set_truth(data_dir, sim, "A")
    daemon = start_daemon("A")
    client = daemon.client
    sweep = Sweep((SweepAxis.linspace("duration_ns", 20, 4000, DEFAULT_MAX_SWEEP_POINTS, "ns"),))
    thread, outcome = _start_in_thread(lab, "A", rabi("nv", shots=1), sweep)
    deadline = time.monotonic() + 10
    while (client.status()["run"] or {}).get("status") != "preparing":
        assert time.monotonic() < deadline and "replied" not in outcome, outcome
        time.sleep(0.005)
    client.abort()
    thread.join(10)
    assert "aborted while its points compiled" in outcome.get("error", ""), outcome
    status = client.status()
    assert status["state"] == "idle" and status["run"] is None, status
    small = Sweep((SweepAxis.linspace("duration_ns", 50, 150, 3, "ns"),))
    assert client.run(rabi("nv", shots=5), small).status == "completed"  # the next run


# ---- 3. message size --------------------------------------------------------------------------


def message_of(size: int) -> bytes:
    """A `status` request of exactly `size` bytes (padded with a field no schema reads)."""
    probe = pack("status", 7, padding=b"\0" * (size - 100))
    message = pack("status", 7, padding=b"\0" * (size - 100 + size - len(probe)))
    assert len(message) == size
    return message


def send_raw(daemon, message: bytes, wait_ms: int) -> bool:
    """Send one message with the operator's key on a socket of its own: answered?"""
    sock = client_socket(
        zmq.Context.instance(), zmq.DEALER, daemon.client.client_secret, daemon.client.server_public
    )
    try:
        sock.connect(daemon.client.endpoint)
        sock.send(message)
        return bool(sock.poll(wait_ms))
    finally:
        sock.close(linger=0)


def test_a_message_beyond_the_bound_is_dropped_and_the_daemon_serves_on(
    start_daemon, data_dir, lab
):
    daemon = start_daemon("A")
    pid = daemon_pid(data_dir, "A")
    before = daemon.client.status()
    rss_before = rss_bytes(pid)
    answered = send_raw(daemon, message_of(MAX_MESSAGE_BYTES + 1), 2000)  # an allowed key's
    assert not answered, "the oversized sender got an answer"
    after = daemon.client.status()  # the next request is answered
    assert after["state"] == "idle"
    assert after["malformed"] == before["malformed"]  # never read, so never decoded
    grown = rss_bytes(pid) - rss_before
    assert grown < 32 * MiB, f"the daemon grew by {grown / MiB:.0f} MiB"
    assert daemon.proc.poll() is None
    with NodeClient.for_lab(lab, "A") as other:  # a new client too
        assert other.status()["state"] == "idle"
    # the bound is the message's own size: one of exactly MAX_MESSAGE_BYTES is served
    assert send_raw(daemon, message_of(MAX_MESSAGE_BYTES), 10_000)


def test_every_socket_bounds_what_it_receives(tmp_path):
    public, secret = ensure_keypair(tmp_path, "k")
    ctx = zmq.Context()
    try:
        for sock in (
            server_socket(ctx, zmq.ROUTER, secret),
            client_socket(ctx, zmq.DEALER, secret, public),
        ):
            assert sock.getsockopt(zmq.MAXMSGSIZE) == MAXMSGSIZE
            sock.close(linger=0)
    finally:
        ctx.term()


def test_a_reply_beyond_the_bound_becomes_an_error_reply(tmp_path):
    """The client's socket would drop it (and the client wait in vain): the daemon says why."""

    class Big(StationServer):
        async def open(self) -> None: ...

        async def close(self) -> None: ...

        async def handle(self, request: Request) -> dict:
            return {"blob": b"\0" * (MAX_MESSAGE_BYTES + 1)}

    class Sent:
        frames: list = []

        async def send_multipart(self, frames) -> None:
            self.frames = frames

    vocabulary = {"status": Schema("status"), "reply": REPLY}
    server = Big(tmp_path, "A", "node A", "tcp://127.0.0.1:0", vocabulary)
    sock = Sent()
    msg = unpack(pack("status", 5), vocabulary)
    asyncio.run(server._answer(sock, Request(msg, "operator", b"id", "client")))  # type: ignore[arg-type]
    server.ctx.term()
    assert sock.frames[0] == b"id" and len(sock.frames[1]) < 1000
    reply = unpack(sock.frames[1])
    assert reply["id"] == 5 and reply["ok"] is False
    assert f"beyond the bound of {MAX_MESSAGE_BYTES} bytes" in reply["error"], reply
