"""The joint state of the lab's memory qubits (pure numpy, no lab)."""

import numpy as np
import pytest

from sim_backends.physics import rotation
from sim_backends.register import QubitRegister

X = np.array([[0, 1], [1, 0]], dtype=complex)
H = np.array([[1, 1], [1, -1]], dtype=complex) / np.sqrt(2)
CNOT = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=complex)


def ground(names):
    reg = QubitRegister(names)
    for name in names:
        reg.replace(name, np.diag([1.0, 0.0]).astype(complex))
    return reg


def test_operation_on_one_node_leaves_the_other_alone():
    reg = ground(["A", "B"])
    reg.apply("B", X)
    assert np.allclose(reg.reduced("A"), np.diag([1, 0]))
    assert np.allclose(reg.reduced("B"), np.diag([0, 1]))
    assert np.isclose(np.trace(reg.rho).real, 1.0)


def test_bell_state_correlations_and_collapse():
    reg = ground(["A", "B"])
    reg.apply("A", H)
    reg.rho = CNOT @ reg.rho @ CNOT.conj().T  # (|00> + |11>)/sqrt 2
    assert np.allclose(reg.reduced("A"), np.eye(2) / 2)
    rng = np.random.default_rng(1)
    for _ in range(20):
        trial = QubitRegister(["A", "B"])
        trial.rho = reg.rho.copy()
        a = trial.measure("A", rng)
        assert trial.measure("B", rng) == a  # perfectly correlated in Z


def test_replace_breaks_correlations_and_dephase_scales_coherence():
    reg = ground(["A", "B"])
    reg.apply("A", H)
    reg.rho = CNOT @ reg.rho @ CNOT.conj().T
    reg.replace("A", np.diag([1.0, 0.0]).astype(complex))
    assert np.allclose(reg.reduced("A"), np.diag([1, 0]))
    assert np.allclose(reg.reduced("B"), np.eye(2) / 2)
    single = ground(["A"])
    single.apply("A", rotation(2 * np.pi, 0.0, 0.0, 0.25))  # pi/2 about X
    single.dephase("A", 0.3)
    assert abs(single.reduced("A")[0, 1]) == pytest.approx(0.5 * 0.3)
