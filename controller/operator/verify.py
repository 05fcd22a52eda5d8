"""Bell-state fidelity from pairs measured in XX, YY and ZZ, corrected for readout errors.

For psi+ = (|01> + |10>)/sqrt 2: F = (1 + <XX> + <YY> - <ZZ>) / 4. Each correlator comes from
the joint outcome frequencies of the two nodes, with each node's readout assignment matrix
(F0: P(bright | |0>), F1: P(dark | |1>)) inverted; its variance follows from the multinomial
frequencies, since the correction is linear. The interval is the normal 95 % one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.data.sessionfile import DELIVERED
from controller.link.vocabulary import BASES

Z95 = 1.959964
SIGNS = np.array([1.0, -1.0, -1.0, 1.0])  # (+,+), (+,-), (-,+), (-,-)


@dataclass(frozen=True)
class Correlator:
    basis: str
    n: int
    raw: float
    value: float
    sigma: float


@dataclass(frozen=True)
class Verification:
    correlators: dict[str, Correlator]
    fidelity: float
    low: float
    high: float
    raw_fidelity: float
    corrected: bool

    def as_dict(self) -> dict:
        return {
            "fidelity": self.fidelity,
            "ci95": [self.low, self.high],
            "raw_fidelity": self.raw_fidelity,
            "readout_corrected": self.corrected,
            "correlators": {
                b: {"n": c.n, "raw": c.raw, "value": c.value, "sigma": c.sigma}
                for b, c in self.correlators.items()
            },
        }


def assignment(f0: float, f1: float) -> np.ndarray:
    """Measured (bright, dark) given true (|0>, |1>)."""
    return np.array([[f0, 1 - f1], [1 - f0, f1]])


def joined_bits(pairs_a: np.ndarray, pairs_b: np.ndarray) -> dict[str, np.ndarray]:
    """basis -> (n, 2) array of (bit A, bit B) over the pairs both delivered and measured."""

    def measured(pairs):
        keep = (pairs["status"] == DELIVERED) & (pairs["bit"] != 0)
        return {row["id"]: row for row in pairs[keep]}

    a, b = measured(pairs_a), measured(pairs_b)
    out: dict[str, list] = {"X": [], "Y": [], "Z": []}
    for pid in a.keys() & b.keys():
        basis = BASES[a[pid]["basis"]]
        if basis in out and BASES[b[pid]["basis"]] == basis:
            out[basis].append((a[pid]["bit"], b[pid]["bit"]))
    return {k: np.array(v, dtype=float).reshape(-1, 2) for k, v in out.items()}


def correlator(bits: np.ndarray, m_a: np.ndarray, m_b: np.ndarray, basis: str) -> Correlator:
    n = len(bits)
    if n == 0:
        return Correlator(basis, 0, float("nan"), float("nan"), float("inf"))
    a_dark, b_dark = bits[:, 0] < 0, bits[:, 1] < 0
    counts = np.array(
        [
            np.sum(~a_dark & ~b_dark),
            np.sum(~a_dark & b_dark),
            np.sum(a_dark & ~b_dark),
            np.sum(a_dark & b_dark),
        ],
        dtype=float,
    )
    p = counts / n
    w = SIGNS @ np.linalg.inv(np.kron(m_a, m_b))
    value = float(w @ p)
    variance = float((w**2) @ p - value**2) / n
    return Correlator(basis, n, float(SIGNS @ p), value, float(np.sqrt(max(variance, 0.0))))


def _fidelity(bits: dict[str, np.ndarray], readout: list[float] | None) -> tuple[float, dict]:
    m_a = assignment(*readout[:2]) if readout else np.eye(2)
    m_b = assignment(*readout[2:]) if readout else np.eye(2)
    c = {basis: correlator(bits[basis], m_a, m_b, basis) for basis in ("X", "Y", "Z")}
    return (1 + c["X"].value + c["Y"].value - c["Z"].value) / 4, c


def verify(
    pairs_a: np.ndarray,
    pairs_b: np.ndarray,
    readout_a: tuple[float, float] | None,
    readout_b: tuple[float, float] | None,
    readout_shots: int | None = None,
) -> Verification:
    """readout_shots: the shots each F0/F1 was measured with; their uncertainty then widens
    the interval too (it matters once thousands of pairs were measured)."""
    corrected = readout_a is not None and readout_b is not None
    readout = [*readout_a, *readout_b] if corrected else None
    bits = joined_bits(pairs_a, pairs_b)
    f, c = _fidelity(bits, readout)
    raw = (1 + c["X"].raw + c["Y"].raw - c["Z"].raw) / 4
    variance = sum(x.sigma**2 for x in c.values()) / 16
    if corrected and readout_shots:
        for k, value in enumerate(readout):  # error propagation, one F at a time
            step = 1e-4
            shifted = list(readout)
            shifted[k] = value - step
            slope = (f - _fidelity(bits, shifted)[0]) / step
            variance += slope**2 * value * (1 - value) / readout_shots
    sigma = float(np.sqrt(variance))
    return Verification(c, float(f), f - Z95 * sigma, f + Z95 * sigma, float(raw), corrected)
