"""Simulated herald logic: the CPLD/FPGA behind the midpoint's detectors (qnode's own
firmware contract, docs/instruments.md "Herald logic"; no vendor).

It sees the detector pulses as the time tagger does (both fed by the midpoint's physics) and
drives the shared sync output to the nodes' sequencers: SYNC:MODE AUTO|OFF, SYNC:FIRE,
SYNC:COUNt?; it counts clicks in up to four herald windows after each sync (CLICks:WINDow<n>
<start ns>,<length ns>), records each heralding attempt's clicks (CLICks:ARM, CLICks:DATA?
as an IEEE 488.2 block of qnode.records.CLICK_DTYPE) and, in SOFT mode, every attempt's
window end (input 0) for software heralding. SCPI over TCP with an error queue.
"""

from __future__ import annotations

import numpy as np

from qnode.records import CLICK_DTYPE
from sim_backends.device import CommandError, Device, boolean, number

MAX_CLICKS = 1_000_000
HERALD_WINDOW_SLOTS = (1, 2, 3, 4)
MAX_WINDOW_NS = 100_000.0
OPEN_GATE_NS = (0.0, 1000.0)
"""With no window configured the herald logic counts every click in the first microsecond
after a sync (a wide-open gate: dark counts over all of it)."""


class SimHeraldLogic(Device):
    identity = "QNODE,HERALD-LOGIC,{serial},1.0-sim"

    def __init__(self, name: str, serial: int) -> None:
        self.identity = self.identity.format(serial=serial)
        self.midpoint = None
        """The midpoint's physics (photonics.Midpoint): the sync output is wired to it."""
        super().__init__(name)

    def setup(self) -> None:
        self.add("SYNC:MODE", lambda a: self._sync_mode(a))
        self.add("SYNC:MODE?", lambda a: "AUTO" if self._sync().sync_auto else "OFF")
        self.add("SYNC:FIRE", lambda a: self._sync().fire_sync())
        self.add("SYNC:COUNt?", lambda a: str(self._sync().generation))
        self.add("CLICks:ARM", lambda a: self._arm_clicks(boolean(a)))
        self.add("CLICks:ARM?", lambda a: "ON" if self.clicks_armed else "OFF")
        self.add("CLICks:MODE", lambda a: self._click_mode(a))
        self.add("CLICks:MODE?", lambda a: "SOFT" if self._sync().software else "HARD")
        self.add("CLICks:COUNt?", lambda a: str(sum(len(c) for c in self._clicks)))
        self.add("CLICks:DATA?", lambda a: self._drain_clicks())
        self.add("CLICks:WINDow#", lambda a, n: self._set_window(self._slot(n), a))
        self.add(
            "CLICks:WINDow#?", lambda a, n: "{:.3f},{:.3f}".format(*self.windows[self._slot(n)])
        )

    def reset_state(self) -> None:
        self._clicks: list[np.ndarray] = []
        self.clicks_lost = 0
        self.clicks_armed = False
        self.windows = {n: (0.0, 0.0) for n in HERALD_WINDOW_SLOTS}

    def _sync(self):
        if self.midpoint is None:
            raise CommandError(-241, "Hardware missing: no sync output wired")
        return self.midpoint

    def _sync_mode(self, args: str) -> None:
        mode = args.strip().upper()
        if mode not in ("AUTO", "OFF"):
            raise CommandError(-224, f"Illegal parameter value: {mode} (AUTO or OFF)")
        self._sync().set_sync_auto(mode == "AUTO")

    def _slot(self, n: int) -> int:
        if n not in HERALD_WINDOW_SLOTS:
            raise CommandError(-114, f"Header suffix out of range: {n}")
        return n

    def _set_window(self, slot: int, args: str) -> None:
        """`CLIC:WIND<n> <start ns>,<length ns>`: a click counts toward a herald when its delay
        after the sync lies in any window; length 0 switches the slot off."""
        parts = args.split(",")
        if len(parts) != 2:
            raise CommandError(-109, "Missing parameter: CLIC:WIND<n> <start ns>,<length ns>")
        start = number(parts[0], 0.0, MAX_WINDOW_NS)
        length = number(parts[1], 0.0, MAX_WINDOW_NS)
        self.windows[slot] = (start, length)

    def herald_windows(self) -> list[tuple[float, float]]:
        """The windows the herald logic counts clicks in (the open gate if none is set)."""
        on = [w for w in self.windows.values() if w[1] > 0]
        return on or [OPEN_GATE_NS]

    def record_clicks(self, sync: int, attempt: int, clicks: list[tuple[int, int, float]]) -> None:
        """The clicks (round, input, ns after the excitation) of one attempt's windows."""
        if not self.clicks_armed or not clicks:
            return
        if sum(len(c) for c in self._clicks) >= MAX_CLICKS:
            self.clicks_lost += len(clicks)  # the FIFO is full: the oldest are kept
            return
        part = np.zeros(len(clicks), dtype=CLICK_DTYPE)
        part["sync"], part["attempt"] = sync, attempt
        part["round"] = [r for r, _, _ in clicks]
        part["channel"] = [c for _, c, _ in clicks]
        part["delay_ps"] = [round(d * 1e3) for _, _, d in clicks]
        self._clicks.append(part)

    def _click_mode(self, args: str) -> None:
        """HARD: the herald line fires the sequencers, only heralding attempts' clicks are
        recorded; SOFT: every attempt is stepped and its window's end recorded (input 0)."""
        mode = args.strip().upper()
        if mode not in ("HARD", "SOFT"):
            raise CommandError(-224, f"Illegal parameter value: {mode} (HARD or SOFT)")
        self._sync().software = mode == "SOFT"

    def _arm_clicks(self, on: bool) -> None:
        self.clicks_armed = on
        if on:
            self._clicks = []

    def _drain_clicks(self) -> bytes:
        parts, self._clicks = self._clicks, []
        return np.concatenate(parts).tobytes() if parts else b""

    def state(self) -> dict:
        return {
            "clicks_armed": self.clicks_armed,
            "clicks_pending": sum(len(c) for c in self._clicks),
            "clicks_lost": self.clicks_lost,
            "herald_windows": [list(w) for w in self.herald_windows()],
        }
