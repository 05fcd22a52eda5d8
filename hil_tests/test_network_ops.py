"""B's GHZ operation (sequences/network_ops.py) compiled and replayed on the papers'
Hamiltonian, H = omega_L I_z + |1><1| (A_par I_z + A_perp I_x) (the model of
hil_tests/test_compiler_memory.py: pulses at their centres, waits as free evolution, every
wait on the sequencer's clock), with A and C as ideal qubits entangled with B's memory and
electron. Pure: no lab. It checks the claim the network's GHZ rests on: after the operation,
for either outcome of the electron, each of the seven GHZ stabilisers, measured in the bases
of GHZ_BASES, has its sign once the frame (controller.network.pauli.ghz_frame) is applied."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from controller.network.estimators import GHZ_SETTINGS
from controller.network.pauli import frame_sign, ghz_frame, pair_pauli
from hil_tests.test_compiler_memory import HW, PARAMS, replay
from sequences.compiler import compile_sequence
from sequences.network_ops import GHZ_BASES, ghz_operation

PAULI = {
    "I": np.eye(2),
    "X": np.array([[0, 1], [1, 0]]),
    "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1, -1]),
}
KET0, KET1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
BELL = {
    "psi_plus": (np.kron(KET0, KET1) + np.kron(KET1, KET0)) / np.sqrt(2),
    "psi_minus": (np.kron(KET0, KET1) - np.kron(KET1, KET0)) / np.sqrt(2),
}


def channel_on_b(compiled) -> dict[tuple[int, int], np.ndarray]:
    """The program's map on B's (electron, memory) density matrices, from its action on each
    matrix unit |i><j| (the replay is linear in rho)."""
    out = {}
    for i, j in itertools.product(range(4), repeat=2):
        unit = np.zeros((4, 4), complex)
        unit[i, j] = 1
        out[i, j], _ = replay(compiled, unit)
    return out


def after_operation(first: str, second: str) -> np.ndarray:
    """(A, m, e, C) after B's operation on A-m and e-C (as 8-index tensor)."""
    psi = np.kron(BELL[first], BELL[second])  # (A, m, e, C)
    rho = np.outer(psi, psi.conj()).reshape([2] * 8)
    result = np.zeros((2,) * 8, complex)
    for (i, j), out in channel_on_b(compile_sequence(ghz_operation(), PARAMS, HW)).items():
        ei, mi = divmod(i, 2)
        ej, mj = divmod(j, 2)
        coefficient = rho[:, mi, ei, :, :, mj, ej, :]  # (a, c, a', c')
        # result[a, m, e, c, a', m', e', c'] += coefficient[a, c, a', c'] * out[e, m, e', m']
        result += np.einsum("pqrs,xyzw->pyxqrwzs", coefficient, out.reshape(2, 2, 2, 2))
    return result


@pytest.mark.parametrize("first,second", list(itertools.product(BELL, repeat=2)))
def test_the_ghz_operation_leaves_a_ghz_state_in_its_bases_with_its_frame(first, second):
    """Each outcome has probability 1/2; every stabiliser's physical expectation, signed by
    GHZ_BASES and by the frame, is above 0.9 (the model's DD gate reaches ~0.98: its axis is
    tilted by A_perp); a wrong basis, sign or frame would give -1 or 0."""
    state = after_operation(first, second)
    for bright in (0, 1):
        electron = 1 - bright  # bright: the electron's |0>
        block = state[:, :, electron, :, :, :, electron, :].reshape(8, 8)
        probability = float(np.trace(block).real)
        assert probability == pytest.approx(0.5, abs=0.02)
        rho3 = block / probability
        frame = ghz_frame(pair_pauli(first), pair_pauli(second), bright)
        for terms in GHZ_SETTINGS.values():
            for stabiliser, sign in terms:
                operator, basis_sign = np.eye(1), 1
                for k, b in enumerate(stabiliser):
                    basis, s = GHZ_BASES[k][b] if b != "I" else ("I", 1)
                    operator, basis_sign = np.kron(operator, PAULI[basis]), basis_sign * s
                value = float(np.trace(rho3 @ operator).real) * basis_sign
                value *= frame_sign(frame, stabiliser) * sign
                assert value > 0.9, (bright, stabiliser, value)
