"""Simulated LAN time controller: input counters and time tags (binary blocks)."""

from __future__ import annotations

import zlib

import numpy as np

from sim_backends.device import CommandError, Device, boolean, number

TAG_DTYPE = np.dtype([("time_ps", "<i8"), ("channel", "<u2")])
MAX_TAGS = 5_000_000


class SimTimeController(Device):
    identity = "IDQ,ID1000,{serial},7.2-sim"

    def __init__(
        self, name: str, rng: np.random.Generator, dark_count_hz: float, serial: int
    ) -> None:
        self.rng = rng
        self.dark_count_hz = dark_count_hz
        self.identity = self.identity.format(serial=serial)
        super().__init__(name)

    def setup(self) -> None:
        self.add("INPut#:ENABle", lambda a, ch: self.enabled.__setitem__(self._ch(ch), boolean(a)))
        self.add("INPut#:ENABle?", lambda a, ch: "ON" if self.enabled[self._ch(ch)] else "OFF")
        self.add(
            "INPut#:THREshold",
            lambda a, ch: self.threshold.__setitem__(self._ch(ch), number(a, -2, 2)),
        )
        self.add("INPut#:THREshold?", lambda a, ch: f"{self.threshold[self._ch(ch)]:.4f}")
        self.add("INPut#:COUNter?", lambda a, ch: str(self._count(self._ch(ch))))
        self.add(
            "COUNter:INTegration", lambda a: setattr(self, "integration_s", number(a, 1e-6, 3600))
        )
        self.add("COUNter:INTegration?", lambda a: f"{self.integration_s:.9g}")
        self.add("TAGS:ACQuire", lambda a: self._acquire(number(a, 1e-6, 3600)))
        self.add("TAGS:STOP", lambda a: None)
        self.add("TAGS:COUNt?", lambda a: str(len(self.tags)))
        self.add("TAGS:DATA?", lambda a: self._drain())

    def _ch(self, ch: int) -> int:
        if ch not in (1, 2, 3, 4):
            raise CommandError(-114, f"Header suffix out of range: {ch}")
        return ch

    def reset_state(self) -> None:
        self.enabled = {ch: False for ch in (1, 2, 3, 4)}
        self.threshold = {ch: 0.0 for ch in (1, 2, 3, 4)}
        self.integration_s = 0.1
        self.tags = np.zeros(0, dtype=TAG_DTYPE)
        self.last_block_crc32: int | None = None

    def _count(self, ch: int) -> int:
        if not self.enabled[ch]:
            return 0
        return int(self.rng.poisson(self.dark_count_hz * self.integration_s))

    def _acquire(self, seconds: float) -> None:
        """Dark counts on the enabled inputs over `seconds` of virtual time."""
        parts = []
        for ch, on in self.enabled.items():
            if not on:
                continue
            n = min(int(self.rng.poisson(self.dark_count_hz * seconds)), MAX_TAGS)
            t = self.rng.integers(0, int(seconds * 1e12), size=n, dtype=np.int64)
            tags = np.zeros(n, dtype=TAG_DTYPE)
            tags["time_ps"], tags["channel"] = t, ch
            parts.append(tags)
        tags = np.concatenate(parts) if parts else np.zeros(0, dtype=TAG_DTYPE)
        self.tags = np.sort(tags, order="time_ps")

    def _drain(self) -> bytes:
        data, self.tags = self.tags.tobytes(), np.zeros(0, dtype=TAG_DTYPE)
        self.last_block_crc32 = zlib.crc32(data)
        return data

    def state(self) -> dict:
        return {
            "enabled": {str(k): v for k, v in self.enabled.items()},
            "tags_pending": len(self.tags),
            "last_block_crc32": self.last_block_crc32,
        }
