"""The instrument side of the wire: framing, SCPI headers, and robustness to garbage."""

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim_backends.device import scpi_pattern
from sim_backends.framing import Framer, FramingError, Message


def test_block_containing_the_terminator_stays_whole():
    data = b"\n\n#\x00\n"
    framer = Framer(b"\n")
    wire = b'WLIS:WAV:DATA "w",0,3,#15' + data + b"\n*IDN?\n"
    messages = []
    for i in range(len(wire)):  # byte by byte, as a slow link delivers it
        messages += framer.feed(wire[i : i + 1])
    assert messages == [Message('WLIS:WAV:DATA "w",0,3,', data), Message("*IDN?")]


def test_hash_inside_quotes_is_not_a_block():
    assert Framer().feed(b'SOUR:WAV "a#1b"\n') == [Message('SOUR:WAV "a#1b"')]


def test_garbled_block_header_is_an_error_and_framing_resumes():
    out = Framer().feed(b"PROG:LOAD #2x9abc\n*IDN?\n")
    assert isinstance(out[0], FramingError) and out[1] == Message("*IDN?")


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_framer_never_crashes_and_never_loses_a_following_command(junk):
    framer = Framer(b"\n")
    out = framer.feed(junk.replace(b"#", b"") + b"\n*IDN?\n")
    assert out[-1] == Message("*IDN?")


@pytest.mark.parametrize(
    ("spec", "header", "groups"),
    [
        ("SOURce#:FREQuency[:CW]?", "SOUR:FREQ?", (None,)),
        ("SOURce#:FREQuency[:CW]?", ":source2:frequency:cw?", ("2",)),
        ("INPut#:COUNter?", "INP3:COUN?", ("3",)),
        ("[SOURce]:POWer[:LEVel][:IMMediate][:AMPLitude]", "POW", ()),
    ],
)
def test_scpi_headers_long_and_short(spec, header, groups):
    m = scpi_pattern(spec).fullmatch(header)
    assert m is not None
    assert tuple(g or None for g in m.groups()) == groups


@pytest.mark.parametrize("header", ["SOUR:FRE?", "SOURC:FREQ?", "INPU1:COUN?"])
def test_scpi_headers_reject_partial_words(header):
    specs = ["SOURce#:FREQuency[:CW]?", "INPut#:COUNter?"]
    assert not any(scpi_pattern(s).fullmatch(header) for s in specs)


def test_garbage_on_the_wire_leaves_the_instrument_usable(sim):
    host, port = _host_port(sim.resources["A.mw"])
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"\xff\xfe\x00garbage;;\n#9999999999\n\n:::?\n")
        s.sendall(b"*IDN?\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            assert chunk, "instrument closed the connection"
            reply += chunk
    assert b"SGS100A" in reply


def _host_port(resource: str) -> tuple[str, int]:
    _, host, port, _ = resource.split("::")
    return host, int(port)
