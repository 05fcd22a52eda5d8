"""Simulated ID Quantique Time Controller (ID900/ID1000): SCPI over ZeroMQ, as the real one.

Followed: ID Quantique, "Time Controller Series User Manual", section 9 (SCPI command
reference: long/short forms, `INPUt#` suffixes, units such as `1000mV`, the time base TB =
1 ps) and IDQ's Python examples (REQ socket to port 5555, one reply per request, errors
inline in the reply, `INPUt#:COUNter:MODE CYCLe;INTEgration <ms>;RESEt`, `INPU#:COUNter?`,
`RECord:DURation`/`RECord:PLAY`/`RECord:STOP`/`RECord:STAGe?`, `RECord:NUMber`,
`RECord:ENABle`, `RECord:TRIGger:ARM:MODE MANUal`, `RAW#:SEND ON`; the STARt input's
`STARt:ENABle`/`:THREshold`/`:COUNter` as the inputs').
The timestamps leave as the manual's section 6.3.4 describes them, towards IDQ's
DataLinkTarget service on the host (sim_backends/datalink.py, the manual's section 10): at the
end of a recording, for every input whose `RAW<n>:SEND` is ON, the pairs (timestamp: ps since
the last event on the reference channel, the START input here, or since the recording began
before the first; reference index: the number of START events so far) go to every sink in
`tag_sinks`. What a real unit has and qnode never uses (histograms, delays, combiners,
generators, the RAW blocks' own STOP/REF links: here RAW<n> always times input n against
START) is not modelled.

Counting (the manual's counter chapter was not at hand; IDQ's examples use CYCLe, and say
no more): the lab's time is wall time and nothing here waits for the software.
- CYCLe: each input integrates period after period of its integration time on a clock that
  runs freely from power-up; neither `RESEt` nor a new mode or integration time restarts it
  (assumed: the least convenient reading). `INPU<n>:COUNter?` answers the count of the last
  completed period, 0 if it ended before the last `RESEt`: a period that began before the
  piezo moved reports some of the old light. Inputs read in one message see the same period.
- ACCUmulate: the count since the input's last `RESEt` (or mode change), up to the moment
  the message is read (assumed: an accumulator read at any time).
The light of a count is the midpoint physics' over the count's own span of wall time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np

from qnode.records import TAG_DTYPE
from sim_backends.device import CommandError, Device, _compound, error_text
from sim_backends.framing import Message

MAX_TAGS = 5_000_000
TagSink = Callable[[int, np.ndarray], None]
"""Receives one input's timestamps of a finished recording: (input, uint64 array of shape
(n, 2): timestamp ps, reference index)."""
INPUTS = (1, 2, 3, 4)
START = 0
"""The START input (the reference of the time stamps), numbered 0 here."""
CHANNELS = (START, *INPUTS)
INTEGRATION_MS = (1e-3, 3_600_000.0)
"""Counter integration time limits (ms): 1 µs to 1 h. The manual's range was not at hand:
this range is an assumption that mirrors the driver's `acquisition_s` (so it cannot expose
a time a real unit refuses; the driver reads its first integration time back instead). Where
the simulator is stricter than the driver's needs is the counters' period clock (above)."""
THRESHOLD_V = (-2.0, 2.0)
DEFAULT_RECORD_S = 1.0
MAX_RECORD_S = 3600.0

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*$")
_PREFIX = {"": 1.0, "P": 1e-12, "N": 1e-9, "U": 1e-6, "M": 1e-3, "K": 1e3, "G": 1e9}
_TIME_UNITS_S = {"S": 1.0, "MS": 1e-3, "US": 1e-6, "NS": 1e-9, "PS": 1e-12}


def quantity(args: str, units: dict[str, float], default: float, what: str) -> float:
    """A number with an optional unit (`1000mV`, `1 V`, `3000 GTB`), in the base unit; a unit
    that is not one of `units` is refused (-131), never dropped."""
    m = _QUANTITY.match(args)
    if not m:
        raise CommandError(-104, f"Data type error: {args[:30]!r} is not a {what}")
    value, unit = float(m.group(1)), m.group(2).upper()
    if not unit:
        return value * default
    if unit in units:
        return value * units[unit]
    raise CommandError(-131, f"Invalid suffix: {m.group(2)!r} for a {what}")


def time_units() -> dict[str, float]:
    """Seconds per unit: s, ms, us, ns, ps and the time base TB (1 ps) with a multiplier."""
    units = dict(_TIME_UNITS_S)
    for prefix, factor in _PREFIX.items():
        units[prefix + "TB"] = factor * 1e-12
    return units


VOLT_UNITS = {"V": 1.0, "MV": 1e-3}


def on_off(args: str) -> bool:
    text = args.strip().upper()
    if text in ("", "1", "ON"):  # the manual's default value of ENABle is ON
        return True
    if text in ("0", "OFF"):
        return False
    raise CommandError(-224, f"Illegal parameter value: {args[:30]!r} (ON or OFF)")


class SimTimeController(Device):
    identity = "IDQ,ID1000,{serial},7.2-sim"
    allow_blocks = False

    def __init__(
        self, name: str, rng: np.random.Generator, dark_count_hz: float, serial: int
    ) -> None:
        self.rng = rng
        self.dark_count_hz = dark_count_hz
        self.identity = self.identity.format(serial=serial)
        self.tag_sinks: list[TagSink] = []
        """Where finished recordings' timestamps go: the host's DLT (kept over a reset)."""
        super().__init__(name)

    def setup(self) -> None:
        seconds = time_units()
        # the four inputs and the START input (its counter and threshold, no time tags here)
        for head, pick in (("INPUt#", self._ch), ("STARt", lambda: START)):
            self._add_input_commands(head, pick, seconds)
        self.add("RAW#:SEND", lambda a, ch: self.raw_send.__setitem__(self._ch(ch), on_off(a)))
        self.add("RAW#:SEND?", lambda a, ch: "ON" if self.raw_send[self._ch(ch)] else "OFF")
        self.add(
            "RECord:DURation",
            lambda a: self._set_duration(quantity(a, seconds, 1e-12, "time")),
        )
        self.add("RECord:DURation?", lambda a: f"{round(self.record_s * 1e12)}TB")
        self.add("RECord:ENABle", lambda a: setattr(self, "record_enabled", on_off(a)))
        self.add("RECord:ENABle?", lambda a: "ON" if self.record_enabled else "OFF")
        self.add("RECord:NUMber", lambda a: self._set_number(a))
        self.add("RECord:NUMber?", lambda a: str(self.record_number))
        self.add("RECord:TRIGger:ARM:MODE", lambda a: self._set_arm_mode(a))
        self.add("RECord:TRIGger:ARM:MODE?", lambda a: "MANU")
        self.add("RECord:PLAY", lambda a: self._play())
        self.add("RECord:STOP", lambda a: self._stop())
        self.add("RECord:STAGe?", lambda a: self._stage())

    def _add_input_commands(self, head: str, pick: Callable[..., int], seconds: dict) -> None:
        """`<head>:ENABle`, `:THREshold`, `:COUNter...`: `pick(*suffixes)` names the input."""
        add = self.add
        add(f"{head}:ENABle", lambda a, *s: self._enable(pick(*s), on_off(a)))
        add(f"{head}:ENABle?", lambda a, *s: "ON" if self.enabled[pick(*s)] else "OFF")
        add(f"{head}:THREshold", lambda a, *s: self._set_threshold(pick(*s), a))
        add(f"{head}:THREshold?", lambda a, *s: f"{self.threshold[pick(*s)]:.3f}V")
        add(f"{head}:COUNter:MODE", lambda a, *s: self._set_mode(pick(*s), a))
        add(f"{head}:COUNter:MODE?", lambda a, *s: self.counter_mode[pick(*s)])
        add(
            f"{head}:COUNter:INTEgration",
            lambda a, *s: self._set_integration(pick(*s), quantity(a, seconds, 1e-3, "time") * 1e3),
        )
        add(
            f"{head}:COUNter:INTEgration?",
            lambda a, *s: f"{self.integration_ms[pick(*s)]:.9g}",
        )
        add(f"{head}:COUNter:RESEt", lambda a, *s: self._reset_counter(pick(*s)))
        add(f"{head}:COUNter?", lambda a, *s: str(self._count(pick(*s))))

    # SCPI over ZeroMQ: one reply per request, errors inline ---------------------------------
    def queue_error(self, code: int, message: str) -> None:
        super().queue_error(code, message)
        self._last_error = (code, error_text(code, message))
        self._errors_in_message += 1

    def execute(self, message: Message) -> str | bytes | None:
        """A compound message runs its commands in turn; a header without a leading colon
        continues at the level of the one before (SCPI's relative paths:
        `INPU1:COUN:MODE CYCL;INTE 100;RESE`). Query replies are joined by newlines, as IDQ's
        examples read them (`answer.splitlines()`). The first error ends the message, and
        the reply is that error, inline (`SCPI_ERR_<code>: <text>`); the error queue holds
        it too."""
        parts = _compound(message.text) or [message.text]
        replies, path = [], ""
        self._errors_in_message = 0
        self._now = time.monotonic()  # the counters' reads of one message see one instant
        for part in parts:
            relative = not part.startswith((":", "*")) and path
            full = path + part if relative else part.lstrip(":")
            if not full.startswith("*"):
                head = full.split(" ", 1)[0]
                path = head[: head.rfind(":") + 1] if ":" in head else ""
            reply = self._execute_one(Message(full, None))
            if self._errors_in_message:
                code, text = self._last_error
                return f"SCPI_ERR_{code}: {text}"
            if isinstance(reply, str) and reply:
                replies.append(reply)
        return "\n".join(replies)

    # inputs -------------------------------------------------------------------------------
    def _ch(self, ch: int) -> int:
        if ch not in INPUTS:
            raise CommandError(-114, f"Header suffix out of range: {ch} (1..4)")
        return ch

    def _enable(self, ch: int, on: bool) -> None:
        self.enabled[ch] = on

    def _set_threshold(self, ch: int, args: str) -> None:
        volts = quantity(args, VOLT_UNITS, 1.0, "voltage")
        if not THRESHOLD_V[0] <= volts <= THRESHOLD_V[1]:
            raise CommandError(-222, f"Data out of range: {volts:g} V ({THRESHOLD_V} V)")
        self.threshold[ch] = volts

    def _set_mode(self, ch: int, args: str) -> None:
        mode = args.strip().upper()
        for full, short in (("CYCLE", "CYCL"), ("ACCUMULATE", "ACCU")):
            if mode in (full, short) or (mode.startswith(short) and full.startswith(mode)):
                self.counter_mode[ch] = short
                self._reset_counter(ch)
                return
        raise CommandError(-224, f"Illegal parameter value: {args[:30]!r} (CYCLe or ACCUm)")

    def _set_integration(self, ch: int, ms: float) -> None:
        if not (INTEGRATION_MS[0] <= ms <= INTEGRATION_MS[1]):
            raise CommandError(-222, f"Data out of range: {ms:g} ms {INTEGRATION_MS}")
        self.integration_ms[ch] = ms
        self._reset_counter(ch)

    def _reset_counter(self, ch: int) -> None:
        """The counter's value to 0: ACCUmulate starts again; CYCLe's clock runs on."""
        self._reset_at[ch] = self._message_time()

    def reset_state(self) -> None:
        self.enabled = {ch: False for ch in CHANNELS}
        self.threshold = {ch: 0.0 for ch in CHANNELS}
        self.counter_mode = {ch: "CYCL" for ch in CHANNELS}
        self.integration_ms = {ch: 100.0 for ch in CHANNELS}
        self.raw_send = {ch: False for ch in INPUTS}
        self.record_s = DEFAULT_RECORD_S
        self.record_number = 1
        self.record_enabled = False
        """Off at power-on (the manual at hand gives no default: the least convenient, so a
        host must enable what it records)."""
        self.tags = np.zeros(0, dtype=TAG_DTYPE)
        """The last recording's tags (time_ps since its first sync or its start)."""
        self.reference_index = np.zeros(0, dtype=np.uint64)
        """Per tag of `tags`: the number of START events up to it."""
        self.sent_per_input: dict[int, int] = {}
        self.recording = False
        self._record_started = 0.0
        self._photons: list[np.ndarray] = []
        self._sync_trains: list[tuple[float, float, int]] = []  # (t0 ns, period ns, count)
        self._syncs: list[np.ndarray] = []
        self.detector_dark_hz: dict[int, float] = {}  # set by the lab for the midpoint
        self.light_rates = None
        self._last_error: tuple[int, str] = (0, "No error")
        self._errors_in_message = 0
        """seconds -> {input: mean rate of light reaching it over a count} (the midpoint's)"""
        self._epoch = time.monotonic()
        """CYCLe's free-running period clock started here (power-up)."""
        self._reset_at = {ch: self._epoch for ch in CHANNELS}
        self._now: float | None = None
        """The time of the last message (its reads see one instant)."""
        self._cycle: tuple[int, float] | None = None
        self._cycle_counts: dict[int, int] = {}
        self._light: dict[tuple[float, float], dict[int, float]] = {}

    def _dark_rate(self, ch: int) -> float:
        """A detector's dark counts; the START input has no detector (its syncs come from
        the nodes' excitations, which a counter period of the virtual lab does not see)."""
        if ch == START:
            return 0.0
        return self.detector_dark_hz.get(ch, self.dark_count_hz)

    # counting ---------------------------------------------------------------------------------
    def _message_time(self) -> float:
        return self._now if self._now is not None else time.monotonic()

    def _light_over(self, seconds: float, started: float) -> dict[int, float]:
        key = (started, seconds)
        if key not in self._light:
            if len(self._light) > 64:
                self._light.clear()
            self._light[key] = self.light_rates(seconds, started) if self.light_rates else {}
        return self._light[key]

    def _draw(self, ch: int, seconds: float, started: float) -> int:
        if not self.enabled[ch] or seconds <= 0:
            return 0
        rate = self._dark_rate(ch) + self._light_over(seconds, started).get(ch, 0.0)
        return int(self.rng.poisson(rate * seconds))

    def _count(self, ch: int) -> int:
        """CYCLe: the last completed period's count; ACCUmulate: the count since the last
        reset (see the module's docstring)."""
        now = self._message_time()
        if self.counter_mode[ch] == "ACCU":
            started = self._reset_at[ch]
            return self._draw(ch, now - started, started)
        period = self.integration_ms[ch] * 1e-3
        index = int((now - self._epoch) // period)
        started = self._epoch + (index - 1) * period
        if index < 1 or started + period <= self._reset_at[ch]:
            return 0
        if self._cycle != (index, period):
            self._cycle, self._cycle_counts = (index, period), {}
        if ch not in self._cycle_counts:
            self._cycle_counts[ch] = self._draw(ch, period, started)
        return self._cycle_counts[ch]

    # time tags: RECord and RAW, photons and syncs from the physics -----------------------------
    @property
    def armed(self) -> bool:
        """A recording is playing (the midpoint's physics records syncs and photons)."""
        self._finish_if_elapsed()
        return self.recording

    def _set_duration(self, seconds: float) -> None:
        if not (0 < seconds <= MAX_RECORD_S):
            raise CommandError(-222, f"Data out of range: {seconds:g} s (0..{MAX_RECORD_S:g} s)")
        self.record_s = seconds

    def _set_number(self, args: str) -> None:
        """`REC:NUM <n>`: recordings of REC:DUR each, played one after the other (the lab's
        virtual time: one recording of n durations)."""
        try:
            number = int(args.strip())
        except ValueError:
            raise CommandError(-104, f"Data type error: {args[:30]!r} is not a count") from None
        if not 1 <= number <= 1_000_000:
            raise CommandError(-222, f"Data out of range: {number} (1..1000000)")
        self.record_number = number

    def _set_arm_mode(self, args: str) -> None:
        """Only MANUal (REC:PLAY starts a recording, as IDQ's examples use it) is modelled."""
        mode = args.strip().upper()
        if not ("MANUAL".startswith(mode) and mode.startswith("MANU")):
            raise CommandError(-224, f"Illegal parameter value: {args[:30]!r} (MANUal)")

    def _play(self) -> None:
        if not self.record_enabled:
            raise CommandError(-221, "Settings conflict: REC:ENAB OFF")
        self.tags = np.zeros(0, dtype=TAG_DTYPE)
        self.reference_index = np.zeros(0, dtype=np.uint64)
        self._photons, self._sync_trains, self._syncs = [], [], []
        self.recording = True
        self._record_started = time.monotonic()

    def _stage(self) -> str:
        self._idle_to_the_end()
        self._finish_if_elapsed()
        return "PLAYING" if self.recording else "STOPPED"

    def _idle_to_the_end(self) -> None:
        """Asked about a recording that has seen no sync, the virtual lab is idle: its time
        runs at once to the recording's end (dark counts over all of it). A recording the
        midpoint's physics feeds (syncs came) lasts until `RECord:STOP` or its duration in
        wall time."""
        if self.recording and not self._syncs and not self._sync_trains:
            self._finish(self.record_s * self.record_number)

    def _finish_if_elapsed(self) -> None:
        total = self.record_s * self.record_number
        if self.recording and time.monotonic() - self._record_started >= total:
            self._finish(total)

    def _stop(self) -> None:
        if self.recording:
            total = self.record_s * self.record_number
            self._finish(min(time.monotonic() - self._record_started, total))

    def record_syncs(self, times_ns: np.ndarray) -> None:
        self._syncs.append(np.asarray(times_ns, dtype=float))

    def record_sync_train(self, t0_ns: float, period_ns: float, n: int) -> None:
        self._sync_trains.append((float(t0_ns), float(period_ns), int(n)))

    def record_photons(self, times_ns: np.ndarray, delays_ns: np.ndarray, channels) -> None:
        part = np.zeros(len(times_ns), dtype=[("t", "f8"), ("d", "f8"), ("c", "u2")])
        part["t"], part["d"], part["c"] = times_ns, delays_ns, channels
        self._photons.append(part[np.isin(part["c"], self._sending())])

    def _sending(self) -> list[int]:
        return [c for c in INPUTS if self.enabled[c] and self.raw_send[c]]

    def _finish(self, seconds: float) -> None:
        """The recording ends; its timestamps go to the sinks (the host's DLT)."""
        self.recording = False
        self._record(seconds)
        self._send_timestamps()

    def settle(self) -> None:
        """What the unit has done by now (a recording that ran out has ended): asked by the
        host's DLT, which hears from the unit without asking."""
        self._idle_to_the_end()
        self._finish_if_elapsed()

    def _send_timestamps(self) -> None:
        """Section 6.3.4's pairs, per input with RAW<n>:SEND ON, to every sink: the end of
        the acquisition goes out for a disabled input too (with no timestamps). A frozen
        unit sends nothing."""
        self.sent_per_input = {}
        if self.faults.frozen:
            return
        for ch in (c for c in INPUTS if self.raw_send[c]):
            mine = self.tags["channel"] == ch
            pairs = np.empty((int(mine.sum()), 2), dtype=np.uint64)
            pairs[:, 0] = self.tags["delay_ps"][mine]
            pairs[:, 1] = self.reference_index[mine]
            self.sent_per_input[ch] = len(pairs)
            for sink in self.tag_sinks:
                sink(ch, pairs)

    def _record(self, seconds: float) -> None:
        """With syncs, the tags are the photons plus dark counts over the span the syncs
        cover; without, dark counts over the recording's time."""
        if not self._syncs and not self._sync_trains:
            self._dark_only(seconds)
            return
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
        for ch in self._sending():
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
        self.reference_index = self._syncs_up_to(everything["t"][:MAX_TAGS])

    def _dark_only(self, seconds: float) -> None:
        parts = []
        for ch in self._sending():
            n = min(int(self.rng.poisson(self._dark_rate(ch) * seconds)), MAX_TAGS)
            t = self.rng.integers(0, max(int(seconds * 1e12), 1), size=n, dtype=np.int64)
            tags = np.zeros(n, dtype=TAG_DTYPE)
            tags["time_ps"], tags["delay_ps"], tags["channel"] = t, t, ch  # no sync: since start
            parts.append(tags)
        tags = np.concatenate(parts) if parts else np.zeros(0, dtype=TAG_DTYPE)
        self.tags = np.sort(tags, order="time_ps")[:MAX_TAGS]
        self.reference_index = np.zeros(len(self.tags), dtype=np.uint64)  # no START event

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

    def _syncs_up_to(self, t: np.ndarray) -> np.ndarray:
        """The reference index of each t (ns): START events at or before it, over single
        syncs and periodic trains (trains follow one another, they do not overlap)."""
        count = np.zeros(len(t), dtype=np.int64)
        if self._syncs:
            singles = np.sort(np.concatenate(self._syncs))
            count += np.searchsorted(singles, t, side="right")
        if self._sync_trains:
            trains = np.array(sorted(self._sync_trains))
            t0, period, n = trains[:, 0], trains[:, 1], trains[:, 2].astype(np.int64)
            before = np.concatenate([[0], np.cumsum(n)])
            idx = np.searchsorted(t0, t, side="right") - 1
            j = np.clip(idx, 0, None)
            partial = np.clip(np.floor((t - t0[j]) / period[j]).astype(np.int64) + 1, 0, n[j])
            count += np.where(idx >= 0, before[j] + partial, 0)
        return count.astype(np.uint64)

    def state(self) -> dict:
        return {
            "enabled": {str(k): v for k, v in self.enabled.items() if k != START},
            "threshold_v": {str(k): v for k, v in self.threshold.items() if k != START},
            "integration_ms": {str(k): v for k, v in self.integration_ms.items() if k != START},
            "counter_mode": {str(k): v for k, v in self.counter_mode.items() if k != START},
            "raw_send": {str(k): v for k, v in self.raw_send.items()},
            "armed": self.recording,
            "sent_per_input": {str(k): v for k, v in self.sent_per_input.items()},
        }
