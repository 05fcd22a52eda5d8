"""The midpoint's herald logic: the CPLD/FPGA behind the detectors that drives the shared
sync output and records each heralding attempt's clicks. qnode's own firmware contract (no
vendor; docs/instruments.md "Herald logic"): SCPI over TCP with an error queue.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from drivers.base import Health
from drivers.scpi import ScpiDriver, parse_records
from qnode.records import CLICK_DTYPE

WINDOW_SLOTS = (1, 2, 3, 4)
MAX_WINDOW_NS = 100_000.0


class HeraldLogic(ScpiDriver):
    ROLE = "herald_logic"
    FAMILY = "qnode herald logic (CPLD/FPGA firmware contract, docs/instruments.md)"
    TRANSPORT = "tcp"
    COMPOUND = True
    RANGES: ClassVar[dict[str, tuple[float, float]]] = {}

    def set_sync_auto(self, on: bool) -> None:
        """AUTO: the sync output fires once every node waits for it (their loops start
        together); OFF: only on fire_sync()."""
        self.scpi.write(f"SYNC:MODE {'AUTO' if on else 'OFF'}")

    def fire_sync(self) -> None:
        self.scpi.write("SYNC:FIRE")

    def sync_count(self) -> int:
        return self.scpi.query_int("SYNC:COUN?")

    def arm_clicks(self, on: bool) -> None:
        """Record each heralding attempt's clicks (read_clicks), or not."""
        self.scpi.write(f"CLIC:ARM {'ON' if on else 'OFF'}")

    def set_click_mode(self, software: bool) -> None:
        """SOFT: every attempt's window is reported (its end as input 0), for per-attempt
        software heralding; HARD: only the herald line's attempts."""
        self.scpi.write(f"CLIC:MODE {'SOFT' if software else 'HARD'}")

    def set_herald_windows(self, windows: list[tuple[float, float]]) -> None:
        """The detection windows (start, length in ns after the sync): a click counts toward
        a herald when it falls in any of them; the slots not given are off."""
        if len(windows) > len(WINDOW_SLOTS):
            raise ValueError(
                f"{self.name}: {len(windows)} herald windows, the logic has {len(WINDOW_SLOTS)}"
            )
        for start, length in windows:
            if not (0.0 <= start <= MAX_WINDOW_NS and 0.0 < length <= MAX_WINDOW_NS):
                raise ValueError(
                    f"{self.name}: herald window start {start} ns, length {length} ns: "
                    f"both within 0..{MAX_WINDOW_NS:g} ns, the length above 0"
                )
        padded = list(windows) + [(0.0, 0.0)] * (len(WINDOW_SLOTS) - len(windows))
        for slot, (start, length) in zip(WINDOW_SLOTS, padded, strict=True):
            self.scpi.write(f"CLIC:WIND{slot} {start:.3f},{length:.3f}")

    def read_clicks(self) -> np.ndarray:
        """The clicks since the last read (CLICK_DTYPE), oldest first."""
        return parse_records(
            self.name, "CLIC:DATA?", self.scpi.query_block("CLIC:DATA?"), CLICK_DTYPE
        )

    def safe_state(self) -> None:
        """Sync output off (no node loop starts), hardware heralding, recording off."""
        self.scpi.write("SYNC:MODE OFF")
        self.scpi.write("CLIC:MODE HARD")
        self.scpi.write("CLIC:ARM OFF")

    def health(self) -> Health:
        mode = self.scpi.query("SYNC:MODE?")
        return Health(self.identity(), f"sync output {mode}", self.error_list())
