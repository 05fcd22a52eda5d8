"""Photon counter / time tagger following a LAN time controller's SCPI subset (ID Quantique
ID900/ID1000-like): per-input enable, threshold and counter, and time tags as binary blocks.
"""

from __future__ import annotations

import numpy as np

from drivers.base import Health
from drivers.scpi import ScpiDriver, parse_records
from qnode.errors import InstrumentReplyError
from qnode.records import CLICK_DTYPE, TAG_DTYPE

INPUTS = (1, 2, 3, 4)
WINDOW_SLOTS = (1, 2, 3, 4)
MAX_WINDOW_NS = 100_000.0


class TimeController(ScpiDriver):
    ROLE = "time_tagger"
    FAMILY = "ID Quantique ID900/ID1000 time controller"
    TRANSPORT = "tcp"
    COMPOUND = True
    RANGES = {"threshold_v": (-2.0, 2.0), "acquisition_s": (1e-6, 3600.0)}

    def _check_input(self, channel: int) -> int:
        if channel not in INPUTS:
            raise ValueError(f"{self.name}: input {channel} does not exist (1..4)")
        return channel

    def set_enabled(self, channel: int, on: bool) -> None:
        self.scpi.write(f"INP{self._check_input(channel)}:ENAB {'ON' if on else 'OFF'}")

    def enabled(self, channel: int) -> bool:
        return self.scpi.query_bool(f"INP{self._check_input(channel)}:ENAB?")

    def set_threshold(self, channel: int, volts: float) -> None:
        self._check_input(channel)
        volts = self.check_limit("threshold_v", volts)
        self.scpi.write(f"INP{channel}:THRE {volts:.4f}")

    def threshold(self, channel: int) -> float:
        return self.scpi.query_float(f"INP{self._check_input(channel)}:THRE?")

    def set_integration(self, seconds: float) -> None:
        seconds = self.check_limit("acquisition_s", seconds)
        self.scpi.write(f"COUN:INT {seconds:.9g}")

    def count(self, channel: int) -> int:
        """Counts on one input over the last integration time."""
        return self.scpi.query_int(f"INP{self._check_input(channel)}:COUN?")

    def acquire_tags(self, seconds: float) -> np.ndarray:
        """Acquire time tags for `seconds` and return them (structured array, TAG_DTYPE)."""
        seconds = self.check_limit("acquisition_s", seconds)
        self.scpi.write(f"TAGS:ACQ {seconds:.9g}")
        return self.read_tags()

    def set_sync_auto(self, on: bool) -> None:
        """AUTO: the sync output fires once every node waits for it (their loops start
        together); OFF: only on fire_sync()."""
        self.scpi.write(f"SYNC:MODE {'AUTO' if on else 'OFF'}")

    def fire_sync(self) -> None:
        self.scpi.write("SYNC:FIRE")

    def sync_count(self) -> int:
        return self.scpi.query_int("SYNC:COUN?")

    def start_tags(self) -> None:
        """Arm: record tags (against the sync input) until stop_tags()."""
        self.scpi.write("TAGS:STAR")

    def stop_tags(self) -> np.ndarray:
        self.scpi.write("TAGS:STOP")
        return self.read_tags()

    def read_tags(self) -> np.ndarray:
        expected = self.scpi.query_int("TAGS:COUN?")
        tags = parse_records(
            self.name, "TAGS:DATA?", self.scpi.query_block("TAGS:DATA?"), TAG_DTYPE
        )
        if tags.size != expected:
            raise InstrumentReplyError(
                self.name, f"TAGS:COUN? said {expected} tags, the block holds {tags.size}"
            )
        return tags

    def arm_clicks(self, on: bool) -> None:
        """The herald logic: record each heralding attempt's clicks (read_clicks), or not."""
        self.scpi.write(f"CLIC:ARM {'ON' if on else 'OFF'}")

    def set_click_mode(self, software: bool) -> None:
        """SOFT: every attempt's window is reported (its end as input 0), for per-attempt
        software heralding; HARD: only the herald line's attempts."""
        self.scpi.write(f"CLIC:MODE {'SOFT' if software else 'HARD'}")

    def set_herald_windows(self, windows: list[tuple[float, float]]) -> None:
        """The herald logic's detection windows (start, length in ns after the sync): a click
        counts toward a herald when it falls in any of them; the slots not given are off."""
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
        """The herald logic's clicks since the last read (CLICK_DTYPE), oldest first."""
        return parse_records(
            self.name, "CLIC:DATA?", self.scpi.query_block("CLIC:DATA?"), CLICK_DTYPE
        )

    def safe_state(self) -> None:
        self.scpi.write("TAGS:STOP")
        self.scpi.write("CLIC:ARM OFF")

    def health(self) -> Health:
        enabled = [c for c in INPUTS if self.enabled(c)]
        return Health(self.identity(), f"inputs enabled: {enabled or 'none'}", self.error_list())
