"""Simulated LAN time controller: input counters and time tags (binary blocks)."""

from __future__ import annotations

import zlib

import numpy as np

from qnode.records import CLICK_DTYPE, TAG_DTYPE
from sim_backends.device import CommandError, Device, boolean, number

MAX_TAGS = 5_000_000
MAX_CLICKS = 1_000_000
HERALD_WINDOW_SLOTS = (1, 2, 3, 4)
MAX_WINDOW_NS = 100_000.0
OPEN_GATE_NS = (0.0, 1000.0)
"""With no window configured the herald logic counts every click in the first microsecond
after a sync (a wide-open gate: dark counts over all of it)."""


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
        self.add("INPut#:ENABle", lambda a, ch: self._enable(self._ch(ch), boolean(a)))
        self.add("INPut#:ENABle?", lambda a, ch: "ON" if self.enabled[self._ch(ch)] else "OFF")
        self.add(
            "INPut#:THREshold",
            lambda a, ch: self.threshold.__setitem__(self._ch(ch), number(a, -2, 2)),
        )
        self.add("INPut#:THREshold?", lambda a, ch: f"{self.threshold[self._ch(ch)]:.4f}")
        self.add("INPut#:COUNter?", lambda a, ch: str(self._count(self._ch(ch))))
        self.add("COUNter:INTegration", lambda a: self._set_integration(number(a, 1e-6, 3600)))
        self.add("COUNter:INTegration?", lambda a: f"{self.integration_s:.9g}")
        self.add("TAGS:ACQuire", lambda a: self._acquire(number(a, 1e-6, 3600)))
        self.add("SYNC:MODE", lambda a: self._sync_mode(a))
        self.add("SYNC:MODE?", lambda a: "AUTO" if self._sync().sync_auto else "OFF")
        self.add("SYNC:FIRE", lambda a: self._sync().fire_sync())
        self.add("SYNC:COUNt?", lambda a: str(self._sync().generation))
        self.add("TAGS:STARt", lambda a: self._start())
        self.add("TAGS:STOP", lambda a: self._stop())
        self.add("TAGS:STATe?", lambda a: "ARMED" if self.armed else "IDLE")
        self.add("TAGS:COUNt?", lambda a: str(len(self.tags)))
        self.add("TAGS:DATA?", lambda a: self._drain())
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

    def _sync(self):
        if getattr(self, "midpoint", None) is None:
            raise CommandError(-241, "Hardware missing: no sync output wired")
        return self.midpoint

    def _sync_mode(self, args: str) -> None:
        mode = args.strip().upper()
        if mode not in ("AUTO", "OFF"):
            raise CommandError(-224, f"Illegal parameter value: {mode} (AUTO or OFF)")
        self._sync().set_sync_auto(mode == "AUTO")

    def _enable(self, ch: int, on: bool) -> None:
        self.enabled[ch] = on
        self._period = {}

    def _set_integration(self, seconds: float) -> None:
        self.integration_s = seconds
        self._period = {}

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
        self.armed = False
        self._photons: list[np.ndarray] = []
        self._sync_trains: list[tuple[float, float, int]] = []  # (t0 ns, period ns, count)
        self._syncs: list[np.ndarray] = []
        self.detector_dark_hz: dict[int, float] = {}  # set by the lab for the midpoint
        self.light_rates = None
        """seconds -> {input: mean rate of light reaching it over a count} (the midpoint's)"""
        self._clicks: list[np.ndarray] = []
        self.clicks_lost = 0
        self.clicks_armed = False
        self.windows = {n: (0.0, 0.0) for n in HERALD_WINDOW_SLOTS}
        self._period: dict[int, int] = {}

    def _dark_rate(self, ch: int) -> float:
        return self.detector_dark_hz.get(ch, self.dark_count_hz)

    # armed acquisition: photons and syncs arrive from the physics ----------------------------
    def _start(self) -> None:
        self.tags = np.zeros(0, dtype=TAG_DTYPE)
        self._photons, self._sync_trains, self._syncs = [], [], []
        self.armed = True

    def record_syncs(self, times_ns: np.ndarray) -> None:
        self._syncs.append(np.asarray(times_ns, dtype=float))

    def record_sync_train(self, t0_ns: float, period_ns: float, n: int) -> None:
        self._sync_trains.append((float(t0_ns), float(period_ns), int(n)))

    def record_clicks(self, sync: int, attempt: int, clicks: list[tuple[int, int, float]]) -> None:
        """The clicks (round, input, ns after the excitation) of one attempt's windows."""
        enabled = [(r, c, d) for r, c, d in clicks if c == 0 or self.enabled.get(c)]
        if not self.clicks_armed or not enabled:
            return
        if sum(len(c) for c in self._clicks) >= MAX_CLICKS:
            self.clicks_lost += len(enabled)  # the FIFO is full: the oldest are kept
            return
        part = np.zeros(len(enabled), dtype=CLICK_DTYPE)
        part["sync"], part["attempt"] = sync, attempt
        part["round"] = [r for r, _, _ in enabled]
        part["channel"] = [c for _, c, _ in enabled]
        part["delay_ps"] = [round(d * 1e3) for _, _, d in enabled]
        self._clicks.append(part)

    def _click_mode(self, args: str) -> None:
        """HARD: the herald line fires the sequencers, only heralding attempts' clicks are
        recorded; SOFT: every attempt is stepped and its window's end recorded (input 0)."""
        mode = args.strip().upper()
        if mode not in ("HARD", "SOFT"):
            raise CommandError(-224, f"Illegal parameter value: {mode} (HARD or SOFT)")
        self._sync().software = mode == "SOFT"

    def _arm_clicks(self, on: bool) -> None:
        """The herald logic records clicks (independent of a tag acquisition)."""
        self.clicks_armed = on
        if on:
            self._clicks = []

    def _drain_clicks(self) -> bytes:
        parts, self._clicks = self._clicks, []
        return np.concatenate(parts).tobytes() if parts else b""

    def record_photons(self, times_ns: np.ndarray, delays_ns: np.ndarray, channels) -> None:
        part = np.zeros(len(times_ns), dtype=[("t", "f8"), ("d", "f8"), ("c", "u2")])
        part["t"], part["d"], part["c"] = times_ns, delays_ns, channels
        self._photons.append(part[np.isin(part["c"], [c for c, on in self.enabled.items() if on])])

    def _stop(self) -> None:
        """Disarm; the tags are the photons plus dark counts over the span the syncs cover."""
        if not self.armed:
            return
        self.armed = False
        starts = [t for t, _, _ in self._sync_trains] + [float(a[0]) for a in self._syncs if len(a)]
        ends = [t + p * n for t, p, n in self._sync_trains] + [
            float(a[-1]) for a in self._syncs if len(a)
        ]
        photons = (
            np.concatenate(self._photons)
            if self._photons
            else np.zeros(0, dtype=[("t", "f8"), ("d", "f8"), ("c", "u2")])
        )
        if not starts:
            self.tags = np.zeros(0, dtype=TAG_DTYPE)
            return
        t_begin, t_end = min(starts), max(ends)
        dark_parts = []
        for ch, on in self.enabled.items():
            if not on:
                continue
            n = min(int(self.rng.poisson(self._dark_rate(ch) * (t_end - t_begin) * 1e-9)), MAX_TAGS)
            t = self.rng.uniform(t_begin, t_end, n)
            dark = np.zeros(n, dtype=photons.dtype)
            dark["t"], dark["d"], dark["c"] = t, self._since_sync(t), ch
            dark_parts.append(dark)
        everything = np.concatenate([photons, *dark_parts])
        everything = everything[np.argsort(everything["t"], kind="stable")]
        tags = np.zeros(len(everything), dtype=TAG_DTYPE)
        tags["time_ps"] = np.rint((everything["t"] - t_begin) * 1e3).astype(np.int64)
        tags["delay_ps"] = np.rint(everything["d"] * 1e3).astype(np.int64)
        tags["channel"] = everything["c"]
        self.tags = tags[:MAX_TAGS]

    def _since_sync(self, t: np.ndarray) -> np.ndarray:
        """Time since the latest sync before each t (ns), over single syncs and periodic
        trains at once (sorted look-ups, no loop over syncs)."""
        latest = np.full(len(t), -np.inf)
        if self._syncs:
            singles = np.sort(np.concatenate(self._syncs))
            idx = np.searchsorted(singles, t, side="right") - 1
            latest = np.where(idx >= 0, singles[np.clip(idx, 0, None)], latest)
        if self._sync_trains:
            trains = np.array(sorted(self._sync_trains))
            t0, period, n = trains[:, 0], trains[:, 1], trains[:, 2]
            idx = np.searchsorted(t0, t, side="right") - 1
            ok = idx >= 0
            j = np.clip(idx, 0, None)
            k = np.clip(np.floor((t - t0[j]) / period[j]), 0, n[j] - 1)
            in_train = np.where(ok, t0[j] + k * period[j], -np.inf)
            latest = np.maximum(latest, in_train)
        return np.where(np.isfinite(latest), t - latest, 0.0)

    def _count(self, ch: int) -> int:
        """The inputs count together over one integration period: reading an input already
        read in this period starts the next one, so reads of different inputs in a row see
        the same light (the same interferometer phase)."""
        if ch in self._period:
            self._period = {}
        if not self._period:
            light = self.light_rates(self.integration_s) if self.light_rates else {}
            self._period = {
                c: int(
                    self.rng.poisson((self._dark_rate(c) + light.get(c, 0.0)) * self.integration_s)
                )
                if on
                else 0
                for c, on in self.enabled.items()
            }
        return self._period[ch]

    def _acquire(self, seconds: float) -> None:
        """Dark counts on the enabled inputs over `seconds` of virtual time."""
        parts = []
        for ch, on in self.enabled.items():
            if not on:
                continue
            n = min(int(self.rng.poisson(self._dark_rate(ch) * seconds)), MAX_TAGS)
            t = self.rng.integers(0, int(seconds * 1e12), size=n, dtype=np.int64)
            tags = np.zeros(n, dtype=TAG_DTYPE)
            tags["time_ps"], tags["delay_ps"], tags["channel"] = t, t, ch  # no sync: since start
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
            "armed": self.armed,
            "last_block_crc32": self.last_block_crc32,
            "clicks_armed": self.clicks_armed,
            "clicks_pending": sum(len(c) for c in self._clicks),
            "clicks_lost": self.clicks_lost,
            "herald_windows": [list(w) for w in self.herald_windows()],
        }
