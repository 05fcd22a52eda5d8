"""Wire transcripts of the ID Quantique Time Controller driver: each request message and the
reply it parses, no simulator. Over ZeroMQ a message is a frame: no terminations, and a set
is answered with an empty frame (hil_tests/transcript.py with WRITE/READ_TERMINATION "").

Spellings: ID Quantique, "Time Controller Series User Manual", section 9 (SCPI command
reference), and IDQ's Python examples (`INPU<n>:COUN:MODE CYCL;INTE <ms>;RESE`,
`INPU<n>:COUN?` read in one compound message, `RAW<n>:SEND ON`, `REC:DUR <ps>`, `REC:PLAY`,
`REC:STAG?`, errors inline as `SCPI_ERR_...`). The time tags: the host's DataLinkTarget, the
manual's section 10 (text commands, JSON answers, `{"error":{"description":...}}` on failure;
`start-stream`, `status`, `stop` answering `{"status": {...}}`), its PAIR stream carrying
section 6.3.4's little-endian uint64 (timestamp, reference index) pairs; the DLT's commands on
a transcript of their own, the stream as a list of messages.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.tagger_idq import OPEN_ENDED_RECORD_PS, UNKNOWN_TIME_PS, TimeController
from hil_tests.transcript import TranscriptTransport, expected_protocol
from qnode.errors import (
    InstrumentReplyError,
    InstrumentReportedError,
    InstrumentTimeout,
    LimitError,
)
from qnode.records import TAG_DTYPE

RAW_ON = (b"RAW1:SEND ON;:RAW2:SEND ON;:RAW3:SEND ON;:RAW4:SEND ON", b"")
RAW_OFF = (b"RAW1:SEND OFF;:RAW2:SEND OFF;:RAW3:SEND OFF;:RAW4:SEND OFF", b"")


def prepare(duration_ps: int) -> tuple[bytes, bytes]:
    """The recording's settings in one message, as IDQ's examples send them."""
    return (b"REC:TRIG:ARM:MODE MANU;:REC:ENAB ON;:REC:NUM 1;:REC:DUR %d" % duration_ps, b"")


def tags(*rows: tuple[int, int, int]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=TAG_DTYPE)
    for k, (time_ps, delay_ps, channel) in enumerate(rows):
        out[k] = (time_ps, delay_ps, channel)
    return out


def pairs(*rows: tuple[int, int]) -> bytes:
    """Section 6.3.4's binary data with reference indexes: uint64 timestamp, uint64 index."""
    return np.array(rows, dtype="<u8").reshape(-1, 2).tobytes()


class ListStream:
    """A DLT stream as the messages it delivers; past the end, a stream that stopped."""

    def __init__(self, name: str, messages: list[bytes]) -> None:
        self.name = name
        self.messages = list(messages)
        self.closed = False

    def receive(self, what: str) -> bytes:
        if not self.messages:
            raise InstrumentTimeout("transcript", f"{what} sent nothing")
        return self.messages.pop(0)

    def close(self) -> None:
        self.closed = True


PORTS = {1: 4242, 2: 4243, 3: 4244, 4: 4245}
RESOURCE = "tcp://10.0.0.6:5555,dlt=tcp://127.0.0.1:6060"
"""The lab file's form: the instrument's SCPI endpoint, then its host's DLT."""


def with_dlt(tc: TimeController, steps, streams: dict[int, list[bytes]]) -> TranscriptTransport:
    """The host's DLT on a transcript of its own (text out, JSON back), each input's stream
    a list of messages; the driver picks the ports of PORTS in turn."""
    tc.resource = RESOURCE
    dlt = TranscriptTransport("DLT", steps, "", "")
    tc._dlt = dlt  # type: ignore[assignment]
    ports = iter(PORTS.values())
    opened = {port: ListStream(f"input {ch}", streams.get(ch, [])) for ch, port in PORTS.items()}
    tc._stream_port = lambda: next(ports)  # type: ignore[method-assign]
    tc._open_stream = lambda port: opened[port]  # type: ignore[method-assign,assignment]
    return dlt


ARMED_THEN_STOPPED = [
    RAW_ON,
    prepare(OPEN_ENDED_RECORD_PS),
    (b"REC:PLAY", b""),
    (b"REC:STOP", b""),
    RAW_OFF,
]


def start_stream(ch: int) -> tuple[bytes, bytes]:
    command = (
        f"start-stream --address 10.0.0.6 --channel {ch} --stream-port {PORTS[ch]} --with-ref-index"
    )
    return command.encode(), b'{"id":"10.0.0.6:%d"}' % (5555 + ch)


def status(ch: int, acquisitions: int, timestamps: int, stop: bool = False) -> tuple[bytes, bytes]:
    body = b'{"acquisitions_count":%d,"errors":[],"inactivity":0.25,"timestamps_count":%d}' % (
        acquisitions,
        timestamps,
    )
    if stop:
        return b"stop --id 10.0.0.6:%d" % (5555 + ch), b'{"status":' + body + b"}"
    return b"status --id 10.0.0.6:%d" % (5555 + ch), body


def ended(counts: dict[int, int]) -> list[tuple[bytes, bytes]]:
    """Per input: the DLT has the end of the acquisition, then stop with its count."""
    steps = []
    for ch in (1, 2, 3, 4):
        steps += [status(ch, 1, counts.get(ch, 0)), status(ch, 1, counts.get(ch, 0), stop=True)]
    return steps


def test_identity():
    with expected_protocol(TimeController, [(b"*IDN?", b"IDQ,ID1000,1234,7.2.1")]) as tc:
        assert tc.identity() == "IDQ ID1000 SN 1234 FW 7.2.1"


def test_enable_and_read_back():
    steps = [(b"INPU1:ENAB ON", b""), (b"INPU3:ENAB OFF", b""), (b"INPU3:ENAB?", b"OFF")]
    with expected_protocol(TimeController, steps) as tc:
        tc.set_enabled(1, True)
        tc.set_enabled(3, False)
        assert tc.enabled(3) is False


def test_threshold_with_its_unit_both_ways():
    steps = [
        (b"INPU2:THRE -0.250V", b""),
        (b"INPU2:THRE?", b"-0.250V"),
        (b"INPU2:THRE?", b"-0.25"),  # a firmware that answers without the unit
    ]
    with expected_protocol(TimeController, steps) as tc:
        tc.set_threshold(2, -0.25)
        assert tc.threshold(2) == pytest.approx(-0.25)
        assert tc.threshold(2) == pytest.approx(-0.25)


def test_threshold_beyond_the_lab_limit_sends_nothing():
    limits = {"threshold_v": (-1.0, 1.0), "acquisition_s": (1e-6, 10.0)}
    with (
        expected_protocol(TimeController, [], limits=limits) as tc,
        pytest.raises(LimitError, match="threshold_v"),
    ):
        tc.set_threshold(1, 1.9)
        with pytest.raises(ValueError, match="input 5 does not exist"):
            tc.set_enabled(5, True)


def test_integration_restarts_every_input_together_in_one_message():
    every = b";:".join(b"INPU%d:COUN:MODE CYCL;INTE 250;RESE" % ch for ch in (1, 2, 3, 4))
    steps = [
        (every, b""),
        (b"INPU1:COUN:INTE?", b"250"),  # the connection's first: read back
        (b"INPU2:COUN:MODE CYCL;INTE 0.5;RESE", b""),
        (b"INPU2:COUN:INTE?", b"0.5"),
    ]
    with expected_protocol(TimeController, steps) as tc:
        tc.set_integration(0.25)
        tc.set_integration(0.0005, channel=2)
        assert tc.integration(2) == pytest.approx(0.0005)


def test_counts_one_input_and_several_in_one_message():
    steps = [(b"INPU1:COUN?", b"1234"), (b"INPU1:COUN?;:INPU2:COUN?", b"1200\n34")]
    with expected_protocol(TimeController, steps) as tc:
        assert tc.count(1) == 1234
        assert tc.counts([1, 2]) == {1: 1200, 2: 34}


def test_counts_with_a_line_missing_is_refused():
    with (
        expected_protocol(TimeController, [(b"INPU1:COUN?;:INPU2:COUN?", b"1200")]) as tc,
        pytest.raises(InstrumentReplyError, match="1 lines for 2 inputs"),
    ):
        tc.counts([1, 2])


def test_inline_error_names_the_command_and_the_instrument_text():
    steps = [(b"INPU1:COUN?", b'SCPI_ERR_-113: Undefined header: "INPU1:COUN?"')]
    with (
        expected_protocol(TimeController, steps) as tc,
        pytest.raises(InstrumentReportedError, match=r"INPU1:COUN\?.*SCPI_ERR_-113"),
    ):
        tc.count(1)


@pytest.mark.parametrize("reply", [b"", b"Value set to 1", b"ON"])
def test_a_set_answered_with_text_is_accepted(reply):
    """IDQ's examples never check a set's reply; a TC1000 driver written against a real unit
    reads 'Value set to <n>' (assumed variants: empty, the value)."""
    with expected_protocol(TimeController, [(b"INPU1:ENAB ON", reply)]) as tc:
        tc.set_enabled(1, True)


def test_a_set_answered_with_an_inline_error_is_the_instruments_error():
    steps = [(b"INPU1:ENAB ON", b"SCPI_ERR_-224: Illegal parameter value")]
    with (
        expected_protocol(TimeController, steps) as tc,
        pytest.raises(InstrumentReportedError, match=r"INPU1:ENAB ON.*SCPI_ERR_-224"),
    ):
        tc.set_enabled(1, True)


def test_fresh_counts_reset_the_inputs_together_wait_and_read_in_one_message():
    """ACCUmulate once (`INTE 1`: the update period, assumed), then per count: every input
    reset in one message, a wait of at least the time, one compound read."""
    steps = [
        (b"INPU1:COUN:MODE ACCU;INTE 1;:INPU2:COUN:MODE ACCU;INTE 1", b""),
        (b"INPU1:COUN:RESE;:INPU2:COUN:RESE", b"Counter value set to 0"),
        (b"INPU1:COUN?;:INPU2:COUN?", b"1500\n480"),
        (b"INPU1:COUN:RESE;:INPU2:COUN:RESE", b""),
        (b"INPU1:COUN?;:INPU2:COUN?", b"700\n1300"),
    ]
    with expected_protocol(TimeController, steps) as tc:
        started = time.monotonic()
        assert tc.fresh_counts([1, 2], 0.01) == {1: 1500, 2: 480}
        assert time.monotonic() - started >= 0.01
        assert tc.fresh_counts([1, 2], 0.01) == {1: 700, 2: 1300}  # the mode is kept


def test_fresh_counts_after_a_cycle_integration_set_the_mode_again():
    every = b";:".join(b"INPU%d:COUN:MODE CYCL;INTE 1;RESE" % ch for ch in (1, 2, 3, 4))
    accumulate = (b"INPU1:COUN:MODE ACCU;INTE 1", b"")
    steps = [
        accumulate,
        (b"INPU1:COUN:RESE", b""),
        (b"INPU1:COUN?", b"5"),
        (every, b""),
        (b"INPU1:COUN:INTE?", b"1ms"),  # the reply may carry its unit
        accumulate,
        (b"INPU1:COUN:RESE", b""),
        (b"INPU1:COUN?", b"6"),
    ]
    with expected_protocol(TimeController, steps) as tc:
        assert tc.fresh_counts([1], 0.001) == {1: 5}
        tc.set_integration(0.001)
        assert tc.fresh_counts([1], 0.001) == {1: 6}


def test_acquire_tags_records_then_reads_each_inputs_dlt_stream():
    """Input 1's pairs come in two messages; input 2's one tag came after sync 3. Time order
    is reference index then timestamp; time_ps is known only before the first sync."""
    steps = [
        RAW_ON,
        prepare(500_000_000_000),
        (b"REC:PLAY", b""),
        (b"REC:STAG?", b"PLAYING"),
        (b"REC:STAG?", b"STOPPED"),
        RAW_OFF,
    ]
    streams = {1: [pairs((10, 0), (40, 0)), pairs((7, 2))], 2: [pairs((25, 3))]}
    dlt_steps = [start_stream(ch) for ch in (1, 2, 3, 4)]
    dlt_steps += [status(1, 0, 0), *ended({1: 3, 2: 1})]  # input 1's end came a poll late
    with expected_protocol(TimeController, steps) as tc:
        dlt = with_dlt(tc, dlt_steps, streams)
        got = tc.acquire_tags(0.5)
        dlt.assert_done()
    expected = tags((10, 10, 1), (40, 40, 1), (UNKNOWN_TIME_PS, 7, 1), (UNKNOWN_TIME_PS, 25, 2))
    assert np.array_equal(got, expected)


def test_start_and_stop_tags():
    dlt_steps = [start_stream(ch) for ch in (1, 2, 3, 4)] + ended({2: 1})
    with expected_protocol(TimeController, ARMED_THEN_STOPPED) as tc:
        dlt = with_dlt(tc, dlt_steps, {2: [pairs((5, 0))]})
        tc.start_tags()
        got = tc.stop_tags()
        dlt.assert_done()
    assert np.array_equal(got, tags((5, 5, 2)))


def test_a_dlt_error_answer_raises_with_its_description_and_closes_what_was_opened():
    """The manual's error form; the acquisition already open is stopped again."""
    refused = b'{"error":{"description":"unrecognised option \'--with-ref-index\'"}}'
    dlt_steps = [start_stream(1), (start_stream(2)[0], refused), status(1, 0, 0, stop=True)]
    with expected_protocol(TimeController, []) as tc:
        dlt = with_dlt(tc, dlt_steps, {})
        with pytest.raises(InstrumentReportedError, match=r"DLT refused 'start-stream.*--with-ref"):
            tc.acquire_tags(0.5)
        dlt.assert_done()


def test_a_message_of_partial_pairs_is_refused():
    steps = ARMED_THEN_STOPPED
    dlt_steps = [start_stream(ch) for ch in (1, 2, 3, 4)] + ended({1: 1})[:2]
    with expected_protocol(TimeController, steps) as tc:
        with_dlt(
            tc, dlt_steps + [status(ch, 0, 0, stop=True) for ch in (2, 3, 4)], {1: [b"\0" * 7]}
        )
        tc.start_tags()
        with pytest.raises(InstrumentReplyError, match="not whole 16-byte"):
            tc.stop_tags()


def test_a_stream_that_ends_early_is_refused():
    """The DLT counted 2 timestamps; the stream ends (an empty message) after 1."""
    steps = ARMED_THEN_STOPPED
    dlt_steps = [start_stream(ch) for ch in (1, 2, 3, 4)] + ended({1: 2})[:2]
    with expected_protocol(TimeController, steps) as tc:
        with_dlt(
            tc,
            dlt_steps + [status(ch, 0, 0, stop=True) for ch in (2, 3, 4)],
            {1: [pairs((3, 0)), b""]},
        )
        tc.start_tags()
        with pytest.raises(InstrumentReplyError, match="ended after 1 of 2 timestamps"):
            tc.stop_tags()


def test_a_stream_that_stops_is_a_timeout_naming_the_stream():
    steps = ARMED_THEN_STOPPED
    dlt_steps = [start_stream(ch) for ch in (1, 2, 3, 4)] + ended({1: 2})[:2]
    with expected_protocol(TimeController, steps) as tc:
        with_dlt(
            tc, dlt_steps + [status(ch, 0, 0, stop=True) for ch in (2, 3, 4)], {1: [pairs((3, 0))]}
        )
        tc.start_tags()
        with pytest.raises(InstrumentTimeout, match="stream of input 1"):
            tc.stop_tags()


def test_dlt_errors_of_an_acquisition_raise():
    errors = b'{"status":{"acquisitions_count":1,"errors":[{"description":"timestamps lost"}],'
    errors += b'"inactivity":0.1,"timestamps_count":0}}'
    steps = ARMED_THEN_STOPPED
    dlt_steps = [start_stream(ch) for ch in (1, 2, 3, 4)]
    dlt_steps += [status(1, 1, 0), (status(1, 1, 0, stop=True)[0], errors)]
    dlt_steps += [status(ch, 0, 0, stop=True) for ch in (2, 3, 4)]
    with expected_protocol(TimeController, steps) as tc:
        with_dlt(tc, dlt_steps, {})
        tc.start_tags()
        with pytest.raises(InstrumentReportedError, match="timestamps lost"):
            tc.stop_tags()


def test_no_dlt_in_the_resource_is_a_clear_error():
    with expected_protocol(TimeController, []) as tc:
        tc.resource = "tcp://10.0.0.6:5555"
        with pytest.raises(Exception, match=r"names no DataLinkTarget \(,dlt=tcp://"):
            tc.start_tags()


def test_safe_state_stops_the_recording_and_the_time_stamps():
    with expected_protocol(TimeController, [(b"REC:STOP", b""), RAW_OFF]) as tc:
        tc.safe_state()


def test_health_lists_the_enabled_inputs():
    steps = [
        (b"INPU1:ENAB?", b"ON"),
        (b"INPU2:ENAB?", b"ON"),
        (b"INPU3:ENAB?", b"OFF"),
        (b"INPU4:ENAB?", b"OFF"),
        (b"*IDN?", b"IDQ,ID900,77,6.1"),
    ]
    with expected_protocol(TimeController, steps) as tc:
        health = tc.health()
    assert health.state == "inputs enabled: [1, 2]"
    assert health.identity == "IDQ ID900 SN 77 FW 6.1"
    assert health.errors == []


def test_a_count_waits_for_a_whole_period_after_a_restart():
    """The unit's period clock may run on through `RESE`: the first read waits two periods,
    so that the period it reports began after the set."""
    every = b";:".join(b"INPU%d:COUN:MODE CYCL;INTE 200;RESE" % ch for ch in (1, 2, 3, 4))
    steps = [
        (every, b""),
        (b"INPU1:COUN:INTE?", b"200"),
        (b"INPU1:COUN?", b"17"),
        (b"INPU1:COUN?", b"18"),
    ]
    with expected_protocol(TimeController, steps) as tc:
        tc.set_integration(0.2)
        started = time.monotonic()
        assert tc.count(1) == 17
        assert time.monotonic() - started >= 0.39
        started = time.monotonic()
        assert tc.count(1) == 18  # later reads go out at once
        assert time.monotonic() - started < 0.1


def test_a_sub_millisecond_integration_is_sent_in_ms():
    """The unit (assumed) takes the bare number in ms; the read-back would catch it if not."""
    every = b";:".join(b"INPU%d:COUN:MODE CYCL;INTE 0.5;RESE" % ch for ch in (1, 2, 3, 4))
    steps = [(every, b""), (b"INPU1:COUN:INTE?", b"0.5")]
    with expected_protocol(TimeController, steps) as tc:
        tc.set_integration(0.0005)


def test_an_integration_read_back_in_another_unit_is_an_error():
    """A unit that took `INTE 10` as 10 ns (IDQ's examples disagree on the unit): refused
    with both numbers, never a count misread by 10^6."""
    every = b";:".join(b"INPU%d:COUN:MODE CYCL;INTE 10;RESE" % ch for ch in (1, 2, 3, 4))
    steps = [(every, b""), (b"INPU1:COUN:INTE?", b"1e-05")]
    with (
        expected_protocol(TimeController, steps) as tc,
        pytest.raises(InstrumentReplyError, match=r"reads back 1e-05 ms after 10 ms was sent"),
    ):
        tc.set_integration(0.01)
