"""End-to-end A-C pairs through all five daemons of the three-node lab, per wall second, with
their fidelity, and the feed-forward latency of the swap (issue 15, "Figures").

The run: the three-node lab (labs/sim_three_node.toml) in its own process, both links and B's
memory calibrated from the simulator's truth as the three-node soak does
(`controller.harness.soak_network.calibrate_network_from_truth`: single-click at alpha 0.1 on
both links), the daemons of A, B, C, M1 and M2, then `network_entangle --ends A C --pairs N
--verify` as the operator runs it. Nothing here is timed by a test; the numbers are measured
in wall time on whatever machine runs `make bench`.

Figures, all derived after the run from the time stamps the daemons record:
  rate       delivered end-to-end pairs per wall second of the operator's call (every link
             session, B's Bell-state measurement in the second link's program right after its
             herald, the messages);
  fidelity   verified: the Bell-state fidelity of the pairs both ends measured in XX, YY, ZZ
             in turn (`network_figures.measured_figures`, the network session files);
             simulator truth: the true fidelities of the two link pairs each end-to-end pair
             was made of, as heralded (the simulator's herald records, matched by the
             midpoints' generation numbers), and their Werner swap (what a perfect memory and
             BSM would give): the simulator holds no end-to-end state, since the ends measure
             their halves at delivery;
  latency    from M2's herald of the second link pair (the midpoint's heralds file, `t_sent`)
             to the Pauli frame applied at A and at C (each end's network session file,
             `t_applied_first` / `t_applied_second`, written by the end when B's outcome came),
             with the stages between: herald -> B's BSM (`t_bsm`), BSM -> frame applied. All
             stamps are `time.time()` of processes on one machine: one clock.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from bench.published import QNODEOS_2025

LAB = Path(__file__).resolve().parent.parent / "labs" / "sim_three_node.toml"
ENDS = ("A", "C")
PAIRS = 24
"""Eight end-to-end pairs per basis (XX, YY, ZZ): ~2 s each through the five daemons."""
SEED = 20261130
QNODEOS_LATENCY_S = QNODEOS_2025["latency_s"].value
"""QNodeOS's mean end-to-end latency on NV nodes (read-2nd: bench/published.py)."""


# pure: the figures from recorded time stamps ------------------------------------------------
def parse_link_pair(pair_id: str) -> tuple[str, int, int]:
    """A link pair's id `session:shot:attempt` (controller/link/session.py `pair_id`)."""
    session, shot, attempt = pair_id.rsplit(":", 2)
    return session, int(shot), int(attempt)


def herald_row(pair_id: str, heralds: np.ndarray) -> np.void | None:
    """The midpoint's herald row (sessionfile.HERALD_ROW) of a link pair: its shot and attempt;
    None when the midpoint's file has none."""
    _, shot, attempt = parse_link_pair(pair_id)
    rows = heralds[(heralds["shot"] == shot) & (heralds["attempt"] == attempt)]
    return rows[0] if len(rows) else None


def feedforward_latencies(
    end_rows: Mapping[str, np.ndarray],
    ends: tuple[str, str],
    herald_time: Callable[[str], float | None],
    delivered_time: Callable[[str], float | None] = lambda _: None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per end, over its delivered end-to-end pairs (networkfile.PAIR_ROW), the seconds from
    the second link pair's herald (`herald_time(link_second)`: M2's `t_sent`) to the frame
    applied at that end (`t_applied_first` at the first end, `t_applied_second` at the
    second, each in the end's own file), and the stages: herald -> B's BSM, BSM -> applied;
    with `delivered_time` (the repeater's link session row's `t` of the second link pair),
    herald -> delivered at B and delivered -> BSM too. A pair whose herald or stamp is
    unknown (NaN) is left out."""
    from controller.data.networkfile import DELIVERED

    out: dict[str, dict[str, np.ndarray]] = {}
    for end, column in zip(ends, ("t_applied_first", "t_applied_second"), strict=True):
        total, to_bsm, from_bsm, to_delivery, delivery_to_bsm = [], [], [], [], []
        for row in end_rows[end]:
            if row["status"] != DELIVERED:
                continue
            link_second = row["link_second"].decode()
            herald = herald_time(link_second)
            applied, bsm = float(row[column]), float(row["t_bsm"])
            if herald is None or not (math.isfinite(applied) and math.isfinite(bsm)):
                continue
            total.append(applied - herald)
            to_bsm.append(bsm - herald)
            from_bsm.append(applied - bsm)
            delivered = delivered_time(link_second)
            if delivered is not None and math.isfinite(delivered):
                to_delivery.append(delivered - herald)
                delivery_to_bsm.append(bsm - delivered)
        out[end] = {
            "herald_to_applied": np.array(total),
            "herald_to_bsm": np.array(to_bsm),
            "herald_to_delivered_at_b": np.array(to_delivery),
            "delivered_at_b_to_bsm": np.array(delivery_to_bsm),
            "bsm_to_applied": np.array(from_bsm),
        }
    return out


def percentiles(values: np.ndarray) -> dict[str, float]:
    """p50 and p99 (numpy's linear interpolation between order statistics: with fewer than
    100 values p99 lies between the two largest), the count and the largest."""
    if len(values) == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p99 = np.percentile(values, [50, 99])
    return {"n": len(values), "p50": float(p50), "p99": float(p99), "max": float(np.max(values))}


# the run -----------------------------------------------------------------------------------
def _midpoint_heralds(data_dir: Path, session: str, midpoint: str) -> np.ndarray | None:
    from controller.data.sessionfile import read_session

    found = sorted((data_dir / "runs").glob(f"*/{session}_{midpoint}_heralds.h5"))
    return read_session(found[-1])["heralds"] if found else None


def _delivered_at(data_dir: Path, session: str, node: str, pair_id: str) -> float:
    """When `node`'s link layer recorded the link pair (its session file's row `t`)."""
    from controller.data.sessionfile import find_session_files, read_session

    for path in find_session_files(data_dir, session, node):
        rows = read_session(path)["pairs"]
        found = rows[rows["id"] == pair_id.encode()]
        if len(found):
            return float(found[0]["t"])
    return math.nan


def bench_network_daemons(pairs: int = PAIRS, seed: int = SEED) -> dict:
    """The run described in the module's docstring; its figures as a dict (bench/run.py)."""
    from bench.network_figures import measured_figures
    from controller.data.networkfile import DELIVERED, network_file_path
    from controller.harness.sim import SimControl, lab_processes, start_sim
    from controller.harness.soak_network import (
        LINK_ALPHA,
        MEMORY_PLAN,
        Roles,
        calibrate_network_from_truth,
        midpoint_of,
    )
    from controller.labconfig import load_lab
    from controller.network.pauli import werner_swap_fidelity
    from controller.operator.daemons import start_daemon
    from controller.operator.network import network_entangle

    with (
        tempfile.TemporaryDirectory(prefix="qnode-bench-network-") as tmp,
        lab_processes(Path(tmp) / "data") as procs,
    ):
        folder = Path(tmp)
        data_dir = folder / "data"
        lab = load_lab(LAB)
        roles = Roles.of(lab)
        resource_map = folder / "resources.json"
        sim_proc = start_sim(lab, resource_map, seed=seed, log=folder / "sim.log")
        procs.append(sim_proc)
        sim = SimControl(resource_map)
        calibrate_network_from_truth(lab, sim, roles)
        memory = sim.truth(roles.repeater)["memories"]["c13"]
        for station in roles.stations:
            procs.append(
                start_daemon(lab, station, log=folder / f"{station}.log", resource_map=resource_map)
            )
        before = {m: len(sim.heralds(midpoint=m)) for m in roles.midpoints}
        started = time.perf_counter()
        report = network_entangle(lab, ENDS, pairs, verify=True, deadline_s=900.0)
        wall = time.perf_counter() - started
        truth = {
            m: {h["generation"]: h for h in sim.heralds(since=before[m], midpoint=m)}
            for m in roles.midpoints
        }
        s = report.summary
        session = s["session"]
        files = [network_file_path(data_dir, session, n) for n in ("A", "B", "C")]
        verified = measured_figures([f for f in files if f.exists()])
        midpoints = midpoint_of(lab)  # each end's link with the repeater: its midpoint
        heralds: dict[str, tuple[str, dict]] = {
            link: (midpoints[frozenset((end, roles.repeater))], {})
            for link, end in zip(("link_first", "link_second"), ENDS, strict=True)
        }
        delivered = [r for r in report.data["B"]["pairs"] if r["status"] == DELIVERED]
        link_truth: dict[str, list[float]] = {"link_first": [], "link_second": []}
        herald_sent: dict[str, float] = {}
        delivered_at_b: dict[str, float] = {}
        for row in delivered:
            for link, (midpoint, cache) in heralds.items():
                pair_id = row[link].decode()
                link_session = parse_link_pair(pair_id)[0]
                if link_session not in cache:
                    cache[link_session] = _midpoint_heralds(data_dir, link_session, midpoint)
                rows = cache[link_session]
                found = None if rows is None else herald_row(pair_id, rows)
                if found is None:
                    continue
                if link == "link_second":
                    herald_sent[pair_id] = float(found["t_sent"])
                    delivered_at_b[pair_id] = _delivered_at(
                        data_dir, link_session, roles.repeater, pair_id
                    )
                record = truth[midpoint].get(int(found["sync"]))
                if record is not None:
                    link_truth[link].append(float(record["fidelity"]))
        latencies = feedforward_latencies(
            {end: report.data[end]["pairs"] for end in ENDS},
            ENDS,
            herald_sent.get,
            delivered_at_b.get,
        )
    true_ab = float(np.mean(link_truth["link_first"])) if link_truth["link_first"] else math.nan
    true_bc = float(np.mean(link_truth["link_second"])) if link_truth["link_second"] else math.nan
    both = math.isfinite(true_ab) and math.isfinite(true_bc)
    bell = (s.get("figures") or {}).get("bell_fidelity")
    return {
        "lab": LAB.name,
        "alpha": LINK_ALPHA,
        "pairs_asked": pairs,
        "state": s["state"],
        "delivered": int(s["delivered"]),
        "attempted": int(s["attempted"]),
        "discard_reasons": s.get("reasons", {}),
        "wall_s": wall,
        "pairs_per_wall_s": s["delivered"] / wall,
        "fidelity_verified": verified.get("swap_fidelity"),
        "fidelity_verified_ci95": [bell["low"], bell["high"]] if bell else None,
        "fidelity_verified_summary": bell.get("value") if bell else None,
        "link_truth_ab": true_ab,
        "link_truth_bc": true_bc,
        "link_truth_n": [len(link_truth["link_first"]), len(link_truth["link_second"])],
        "werner_swap_of_truth": werner_swap_fidelity(true_ab, true_bc) if both else math.nan,
        "latency_s": {
            end: {stage: percentiles(v) for stage, v in stages.items()}
            for end, stages in latencies.items()
        },
        "qnodeos_latency_s": QNODEOS_LATENCY_S,
        "memory_t2_s": float(memory.get("t2_s", math.nan)),
        "memory_n_1e_at_alpha": MEMORY_PLAN["c13_n_1e_at_alpha"],
    }


def render(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    verified = result["fidelity_verified"]
    console.print(
        f"end-to-end A-C through the five daemons ({result['lab']}, single-click alpha "
        f"{result['alpha']}): {result['delivered']} of {result['pairs_asked']} pairs in "
        f"{result['wall_s']:.0f} s = {result['pairs_per_wall_s']:.3f} pairs per wall second "
        f"({result['attempted']} attempted, discards {result['discard_reasons']}); fidelity "
        f"verified {'n/a' if verified is None else f'{verified:.3f}'}, link pairs' truth "
        f"A-B {result['link_truth_ab']:.3f} / B-C {result['link_truth_bc']:.3f} (Werner swap "
        f"{result['werner_swap_of_truth']:.3f})"
    )
    table = Table(title="feed-forward latency: M2's herald -> the Pauli frame applied (wall time)")
    for column in ("end", "stage", "n", "p50 (ms)", "p99 (ms)", "max (ms)"):
        table.add_column(column)
    for end, stages in result["latency_s"].items():
        for stage, p in stages.items():
            table.add_row(
                end,
                stage.replace("_", " "),
                str(p["n"]),
                f"{p['p50'] * 1e3:.1f}",
                f"{p['p99'] * 1e3:.1f}",
                f"{p['max'] * 1e3:.1f}",
            )
    console.print(table)
    console.print(
        f"  beside: QNodeOS {result['qnodeos_latency_s'] * 1e3:.1f} ms mean end-to-end; the "
        f"memory's T2 {result['memory_t2_s']:.2f} s (simulator truth), N_1/e "
        f"{result['memory_n_1e_at_alpha']:.0f} attempts at alpha 0.5 (planning)"
    )


def main() -> int:
    render(bench_network_daemons())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
