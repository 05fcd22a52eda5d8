"""Drivers as capabilities: every model fits the Protocol of its role, the node runtime hands
out typed views of its instruments, and drivers depend on nothing of the project but the
shared module and the sequencer's program format. Pure code: no lab needed."""

import ast
from pathlib import Path

import pytest

from controller.data.params import ParameterStore
from controller.labconfig import DEFAULT_LAB, load_lab
from controller.node.runtime import NodeRuntime
from drivers.protocols import (
    CAPABILITIES,
    Laser,
    MicrowaveSource,
    PhaseStabiliser,
    RealTimeSequencer,
    TimeTagger,
    WaveformGenerator,
)
from drivers.registry import DRIVERS, ROLES
from qnode.errors import LabConfigError

DRIVERS_DIR = Path(__file__).resolve().parent.parent / "drivers"


def test_every_role_has_a_capability():
    """(test_faults checks that each driver fits the capability of its role.)"""
    assert sorted(CAPABILITIES) == ROLES


def fake_resources(lab, node: str) -> dict[str, str]:
    """Addresses for every instrument of a node: enough to construct (not open) drivers."""
    resources = {}
    for name, inst in lab.nodes[node].instruments.items():
        tcp = DRIVERS[inst.driver].TRANSPORT == "tcp"
        resources[f"{node}.{name}"] = "TCPIP::127.0.0.1::9::SOCKET" if tcp else "/dev/null"
    return resources


def test_lab_makes_instruments_typed_as_their_capability():
    lab = load_lab(DEFAULT_LAB)
    resources = fake_resources(lab, "M")
    tagger = lab.make_instrument("M", "tagger", TimeTagger, resources)
    assert isinstance(tagger, TimeTagger) and not tagger.is_open
    with pytest.raises(LabConfigError, match="is not a PhaseStabiliser"):
        lab.make_instrument("M", "tagger", PhaseStabiliser, resources)


def test_runtime_hands_out_typed_views_sharing_the_instrument_lock(tmp_path):
    lab = load_lab(DEFAULT_LAB)
    node = "A"
    resources = fake_resources(lab, node)
    store = ParameterStore(tmp_path / "params.sqlite")
    try:
        runtime = NodeRuntime(lab, node, resources, store)
        views = {
            "sequencer": (runtime.sequencer(), RealTimeSequencer),
            "microwave_source": (runtime.microwave(), MicrowaveSource),
            "awg": (runtime.awg(), WaveformGenerator),
        }
        for role, (view, capability) in views.items():
            untyped = runtime.role(role)
            assert view.driver is untyped.driver and view.lock is untyped.lock
            with view as driver:
                assert isinstance(driver, capability)
        for path in lab.nodes[node].optics.values():
            view = runtime.laser(path.laser)
            assert view.lock is runtime.instruments[path.laser].lock
            assert isinstance(view.driver, Laser)
    finally:
        store.close()


def test_drivers_import_only_the_shared_module_and_the_program_format():
    """The program format is the header host and sequencer firmware share; nothing else of
    the project's other packages."""
    allowed = ("drivers", "qnode", "sequences.program")
    for path in sorted(DRIVERS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ("sequences", "controller", "calibration", "sim_backends", "qnode"):
                    assert name == "qnode" or name.startswith(allowed), f"{path.name}: {name}"
