"""The node: sole owner of its instruments, runs compiled sequences point by point.

Blocking code (drivers are blocking); the daemon runs it in one worker thread and keeps its
own loop free for status and abort. Each instrument sits behind a lock, so a safe-state call
from the daemon never interleaves with a run's command on the same wire.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from controller.data.names import check_name, run_path
from controller.data.params import ParameterStore
from controller.data.runfile import EVENT_DTYPE, RunFile, retry_parked
from controller.labconfig import LabConfig
from drivers.base import Driver
from drivers.protocols import (
    Instrument,
    Laser,
    MicrowaveSource,
    RealTimeSequencer,
    WaveformGenerator,
)
from qnode import __version__
from qnode.errors import QnodeError
from sequences.compiler import (
    CR_COUNTS,
    ENTANGLEMENT_EVENTS,
    SHOT_END,
    Compiled,
    Hardware,
    compile_sequence,
)
from sequences.operations import Sequence, Sweep, to_data
from sequences.program import Event

log = logging.getLogger("qnode.node")

POLL_S = 0.005
ABORT_CHECK_POINTS = 64
"""While a sweep's points compile, an abort is looked for every this many points."""
MIN_POINT_TIMEOUT_S = 10.0
PETS_PER_TIMEOUT = 10
"""The run's polling loop sends the sequencer's watchdog a heartbeat this many times per
watchdog timeout (and at least once per poll that many apart)."""


class RunAborted(QnodeError):
    pass


D = TypeVar("D", bound=Instrument)
C = TypeVar("C", bound=Instrument)


class InstrumentHandle(Generic[D]):
    """A driver and the lock that makes this node its one user at a time; `with handle as
    driver:` holds the lock. The typed views of one instrument (`narrow`) share its lock."""

    def __init__(self, driver: D, lock: threading.RLock | None = None) -> None:
        self.driver = driver
        self.lock = lock if lock is not None else threading.RLock()

    def __enter__(self) -> D:
        self.lock.acquire()
        return self.driver

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def narrow(self, capability: type[C]) -> InstrumentHandle[C]:
        """The same instrument and lock, typed as a capability of drivers.protocols."""
        driver = self.driver
        if not isinstance(driver, capability):
            raise QnodeError(f"{driver.name} is not a {capability.__name__}")
        return InstrumentHandle(driver, self.lock)


@dataclass
class RunProgress:
    run_id: str
    name: str
    points_total: int
    file: str
    points_done: int = 0
    status: str = "running"
    reason: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PreparedRun:
    """A run whose every point compiled (the node claimed, nothing touched yet). Only the
    first point is kept compiled; the others are compiled again as they run, from the same
    parameters, so a run holds one point's waveforms at a time, however long its sweep."""

    sequence: Sequence
    sweep: Sweep
    points: list[dict[str, float]]
    params: dict[str, float]
    hardware: Hardware
    first: Compiled
    progress: RunProgress

    @property
    def run_id(self) -> str:
        return self.progress.run_id

    def compiled(self, k: int) -> Compiled:
        """Point k, compiled with its waveforms."""
        if k == 0:
            return self.first
        return compile_sequence(self.sequence, self.params, self.hardware, self.points[k])


def hardware_of(lab: LabConfig, node: str) -> Hardware:
    cfg = lab.nodes[node]
    awg_names = list(cfg.by_role("awg"))
    awg = cfg.instruments[awg_names[0]] if awg_names else None
    return Hardware(
        ttl=dict(cfg.channels.ttl),
        optics={path: optical.ttl for path, optical in cfg.optics.items()},
        counters=dict(cfg.channels.counters),
        iq_channels=(cfg.channels.awg.get("mw_i", 1), cfg.channels.awg.get("mw_q", 2)),
        awg_sample_rate_hz=awg.limits["sample_rate_hz"][1] if awg else 1e9,
        awg_amplitude_vpp=awg.limits["amplitude_vpp"][1] if awg else 0.0,
        awg_memory_points=int(awg.limits["waveform_points"][1]) if awg else 0,
        memories=tuple(cfg.memories),
    )


def parse_shots(
    compiled: Compiled, events: list[Event]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events of one point -> counts (shots, readouts), valid (shots), check counts (shots).
    A program that ends at its herald (Compiled.ends_at_herald) leaves the shots after it
    unrun: zero counts, not valid."""
    shots, n = compiled.shots, max(len(compiled.readouts), 1)
    counts = np.zeros((shots, n), dtype=np.int32)
    valid = np.zeros(shots, dtype=bool)
    checks = np.zeros(shots, dtype=np.int32)
    shot, slot = 0, 0
    for event in events:
        if shot >= shots:
            raise QnodeError(f"more shots in the events than the {shots} programmed")
        if event.code == SHOT_END:
            if slot != len(compiled.readouts):
                raise QnodeError(
                    f"shot {shot} ended after {slot} of {len(compiled.readouts)} readouts"
                )
            valid[shot] = event.value == 0
            shot, slot = shot + 1, 0
        elif event.code == CR_COUNTS:
            checks[shot] = event.value
        elif event.code in ENTANGLEMENT_EVENTS:
            pass  # kept in the run file's event table; the link layer reads them
        elif 1 <= event.code <= len(compiled.readouts):
            if event.code != slot + 1:
                raise QnodeError(f"shot {shot}: readout {event.code} out of order")
            counts[shot, slot] = event.value
            slot += 1
        else:
            raise QnodeError(f"unexpected event code {event.code}")
    if shot != shots and not (compiled.ends_at_herald and shot >= 1):
        raise QnodeError(f"the sequencer reported {shot} shots, the program has {shots}")
    return counts, valid, checks


class NodeRuntime:
    def __init__(
        self,
        lab: LabConfig,
        node: str,
        resources: dict[str, str] | None,
        store: ParameterStore,
    ) -> None:
        if node not in lab.nodes or lab.nodes[node].kind != "memory":
            raise QnodeError(f"{node!r} is not a memory node of {lab.lab.name}")
        self.lab = lab
        self.node = node
        self.cfg = lab.nodes[node]
        if self.cfg.platform is None:  # the lab file's check refuses a memory node without
            raise QnodeError(f"memory node {node!r} has no platform")
        self.platform: str = self.cfg.platform
        self.store = store
        self.hardware = hardware_of(lab, node)
        self.instruments: dict[str, InstrumentHandle[Driver]] = {
            name: InstrumentHandle(lab.make_driver(node, name, resources))
            for name in self.cfg.instruments
        }
        self._sequencer = self.role("sequencer").narrow(RealTimeSequencer)
        self.watchdog_s = self.cfg.instruments[next(iter(self.cfg.by_role("sequencer")))].watchdog
        self._microwave = self.role("microwave_source").narrow(MicrowaveSource)
        self._awg = self.role("awg").narrow(WaveformGenerator)
        self._lasers = {
            name: self.instruments[name].narrow(Laser) for name in self.cfg.by_role("laser")
        }
        self.state = "idle"
        self.fault_reason = ""
        self.run_progress: RunProgress | None = None
        self.abort_event = threading.Event()
        self.fed_at = 0.0
        """When the host last fed the running program (time.monotonic: a forwarded herald, the
        software heralding's per-attempt outcome): progress, as an event from it is."""
        self._claim = threading.Lock()  # state changes of prepare, whichever thread asks
        self.lab_text = Path(lab.source).read_text() if Path(lab.source).exists() else ""

    # instruments ---------------------------------------------------------------------------
    def sequencer(self) -> InstrumentHandle[RealTimeSequencer]:
        return self._sequencer

    def microwave(self) -> InstrumentHandle[MicrowaveSource]:
        return self._microwave

    def awg(self) -> InstrumentHandle[WaveformGenerator]:
        return self._awg

    def laser(self, name: str) -> InstrumentHandle[Laser]:
        """One of the node's lasers, by its instrument name (as an optical path names it)."""
        return self._lasers[name]

    def role(self, role: str) -> InstrumentHandle[Driver]:
        """The (first) instrument of a role, untyped: the typed accessors above say what the
        code may call."""
        names = list(self.cfg.by_role(role))
        return self.instruments[names[0]]

    # lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        for handle in self.instruments.values():
            with handle as driver:
                driver.open()

    def close(self) -> None:
        for handle in self.instruments.values():
            with handle as driver:
                driver.close()

    def safe_state(self) -> list[str]:
        """Every instrument to its safe state; returns the problems (never raises)."""
        problems = []
        for name, handle in self.instruments.items():
            try:
                with handle as driver:
                    if not driver.is_open:
                        driver.open()
                    driver.safe_state()
            except Exception as e:
                problems.append(f"{name}: {e}")
        return problems

    def mark_fault(self, reason: str) -> None:
        """In fault, with the reason (the caller has tried the safe state already)."""
        log.error("node %s fault: %s", self.node, reason)
        self.state = "fault"
        self.fault_reason = reason

    def enter_fault(self, reason: str) -> None:
        self.mark_fault(reason)
        problems = self.safe_state()
        if problems:
            self.fault_reason += " | safe state incomplete: " + "; ".join(problems)

    def status(self) -> dict:
        return {
            "node": self.node,
            "state": self.state,
            "fault_reason": self.fault_reason,
            "run": self.run_progress.as_dict() if self.run_progress else None,
        }

    # running ------------------------------------------------------------------------------
    def check_sweep(self, sweep: Sweep) -> None:
        """A sweep within the lab's bound on points per run (before anything is compiled)."""
        limit = self.lab.lab.max_sweep_points
        if sweep.size > limit:
            shape = " x ".join(f"{len(a.values)} ({a.name})" for a in sweep.axes)
            raise QnodeError(
                f"the sweep has {sweep.size} points ({shape}), beyond this lab's bound of "
                f"{limit} points per run (max_sweep_points in the lab file's [lab] section): "
                "split it into several runs"
            )

    def prepare(self, sequence: Sequence, sweep: Sweep, data_dir: Path) -> PreparedRun:
        """Claim the node and compile every point (so a bad sequence fails before anything is
        touched; the points after the first without building their waveforms). The node is
        busy from here (its run `preparing` while the points compile) until `execute`
        returns; a sequence that does not compile leaves the node as it found it."""
        check_name("sequence", sequence.name)  # it becomes part of the run file's name
        self.check_sweep(sweep)
        with self._claim:
            if self.state == "busy":
                busy_with = self.run_progress.run_id if self.run_progress else "?"
                raise QnodeError(f"node {self.node} is busy with run {busy_with}")
            before = (self.state, self.fault_reason, self.run_progress)
            run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            path = run_path(data_dir, run_id, self.node, sequence.name)
            progress = RunProgress(run_id, sequence.name, sweep.size, str(path), status="preparing")
            self.state, self.run_progress = "busy", progress
            self.abort_event.clear()
        try:
            params = self.store.values(self.node, self.platform)
            points = sweep.points()
            first = compile_sequence(sequence, params, self.hardware, points[0])
            for k in range(1, len(points)):
                if k % ABORT_CHECK_POINTS == 0 and self.abort_event.is_set():
                    raise RunAborted(f"aborted while its points compiled ({k} of {len(points)})")
                compile_sequence(sequence, params, self.hardware, points[k], waveforms=False)
            if before[0] == "fault":
                self._recover()
            for problem in retry_parked():
                log.warning("node %s: a run file is still not closed: %s", self.node, problem)
        except BaseException:
            with self._claim:
                self.state, self.fault_reason, self.run_progress = before
            raise
        with self._claim:
            self.state, self.fault_reason = "busy", ""
            progress.status, progress.started = "running", time.time()
        return PreparedRun(sequence, sweep, points, params, self.hardware, first, progress)

    def execute(
        self,
        prepared: PreparedRun,
        on_point: Callable[[RunProgress], None] | None = None,
        on_events: Callable[[list[Event]], None] | None = None,
    ) -> RunProgress:
        """Run the points; a fault puts the node in its safe state and records why.
        `on_events` sees the sequencer's events as they arrive (the link layer's input).

        Whatever fails (the run, the run file, the clean-up itself), the run ends the same
        way: instruments safe first, then the file closed (or parked, see runfile.py), then
        the node idle (completed, aborted) or in fault with the reason. Raises nothing but
        what is not an Exception (after that same clean-up)."""
        progress = prepared.progress
        run_file: RunFile | None = None
        outcome, reason = "failed", "interrupted"  # what a BaseException passing through leaves
        try:
            run_file = self._open_run_file(prepared)
            self._run_points(prepared, run_file, on_point, on_events)
            outcome, reason = "completed", ""
        except RunAborted as e:
            outcome, reason = "aborted", str(e)
        except Exception as e:
            outcome, reason = "failed", f"{type(e).__name__}: {e}"
        finally:
            self._end_run(progress, run_file, outcome, reason)
        return progress

    def _open_run_file(self, prepared: PreparedRun) -> RunFile:
        progress, sequence, sweep = prepared.progress, prepared.sequence, prepared.sweep
        try:
            return RunFile(
                Path(progress.file),
                run_id=progress.run_id,
                node=self.node,
                sequence_data=to_data(sequence, sweep),
                axes=[(a.name, list(a.values), a.unit) for a in sweep.axes],
                shots=sequence.shots,
                readouts=prepared.first.readouts,
                lab_text=self.lab_text,
                parameters=self.store.snapshot(self.node, self.platform),
                software_version=__version__,
                listing=prepared.first.listing,
            )
        except Exception as e:
            raise QnodeError(f"cannot write the run file: {e}") from e

    def _run_points(
        self,
        prepared: PreparedRun,
        run_file: RunFile,
        on_point: Callable[[RunProgress], None] | None,
        on_events: Callable[[list[Event]], None] | None,
    ) -> None:
        progress = prepared.progress
        self._prepare(prepared.first)
        uploaded: dict[str, tuple] = {}
        for k in range(len(prepared.points)):
            if self.abort_event.is_set():
                raise RunAborted("aborted by the operator")
            program = prepared.compiled(k)
            events = self._run_point(program, uploaded, on_events)
            counts, valid, checks = parse_shots(program, events)
            table = np.zeros(len(events), dtype=EVENT_DTYPE)
            if events:
                table["point"] = k
                table["time_ns"] = [e.time_ns for e in events]
                table["code"] = [e.code for e in events]
                table["value"] = [e.value for e in events]
            run_file.add_point(k, counts, valid, checks, table)
            progress.points_done = k + 1
            if on_point:
                on_point(progress)

    def _end_run(
        self, progress: RunProgress, run_file: RunFile | None, outcome: str, reason: str
    ) -> None:
        """The one way a run ends; each step on its own, so one failing skips no other. A run
        whose clean-up fails (an instrument not made safe, its file not closed) has failed,
        however its points went: the node is in fault until the next run finds it sound."""
        problems: list[str] = []
        try:
            problems += [f"safe state incomplete: {p}" for p in self.safe_state()]
        except BaseException as e:  # safe_state does not raise; this is belt and braces
            problems.append(f"safe state failed: {type(e).__name__}: {e}")
        if problems:
            outcome, reason = "failed", "; ".join([r for r in (reason, *problems) if r])
        if run_file is not None and run_file.is_open:
            try:
                run_file.close(outcome, reason)
            except BaseException as e:
                late = f"closed late: {type(e).__name__}: {e}"
                late = f"{reason}; {late}" if reason else late
                run_file.park("failed", late, str(e))  # a no-op if close parked it already
                problem = (
                    f"run file {run_file.path} not closed ({type(e).__name__}: {e}); "
                    "it is closed when it can be"
                )
                outcome, reason = "failed", "; ".join([r for r in (reason, problem) if r])
        progress.status, progress.reason = outcome, reason
        progress.finished = time.time()
        if outcome == "failed":
            fault = f"run {progress.run_id} failed: {reason}"
            log.error("node %s fault: %s", self.node, fault)
            self.state, self.fault_reason = "fault", fault
        else:
            self.state = "idle"

    def _recover(self) -> None:
        """Leaving fault: reconnect and check every instrument before a new run (the caller
        then claims the node)."""
        for name, handle in self.instruments.items():
            with handle as driver:
                try:
                    driver.close()
                    driver.open()
                    driver.identity()
                except Exception as e:
                    raise QnodeError(f"still in fault: {name} does not answer ({e})") from e
        log.info("node %s: fault cleared (%s)", self.node, self.fault_reason)

    def _prepare(self, compiled: Compiled) -> None:
        """Lasers in constant power at their nominal power (a laser left in constant current
        ignores the set point), AWG channels at their amplitude, outputs on."""
        for optical in self.cfg.optics.values():
            with self.laser(optical.laser) as laser:
                laser.set_constant_power()
                laser.set_power(optical.nominal_power_w)
                laser.set_enabled(True)
        with self.awg() as awg:
            awg.stop()
            awg.set_sample_rate(self.hardware.awg_sample_rate_hz)
            for channel in self.hardware.iq_channels:
                awg.set_amplitude(channel, self.hardware.awg_amplitude_vpp)
                awg.set_output(channel, True)

    def _run_point(
        self,
        compiled: Compiled,
        uploaded: dict[str, tuple],
        on_events: Callable[[list[Event]], None] | None = None,
    ) -> list[Event]:
        if compiled.segments:
            with self.microwave() as mw:
                mw.set_frequency(compiled.settings["mw_frequency_hz"])
                mw.set_power(compiled.settings["mw_power_dbm"])
                mw.set_output(True)
            with self.awg() as awg:
                i_ch, q_ch = self.hardware.iq_channels
                for name in compiled.segments:
                    i, q = compiled.waveforms[name]
                    key = (i.tobytes(), q.tobytes())
                    if uploaded.get(name) != key:
                        awg.upload_waveform(f"{name}_i", i)
                        awg.upload_waveform(f"{name}_q", q)
                        uploaded[name] = key
                awg.set_sequence([{i_ch: f"{n}_i", q_ch: f"{n}_q"} for n in compiled.segments])
                awg.run()
        with self.sequencer() as seq:
            seq.set_watchdog(self.watchdog_s)  # halts the program safe if this host dies
            seq.load(compiled.program)
            seq.run()
        pet_every = self.watchdog_s / PETS_PER_TIMEOUT
        last_pet = time.monotonic()
        events: list[Event] = []
        # a watchdog on progress, not on the total: a shot ends with an event, so a sequencer
        # that sends nothing for many shot lengths is stuck (a slow one is not); a program
        # that waits for the host's outcome of each attempt (software heralding) and gets it
        # is running, however many attempts its shot takes (a shot of ~4000 attempts at a
        # few ms each outlasts any multiple of its best-case length)
        stall_s = max(MIN_POINT_TIMEOUT_S, 20 * compiled.shot_duration_ns * 1e-9)
        last_progress = time.monotonic()
        while True:
            with self.sequencer() as seq:
                if time.monotonic() - last_pet >= pet_every:
                    seq.pet_watchdog()  # however long the point: the host is alive
                    last_pet = time.monotonic()
                fresh = seq.read_events()
                state = seq.state()
            if fresh:
                events += fresh
                last_progress = time.monotonic()
                if on_events:
                    on_events(fresh)
            with self.sequencer() as seq:
                if state == "HALTED":
                    if seq.watchdog_tripped():
                        raise QnodeError(
                            "the sequencer's watchdog halted the program: no heartbeat from "
                            f"this host for {self.watchdog_s:g} s (lines safe)"
                        )
                    last = seq.read_events()
                    if last and on_events:
                        on_events(last)
                    return events + last
                if self.abort_event.is_set():
                    seq.stop()
                    raise RunAborted("aborted by the operator")
            if state == "IDLE":
                raise QnodeError("the sequencer stopped before the program's HALT")
            last_progress = max(last_progress, self.fed_at)
            if time.monotonic() - last_progress > stall_s:
                raise QnodeError(f"the sequencer reported nothing for {stall_s:g} s: stuck")
            time.sleep(POLL_S)
