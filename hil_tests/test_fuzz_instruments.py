"""Every simulated instrument's command parser against arbitrary and nearly-valid commands
(hypothesis): headers drawn from each instrument's own command table with arbitrary
arguments (and binary blocks where the instrument takes them), and plain garbage. No
exception escapes, a reply is text or bytes, and the instrument still answers afterwards.

Pure code: the instruments of a simulated lab built in this process, no server, so that a
failing example points at the parser and not at the transport.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.labconfig import DEFAULT_LAB, load_lab
from sim_backends.device import Device
from sim_backends.framing import Message
from sim_backends.lab import SimLab

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
ARGUMENTS = st.one_of(
    st.just(""),
    TEXT,
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["ON", "OFF", "1", "0", "-1", "1e309", "nan", '"w"', '"w",1', '"",,', "#"]),
    st.lists(st.integers(-(10**6), 10**6).map(str), min_size=2, max_size=4).map(",".join),
    st.tuples(st.text(max_size=8), st.integers(-(10**9), 10**9)).map(lambda t: f'"{t[0]}",{t[1]}'),
)
ALIVE = {"*IDN?": "SCPI", "sn?": "Cobolt (both series)", "id?": "MDT"}


@pytest.fixture(scope="module")
def lab():
    """The default lab's instruments, with the physics behind them, on one event loop (the
    sequencer runs its programs as tasks of it)."""
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_lab(DEFAULT_LAB)

        async def build() -> SimLab:
            return SimLab(config.model_dump(), 5, Path(tmp), Path(tmp) / "resources.json")

        yield loop, loop.run_until_complete(build())
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def run(loop, device: Device, text: str, block: bytes | None = None):
    async def once():
        reply = device.execute(Message(text, block))
        await asyncio.sleep(0)  # a started program takes a step
        return reply

    return loop.run_until_complete(once())


def alive_probe(device: Device) -> str:
    patterns = [p for p, _ in device.command_table]
    return next(c for c in ALIVE if any(p.fullmatch(c) for p in patterns))


def headers(device: Device):
    """Headers the instrument's own table accepts, in any case and form it allows."""
    patterns = [p for p, _ in device.command_table]
    return st.sampled_from(patterns).flatmap(
        lambda p: st.from_regex(re.compile(p.pattern, p.flags), fullmatch=True)
    )


@FAST
@given(data=st.data())
def test_every_sim_instrument_takes_any_command(lab, data):
    loop, sim = lab
    name = data.draw(st.sampled_from(sorted(sim.devices)), label="instrument")
    device = sim.devices[name]
    header = data.draw(st.one_of(headers(device), TEXT), label="header")
    args = data.draw(ARGUMENTS, label="arguments")
    block = data.draw(st.none() | st.binary(max_size=64)) if device.allow_blocks else None
    text = f"{header} {args}" if args else header
    reply = run(loop, device, text, block)
    assert reply is None or isinstance(reply, (str, bytes))
    probe = alive_probe(device)
    assert run(loop, device, probe), f"{name} stopped answering {probe} after {text!r}"


@FAST
@given(data=st.data())
def test_compound_messages_of_any_parts(lab, data):
    """IEEE 488.2 compound messages (the SCPI instruments split at ';')."""
    loop, sim = lab
    scpi = sorted(n for n, d in sim.devices.items() if d.scpi_headers)
    name = data.draw(st.sampled_from(scpi), label="instrument")
    device = sim.devices[name]
    parts = data.draw(st.lists(headers(device) | TEXT, min_size=2, max_size=4), label="parts")
    reply = run(loop, device, ";".join(parts))
    assert reply is None or isinstance(reply, str)
    assert run(loop, device, "*IDN?")
