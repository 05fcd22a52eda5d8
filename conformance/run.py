"""The conformance run: the simulated lab driven by independent drivers (QCoDeS, pylablib,
microscope) in their own environment, so that qnode's simulator is held to what real
labs' code sends, not to qnode's own drivers.

    python conformance/run.py --python .venv-conformance/bin/python --qnode .venv/bin/qnode

Starts `qnode sim up` on the lab in a temporary folder, waits for its resource map, runs every
`conformance/check_*.py` as `PYTHON check_NAME.py RESOURCE_MAP_JSON` with a timeout each,
stops the lab, and exits non-zero if any check failed. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0
CHECK_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0


def start_lab(qnode: str, lab: Path, folder: Path) -> tuple[subprocess.Popen, Path]:
    resource_map = folder / "resources.json"
    log = open(folder / "sim.log", "w")  # noqa: SIM115 (kept open for the child's life)
    env = dict(os.environ, QNODE_DATA_DIR=str(folder / "data"))
    proc = subprocess.Popen(
        [qnode, "sim", "up", "--lab", str(lab), "--resource-map", str(resource_map)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"conformance: the simulated lab exited ({proc.returncode}); "
                f"its log:\n{(folder / 'sim.log').read_text()}"
            )
        if resource_map.exists():
            try:
                if json.loads(resource_map.read_text()).get("resources"):
                    return proc, resource_map
            except json.JSONDecodeError:
                pass
        time.sleep(0.2)
    stop_lab(proc)
    raise SystemExit(
        f"conformance: no resource map from the simulated lab in {START_TIMEOUT_S:g} s"
    )


def stop_lab(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_check(python: str, check: Path, resource_map: Path) -> bool:
    print(f"== {check.name}", flush=True)
    try:
        result = subprocess.run(
            [python, str(check), str(resource_map)], timeout=CHECK_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"FAIL {check.name}: no end within {CHECK_TIMEOUT_S:g} s", flush=True)
        return False
    if result.returncode != 0:
        print(f"FAIL {check.name}: exit code {result.returncode}", flush=True)
    return result.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the conformance environment's python")
    parser.add_argument("--qnode", required=True, help="the qnode command (qnode's own venv)")
    parser.add_argument("--lab", default=str(HERE.parent / "labs" / "sim_two_node.toml"))
    parser.add_argument("checks", nargs="*", help="check files (default: every check_*.py)")
    args = parser.parse_args()
    checks = [Path(c) for c in args.checks] or sorted(HERE.glob("check_*.py"))
    if not checks:
        print("conformance: no check_*.py found", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="qnode-conformance-") as tmp:
        proc, resource_map = start_lab(args.qnode, Path(args.lab), Path(tmp))
        try:
            results = {check.name: run_check(args.python, check, resource_map) for check in checks}
        finally:
            stop_lab(proc)
    failed = [name for name, ok in results.items() if not ok]
    print(f"conformance: {len(results) - len(failed)} passed, {len(failed)} failed")
    for name in failed:
        print(f"  failed: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
