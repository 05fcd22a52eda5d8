"""`qnode soak`: entanglement on the simulated lab for M minutes under random faults, then an
audit of every session file against the simulator's ground truth.

The simulated lab, both node daemons and the midpoint daemon (with herald faults allowed) run
in a folder of their own. Sessions of entanglement follow one another, A and B taking turns to
initiate, while an injector draws faults from the menu below with a seeded random generator:
each fault of the menu once, in random order, then again. Meanwhile a monitor polls every
station's state and adds up the time each spends in its safe state (a fault). When the time is
up the injector stops, every instrument fault is cleared and one more session must complete.

The audit (controller/harness/soak_audit.py) then reads every node's session file and the
simulator's heralds: pairs delivered, lost, double-counted, without a herald of the physics;
and a fault counts as recovered once a session that started after it completed.
The exit code is 0 only with no pair lost, double-counted or phantom and every fault recovered.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controller.data.sessionfile import awaiting_reconciliation, find_session_files, read_session
from controller.harness.sim import SimControl, SimControlError, start_sim
from controller.harness.soak_audit import MIDPOINT, NODES, Audit, audit, reason_kind
from controller.labconfig import LabConfig, read_resource_map
from controller.midpoint.faults import FAULT_MODES
from controller.operator.client import NodeClient
from controller.operator.daemons import start_daemon, terminate
from qnode.errors import QnodeError

if TYPE_CHECKING:
    from controller.harness.soak_network import NetworkSoakReport

INSTRUMENT_FAULTS = ("freeze", "garble", "drop", "reset", "delay")
HERALD_FAULTS = tuple(f"herald_{mode}" for mode in FAULT_MODES)
RESTARTS = ("restart_node", "restart_midpoint")
FAULT_MENU = INSTRUMENT_FAULTS + HERALD_FAULTS + RESTARTS
SESSION_PAIRS = 150
SESSION_DEADLINE_S = 60.0
FIDELITY_MIN = 0.8
FINAL_TRIES = 3
RECONCILE_WAIT_S = 60.0
MONITOR_S = 0.25
MIN_SESSION_S = 5.0
"""No new session with less time than this left (its deadline would end it)."""


@dataclass
class Fault:
    kind: str
    target: str
    detail: str
    injected: float
    """Seconds since the soak started, as are the other times."""
    cleared: float | None = None
    """When the fault stopped acting (unfrozen, daemon back up); queued faults: at once."""
    recovered: float | None = None
    """When the first session started after it cleared completed."""


@dataclass
class SessionRun:
    session: str
    initiator: str
    started: float
    ended: float | None = None
    state: str = "running"
    reason: str = ""
    reported: int | None = None
    """Delivered pairs, as the initiator's summary told the operator."""


@dataclass
class SoakReport:
    seed: int
    minutes: float
    wall_s: float
    faults: list[Fault]
    sessions: list[SessionRun]
    audit: Audit
    safe_state_s: dict[str, float]
    down_s: dict[str, float]
    refusals: dict[str, int] = field(default_factory=dict)
    """Requests for a session the initiator refused, by reason (a station restarting...)."""

    @property
    def recovered(self) -> int:
        return sum(f.recovered is not None for f in self.faults)

    @property
    def clean(self) -> bool:
        a = self.audit
        return (
            a.delivered > 0
            and a.lost == a.double_counted == a.phantom == 0
            and self.recovered == len(self.faults)
        )

    def as_dict(self) -> dict:
        return {
            "seed": self.seed,
            "minutes": self.minutes,
            "wall_s": self.wall_s,
            "clean": self.clean,
            "faults_injected": len(self.faults),
            "faults_recovered": self.recovered,
            "faults_by_kind": dict(Counter(f.kind for f in self.faults)),
            "faults": [asdict(f) for f in self.faults],
            "sessions": [asdict(s) for s in self.sessions],
            "audit": asdict(self.audit),
            "safe_state_s": self.safe_state_s,
            "down_s": self.down_s,
            "refusals": self.refusals,
        }


# the stations --------------------------------------------------------------------------------
class Stations:
    """The simulated lab and the three daemons: started, killed and restarted by the soak."""

    def __init__(self, lab: LabConfig, folder: Path, seed: int) -> None:
        self.lab = lab
        self.folder = folder
        self.seed = seed
        self.resource_map = folder / "resources.json"
        self.procs: dict[str, object] = {}
        self.sim: SimControl | None = None
        self.resources: dict[str, str] = {}
        self._lock = threading.Lock()

    def start_lab(self) -> None:
        log = self.folder / "sim.log"
        self.procs["sim"] = start_sim(self.lab, self.resource_map, seed=self.seed, log=log)
        self.sim = SimControl(self.resource_map)
        self.resources = read_resource_map(self.lab, self.resource_map)

    def start(self, station: str, restart: bool = False) -> None:
        proc = start_daemon(
            self.lab,
            station,
            log=self.folder / f"{station}.log",
            resource_map=self.resource_map,
            allow_faults=self.lab.nodes[station].kind == "midpoint",
            append=restart,
        )
        with self._lock:
            self.procs[station] = proc

    def kill(self, station: str) -> None:
        with self._lock:
            proc = self.procs.pop(station)
        proc.kill()  # a crash, not a clean stop: no flush, no goodbye
        proc.wait(timeout=10)

    def up(self, station: str) -> bool:
        with self._lock:
            proc = self.procs.get(station)
        return proc is not None and proc.poll() is None

    def client(self, station: str, timeout_s: float = 5.0) -> NodeClient:
        return NodeClient.for_lab(self.lab, station, timeout_s=timeout_s)

    def stop_all(self) -> None:
        with self._lock:
            daemons = [n for n in self.procs if n != "sim"]
        for name in [*daemons, "sim"]:
            proc = self.procs.pop(name, None)
            if proc is not None:
                terminate(proc)


# faults --------------------------------------------------------------------------------------
class Injector(threading.Thread):
    """Draws faults from the menu, each kind once per cycle in random order, at random times
    around a mean interval, and clears the ones that last (freeze, delay, restarts)."""

    def __init__(self, stations: Stations, rng: random.Random, interval_s: float, clock) -> None:
        super().__init__(name="soak-injector", daemon=True)
        self.stations = stations
        self.rng = rng
        self.interval_s = interval_s
        self.clock = clock
        self.faults: list[Fault] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        names = sorted(stations.resources)
        self.tcp = [n for n in names if _networked(stations.resources[n])]
        """TCP sockets and ZeroMQ (the time taggers): a connection to drop."""
        self.serial = [n for n in names if n not in self.tcp]
        self.instruments = names

    def run(self) -> None:
        cycle: list[str] = []
        while not self.stop.wait(self.rng.uniform(0.5, 1.5) * self.interval_s):
            if not cycle:
                cycle = list(FAULT_MENU)
                self.rng.shuffle(cycle)
            kind = cycle.pop()
            try:
                self.inject(kind)
            except (QnodeError, SimControlError, OSError, RuntimeError) as e:
                self.errors.append(f"{kind}: {e}")

    def inject(self, kind: str) -> None:
        rng, sim = self.rng, self.stations.sim
        if kind in INSTRUMENT_FAULTS:
            pool = {"drop": self.tcp, "reset": self.serial}.get(kind, self.instruments)
            target = rng.choice(pool)
            if kind == "freeze":
                seconds = round(rng.uniform(0.5, 3.0), 2)
                fault = self._record(kind, target, f"frozen for {seconds} s")
                sim.fault(target, "freeze")
                self.stop.wait(seconds)
                sim.fault(target, "unfreeze")
                fault.cleared = self.clock()
            elif kind == "delay":
                seconds = round(rng.uniform(0.05, 0.5), 2)
                lasting = round(rng.uniform(1.0, 3.0), 2)
                fault = self._record(kind, target, f"replies {seconds} s late for {lasting} s")
                sim.fault(target, "delay", seconds=seconds)
                self.stop.wait(lasting)
                sim.fault(target, "delay", seconds=0.0)
                fault.cleared = self.clock()
            else:
                detail = {"garble": "next reply garbled", "drop": "connection dropped"}
                fault = self._record(kind, target, detail.get(kind, "power-on reset"))
                sim.fault(target, kind)
                fault.cleared = fault.injected
        elif kind in HERALD_FAULTS:
            mode = kind.removeprefix("herald_")
            node = rng.choice(NODES)
            count, after = rng.randint(1, 3), rng.randint(0, 30)
            delay_s = round(rng.uniform(0.1, 4.0), 2) if mode == "delay" else 0.0
            detail = f"{mode} {count} herald(s) to {node} after {after}"
            if delay_s:
                detail += f", {delay_s} s late"
            fault = self._record(kind, node, detail)
            with self.stations.client(MIDPOINT) as midpoint:
                midpoint.request(
                    "herald_fault", node=node, mode=mode, count=count, after=after, delay_s=delay_s
                )
            fault.cleared = fault.injected
        else:
            station = rng.choice(NODES) if kind == "restart_node" else MIDPOINT
            fault = self._record(kind, station, "killed (SIGKILL), then started again")
            self.stations.kill(station)
            self.stop.wait(rng.uniform(0.2, 2.0))
            self.stations.start(station, restart=True)
            fault.cleared = self.clock()

    def _record(self, kind: str, target: str, detail: str) -> Fault:
        fault = Fault(kind, target, detail, self.clock())
        self.faults.append(fault)
        return fault


class Monitor(threading.Thread):
    """Adds up the time each station spends in its safe state (state 'fault') or down."""

    def __init__(self, stations: Stations, names: tuple[str, ...] = (*NODES, MIDPOINT)) -> None:
        super().__init__(name="soak-monitor", daemon=True)
        self.stations = stations
        self.stop = threading.Event()
        self.safe_state_s = {s: 0.0 for s in names}
        self.down_s = dict(self.safe_state_s)

    def run(self) -> None:
        clients: dict[str, NodeClient] = {}
        last = time.monotonic()
        while not self.stop.wait(MONITOR_S):
            now = time.monotonic()
            step, last = now - last, now
            for station in self.safe_state_s:
                state = self._state(clients, station)
                if state == "fault":
                    self.safe_state_s[station] += step
                elif state is None:
                    self.down_s[station] += step
        for c in clients.values():
            c.close()

    def _state(self, clients: dict, station: str) -> str | None:
        if not self.stations.up(station):
            clients.pop(station, None)
            return None
        try:
            if station not in clients:
                clients[station] = self.stations.client(station, timeout_s=1.0)
            return clients[station].status()["state"]
        except QnodeError:
            clients.pop(station, None)  # restarted: new keys and port next time
            return None


# sessions ------------------------------------------------------------------------------------
def run_session(
    stations: Stations, initiator: str, clock, deadline_s: float, refusals: Counter
) -> SessionRun | None:
    """One session, followed to its end on whichever node still answers. None: refused (the
    reason counted in `refusals`)."""
    peer = next(n for n in NODES if n != initiator)
    try:
        with stations.client(initiator, timeout_s=30.0) as client:  # peer + midpoint: 20 s
            started = client.entangle(
                SESSION_PAIRS,
                "single_click",
                fidelity_min=FIDELITY_MIN,
                deadline_s=deadline_s,
                delivery="verify",
            )
    except QnodeError as e:
        refusals[reason_kind(f"{initiator}: {e}")] += 1
        return None
    run = SessionRun(started["session"], initiator, clock())
    give_up = time.monotonic() + deadline_s + 60.0
    while time.monotonic() < give_up:
        time.sleep(0.25)
        for station in (initiator, peer):
            try:
                with stations.client(station, timeout_s=2.0) as client:
                    summary = client.session(run.session)
            except QnodeError:
                continue  # killed, restarting, or restarted without the session
            if summary["state"] == "running":
                break
            run.ended, run.state, run.reason = clock(), summary["state"], summary["reason"]
            if station == initiator:
                run.reported = summary["stats"]["delivered"]
            return run
    run.ended, run.state, run.reason = clock(), "lost", "no node could say how it ended"
    return run


# the command -----------------------------------------------------------------------------------
def soak(
    lab: LabConfig,
    minutes: float,
    seed: int,
    out: Path,
    interval_s: float = 6.0,
    calibration: str = "truth",
    console: Console | None = None,
) -> SoakReport:
    """Run the soak in `out` (its lab data, logs and report); see the module's docstring."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["QNODE_DATA_DIR"] = str(out / "data")  # lab.data_dir and the daemons follow it
    rng = random.Random(seed)
    stations = Stations(lab, out, seed)
    t0 = time.monotonic()

    def clock() -> float:
        return round(time.monotonic() - t0, 3)

    runs: list[SessionRun] = []
    refusals: Counter = Counter()
    injector: Injector | None = None
    monitor: Monitor | None = None
    try:
        with console.status("starting the simulated lab and the daemons of A, B, M..."):
            stations.start_lab()
            for station in (MIDPOINT, *NODES):
                stations.start(station)
        with console.status(f"calibrating ({calibration})..."):
            calibrate(lab, stations, calibration)
        injector = Injector(stations, rng, interval_s, clock)
        monitor = Monitor(stations)
        monitor.start()
        injector.start()
        end = time.monotonic() + minutes * 60
        progress = Progress(
            TextColumn("[bold]soak[/]"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[text]}"),
            console=console,
        )
        with progress:
            task = progress.add_task("soak", total=minutes * 60, text="")
            turn = 0
            while (left := end - time.monotonic()) > MIN_SESSION_S:
                run = run_session(
                    stations, NODES[turn % 2], clock, min(SESSION_DEADLINE_S, left), refusals
                )
                turn += 1
                if run is None:
                    time.sleep(0.5)  # refused (a node restarting, busy ending): try again
                else:
                    runs.append(run)
                delivered = sum(r.reported or 0 for r in runs)
                progress.update(
                    task,
                    completed=min(minutes * 60, time.monotonic() - (end - minutes * 60)),
                    text=f"{len(runs)} sessions, ~{delivered} pairs, {len(injector.faults)} faults",
                )
        injector.stop.set()
        injector.join()
        with console.status("faults off; one more session must complete..."):
            for name in stations.resources:
                stations.sim.fault(name, "clear")
            for station in (MIDPOINT, *NODES):
                if not stations.up(station):
                    stations.start(station, restart=True)
            for _ in range(FINAL_TRIES):
                run = run_session(stations, NODES[turn % 2], clock, SESSION_DEADLINE_S, refusals)
                turn += 1
                if run is not None:
                    runs.append(run)
                    if run.state == "completed":
                        break
                time.sleep(1.0)
            wait_for_reconciled(lab.data_dir)
        monitor.stop.set()
        monitor.join()
        for fault in injector.faults:
            fault.recovered = next(
                (
                    r.ended
                    for r in runs
                    if r.state == "completed"
                    and fault.cleared is not None
                    and r.started >= fault.cleared
                ),
                None,
            )
        truth = stations.sim.heralds()
    finally:
        if injector is not None:
            injector.stop.set()
        if monitor is not None:
            monitor.stop.set()
        stations.stop_all()  # files closed before they are read
    reported = {r.session: r.reported for r in runs if r.reported is not None}
    result = audit(lab.data_dir, truth, reported)
    result.problems += [f"injector: {e}" for e in injector.errors]
    return SoakReport(
        seed=seed,
        minutes=minutes,
        wall_s=clock(),
        faults=injector.faults,
        sessions=runs,
        audit=result,
        safe_state_s={k: round(v, 2) for k, v in monitor.safe_state_s.items()},
        down_s={k: round(v, 2) for k, v in monitor.down_s.items()},
        refusals=dict(refusals),
    )


def calibrate(lab: LabConfig, stations: Stations, calibration: str) -> None:
    if calibration == "truth":
        from controller.harness.truth_calibration import calibrate_nodes_from_truth

        calibrate_nodes_from_truth(lab.data_dir, stations.sim)
        return
    from controller.data.params import ParameterStore
    from controller.harness.demo import calibrate as calibrate_node

    with ParameterStore(lab.data_dir / "params.sqlite") as store:
        for node in NODES:
            failed = [o for o in calibrate_node(lab, node, store) if o.verdict == "failed"]
            if failed:
                raise QnodeError(f"calibration of {node} failed: {failed[0].reason}")


def wait_for_reconciled(data_dir: Path, timeout_s: float = RECONCILE_WAIT_S) -> None:
    """A restarted node reconciles the session it crashed in with its peer; wait for that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_still_running(p) for p in find_session_files(data_dir)):
            return
        time.sleep(0.5)


def _still_running(path: Path) -> bool:
    try:
        info = read_session(path)
        return awaiting_reconciliation(info["status"], info["reason"])
    except OSError:  # being created (not yet in SWMR mode) or replaced: look again
        return True


def render(report: SoakReport, console: Console) -> None:
    a = report.audit
    completed = sum(r.state == "completed" for r in report.sessions)
    rows = [
        ("sessions (completed / all)", f"{completed} / {len(report.sessions)}"),
        ("pairs delivered (both nodes agree)", str(a.delivered)),
        ("pairs lost", str(a.lost)),
        ("pairs double-counted", str(a.double_counted)),
        ("pairs without a herald of the physics", str(a.phantom)),
        ("heralds of the physics", str(a.truth_heralds)),
        ("  never sent by the midpoint", str(a.unsent_heralds)),
        ("  sent, recorded by no node", str(a.unrecorded_heralds)),
        ("faults injected / recovered", f"{len(report.faults)} / {report.recovered}"),
    ]
    render_report(
        report,
        console,
        f"soak: {report.minutes:g} min, seed {report.seed}",
        rows,
        [("discarded heralded shots, by reason", "shots", a.discarded)],
        f"{a.delivered} pairs, {a.lost} lost, {a.double_counted} double-counted, "
        f"{report.recovered}/{len(report.faults)} faults recovered",
    )


def per_station(seconds: dict[str, float]) -> str:
    """Seconds per station, for a report's row."""
    return ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())


def render_report(
    report: SoakReport | NetworkSoakReport,
    console: Console,
    title: str,
    rows: list[tuple[str, str]],
    counted: list[tuple[str, str, dict[str, int]]],
    outcome: str,
) -> None:
    """A soak's report as both soaks print it: the summary table (`rows`, then each
    station's time in safe state and down), the faults, the tables by reason (`counted`:
    title, unit, counts; then the sessions refused), the audit's problems and the verdict
    with its `outcome`."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in [
        *rows,
        ("time in safe state (s)", per_station(report.safe_state_s)),
        ("time down (s)", per_station(report.down_s)),
    ]:
        table.add_row(name, value)
    console.print(table)
    faults = Table(title="faults")
    for column in ("t (s)", "kind", "target", "what", "recovered after (s)"):
        faults.add_column(column)
    for f in report.faults:
        after = "-" if f.recovered is None else f"{f.recovered - f.injected:.1f}"
        faults.add_row(f"{f.injected:.1f}", f.kind, f.target, f.detail, after)
    console.print(faults)
    for title_, unit, counts in [
        *counted,
        ("sessions refused, by reason", "times", report.refusals),
    ]:
        if counts:
            by_reason = Table(title=title_)
            by_reason.add_column("reason")
            by_reason.add_column(unit, justify="right")
            for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                by_reason.add_row(reason, str(n))
            console.print(by_reason)
    for problem in report.audit.problems:
        console.print(f"[red]{problem}[/]")
    verdict = "[green]clean[/]" if report.clean else "[red]NOT clean[/]"
    console.print(f"soak {verdict}: {outcome}")


def write_report(report: SoakReport | NetworkSoakReport, path: Path) -> Path:
    path.write_text(json.dumps(report.as_dict(), indent=1))
    return path


def _networked(resource: str) -> bool:
    """A VISA socket (`TCPIP::...`) or a ZeroMQ endpoint (`tcp://...`), not a serial line."""
    return resource.upper().startswith("TCPIP") or resource.startswith("tcp://")
