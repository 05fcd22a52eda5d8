"""The real-time sequencer (an ADwin/FPGA-like role) on a serial line, SCPI-style commands.

The host assembles and uploads a program (sequences.program), starts it, and polls the event
FIFO; the sequencer does all timing. Upload errors come back through the error queue as
device-specific code 101 with the instruction index, which the driver maps to the source line.

The host watchdog: `set_watchdog(s)` before a run (`WDOG:TIME`), then `pet_watchdog()`
(`WDOG:PET`) at least that often while the program runs; if the host stops (a crash, kill -9)
the sequencer halts the program with every line low. `watchdog_tripped()` (`WDOG:TRIP?`)
tells a halt by the watchdog from the program's own HALT.
"""

from __future__ import annotations

import re

from drivers.base import Health
from drivers.scpi import ScpiDriver
from qnode.errors import InstrumentReplyError, InstrumentReportedError, ProgramError
from sequences.program import HERALD_OUTCOMES, N_LINK_PORTS, Event, Program, decode_events

PROGRAM_ERROR_CODE = 101
FIFO_READ = 4096
STATES = ("IDLE", "RUNNING", "WAITING", "HALTED")
WATCHDOG_RANGE_S = (0.1, 60.0)
"""A watchdog timeout is 0 (off) or within this range (the firmware's bounds)."""
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

    def send_herald(self, outcome: str, port: int = 0) -> None:
        """Software herald, for platforms without a hardware herald line; `port`: the herald
        input of the link (0 is the default input and is not spelled out)."""
        if outcome not in HERALD_OUTCOMES:
            raise ValueError(
                f"{self.name}: herald outcome {outcome!r} not in {list(HERALD_OUTCOMES)}"
            )
        if not 0 <= port < N_LINK_PORTS:
            raise ValueError(f"{self.name}: herald port {port} is outside 0..{N_LINK_PORTS - 1}")
        suffix = f",{port}" if port else ""
        self.scpi.write(f"HERALD {HERALD_OUTCOMES.index(outcome)}{suffix}")

    def sync(self) -> None:
        """Software sync trigger (the midpoint's hardware trigger in a real lab)."""
        self.scpi.write("SYNC")

    def ttl_lines(self) -> int:
        return self.scpi.query_int("TTL?")

    def set_watchdog(self, seconds: float) -> None:
        """The host watchdog's timeout (0: off): a running program halts safe when no
        heartbeat (`pet_watchdog`) comes for this long."""
        low, high = WATCHDOG_RANGE_S
        if seconds != 0 and not low <= seconds <= high:  # NaN fails both comparisons
            raise ValueError(
                f"{self.name}: watchdog {seconds!r} s is neither 0 (off) nor in {low:g}..{high:g} s"
            )
        self.scpi.write(f"WDOG:TIME {seconds:g}")

    def watchdog(self) -> float:
        return self.scpi.query_float("WDOG:TIME?")

    def pet_watchdog(self) -> None:
        """The host heartbeat; unchecked (no error round trip), sent every poll or so."""
        self.scpi.write("WDOG:PET", check=False)

    def watchdog_tripped(self) -> bool:
        """Whether the watchdog halted the last program (until the next RUN)."""
        return self.scpi.query_bool("WDOG:TRIP?")

    def safe_state(self) -> None:
        self.scpi.write("SAFE")

    def health(self) -> Health:
        state = (
            f"{self.state().lower()}, program {self.program_size()} instructions, "
            f"TTL {self.ttl_lines():#x}"
        )
        return Health(self.identity(), state, self.error_list())
