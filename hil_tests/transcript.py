"""Wire transcripts, as PyMeasure's `expected_protocol`: a driver runs against a list of
(bytes it must send, bytes the instrument answers) taken from the manual, with no simulator.

    with expected_protocol(MicrowaveSource, [(b"SOUR:FREQ?\\n", b"2.87E9\\n")]) as source:
        assert source.frequency() == 2.87e9

Each pair is (exact bytes out incl. the write termination, or None for a step that only
reads; the reply incl. its read termination, or None for no reply). The transport below is
the driver's transport as the protocol layer sees it (write/query/write_block/query_block),
and turns each call into the bytes the real transport would put on the wire, so the test
pins those bytes. Every step must be used, in order, and nothing more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from drivers.base import Driver
from drivers.transport import ieee_block, ieee_header
from qnode.errors import InstrumentTimeout

D = TypeVar("D", bound=Driver)
Step = tuple[bytes | None, bytes | None]


class TranscriptMismatch(AssertionError):
    pass


class TranscriptTransport:
    """Checks each exchange against the next step of the transcript."""

    def __init__(self, name: str, steps: Sequence[Step], read_term: str, write_term: str) -> None:
        self.name = name
        self.steps = list(steps)
        self.position = 0
        self.read_term = read_term.encode()
        self.write_term = write_term.encode()
        self.reconnects = 0

    # the Transport protocol ------------------------------------------------------------------
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, message: str) -> None:
        self._expect_out(message.encode("ascii") + self.write_term)
        reply = self._take_reply(optional=True)
        if reply is not None:
            self._fail(f"the transcript answers {reply!r} to a command the driver only writes")

    def query(self, message: str) -> str:
        self._expect_out(message.encode("ascii") + self.write_term)
        reply = self._take_reply(optional=False)
        assert reply is not None
        if self.read_term and not reply.endswith(self.read_term):
            raise InstrumentTimeout(self.name, f"no reply to {message!r} (no read termination)")
        body = reply[: -len(self.read_term)] if self.read_term else reply
        return body.decode("ascii")

    def write_block(self, message: str, data: bytes) -> None:
        self._expect_out(message.encode("ascii") + ieee_header(len(data)) + data + self.write_term)
        reply = self._take_reply(optional=True)
        if reply is not None:
            self._fail(f"the transcript answers {reply!r} to a block the driver only writes")

    def query_block(self, message: str) -> bytes:
        self._expect_out(message.encode("ascii") + self.write_term)
        reply = self._take_reply(optional=False)
        assert reply is not None
        if not reply.startswith(b"#") or len(reply) < 2:
            self._fail(f"transcript reply {reply[:20]!r} is not an IEEE 488.2 block")
        digits = int(reply[1:2])
        length = int(reply[2 : 2 + digits]) if digits else len(reply) - 2
        data = reply[2 + digits : 2 + digits + length]
        if ieee_block(data) + self.read_term != reply and digits:
            self._fail(f"transcript block reply is malformed: {reply[:40]!r}")
        return data

    # checking -----------------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        raise TranscriptMismatch(f"{self.name}, step {self.position}: {why}")

    def _expect_out(self, sent: bytes) -> None:
        if self.position >= len(self.steps):
            self._fail(f"the driver sent {sent!r} after the end of the transcript")
        expected, _ = self.steps[self.position]
        if expected != sent:
            self._fail(f"expected {expected!r}, the driver sent {sent!r}")

    def _take_reply(self, optional: bool) -> bytes | None:
        _, reply = self.steps[self.position]
        self.position += 1
        if reply is None and not optional:
            self._fail("the driver waits for a reply the transcript does not give")
        return reply

    def assert_done(self) -> None:
        if self.position != len(self.steps):
            left = self.steps[self.position :]
            raise TranscriptMismatch(f"{self.name}: {len(left)} transcript steps unused: {left}")


@contextlib.contextmanager
def expected_protocol(
    driver_class: type[D],
    steps: Sequence[Step],
    limits: Mapping[str, tuple[float, float]] | None = None,
    **kwargs: Any,
) -> Iterator[D]:
    """Open `driver_class` on a transcript (its open-time bytes included) and check, on
    leaving the block, that every step was used. `limits` default to the driver's own
    hardware ranges."""
    driver = driver_class("transcript", "transcript", dict(limits or driver_class.RANGES), **kwargs)
    transport = TranscriptTransport(
        driver_class.__name__, steps, driver.READ_TERMINATION, driver.WRITE_TERMINATION
    )
    driver._make_transport = lambda: transport  # type: ignore[method-assign]
    driver.open()
    try:
        yield driver
    finally:
        driver.close()
    transport.assert_done()
