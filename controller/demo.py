"""`make demo`: start the simulated lab, check every instrument, run a program, stop.

Later issues extend this to calibration and entanglement; today it shows the bottom half of
the stack end to end: drivers over TCP and ptys, the sequencer on its virtual clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from controller.instruments_check import check_lab, render_table
from controller.labconfig import DEFAULT_LAB, load_lab, read_resource_map
from sequences.program import assemble

console = Console()


def start_sim(lab_path: Path, seed: int, resource_map: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "sim",
            "up",
            "--lab",
            str(lab_path),
            "--seed",
            str(seed),
            "--resource-map",
            str(resource_map),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not resource_map.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the simulated lab did not start: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    return proc


def main() -> int:
    lab = load_lab(DEFAULT_LAB)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qnode-demo-") as tmp:
        resource_map = Path(tmp) / "resources.json"
        with console.status("starting the simulated lab..."):
            proc = start_sim(
                DEFAULT_LAB, seed=int(os.environ.get("QNODE_SEED", "1")), resource_map=resource_map
            )
        try:
            resources = read_resource_map(lab, resource_map)
            rows = check_lab(lab, resources)
            healthy = sum(row.healthy for row in rows)
            console.print(render_table(rows, "instruments of the simulated lab"))
            console.print(f"{healthy}/{len(rows)} instruments healthy")

            seq = lab.make_driver("A", "seq", resources)
            with seq:
                seq.load(assemble("s: WAIT 5500\nEVENT 1\nLOOP s, 1000\nHALT"))
                t0 = time.perf_counter()
                seq.run()
                while seq.state() != "HALTED":
                    time.sleep(0.005)
                events = seq.read_events()
                wall = time.perf_counter() - t0
            console.print(
                f"node A sequencer: {len(events)} attempt-length steps of 5.5 us, last event at "
                f"{events[-1].time_ns / 1e3:.1f} us virtual time, {wall * 1e3:.0f} ms wall"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    console.print(
        f"demo done in {time.monotonic() - started:.1f} s (calibration and "
        "entanglement arrive with the next issues)"
    )
    return 0 if healthy == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
