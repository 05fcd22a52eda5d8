"""The time tagger as the ID Quantique Time Controller: SCPI over ZeroMQ (REQ/REP, errors
inline), per-input counters, thresholds with units, time tags through the host's DataLinkTarget
(the manual's section 10: JSON commands, a PAIR stream of section 6.3.4's timestamps), and the
lazy-pirate recovery from a frozen instrument."""

import json
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.harness.sim import state_dir_of
from drivers.transport import free_local_port, split_zmq_resource
from qnode.errors import (
    InstrumentReportedError,
    InstrumentTimeout,
    LimitError,
)


def test_threshold_and_enable_round_trip(open_driver):
    tagger = open_driver("time_tagger")
    tagger.set_threshold(2, -0.25)
    tagger.set_enabled(2, True)
    assert tagger.threshold(2) == pytest.approx(-0.25)
    assert tagger.enabled(2) is True


def test_threshold_limit(open_driver, nothing_reaches):
    tagger = open_driver("time_tagger")
    with nothing_reaches(tagger), pytest.raises(LimitError, match="threshold_v"):
        tagger.set_threshold(1, 1.9)


def test_threshold_units_are_applied_never_dropped(open_driver, maybe_sim):
    """The manual: `INPUt1:THREshold 1` equals `1000mV` and `1V`; a unit after a space counts
    too, and a unit that is no voltage is refused inline, leaving the threshold as it was."""
    tagger = open_driver("time_tagger")
    for text, volts in (("250mV", 0.25), ("-0.5 V", -0.5), ("300 mV", 0.3)):
        assert tagger.transport.query(f"INPU3:THRE {text}") == ""
        assert tagger.threshold(3) == pytest.approx(volts)
    reply = tagger.transport.query("INPU3:THRE 1 mW")
    assert reply.startswith("SCPI_ERR_") and "mW" in reply
    assert tagger.threshold(3) == pytest.approx(0.3)
    if maybe_sim:
        assert maybe_sim.state(tagger.name)["threshold_v"]["3"] == pytest.approx(0.3)


def test_each_input_integrates_over_its_own_time(open_driver, maybe_sim):
    tagger = open_driver("time_tagger")
    tagger.set_integration(0.2)
    tagger.set_integration(0.05, channel=2)
    tagger.set_integration(0.0005, channel=3)  # short counts, as the phase noise takes them
    assert tagger.integration(1) == pytest.approx(0.2)
    assert tagger.integration(2) == pytest.approx(0.05)
    assert tagger.integration(3) == pytest.approx(0.0005)
    if maybe_sim:
        state = maybe_sim.state(tagger.name)
        assert state["integration_ms"] == {"1": 200.0, "2": 50.0, "3": 0.5, "4": 200.0}
        assert set(state["counter_mode"].values()) == {"CYCL"}


def test_counts_on_enabled_inputs_only(open_driver, maybe_sim):
    tagger = open_driver("time_tagger", "M")
    tagger.set_enabled(1, True)
    tagger.set_enabled(4, False)
    tagger.set_integration(1.0)
    assert tagger.count(4) == 0  # a disabled input counts nothing
    together = tagger.counts([1, 4])
    assert together[4] == 0 and together[1] >= 0
    if maybe_sim:  # a second of the detector's dark counts (tens to hundreds per second)
        assert sum(tagger.count(1) for _ in range(5)) > 0


def test_a_bad_command_is_answered_inline_and_the_next_one_works(open_driver, maybe_sim):
    """REQ/REP: every request gets exactly one reply, an error too (else the socket would be
    stuck); the error names the header."""
    tagger = open_driver("time_tagger")
    reply = tagger.transport.query("INPU1:BOGUS?")
    assert reply.startswith("SCPI_ERR_-113") and "INPU1:BOGUS?" in reply
    with pytest.raises(InstrumentReportedError, match=r"INPU9:ENAB ON.*suffix out of range"):
        tagger._set("INPU9:ENAB ON")  # set_enabled refuses input 9 before sending
    assert tagger.identity().startswith("IDQ")


def test_an_oversized_request_gets_an_error_not_silence(open_driver):
    tagger = open_driver("time_tagger")
    reply = tagger.transport.query("INPU1:ENAB " + "O" * 5000)
    assert reply.startswith("SCPI_ERR_-223") and "Too much data" in reply
    assert tagger.enabled(1) in (True, False)


def test_a_multipart_request_gets_an_error(open_driver):
    tagger = open_driver("time_tagger")
    endpoint, _ = split_zmq_resource(tagger.resource)
    sock = zmq.Context.instance().socket(zmq.REQ)
    try:
        sock.rcvtimeo = sock.sndtimeo = 2000
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart([b"*IDN?", b"*IDN?"])
        assert sock.recv().startswith(b"SCPI_ERR_-223")
    finally:
        sock.close(linger=0)


def dlt_socket(tagger) -> zmq.Socket:
    """A plain REQ socket to the tagger's DLT, as IDQ's examples make one."""
    _, endpoint = split_zmq_resource(tagger.resource)
    assert endpoint is not None
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.rcvtimeo = sock.sndtimeo = 2000
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def dlt_exec(sock: zmq.Socket, command: str):
    sock.send_string(command)
    return json.loads(sock.recv().decode())


def test_the_dlt_answers_errors_in_the_manuals_form(open_driver):
    tagger = open_driver("time_tagger")
    sock = dlt_socket(tagger)
    try:
        assert dlt_exec(sock, "list --xyz") == {
            "error": {"description": "unrecognised option '--xyz'"}
        }
        answer = dlt_exec(sock, "status --id nobody")
        assert set(answer) == {"error"} and "nobody" in answer["error"]["description"]
        answer = dlt_exec(sock, "start-stream --address 127.0.0.1 --channel 9 --stream-port 1")
        assert "channel 9" in answer["error"]["description"]
        assert dlt_exec(sock, "list") == []  # nothing was opened by the refusals
    finally:
        sock.close(linger=0)


def test_the_dlt_answers_every_request_once_even_oversized_or_multipart(open_driver):
    tagger = open_driver("time_tagger")
    sock = dlt_socket(tagger)
    try:
        sock.send_multipart([b"list", b"list"])
        assert "one frame" in json.loads(sock.recv())["error"]["description"]
        sock.send(b"list " + b"x" * 5000)
        assert "4096 bytes" in json.loads(sock.recv())["error"]["description"]
        assert dlt_exec(sock, "list") == []
    finally:
        sock.close(linger=0)


def test_dlt_status_counts_a_recording_and_stop_closes_it(open_driver, maybe_sim):
    """IDQ's examples' flow with plain sockets: start-stream, RAW1:SEND ON, a recording, then
    status (acquisitions_count, timestamps_count) and stop; the stream carries exactly the
    counted pairs (timestamp, reference index), then an empty message."""
    tagger = open_driver("time_tagger", "M")
    tagger.set_enabled(1, True)
    sock = dlt_socket(tagger)
    port = free_local_port()
    stream = zmq.Context.instance().socket(zmq.PAIR)
    stream.setsockopt(zmq.LINGER, 0)
    stream.rcvtimeo = 3000
    stream.connect(f"tcp://127.0.0.1:{port}")
    if maybe_sim:
        maybe_sim.scale_dark_counts("M", 100.0)
    try:
        answer = dlt_exec(
            sock,
            f"start-stream --address 127.0.0.1 --channel 1 --stream-port {port} --with-ref-index",
        )
        ident = answer["id"]
        assert dlt_exec(sock, "list") == [ident]
        assert dlt_exec(sock, f"status --id {ident}")["acquisitions_count"] == 0
        assert tagger.transport.query("RAW1:SEND ON;:REC:ENAB ON;NUM 1;DUR 0.5 s;PLAY") == ""
        while tagger.transport.query("REC:STAG?") == "PLAYING":
            time.sleep(0.01)
        status = dlt_exec(sock, f"status --id {ident}")
        assert status["acquisitions_count"] == 1 and status["errors"] == []
        assert status["inactivity"] >= 0.0
        closed = dlt_exec(sock, f"stop --id {ident}")["status"]
        assert closed["timestamps_count"] == status["timestamps_count"] > 0
        received = b""
        while message := stream.recv():
            received += message
        pairs = np.frombuffer(received, dtype="<u8").reshape(-1, 2)
        assert len(pairs) == closed["timestamps_count"]
        assert np.all(pairs[:, 1] == 0)  # no sync in an idle lab: the start is the reference
        assert np.all(pairs[:, 0] < 0.5e12)
        assert dlt_exec(sock, "list") == []
        if maybe_sim:
            assert maybe_sim.state(tagger.name)["sent_per_input"] == {"1": len(pairs)}
    finally:
        tagger.transport.query("RAW1:SEND OFF")
        if maybe_sim:
            maybe_sim.scale_dark_counts("M", 1.0)
        stream.close(linger=0)
        sock.close(linger=0)


def test_dlt_start_save_writes_the_pairs_under_the_labs_state_folder(open_driver, lab, sim_process):
    """start-save with a relative path (section 10: the DLT's own folder) and the text
    format of IDQ's examples (section 6.3.4's `<timestamp>;<index>`); a path that leaves the
    folder is refused in the manual's error form."""
    if sim_process is None:
        pytest.skip("the file lands on the DLT's host: only the simulated one is at hand")
    tagger = open_driver("time_tagger", "M")
    sock = dlt_socket(tagger)
    try:
        refused = dlt_exec(
            sock, "start-save --address 127.0.0.1 --channel 1 --filename ../../escape.bin"
        )
        assert "only under its folder" in refused["error"]["description"]
        answer = dlt_exec(
            sock,
            'start-save --address 127.0.0.1 --channel 1 --filename "run 1/c1.txt" '
            "--format ascii --with-ref-index",
        )
        tagger.set_enabled(1, True)
        assert tagger.transport.query("RAW1:SEND ON;:REC:ENAB ON;NUM 1;DUR 2 s;PLAY") == ""
        while tagger.transport.query("REC:STAG?") == "PLAYING":
            time.sleep(0.01)
        closed = dlt_exec(sock, f"stop --id {answer['id']}")["status"]
    finally:
        tagger.transport.query("RAW1:SEND OFF")
        sock.close(linger=0)
    saved = state_dir_of(lab, sim_process) / tagger.name / "dlt" / "run 1" / "c1.txt"
    lines = saved.read_text().splitlines()
    assert len(lines) == closed["timestamps_count"] > 0
    assert all(line.endswith(";0") and int(line.split(";")[0]) < 2e12 for line in lines)


def test_a_refused_acquisition_raises_naming_the_dlt(open_driver):
    tagger = open_driver("time_tagger")
    sock = dlt_socket(tagger)
    try:  # the stream port the driver will choose cannot be taken twice: take input 1's id
        dlt_exec(sock, "start-save --address 127.0.0.1 --channel 1 --filename x.bin --id busy")
        tagger._open_acquisitions()  # works: a different id
        tagger._close_acquisitions()
        assert dlt_exec(sock, "list") == ["busy"]
        dlt_exec(sock, "stop --id busy")
        with pytest.raises(InstrumentReportedError, match=r"DLT refused 'start-stream.*address"):
            tagger.resource = tagger.resource.replace("tcp://127.0.0.1:", "tcp://127.0.0.9:", 1)
            tagger.acquire_tags(0.1)
        assert dlt_exec(sock, "list") == []
    finally:
        sock.close(linger=0)


def test_frozen_instrument_times_out_and_a_new_req_socket_recovers(open_driver, sim):
    tagger = open_driver("time_tagger")
    tagger.set_threshold(1, 0.1)
    before = tagger.transport.reconnects
    sim.fault(tagger.name, "freeze")
    started = time.monotonic()
    with pytest.raises(InstrumentTimeout, match="no reply"):
        tagger.threshold(1)
    assert time.monotonic() - started < tagger.timeout_s + 1.0
    # the stuck REQ socket is gone: the next request goes out on a fresh one
    assert tagger.transport.reconnects == before + 1
    sim.fault(tagger.name, "unfreeze")
    assert tagger.threshold(1) == pytest.approx(0.1)


def test_a_slow_instrument_answers_late_but_right(open_driver, sim):
    tagger = open_driver("time_tagger")
    tagger.set_threshold(4, -0.125)
    sim.fault(tagger.name, "delay", seconds=0.3)
    started = time.monotonic()
    assert tagger.threshold(4) == pytest.approx(-0.125)
    assert 0.3 <= time.monotonic() - started < tagger.timeout_s


def test_an_unplugged_instrument_times_out_and_answers_once_plugged_in(open_driver, sim):
    tagger = open_driver("time_tagger")
    tagger.set_threshold(1, 0.2)
    sim.fault(tagger.name, "unplug")
    with pytest.raises(InstrumentTimeout, match="no reply"):
        tagger.threshold(1)
    sim.fault(tagger.name, "plug")
    deadline = time.monotonic() + 5.0
    while True:  # the port listens again a moment after the plug
        try:
            assert tagger.threshold(1) == pytest.approx(0.2)
            break
        except InstrumentTimeout:
            assert time.monotonic() < deadline, "the plugged-in instrument never answered"


def test_time_tags_arrive_through_the_dlt(open_driver, maybe_sim):
    tagger = open_driver("time_tagger")
    for channel in (1, 2):
        tagger.set_enabled(channel, True)
    seconds = 2.0  # of the lab's virtual time: an idle lab's recording ends at once
    tags = tagger.acquire_tags(seconds)
    assert np.all(np.diff(tags["time_ps"]) >= 0)  # no sync: every time is known, in order
    assert np.array_equal(tags["time_ps"], tags["delay_ps"])
    assert set(np.unique(tags["channel"])) <= {1, 2}
    assert tags.size == 0 or tags["time_ps"].max() < seconds * 1e12
    if maybe_sim:
        state = maybe_sim.state(tagger.name)
        sent = {int(k): v for k, v in state["sent_per_input"].items()}
        assert sent == {ch: int(np.sum(tags["channel"] == ch)) for ch in (1, 2, 3, 4)}
        assert state["armed"] is False
        assert state["raw_send"] == {"1": False, "2": False, "3": False, "4": False}


def test_time_tags_of_a_long_dark_recording(open_driver, maybe_sim):
    """Many timestamps come in several bounded stream messages and arrive whole."""
    tagger = open_driver("time_tagger", "M")
    for channel in (1, 2):
        tagger.set_enabled(channel, True)
    if maybe_sim:
        maybe_sim.scale_dark_counts("M", 1e4)
    try:
        tags = tagger.acquire_tags(1.0)
    finally:
        if maybe_sim:
            maybe_sim.scale_dark_counts("M", 1.0)
    if maybe_sim:
        per_input = maybe_sim.state(tagger.name)["sent_per_input"]
        assert max(per_input.values()) > 65_536  # more than one message of the stream
        assert tags.size == sum(per_input.values())
        assert np.all(np.diff(tags["time_ps"]) >= 0)


def test_a_stopped_open_ended_recording_returns_its_tags(open_driver, maybe_sim):
    tagger = open_driver("time_tagger", "M")
    for channel in (1, 2, 3, 4):
        tagger.set_enabled(channel, channel == 1)
    tagger.start_tags()
    if maybe_sim:
        assert maybe_sim.state(tagger.name)["armed"] is True
        assert maybe_sim.state(tagger.name)["raw_send"]["1"] is True
    time.sleep(0.2)
    tags = tagger.stop_tags()
    assert set(np.unique(tags["channel"])) <= {1}
    if maybe_sim:
        state = maybe_sim.state(tagger.name)
        assert state["armed"] is False and state["raw_send"]["1"] is False
        assert state["sent_per_input"]["1"] == tags.size
    sock = dlt_socket(tagger)
    try:
        assert dlt_exec(sock, "list") == []  # every acquisition closed
    finally:
        sock.close(linger=0)


def test_a_stream_that_stops_is_a_timeout_naming_the_instrument(open_driver, sim):
    """The DLT counted timestamps its stream never delivers (here: the driver's end of the
    stream was swapped for a socket connected nowhere): the read ends after the timeout,
    naming the instrument and the stream."""
    tagger = open_driver("time_tagger", "M")
    tagger.set_enabled(1, True)
    sim.scale_dark_counts("M", 100.0)
    tagger.start_tags()
    try:
        _, stream = tagger._acquisitions[1]
        stream.close()  # the stream's end is gone: nothing will arrive on a new one
        stream._sock = None
        replacement = zmq.Context.instance().socket(zmq.PAIR)
        replacement.setsockopt(zmq.LINGER, 0)
        replacement.connect("tcp://127.0.0.1:1")  # nowhere
        stream._sock = replacement
        tagger.timeout_s = stream.timeout_s = 0.5
        time.sleep(0.3)  # hundreds of dark counts
        started = time.monotonic()
        with pytest.raises(InstrumentTimeout, match=r"stream of input 1 .* sent nothing for 0.5 s"):
            tagger.stop_tags()
        assert time.monotonic() - started < 5.0
    finally:
        sim.scale_dark_counts("M", 1.0)
        tagger._close_acquisitions()
    assert sim.state(tagger.name)["raw_send"]["1"] is False


FRAMES = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.binary(min_size=4000, max_size=6000),
        st.text(max_size=60).map(str.encode),
        st.sampled_from([b"INPU1:COUN?", b"RAW2:SEND ON;:REC:PLAY", b"INPU1:THRE 5 kV", b";;:"]),
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=FRAMES)
def test_any_request_gets_exactly_one_reply(open_driver, frames):
    """Whatever a REQ sends (garbage, oversized, several frames), one reply comes back and
    the instrument answers the next request: REQ/REP never deadlocks."""
    tagger = open_driver("time_tagger")
    endpoint, _ = split_zmq_resource(tagger.resource)
    sock = zmq.Context.instance().socket(zmq.REQ)
    try:
        sock.rcvtimeo = sock.sndtimeo = 3000
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(frames)
        assert len(sock.recv_multipart()) == 1
        sock.send(b"*IDN?")
        assert sock.recv().startswith(b"IDQ,")
        sock.send(b"*RST")
        assert sock.recv() == b""
    finally:
        sock.close(linger=0)


def simulated_counter(switch_at: list[float]):
    """A simulated Time Controller (no server) whose light moves from input 1 to input 2 at
    monotonic time switch_at[0] (as the reference light's fringe does when the piezo moves);
    its send(text)."""
    from sim_backends.framing import Message
    from sim_backends.instruments.tagger import SimTimeController

    tagger = SimTimeController("M.tagger", np.random.default_rng(3), 0.0, 1)

    def rates(seconds, started):
        return {1: 1e6, 2: 0.0} if started < switch_at[0] else {1: 0.0, 2: 1e6}

    tagger.light_rates = rates

    def send(text):
        return tagger.execute(Message(text, None))

    assert send("INPU1:ENAB ON;:INPU2:ENAB ON") == ""
    return send


def test_a_cycle_counter_keeps_its_period_clock_through_a_restart():
    """CYCLe: the period clock runs freely (least convenient: the manual's counter chapter was
    not at hand), so one period after a restart the last completed period began before it and
    reports the old light; two periods after, a period wholly after it."""
    switch = [float("inf")]
    send = simulated_counter(switch)
    assert send("INPU1:COUN:MODE CYCL;INTE 20;RESE;:INPU2:COUN:MODE CYCL;INTE 20;RESE") == ""
    time.sleep(0.05)
    switch[0] = time.monotonic()  # the piezo moves; the counters restart with it
    assert send("INPU1:COUN:RESE;:INPU2:COUN:RESE") == ""
    assert send("INPU1:COUN?;:INPU2:COUN?") == "0\n0"  # the last period ended before
    time.sleep(0.021)
    stale = [int(x) for x in send("INPU1:COUN?;:INPU2:COUN?").splitlines()]
    assert stale[0] > 5000 and stale[1] == 0  # a period that began before the move
    time.sleep(0.021)
    fresh = [int(x) for x in send("INPU1:COUN?;:INPU2:COUN?").splitlines()]
    assert fresh[0] == 0 and fresh[1] > 5000
    again = [int(x) for x in send("INPU1:COUN?;:INPU2:COUN?").splitlines()]
    assert again == fresh or time.monotonic() - switch[0] > 0.06  # the same period


def test_an_accumulating_counter_counts_from_its_reset():
    switch = [float("inf")]
    send = simulated_counter(switch)
    assert send("INPU1:COUN:MODE ACCU;INTE 1;:INPU2:COUN:MODE ACCU;INTE 1") == ""
    time.sleep(0.02)
    switch[0] = time.monotonic()
    assert send("INPU1:COUN:RESE;:INPU2:COUN:RESE") == ""
    time.sleep(0.01)
    counts = [int(x) for x in send("INPU1:COUN?;:INPU2:COUN?").splitlines()]
    assert counts[0] == 0 and 8000 < counts[1] < 40000  # 1e6 /s over 10 ms and the reads


def test_the_driver_counts_fresh_light_against_the_simulated_unit(open_driver, sim, lab):
    """fresh_counts against the simulated lab: ACCUmulate mode on the inputs it counts."""
    tagger = open_driver("time_tagger", "M")
    counts = tagger.fresh_counts([1, 2], 0.01)
    assert set(counts) == {1, 2} and all(c >= 0 for c in counts.values())
    state = sim.state(tagger.name)
    assert state["counter_mode"]["1"] == "ACCU" and state["counter_mode"]["2"] == "ACCU"
