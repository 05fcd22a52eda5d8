"""The simulator's true states of the ends read against what the network says of them: the
Bell fidelities of a swapped pair after its Pauli frame, the GHZ stabilisers of (A, C) after
B's readout. Only the simulated lab has a truth to read (`SimControl.qubits`); the tests on
the truth and the published-set figures (controller/harness/published_network.py) share them.
"""

from __future__ import annotations

import numpy as np

PAULI_MATRICES = {
    "I": np.eye(2, dtype=complex),
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1.0, -1.0]).astype(complex),
}
_KET0, _KET1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
BELL_VECTORS = {
    "phi_plus": (np.kron(_KET0, _KET0) + np.kron(_KET1, _KET1)) / np.sqrt(2),
    "phi_minus": (np.kron(_KET0, _KET0) - np.kron(_KET1, _KET1)) / np.sqrt(2),
    "psi_plus": (np.kron(_KET0, _KET1) + np.kron(_KET1, _KET0)) / np.sqrt(2),
    "psi_minus": (np.kron(_KET0, _KET1) - np.kron(_KET1, _KET0)) / np.sqrt(2),
}


def bell_fidelities(rho: np.ndarray) -> dict[str, float]:
    """A two-qubit state's fidelity with each Bell state."""
    return {
        name: float(np.real(vector.conj() @ rho @ vector)) for name, vector in BELL_VECTORS.items()
    }


def framed(rho: np.ndarray, first: str, second: str) -> np.ndarray:
    """(A, C)'s state with the swap's Paulis applied (A: `first`, C: `second`, as
    pauli.SwapFrame's)."""
    u = np.kron(PAULI_MATRICES[first], PAULI_MATRICES[second])
    return u @ rho @ u.conj().T


def ghz_truth_values(setting: str, rho_ac: np.ndarray, frame, b_value: int) -> dict[str, float]:
    """Each stabiliser of `setting` on the true state of (A, C) after B's readout: A's and
    C's operators in GHZ_BASES' physical bases with their signs, B's factor its read value
    (GHZ_BASES' sign applied), the group's sign and the shot's Pauli frame. A GHZ state
    gives +1 for every one; chance 0."""
    from controller.network.estimators import GHZ_SETTINGS
    from controller.network.pauli import frame_sign
    from sequences.network_ops import GHZ_BASES

    values = {}
    for stabiliser, sign in GHZ_SETTINGS[setting]:
        operator, signed = np.eye(1), sign * frame_sign(frame, stabiliser)
        for k in (0, 2):
            physical, basis_sign = GHZ_BASES[k][stabiliser[k]] if stabiliser[k] != "I" else ("I", 1)
            operator = np.kron(operator, PAULI_MATRICES[physical])
            signed *= basis_sign
        if stabiliser[1] != "I":
            signed *= b_value
        values[stabiliser] = signed * float(np.real(np.trace(rho_ac @ operator)))
    return values


def ghz_fidelity(values: dict[str, list[float]]) -> float:
    """The GHZ fidelity from its seven stabilisers' means: (1 + sum) / 8 (Guehne and Toth,
    Phys. Rep. 474, 1 (2009): the projector onto GHZ is the mean of its stabiliser group)."""
    return (1 + sum(float(np.mean(v)) for v in values.values())) / 8
