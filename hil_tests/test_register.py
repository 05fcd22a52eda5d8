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


# ----------------------------------------------------------- memory qubits beside the electrons
def random_state(dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(dim, dim)) + 1j * rng.normal(size=(dim, dim))
    rho = g @ g.conj().T
    return rho / np.trace(rho)


def test_added_memory_qubit_sits_beside_the_others_untouched():
    reg = ground(["A", "B"])
    reg.apply("A", H)
    before = reg.rho.copy()
    reg.add_qubit("A.c13", np.diag([0.0, 1.0]).astype(complex))
    reg.add_qubit("A.c13", np.eye(2) / 2)  # a name already held is kept as it is
    assert reg.names == ["A", "B", "A.c13"]
    assert np.allclose(reg.rho, np.kron(before, np.diag([0, 1])))
    assert np.allclose(reg.reduced("A.c13"), np.diag([0, 1]))


def test_joint_operation_on_non_adjacent_qubits_is_the_full_operator():
    """apply_joint on (C, A) of [A, B, C]: the same as the 8x8 operator built by permuting."""
    reg = QubitRegister(["A", "B", "C"])
    reg.rho = random_state(8, 1)
    rho = reg.rho.copy()
    reg.apply_joint(["C", "A"], CNOT)  # C controls, A is the target
    full = np.zeros((8, 8), dtype=complex)
    for index in range(8):
        a, b, c = (index >> 2) & 1, (index >> 1) & 1, index & 1
        a2 = a ^ c
        full[(a2 << 2) | (b << 1) | c, index] = 1
    assert np.allclose(reg.rho, full @ rho @ full.conj().T)


def test_channel_as_superoperator_on_two_qubits():
    """A full dephasing of B as a superoperator on (B, C): the same as dephase(B, 0)."""
    reg = QubitRegister(["A", "B", "C"])
    reg.rho = random_state(8, 2)
    expected = QubitRegister(["A", "B", "C"])
    expected.rho = reg.rho.copy()
    expected.dephase("B", 0.0)
    kraus = [np.kron(np.diag([1.0, 0.0]), np.eye(2)), np.kron(np.diag([0.0, 1.0]), np.eye(2))]
    superop = sum(np.kron(k, k.conj()) for k in kraus)
    reg.apply_channel(["B", "C"], superop)
    assert np.allclose(reg.rho, expected.rho)


def test_set_pair_in_a_larger_register_keeps_the_memory():
    """Heralding sets the two electrons' state; a memory qubit beside them keeps its own."""
    reg = ground(["A", "B"])
    reg.add_qubit("B.c13", np.full((2, 2), 0.5, dtype=complex))  # |+>
    bell = np.zeros((4, 4), dtype=complex)
    bell[1, 1] = bell[1, 2] = bell[2, 1] = bell[2, 2] = 0.5
    reg.set_pair("B", "A", bell)
    assert np.allclose(reg.reduced("B.c13"), np.full((2, 2), 0.5))
    assert reg.measure("A", np.random.default_rng(3)) != reg.measure("B", np.random.default_rng(4))
    with pytest.raises(ValueError, match="two qubits of the register"):
        reg.set_pair("A", "C", bell)


def test_a_register_refuses_more_qubits_than_it_can_hold():
    from sim_backends.register import MAX_QUBITS

    register = QubitRegister([f"N{k}" for k in range(MAX_QUBITS)])
    with pytest.raises(ValueError, match=f"at most {MAX_QUBITS} qubits .* N0.c13 would be one"):
        register.add_qubit("N0.c13", np.eye(2) / 2)


def test_the_joint_state_of_named_qubits_in_their_order():
    """reduced_joint: a pair set among four qubits comes back as set, in either order (the
    order swapped: the pair's qubits swapped), and with a third its product with that one."""
    register = QubitRegister(["A", "B", "C", "D"])
    psi_minus = np.array([0, 1, -1, 0]) / np.sqrt(2)
    one = np.diag([0.0, 1.0])
    register.replace("B", one)
    register.set_pair("C", "A", np.outer(psi_minus, psi_minus))  # C first
    assert np.allclose(register.reduced_joint(["C", "A"]), np.outer(psi_minus, psi_minus))
    assert np.allclose(register.reduced_joint(["A", "C"]), np.outer(psi_minus, psi_minus))
    phi = np.array([1, 0, 0, 1]) / np.sqrt(2)
    register.set_pair("A", "D", np.outer(phi, phi))
    joint = register.reduced_joint(["A", "B", "D"])
    pair = np.outer(phi, phi).reshape(2, 2, 2, 2)  # a, d, a', d'
    expected = np.einsum("adAD,bB->abdABD", pair, one).reshape(8, 8)
    assert np.allclose(joint, expected)
    with pytest.raises(ValueError, match="named twice"):
        register.reduced_joint(["A", "A"])
