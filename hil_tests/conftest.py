"""Hardware-in-the-loop fixtures.

By default the suite starts the simulated lab (`qnode sim up`) once per session, in its own
process, on ephemeral ports and ptys, with its data in a temporary folder, so that it can run
beside another lab. `pytest hil_tests --lab FILE` runs the same driver tests against the
instruments FILE names; tests that need the simulator (fault injection, ground truth) are
skipped there, with the reason.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.harness.sim import SimControl, start_sim
from controller.harness.truth_calibration import calibrate_nodes_from_truth
from controller.labconfig import DEFAULT_LAB, LabConfig, load_lab, read_resource_map
from controller.operator import daemons
from controller.operator.client import NodeClient
from controller.operator.daemons import StartError, terminate

SIM_SEED = 20261122
SIM_START_TIMEOUT_S = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lab", default=str(DEFAULT_LAB), help="lab file (default: the simulated lab)"
    )
    parser.addoption("--sim-seed", default=SIM_SEED, type=int, help="seed of the simulated lab")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_sim: needs the simulator's fault injection or ground truth"
    )


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> LabConfig:
    return load_lab(request.config.getoption("--lab"))


@pytest.fixture(scope="session")
def simulated(lab: LabConfig) -> bool:
    return any(inst.simulated for _, _, inst in lab.all_instruments())


@pytest.fixture(scope="session")
def sim_process(lab: LabConfig, simulated: bool, tmp_path_factory, request):
    """The simulated lab in its own process; yields the path of its resource map."""
    if not simulated:
        yield None
        return
    folder = tmp_path_factory.mktemp("simlab")
    resource_map = folder / "resources.json"
    seed = request.config.getoption("--sim-seed")
    try:
        proc = start_sim(
            lab, resource_map, seed=seed, log=folder / "sim.log", timeout_s=SIM_START_TIMEOUT_S
        )
    except StartError as e:
        pytest.fail(str(e))
    try:
        yield resource_map
    finally:
        terminate(proc)


@pytest.fixture(scope="session")
def resources(lab: LabConfig, sim_process) -> dict[str, str] | None:
    return read_resource_map(lab, sim_process) if sim_process else None


@pytest.fixture(scope="session")
def sim(sim_process) -> SimControl:
    """The simulator's control channel; tests that use it are skipped on a real lab."""
    if sim_process is None:
        pytest.skip(
            "needs the simulated lab (fault injection / ground truth); running on a real lab"
        )
    return SimControl(sim_process)


def first_instrument(lab: LabConfig, role: str, node: str | None = None) -> tuple[str, str]:
    for node_name, name, inst in lab.all_instruments():
        if inst.role == role and (node is None or node_name == node):
            return node_name, name
    pytest.skip(f"the lab has no instrument with role {role!r}")


@pytest.fixture
def open_driver(lab: LabConfig, resources):
    """open_driver(role) -> an opened driver of the first instrument with that role."""
    opened = []

    def factory(role: str, node: str | None = None):
        node_name, name = first_instrument(lab, role, node)
        driver = lab.make_driver(node_name, name, resources)
        driver.open()
        opened.append(driver)
        return driver

    yield factory
    for driver in opened:
        try:
            driver.safe_state()
        except Exception:
            pass
        driver.close()


@pytest.fixture(autouse=True)
def _clear_faults(request):
    """Every test starts with no fault left over from another."""
    yield
    if "sim" in request.fixturenames:
        control: SimControl = request.getfixturevalue("sim")
        for name in control.resources:
            control.fault(name, "clear")


@pytest.fixture(scope="session")
def maybe_sim(sim_process) -> SimControl | None:
    """The simulator's control channel, or None on a real lab (the test checks what it can)."""
    return SimControl(sim_process) if sim_process else None


@pytest.fixture
def nothing_reaches(maybe_sim):
    """`with nothing_reaches(driver): ...`: on the simulator, assert no command got through."""

    @contextmanager
    def guard(driver):
        mark = maybe_sim.log_size(driver.name) if maybe_sim else 0
        yield
        if maybe_sim:
            assert maybe_sim.log(driver.name, since=mark)[1] == []

    return guard


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The lab's data folder for this session (param store, run files, keys, node info)."""
    folder = tmp_path_factory.mktemp("labdata")
    previous = os.environ.get("QNODE_DATA_DIR")
    os.environ["QNODE_DATA_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("QNODE_DATA_DIR", None)
    else:
        os.environ["QNODE_DATA_DIR"] = previous


@dataclass
class DaemonHandle:
    node: str
    proc: subprocess.Popen
    log_path: Path
    client: NodeClient

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 20.0) -> int:
        self.client.close()
        return terminate(self.proc, timeout)


@pytest.fixture
def start_daemon(lab, sim_process, data_dir, tmp_path):
    """start_daemon(station) -> a running daemon of that station (`qnode node serve`, or
    `qnode midpoint serve` for the midpoint), stopped after the test."""
    started: list[DaemonHandle] = []

    def start(node: str, *extra: str, allow_faults: bool = False) -> DaemonHandle:
        """A memory node's daemon, or the midpoint's; `allow_faults` (or the CLI option
        "--allow-faults" in extra): the midpoint accepts herald fault injection."""
        unknown = set(extra) - {"--allow-faults"}
        if unknown:
            raise ValueError(f"start_daemon: unknown options {sorted(unknown)}")
        log_path = tmp_path / f"node-{node}.log"
        try:
            proc = daemons.start_daemon(  # the lab's data dir follows QNODE_DATA_DIR
                lab,
                node,
                log=log_path,
                resource_map=sim_process,
                allow_faults=allow_faults or "--allow-faults" in extra,
            )
        except StartError as e:
            pytest.fail(str(e))
        handle = DaemonHandle(node, proc, log_path, NodeClient.for_lab(lab, node, timeout_s=10))
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.proc.poll() is None:
            handle.stop()


@pytest.fixture
def stations(start_daemon, data_dir, sim):
    """Nodes A and B and the midpoint M running, calibrated from the simulator's truth (the
    link tests are about entanglement, not calibration); M takes herald faults on request."""
    calibrate_nodes_from_truth(data_dir, sim)
    daemons = {"M": start_daemon("M", allow_faults=True)}
    daemons.update({n: start_daemon(n) for n in ("A", "B")})
    return daemons


@pytest.fixture
def own_lab(tmp_path, monkeypatch, simulated):
    """own_lab(file, seed) -> (lab, sim control): a lab of its own (its own hidden parameters)
    on its own simulator, with the three daemons, its qubits and the midpoint's detectors
    calibrated from the truth."""
    if not simulated:
        pytest.skip("needs the simulated lab (truth, own lab)")
    monkeypatch.setenv("QNODE_DATA_DIR", str(tmp_path / "data"))
    procs = []

    def start(lab_file: Path, seed: int):
        lab = load_lab(lab_file)
        resource_map = tmp_path / "resources.json"
        procs.append(start_sim(lab, resource_map, seed=seed, log=tmp_path / "sim.log"))
        sim = SimControl(resource_map)
        calibrate_nodes_from_truth(
            lab.data_dir,
            sim,
            platform=lab.nodes["A"].platform or "nv",
            detectors=dict(lab.nodes["M"].channels.detectors) or None,
        )
        procs.extend(daemons.ensure_daemons(lab, ["A", "B", "M"], resource_map, tmp_path))
        return lab, sim

    yield start
    for proc in reversed(procs):
        terminate(proc)


@contextmanager
def small_tmpfs(folder: Path, size: str):
    """`folder` on a tmpfs of `size` (root only: skips otherwise), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip(f"mounting a {size} tmpfs needs root (CI runs as root)")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)
