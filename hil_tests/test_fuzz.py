"""Every parser against arbitrary input (hypothesis): no crash, no hang, and a clear error of
the parser's own kind for whatever is not valid. Pure code: no lab needed."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.labconfig import parse_lab
from controller.link.messages import FROM_MIDPOINT
from controller.link.vocabulary import OUTCOMES
from controller.messaging.wire import MessageError, pack, unpack
from controller.midpoint.herald_logic import classify
from drivers.awg_5014 import DAC_MID, decode_int_waveform
from drivers.laser_cobolt import check_query_reply, check_set_reply
from drivers.scpi import parse_bool, parse_float, parse_identity, parse_int, parse_records
from drivers.stabiliser_mdt import bracketed_value
from qnode.errors import (
    InstrumentReplyError,
    InstrumentReportedError,
    LabConfigError,
    ProgramError,
)
from qnode.records import CLICK_DTYPE, TAG_DTYPE
from sequences.program import assemble, decode, decode_events
from sim_backends.device import CommandError
from sim_backends.framing import Framer, FramingError, Message
from sim_backends.instruments.microwave import SimMicrowaveSource
from sim_backends.physics import MicrowaveDrive

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


@FAST
@given(st.binary(max_size=300))
def test_wire_decoder_takes_any_bytes(data):
    try:
        msg = unpack(data)
    except MessageError:
        return
    assert isinstance(msg, dict) and isinstance(msg["type"], str)


GOOD_HERALD = {"session": "s", "seq": 1, "shot": 0, "sync": 1, "attempt": 1, "outcome": "fail"}


@FAST
@given(
    st.dictionaries(
        st.sampled_from([*GOOD_HERALD, "reason", "x"]),
        st.one_of(
            st.integers(-(2**63), 2**63 - 1),
            st.booleans(),
            st.text(max_size=5),
            st.sampled_from(OUTCOMES),
            st.none(),
            st.floats(allow_nan=True),
        ),
    )
)
def test_message_fields_are_checked_by_type(changes):
    """A herald with any of its fields changed (or added, or None) is the schema's to refuse
    with a reason naming it; whatever passes has the declared types and choices."""
    try:
        msg = unpack(pack("herald", 1, **{**GOOD_HERALD, **changes}), FROM_MIDPOINT)
    except MessageError as e:
        assert "herald" in str(e)
        return
    assert isinstance(msg["seq"], int) and not isinstance(msg["seq"], bool)
    assert msg["outcome"] in OUTCOMES


@FAST
@given(st.binary(max_size=400))
def test_program_image_decoder_takes_any_bytes(image):
    try:
        decode(image)
    except ProgramError:
        pass


@FAST
@given(st.binary(max_size=200))
def test_event_decoder_takes_any_bytes(data):
    """Its error is a ValueError naming the block, which the driver reports as the
    instrument's bad reply."""
    try:
        events = decode_events(data)
    except ValueError as e:
        assert "event block" in str(e)
        return
    assert len(events) * 18 == len(data)


@FAST
@given(TEXT)
def test_assembler_takes_any_text(text):
    try:
        assemble(text)
    except ProgramError:
        pass


@FAST
@given(TEXT)
def test_reply_parsers_take_any_reply(reply):
    for parse in (
        lambda r: parse_float("X.mw", "FREQ?", r),
        lambda r: parse_int("X.mw", "N?", r),
        lambda r: parse_bool("X.mw", "OUTP?", r),
        lambda r: parse_identity("X.mw", r),
    ):
        try:
            parse(reply)
        except InstrumentReplyError as e:
            assert "X.mw" in str(e)


@FAST
@given(TEXT)
def test_serial_reply_checks_take_any_reply(reply):
    """The laser's OK/error replies and the piezo controller's '[value]' replies."""
    for check in (
        lambda r: check_set_reply("X.laser", "p 0.01", r),
        lambda r: check_query_reply("X.laser", "p?", r),
        lambda r: parse_float("X.piezo", "xvoltage?", bracketed_value("X.piezo", "xvoltage?", r)),
    ):
        try:
            check(reply)
        except (InstrumentReplyError, InstrumentReportedError) as e:
            assert "X." in str(e)


@FAST
@given(st.binary(max_size=200), st.sampled_from([TAG_DTYPE, CLICK_DTYPE, np.dtype("<u2")]))
def test_binary_blocks_of_any_length(block, dtype):
    """Tags, clicks and waveform words: whole records, or a clear error (never numpy's)."""
    try:
        records = parse_records("X.tagger", "DATA?", block, dtype)
    except InstrumentReplyError as e:
        assert "not whole" in str(e) and len(block) % dtype.itemsize
        return
    assert records.size * dtype.itemsize == len(block)
    if dtype == np.dtype("<u2"):
        samples, m1, m2 = decode_int_waveform(block)
        top = (0x3FFF - DAC_MID) / DAC_MID  # the 14-bit DAC's codes span [-1, 1 + 1/8191]
        assert ((samples >= -1) & (samples <= top)).all() and set(m1) | set(m2) <= {0, 1}


@FAST
@given(st.binary(max_size=300))
def test_sim_framer_takes_any_bytes(data):
    framer = Framer()
    for item in framer.feed(data):
        assert isinstance(item, (Message, FramingError))


@FAST
@given(TEXT)
def test_sim_scpi_parser_takes_any_command(text):
    device = SimMicrowaveSource("X.mw", MicrowaveDrive(), 1)
    try:
        device.execute(Message(text, None))
    except CommandError:
        pytest.fail("a command error must go to the error queue, not out")
    assert device.execute(Message("SYST:ERR?", None)) is not None  # still answering


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@FAST
@given(st.dictionaries(st.sampled_from(["lab", "nodes", "x"]), JSONISH, max_size=3))
def test_lab_loader_takes_any_structure(raw):
    try:
        parse_lab(raw, "fuzz.toml")
    except LabConfigError as e:
        assert "fuzz.toml" in str(e)


@FAST
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(0, 2),
            st.integers(0, 4),
            st.integers(-(10**6), 10**6),
        ),
        max_size=20,
    ),
    st.sampled_from(["single_click", "barrett_kok"]),
)
def test_click_classification_takes_any_clicks(rows, protocol):
    clicks = np.zeros(len(rows), dtype=CLICK_DTYPE)
    for k, row in enumerate(rows):
        clicks[k] = row
    verdicts = classify(clicks, protocol, [(60.0, 27.0)], {"psi_plus": 1, "psi_minus": 2})
    assert len(verdicts) == len({(r[0], r[1]) for r in rows})
    assert all(v.outcome in ("psi_plus", "psi_minus", "fail") for v in verdicts)
