"""The real-time sequencer (an ADwin/FPGA-like role) on a serial line, SCPI-style commands.

The host assembles and uploads a program (sequences.program), starts it, and polls the event
FIFO; the sequencer does all timing. Upload errors come back through the error queue as
device-specific code 101 with the instruction index, which the driver maps to the source line.
"""

from __future__ import annotations

import re

from drivers.base import Health
from drivers.scpi import ScpiDriver
from qnode.errors import InstrumentReplyError, InstrumentReportedError, ProgramError
from sequences.program import HERALD_OUTCOMES, Event, Program, decode_events

PROGRAM_ERROR_CODE = 101
FIFO_READ = 4096
STATES = ("IDLE", "RUNNING", "WAITING", "HALTED")
_INDEX_REASON = re.compile(r"^(instruction|byte) (\d+): (.*)$")


class RtSequencer(ScpiDriver):
    ROLE = "sequencer"
    FAMILY = "FPGA real-time sequencer (ADwin-like role), SCPI-style over serial"
    TRANSPORT = "serial"
    READ_TERMINATION = "\n"
    WRITE_TERMINATION = "\n"
    RANGES = {}

    def load(self, program: Program) -> None:
        """Upload; a rejection raises ProgramError naming the source line and the reason."""
        self.load_image(program.encode(), program)

    def load_image(self, image: bytes, program: Program | None = None) -> None:
        self.scpi.write_block("PROG:LOAD ", image, check=False)
        errors = self.scpi.errors()
        for code, message in errors:
            if code == PROGRAM_ERROR_CODE:
                m = _INDEX_REASON.match(message)
                if m and m.group(1) == "instruction":
                    index = int(m.group(2))
                    if program is not None:
                        raise ProgramError(program.line_of(index), m.group(3))
                    raise ProgramError(index, m.group(3), what="instruction")
                if m:
                    raise ProgramError(int(m.group(2)), m.group(3), what="byte")
                raise ProgramError(0, message, what="program")
        if errors:
            listed = "; ".join(f"{c} {m}" for c, m in errors)
            raise InstrumentReportedError(self.name, f"after PROG:LOAD: {listed}")

    def program_size(self) -> int:
        return self.scpi.query_int("PROG:SIZE?")

    def run(self) -> None:
        self.scpi.write("RUN")

    def stop(self) -> None:
        self.scpi.write("STOP")

    def state(self) -> str:
        reply = self.scpi.query("STAT?").strip()
        if reply not in STATES:
            raise InstrumentReplyError(self.name, f"STAT? reply {reply!r} is not one of {STATES}")
        return reply

    def clock_ns(self) -> int:
        """The sequencer's virtual/real clock, ns since its last RUN."""
        return self.scpi.query_int("TIME?")

    def read_events(self) -> list[Event]:
        """Drain the event FIFO, FIFO_READ events per query so no transfer grows unbounded."""
        events: list[Event] = []
        while True:
            data = self.scpi.query_block(f"EVT:DATA? {FIFO_READ}")
            try:
                chunk = decode_events(data)
            except ValueError as e:
                raise InstrumentReplyError(self.name, str(e)) from None
            events += chunk
            if len(chunk) < FIFO_READ:
                return events

    def send_herald(self, outcome: str) -> None:
        """Software herald, for platforms without a hardware herald line."""
        if outcome not in HERALD_OUTCOMES:
            raise ValueError(
                f"{self.name}: herald outcome {outcome!r} not in {list(HERALD_OUTCOMES)}"
            )
        self.scpi.write(f"HERALD {HERALD_OUTCOMES.index(outcome)}")

    def sync(self) -> None:
        """Software sync trigger (the midpoint's hardware trigger in a real lab)."""
        self.scpi.write("SYNC")

    def ttl_lines(self) -> int:
        return self.scpi.query_int("TTL?")

    def safe_state(self) -> None:
        self.scpi.write("SAFE")

    def health(self) -> Health:
        state = (
            f"{self.state().lower()}, program {self.program_size()} instructions, "
            f"TTL {self.ttl_lines():#x}"
        )
        return Health(self.identity(), state, self.error_list())
