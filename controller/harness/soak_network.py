"""`qnode soak` on a lab with a repeater (links and memories: labs/sim_three_node.toml):
end-to-end pairs A - C through B under random faults, audited against the simulator's truth.

The simulated lab, the node daemons A, B, C and the midpoint daemons M1, M2 (herald faults
allowed) run in a folder of their own; both links and B's memory are calibrated from the
truth. Network sessions (`network_entangle`, ends A and C, a few verified pairs each; a
minimum fidelity only in memory_cutoff's session) follow one another at the repeater while an
injector draws from the three-node menu below, each fault once in random order, then again:
- kill_repeater_mid_swap: B killed (SIGKILL) while its first link pair waits in its memory and
  it makes the second, then started again;
- kill_end, kill_midpoint: A or C, M1 or M2 killed and started again;
- herald_<mode>: the next herald(s) of M2 (first cycle; M1 the next) to one of its nodes
  dropped, duplicated, delayed or garbled (the midpoint's fault modes);
- memory_cutoff: the next session asks a minimum fidelity its stored pairs cannot keep (they
  meet it just after the move: their budget on B-C is far below a herald's attempts): B's link
  layer cuts them off, the end-to-end attempts are discarded with cause cutoff;
- repeater_<fault>: an instrument fault on B (frozen, garbled reply, dropped connection,
  power-on reset, late replies).
When the time is up the injector stops, every fault is cleared and one more session must
complete. The audit (soak_network_audit.py) then reads the three nodes' network session files,
the link layer's session files and each midpoint's heralds in the simulator's truth.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from controller.data.params import ParameterStore
from controller.harness.sim import SimControlError
from controller.harness.soak import (
    INSTRUMENT_FAULTS,
    Fault,
    Monitor,
    SessionRun,
    Stations,
    render_report,
    wait_for_reconciled,
)
from controller.harness.soak_audit import reason_kind
from controller.harness.soak_network_audit import NetworkAudit, audit_network
from controller.labconfig import LabConfig
from controller.midpoint.faults import FAULT_MODES
from controller.operator.client import NodeRequestError
from qnode.errors import QnodeError
from sequences.memory import gate_pulses_near

NETWORK_FAULT_MENU = (
    "kill_repeater_mid_swap",
    "kill_end",
    "kill_midpoint",
    *(f"herald_{mode}" for mode in FAULT_MODES),
    "memory_cutoff",
    *(f"repeater_{kind}" for kind in INSTRUMENT_FAULTS),
)
NETWORK_PAIRS = 3
"""End-to-end pairs per session (~2 s each at alpha 0.1 on this lab)."""
NETWORK_DEADLINE_S = 45.0
CUTOFF_FIDELITY_MIN = 0.5
"""memory_cutoff's session's minimum fidelity: the link layer takes the largest alpha whose
stored pair meets it after the move into memory (controller/link/plan.py), and B-C's alpha for
it (~0.44) dephases that pair under it within hundreds of attempts, against thousands for a
herald: most stored pairs are cut off. The other sessions ask none (a minimum makes the
link layer raise alpha to it: hil_tests/test_network_daemons.py)."""
CUTOFF_DEADLINE_S = 15.0
"""memory_cutoff's session ends at this deadline (little it stores can be delivered)."""
LINK_ALPHA = 0.1
"""Single-click's bright population on both links: p ~ 1e-4 per attempt, a link pair in about
a second of wall time (as hil_tests/test_network_daemons.py)."""
MEMORY_PLAN = {"c13_n_1e_at_alpha": 1000.0, "c13_n_1e_alpha": 0.5, "c13_move_fidelity": 0.95}
"""B's memory as the planning model sees it (dephasing per attempt at alpha 0.5, the move's
fidelity): a memory that keeps a pair over the ~1e4 attempts of a second link."""
CUTOFF_WAIT_S = 120.0
MID_SWAP_WAIT_S = 40.0
FINAL_TRIES = 3
MIN_SESSION_S = 8.0


@dataclass
class NetworkSoakReport:
    seed: int
    minutes: float
    wall_s: float
    faults: list[Fault]
    sessions: list[SessionRun]
    audit: NetworkAudit
    safe_state_s: dict[str, float]
    down_s: dict[str, float]
    refusals: dict[str, int] = field(default_factory=dict)

    @property
    def recovered(self) -> int:
        return sum(f.recovered is not None for f in self.faults)

    @property
    def final_completed(self) -> bool:
        return bool(self.sessions) and self.sessions[-1].state == "completed"

    @property
    def clean(self) -> bool:
        return self.audit.clean and self.recovered == len(self.faults) and self.final_completed

    def as_dict(self) -> dict:
        return {
            "mode": "network",
            "seed": self.seed,
            "minutes": self.minutes,
            "wall_s": self.wall_s,
            "clean": self.clean,
            "final_completed": self.final_completed,
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


def has_repeater(lab: LabConfig) -> bool:
    """A lab whose soak is the network's: more than one link and a node with a memory."""
    return len(lab.all_links) > 1 and any(c.memories for c in lab.nodes.values())


@dataclass(frozen=True)
class Roles:
    """Who is who on the lab: the ends, the repeater linked to both, each link's midpoint."""

    ends: tuple[str, str]
    repeater: str
    midpoints: tuple[str, str]
    """The first end's link's midpoint, then the second's."""

    @property
    def stations(self) -> tuple[str, ...]:
        return (*self.midpoints, self.ends[0], self.repeater, self.ends[1])

    @classmethod
    def of(cls, lab: LabConfig) -> Roles:
        for repeater, cfg in lab.nodes.items():
            links = list(lab.links_of(repeater).values())
            if cfg.kind == "memory" and cfg.memories and len(links) == 2:
                ends = (links[0].peer(repeater), links[1].peer(repeater))
                return cls(ends, repeater, (links[0].midpoint, links[1].midpoint))
        raise QnodeError(f"{lab.lab.name} has no memory node with two links (a repeater)")


def midpoint_of(lab: LabConfig) -> dict[frozenset[str], str]:
    return {frozenset(link.nodes): link.midpoint for link in lab.all_links.values()}


# calibration ----------------------------------------------------------------------------------
def grid_resonances(memory: dict) -> list[float]:
    """The memory's DD resonances tau_k = (2k - 1) / (4 f_mean) (Taminiau et al., PRL 109,
    137602 (2012)) of 1.5-2.5 us, each on the 2 ns grid, nearest the grid first (as the
    calibration tests take them)."""
    f_l, a_par, a_perp = memory["larmor_hz"], memory["a_par_hz"], memory["a_perp_hz"]
    mean = (f_l + math.hypot(f_l + a_par, a_perp)) / 2
    taus = [(2 * k - 1) / (4 * mean) * 1e9 for k in range(1, 400)]
    taus = [t for t in taus if 1500 <= t <= 2500]
    return [float(2 * round(t / 2)) for t in sorted(taus, key=lambda t: abs(2 * round(t / 2) - t))]


def grid_resonance(memory: dict) -> float:
    """The resonance nearest the 2 ns grid."""
    return grid_resonances(memory)[0]


def gate_populations(memory: dict, tau_ns: float, units: int = 300) -> np.ndarray:
    """The nucleus's |0> population after 1..units DD units (tau - pi - 2 tau - pi - tau, ideal
    pulses: two pulses each) with the electron in |0>, from |0>, on the truth's couplings."""
    f_l, a_par, a_perp = memory["larmor_hz"], memory["a_par_hz"], memory["a_perp_hz"]
    iz, ix = np.diag([0.5, -0.5]), np.array([[0, 0.5], [0.5, 0]])

    def turn(h: np.ndarray, ns: float) -> np.ndarray:
        ev, vec = np.linalg.eigh(2 * np.pi * h)
        return vec @ np.diag(np.exp(-1j * ev * ns * 1e-9)) @ vec.conj().T

    h0, h1 = f_l * iz, (f_l + a_par) * iz + a_perp * ix
    unit = turn(h0, tau_ns) @ turn(h1, 2 * tau_ns) @ turn(h0, tau_ns)
    state, out = np.array([1.0, 0.0], dtype=complex), np.empty(units)
    for n in range(units):
        state = unit @ state
        out[n] = abs(state[0]) ** 2
    return out


def gate_pulse_count(memory: dict, tau_ns: float) -> int:
    """The even pulse count whose DD train first turns the nucleus past pi/2 (its |0>
    population under a half) with the electron in |0>; QnodeError if it never does."""
    crossed = np.flatnonzero(gate_populations(memory, tau_ns) < 0.5)
    if not crossed.size:
        raise QnodeError(f"the DD gate at tau {tau_ns:g} ns never reaches pi/2 in 600 pulses")
    return gate_pulses_near(2 * (int(crossed[0]) + 1))


GRID_SEARCH_NS = 12
"""How far from each resonance's nearest grid point the gate's tau is looked for: the grid's
rounding (up to 1 ns against a ~2 MHz Larmor precession) adds a z turn per unit comparable to
the conditional one (A_perp / omega_L ~ 1 %), which can tilt the gate's axis until it never
reaches pi/2 (a calibration's c13_gate scan would pick another tau)."""


def memory_gate(memory: dict) -> tuple[float, int]:
    """(tau_ns, even pulse count) of the conditional pi/2 on the truth's couplings: the
    resonance nearest the 2 ns grid whose gate gets there (as the calibration tests take
    it); else, of the grid points within GRID_SEARCH_NS of a resonance, the one that gets
    there in the fewest pulses; else the deepest turn any reaches (the soak audits the
    bookkeeping, not the gate's fidelity)."""
    for tau_ns in grid_resonances(memory):
        with contextlib.suppress(QnodeError):
            return tau_ns, gate_pulse_count(memory, tau_ns)
    best: tuple[int, float] | None = None  # (pulses, tau)
    deepest: tuple[float, float, int] = (2.0, 0.0, 0)  # (min population, tau, pulses)
    for centre in grid_resonances(memory):
        for tau_ns in np.arange(centre - GRID_SEARCH_NS, centre + GRID_SEARCH_NS + 1, 2.0):
            populations = gate_populations(memory, float(tau_ns))
            crossed = np.flatnonzero(populations < 0.5)
            if crossed.size and (best is None or 2 * (int(crossed[0]) + 1) < best[0]):
                best = (gate_pulses_near(2 * (int(crossed[0]) + 1)), float(tau_ns))
            low = int(np.argmin(populations))
            if populations[low] < deepest[0]:
                deepest = (float(populations[low]), float(tau_ns), gate_pulses_near(2 * (low + 1)))
    if best is not None:
        return best[1], best[0]
    if not deepest[2]:
        raise QnodeError(f"no DD resonance of 1.5-2.5 us for this memory: {memory}")
    return deepest[1], deepest[2]


def calibrate_network_from_truth(lab: LabConfig, sim, roles: Roles) -> None:
    """Both links and the repeater's memory from the simulator's truth (the soak is about
    robustness, not about calibrating): the memory's gate at its resonance, the planning
    values of MEMORY_PLAN, single-click at LINK_ALPHA on both links."""
    from controller.harness.truth_calibration import calibrate_links_from_truth

    calibrate_links_from_truth(lab, sim)
    memory = sim.truth(roles.repeater)["memories"]["c13"]
    tau_ns, pulses = memory_gate(memory)
    values = {
        "c13_tau_ns": tau_ns,
        "c13_n_pulses": float(pulses),
        "c13_larmor_hz": memory["larmor_hz"],
        "c13_omega1_hz": math.hypot(memory["larmor_hz"] + memory["a_par_hz"], memory["a_perp_hz"]),
        "c13_t2_s": memory["t2_s"],
        **MEMORY_PLAN,
    }
    with ParameterStore(lab.data_dir / "params.sqlite") as store:
        for midpoint in roles.midpoints:
            store.set_manual(midpoint, "single_click_alpha", LINK_ALPHA, "soak: fast links")
        for name, value in values.items():
            store.set_manual(roles.repeater, name, value, "soak: from the simulator's truth")


class CutoffRequest:
    """memory_cutoff's request to the session loop: its next session asks a minimum fidelity
    the stored pairs cannot keep; `done` once that session ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted = False
        self.done = threading.Event()
        self.ended: float | None = None
        """When the cut-off session ended (the soak's clock)."""

    def ask(self) -> None:
        with self._lock:
            self._wanted = True
            self.ended = None
            self.done.clear()

    def finish(self, ended: float | None) -> None:
        self.ended = ended
        self.done.set()

    def take(self) -> bool:
        with self._lock:
            wanted, self._wanted = self._wanted, False
            return wanted


# faults ---------------------------------------------------------------------------------------
class NetworkInjector(threading.Thread):
    """Draws faults from the three-node menu, each kind once per cycle in random order, at
    random times around a mean interval, and clears the ones that last."""

    def __init__(
        self, stations: Stations, roles: Roles, rng: random.Random, interval_s: float, clock
    ) -> None:
        super().__init__(name="soak-network-injector", daemon=True)
        self.stations = stations
        self.roles = roles
        self.rng = rng
        self.interval_s = interval_s
        self.clock = clock
        self.faults: list[Fault] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.cycles = 0
        self.cutoff = CutoffRequest()
        prefix = f"{roles.repeater}."
        names = sorted(n for n in stations.resources if n.startswith(prefix))
        self.tcp = [n for n in names if _networked(stations.resources[n])]
        self.serial = [n for n in names if n not in self.tcp]
        self.instruments = names

    def run(self) -> None:
        cycle: list[str] = []
        while not self.stop.wait(self.rng.uniform(0.5, 1.5) * self.interval_s):
            if not cycle:
                cycle = list(NETWORK_FAULT_MENU)
                self.rng.shuffle(cycle)
                self.cycles += 1
            kind = cycle.pop()
            try:
                self.inject(kind)
            except (QnodeError, SimControlError, OSError, RuntimeError) as e:
                self.errors.append(f"{kind}: {e}")

    def inject(self, kind: str) -> None:
        roles, rng = self.roles, self.rng
        if kind == "kill_repeater_mid_swap":
            mid_swap = self._wait_mid_swap()
            if self.stop.is_set():
                return  # the soak ended while waiting: no fault after the injector stopped
            detail = "killed (SIGKILL) making its second link, then started again"
            if not mid_swap:
                detail = f"killed (SIGKILL; not seen mid-swap within {MID_SWAP_WAIT_S:g} s)"
            self._restart(kind, roles.repeater, detail)
        elif kind == "kill_end":
            self._restart(kind, rng.choice(roles.ends), "killed (SIGKILL), then started again")
        elif kind == "kill_midpoint":
            station = rng.choice(roles.midpoints)
            self._restart(kind, station, "killed (SIGKILL), then started again")
        elif kind.startswith("herald_"):
            mode = kind.removeprefix("herald_")
            # M2's heralds in odd cycles, M1's in even ones: both midpoints get every mode
            midpoint = roles.midpoints[1] if self.cycles % 2 else roles.midpoints[0]
            node = rng.choice(
                [n for n in (*roles.ends, roles.repeater) if n in self._link_nodes(midpoint)]
            )
            count, after = rng.randint(1, 2), rng.randint(0, 1)
            delay_s = round(rng.uniform(0.5, 4.0), 2) if mode == "delay" else 0.0
            detail = f"{midpoint}: {mode} {count} herald(s) to {node} after {after}"
            if delay_s:
                detail += f", {delay_s} s late"
            fault = self._record(kind, midpoint, detail)
            with self.stations.client(midpoint) as client:
                client.request(
                    "herald_fault", node=node, mode=mode, count=count, after=after, delay_s=delay_s
                )
            fault.cleared = fault.injected
        elif kind == "memory_cutoff":
            fault = self._record(
                kind,
                roles.repeater,
                f"next session asks a minimum fidelity of {CUTOFF_FIDELITY_MIN:g}: its stored "
                "pairs cut off",
            )
            self.cutoff.ask()
            limit = time.monotonic() + CUTOFF_WAIT_S
            while not self.cutoff.done.is_set() and time.monotonic() < limit:
                if self.stop.wait(0.25):
                    break
            fault.cleared = self.cutoff.ended or self.clock()
        else:
            self._instrument_fault(kind.removeprefix("repeater_"), kind)

    def _link_nodes(self, midpoint: str) -> set[str]:
        return {
            n
            for link in self.stations.lab.all_links.values()
            if link.midpoint == midpoint
            for n in link.nodes
        }

    def _wait_mid_swap(self) -> bool:
        """Wait until the repeater's link layer makes its second link (the first link pair in
        its memory)."""
        second = self.roles.ends[1]
        limit = time.monotonic() + MID_SWAP_WAIT_S
        while time.monotonic() < limit and not self.stop.is_set():
            try:
                with self.stations.client(self.roles.repeater, timeout_s=2.0) as client:
                    link = client.status()["session"]
                if link is not None and link.get("peer") == second:
                    return True
            except QnodeError:
                pass
            time.sleep(0.05)
        return False

    def _restart(self, kind: str, station: str, detail: str) -> None:
        fault = self._record(kind, station, detail)
        self.stations.kill(station)
        self.stop.wait(self.rng.uniform(0.2, 2.0))
        self.stations.start(station, restart=True)
        fault.cleared = self.clock()

    def _instrument_fault(self, what: str, kind: str) -> None:
        rng, sim = self.rng, self.stations.sim
        assert sim is not None  # started before the injector
        pool = {"drop": self.tcp, "reset": self.serial}.get(what, self.instruments)
        target = rng.choice(pool)
        if what == "freeze":
            seconds = round(rng.uniform(0.5, 3.0), 2)
            fault = self._record(kind, target, f"frozen for {seconds} s")
            sim.fault(target, "freeze")
            self.stop.wait(seconds)
            sim.fault(target, "unfreeze")
            fault.cleared = self.clock()
        elif what == "delay":
            seconds, lasting = round(rng.uniform(0.05, 0.5), 2), round(rng.uniform(1.0, 3.0), 2)
            fault = self._record(kind, target, f"replies {seconds} s late for {lasting} s")
            sim.fault(target, "delay", seconds=seconds)
            self.stop.wait(lasting)
            sim.fault(target, "delay", seconds=0.0)
            fault.cleared = self.clock()
        else:
            detail = {"garble": "next reply garbled", "drop": "connection dropped"}
            fault = self._record(kind, target, detail.get(what, "power-on reset"))
            sim.fault(target, what)
            fault.cleared = fault.injected

    def _record(self, kind: str, target: str, detail: str) -> Fault:
        fault = Fault(kind, target, detail, self.clock())
        self.faults.append(fault)
        return fault


def _networked(resource: str) -> bool:
    return resource.upper().startswith("TCPIP") or resource.startswith("tcp://")


# sessions -------------------------------------------------------------------------------------
def run_network_session(
    stations: Stations,
    roles: Roles,
    clock,
    deadline_s: float,
    refusals: Counter,
    fidelity_min: float = 0.0,
) -> SessionRun | None:
    """One network session at the repeater, followed to its end. None: refused (the reason
    counted in `refusals`)."""
    try:
        with stations.client(roles.repeater, timeout_s=30.0) as client:
            started = client.request(
                "network_entangle",
                ends=list(roles.ends),
                pairs=NETWORK_PAIRS,
                verify=True,
                protocol="single_click",
                fidelity_min=fidelity_min,
                deadline_s=deadline_s,
            )["session"]
    except QnodeError as e:
        refusals[reason_kind(f"{roles.repeater}: {e}")] += 1
        return None
    run = SessionRun(started["session"], roles.repeater, clock())
    give_up = time.monotonic() + deadline_s + 60.0
    while time.monotonic() < give_up:
        time.sleep(0.25)
        try:
            with stations.client(roles.repeater, timeout_s=5.0) as client:
                summary = client.request("network_session", session=run.session)["session"]
        except NodeRequestError as e:
            if "no network session" in str(e):  # the repeater restarted without it
                run.ended, run.state, run.reason = clock(), "repeater restarted", str(e)
                return run
            continue
        except QnodeError:
            continue  # killed or restarting
        if summary["state"] != "running":
            run.ended, run.state, run.reason = clock(), summary["state"], summary["reason"]
            run.reported = int(summary["delivered"])
            return run
    run.ended, run.state, run.reason = clock(), "lost", "the repeater never said how it ended"
    return run


# the command ----------------------------------------------------------------------------------
def soak_network(
    lab: LabConfig,
    minutes: float,
    seed: int,
    out: Path,
    interval_s: float = 6.0,
    console: Console | None = None,
) -> NetworkSoakReport:
    """Run the three-node soak in `out` (its lab data, logs and report); see the module's
    docstring."""
    console = console or Console()
    roles = Roles.of(lab)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["QNODE_DATA_DIR"] = str(out / "data")
    rng = random.Random(seed)
    stations = Stations(lab, out, seed)
    t0 = time.monotonic()

    def clock() -> float:
        return round(time.monotonic() - t0, 3)

    runs: list[SessionRun] = []
    refusals: Counter = Counter()
    injector: NetworkInjector | None = None
    monitor: Monitor | None = None
    try:
        with console.status(f"starting the simulated lab and {', '.join(roles.stations)}..."):
            stations.start_lab()
            for station in roles.stations:
                stations.start(station)
        with console.status("calibrating both links and the memory from the truth..."):
            calibrate_network_from_truth(lab, stations.sim, roles)
        injector = NetworkInjector(stations, roles, rng, interval_s, clock)
        monitor = Monitor(stations, roles.stations)
        monitor.start()
        injector.start()
        end = time.monotonic() + minutes * 60
        progress = Progress(
            TextColumn("[bold]soak (network)[/]"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[text]}"),
            console=console,
        )
        with progress:
            task = progress.add_task("soak", total=minutes * 60, text="")
            while (left := end - time.monotonic()) > MIN_SESSION_S:
                cutoff = injector.cutoff.take()
                run = run_network_session(
                    stations,
                    roles,
                    clock,
                    min(CUTOFF_DEADLINE_S if cutoff else NETWORK_DEADLINE_S, left),
                    refusals,
                    CUTOFF_FIDELITY_MIN if cutoff else 0.0,
                )
                if cutoff:
                    if run is None:
                        injector.cutoff.ask()  # refused: the next one
                    else:
                        injector.cutoff.finish(run.ended)
                if run is None:
                    time.sleep(0.5)  # refused (a station restarting, busy ending): again
                else:
                    runs.append(run)
                delivered = sum(r.reported or 0 for r in runs)
                progress.update(
                    task,
                    completed=min(minutes * 60, time.monotonic() - (end - minutes * 60)),
                    text=f"{len(runs)} sessions, {delivered} pairs, {len(injector.faults)} faults",
                )
        injector.stop.set()
        injector.join()
        assert stations.sim is not None
        with console.status("faults off; one more session must complete..."):
            for name in stations.resources:
                stations.sim.fault(name, "clear")
            for station in roles.stations:
                if not stations.up(station):
                    stations.start(station, restart=True)
            for _ in range(FINAL_TRIES):
                run = run_network_session(stations, roles, clock, NETWORK_DEADLINE_S, refusals)
                if run is not None:
                    runs.append(run)
                    if run.state == "completed":
                        break
                time.sleep(2.0)
            wait_for_reconciled(lab.data_dir)
            time.sleep(2.0)  # the ends' last decisions and closes on their way
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
        truth = {m: stations.sim.heralds(midpoint=m) for m in roles.midpoints}
    finally:
        if injector is not None:
            injector.stop.set()
        if monitor is not None:
            monitor.stop.set()
        stations.stop_all()
    reported = {r.session: r.reported for r in runs if r.reported is not None}
    result = audit_network(lab.data_dir, truth, midpoint_of(lab), reported)
    result.problems += [f"injector: {e}" for e in injector.errors]
    return NetworkSoakReport(
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


def render_network(report: NetworkSoakReport, console: Console) -> None:
    a = report.audit
    completed = sum(r.state == "completed" for r in report.sessions)
    rows = [
        ("network sessions (completed / all)", f"{completed} / {len(report.sessions)}"),
        ("end-to-end pairs delivered (three nodes agree)", str(a.delivered)),
        ("end-to-end pairs discarded (with a cause)", str(a.discarded)),
        ("end-to-end pairs lost", str(a.lost)),
        ("double-counted (pairs, link pairs, heralds)", str(a.double_counted)),
        ("phantom (no link pair or herald behind it)", str(a.phantom)),
        ("discarded without a cause", str(a.uncaused)),
        ("link pairs traced to a midpoint's herald", str(a.link_pairs_checked)),
        ("network files left open (node killed)", str(len(a.unclosed))),
        ("faults injected / recovered", f"{len(report.faults)} / {report.recovered}"),
        ("final session completed", "yes" if report.final_completed else "no"),
    ]
    render_report(
        report,
        console,
        f"soak (network): {report.minutes:g} min, seed {report.seed}",
        rows,
        [("discarded end-to-end pairs, by cause", "pairs", a.causes)],
        f"{a.delivered} end-to-end pairs, {a.lost} lost, {a.double_counted} double-counted, "
        f"{a.phantom} phantom, {report.recovered}/{len(report.faults)} faults recovered",
    )
