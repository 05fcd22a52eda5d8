"""The calibration graph: routines in dependency order, quick checks first, failures stop
their dependents.

    node       esr -> rabi -> ramsey
                      rabi -> readout -> check_threshold -> detection_window
    midpoint   dark_counts, phase_fringe -> phase_noise
    link       detection_window + dark_counts -> visibility
               visibility + phase_noise -> alpha
    memory     ramsey -> c13_spectroscopy -> c13_gate -> c13_ramsey -> c13_dephasing
                                                            c13_ramsey -> c13_move
                                                            c13_ramsey -> c13_t2

Node routines run sequences on the node (`NodeAccess.run`). `detection_window` also records
the node's photons with the midpoint's tagger; `dark_counts` and `phase_fringe` measure the
midpoint's detectors and interferometer alone and store midpoint parameters: all three reach
the midpoint through `NodeAccess.midpoint` (the controller's side asks the midpoint daemon,
which owns its instruments). The link routines run entanglement sessions with the peer node
through `NodeAccess.link` (the peer's daemon and the midpoint's must run) and store midpoint
parameters too. A routine is skipped when the lab lacks what it needs (a midpoint, a link) or
it is no step of the node's platform, and a failed or skipped routine skips its dependents.
The memory routines belong to the graph of a node whose lab file names the memory
(`memories = ["c13"]`) and to no other: walking a whole graph leaves them out elsewhere,
naming one there says why it is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from calibration.interface import MidpointAccess, NodeAccess
from calibration.routine import FAILED, IN_SPEC, SKIPPED, UPDATED, Outcome, Routine, midpoint_of
from calibration.routines.check_threshold import CheckThresholdRoutine
from calibration.routines.esr import EsrRoutine
from calibration.routines.link import AlphaRoutine, VisibilityRoutine
from calibration.routines.memory import MEMORY_ROUTINES, has_memory
from calibration.routines.midpoint import (
    DarkCountsRoutine,
    DetectionWindowRoutine,
    PhaseFringeRoutine,
)
from calibration.routines.phase_noise import PhaseNoiseRoutine
from calibration.routines.rabi import RabiRoutine
from calibration.routines.ramsey import RamseyRoutine
from calibration.routines.readout import ReadoutRoutine
from qnode.errors import QnodeError

ROUTINES: dict[str, Routine] = {
    r.name: r
    for r in (
        EsrRoutine(),
        RabiRoutine(),
        RamseyRoutine(),
        ReadoutRoutine(),
        CheckThresholdRoutine(),
        DarkCountsRoutine(),
        DetectionWindowRoutine(),
        PhaseFringeRoutine(),
        PhaseNoiseRoutine(),
        VisibilityRoutine(),
        AlphaRoutine(),
        *MEMORY_ROUTINES,
    )
}


class GraphError(QnodeError):
    pass


def plan(names: list[str] | None = None, memory: bool = False) -> list[str]:
    """The routines to visit, dependencies first (when `names` is empty: all of them, the
    memory routines only with `memory`, for a node with a 13C memory)."""
    wanted = list(
        names or (n for n, r in ROUTINES.items() if memory or not getattr(r, "needs_memory", False))
    )
    unknown = [n for n in wanted if n not in ROUTINES]
    if unknown:
        raise GraphError(f"unknown routine(s) {', '.join(unknown)} (known: {', '.join(ROUTINES)})")
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise GraphError(f"dependency cycle through {name}")
        visiting.add(name)
        for dep in ROUTINES[name].depends:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


Progress = Callable[[str, str], None]
"""progress(routine, what is happening now)"""


def run_routine(
    node: NodeAccess,
    routine: Routine,
    force: bool,
    plots: Path | None,
    progress: Progress | None = None,
) -> Outcome:
    say = progress or (lambda *_: None)
    name = routine.name
    target: NodeAccess | MidpointAccess = midpoint_of(node) if routine.scope == "midpoint" else node
    stored = {p: target.stored(p) for p in routine.updated_names(node)}
    if not force and all(v is not None for v in stored.values()):
        say(name, "quick check")
        try:
            in_spec, why = routine.quick_check(node)
        except QnodeError as e:
            in_spec, why = False, f"quick check failed: {e}"
        if in_spec:
            return Outcome(name, IN_SPEC, why)
        say(name, f"out of spec ({why}): full calibration")
    say(name, "acquiring")
    try:
        data = routine.acquire(node)
    except QnodeError as e:
        return Outcome(name, FAILED, f"acquisition failed: {e}")
    say(name, "fitting")
    analysis = routine.analyse(node, data)
    runs = [d for d in data if getattr(d, "file", None)]
    plot_dir: Path | None = getattr(node, "plot_dir", None)
    if not runs and plot_dir is not None:
        # no run file of its own: the data and fit go to a file in the calibration folder
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runs = [SimpleNamespace(file=str(plot_dir / f"{stamp}_{node.node}_{name}.h5"), run_id=None)]
    verdict = UPDATED if analysis.accepted else FAILED
    outcome = Outcome(
        name,
        verdict,
        analysis.reason,
        quality=analysis.quality,
        run_ids=[d.run_id for d in runs if d.run_id],
    )
    if analysis.plot is not None and runs:
        path = Path(runs[-1].file).with_suffix(f".{name}.png")
        if plots is not None:
            path = plots / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
        word = "accepted" if analysis.accepted else "REJECTED"
        analysis.plot(path, f"{node.node} {routine.title}: {word}\n{analysis.reason}")
        outcome.plot = str(path)
    info = {
        **analysis.info,
        "verdict": outcome.verdict,
        "reason": analysis.reason,
        "values": analysis.values,
    }
    for acq in runs:
        node.annotate(acq, name, info)
    if analysis.accepted:
        run_id = runs[-1].run_id if runs else None
        for param, value in analysis.values.items():
            target.record(param, value, routine=name, run_id=run_id, fit_quality=analysis.quality)
            outcome.changes[param] = (stored.get(param), value)
    return outcome


def run_graph(
    node: NodeAccess,
    names: list[str] | None = None,
    force: bool = False,
    plots: Path | None = None,
    progress: Progress | None = None,
    done: dict[str, Outcome] | None = None,
) -> list[Outcome]:
    """The outcomes of the routines visited; `done`: outcomes already known (a node's own
    routines, walked with its first link), not run again and not returned."""
    outcomes: dict[str, Outcome] = dict(done or {})
    memory = has_memory(node)
    only_memory = bool(names) and all(
        getattr(ROUTINES.get(n), "needs_memory", False) for n in names or ()
    )
    for name in plan(names, memory):
        routine = ROUTINES[name]
        if name in (done or {}):
            continue
        if getattr(routine, "needs_memory", False) and not memory:
            if only_memory:  # asked for by name: say why nothing runs
                outcomes[name] = Outcome(
                    name, SKIPPED, "the node has no 13C memory (its lab file's memories)"
                )
            continue  # not part of this node's graph
        if routine.needs_midpoint and node.midpoint is None:
            outcomes[name] = Outcome(
                name, SKIPPED, "no midpoint to measure with (no midpoint daemon reached)"
            )
            continue
        if routine.needs_link and getattr(node, "link", None) is None:
            outcomes[name] = Outcome(
                name, SKIPPED, "needs sessions with the peer: its daemon and the midpoint's"
            )
            continue
        if node.platform not in routine.platforms:
            outcomes[name] = Outcome(name, SKIPPED, f"not a step of the {node.platform} platform")
            continue
        failed = [
            d
            for d in routine.depends
            if outcomes.get(d) and outcomes[d].verdict in (FAILED, SKIPPED)
        ]
        if failed:
            outcomes[name] = Outcome(
                name, SKIPPED, f"not run: depends on {', '.join(failed)}, which failed"
            )
            continue
        outcomes[name] = run_routine(node, routine, force, plots, progress)
    return [o for name, o in outcomes.items() if name not in (done or {})]
