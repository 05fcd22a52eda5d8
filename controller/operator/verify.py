"""Bell-state fidelity from pairs measured in XX, YY and ZZ, corrected for readout errors.

For psi+ = (|01> + |10>)/sqrt 2: F = (1 + <XX> + <YY> - <ZZ>) / 4. Each correlator comes from
the joint outcome frequencies of the two nodes, with each node's readout assignment matrix
(F0: P(bright | |0>), F1: P(dark | |1>)) inverted. F0 and F1 must be the readout's own
(`entangle.readout_of`, the readout routine's f0/f1): what a prepared |0> reads also holds the
initialisation error, which is the state's error; dividing it out too would bias the
fidelity up. A correlator's variance follows from the multinomial frequencies, since the
correction is linear. The interval is the normal 95 % one.

Estimates are kept physical: a corrected correlator beyond [-1, 1] (the readout correction
reaches beyond what the data hold, as a sample's frequencies scatter) is clipped to it, the
fidelity and its interval to [0, 1], each with a warning; the uncorrected (raw) and the
unclipped values stay in `as_dict`, and `sigma` is the statistical error before clipping.
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
    """Readout-corrected, clipped to [-1, 1]."""
    sigma: float
    unclipped: float = float("nan")
    """Readout-corrected, before clipping."""

    @property
    def clipped(self) -> bool:
        return bool(abs(self.unclipped) > 1)


@dataclass(frozen=True)
class Verification:
    correlators: dict[str, Correlator]
    fidelity: float
    low: float
    high: float
    raw_fidelity: float
    corrected: bool
    sigma: float = float("nan")
    """The fidelity's statistical error (the interval's half width / 1.96 before clipping)."""
    unclipped: tuple[float, float, float] = (float("nan"),) * 3
    """The fidelity and its interval before clipping to [0, 1]."""
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "fidelity": self.fidelity,
            "ci95": [self.low, self.high],
            "sigma": self.sigma,
            "raw_fidelity": self.raw_fidelity,
            "unclipped": {"fidelity": self.unclipped[0], "ci95": list(self.unclipped[1:])},
            "readout_corrected": self.corrected,
            "correlators": {
                b: {
                    "n": c.n,
                    "raw": c.raw,
                    "value": c.value,
                    "unclipped": c.unclipped,
                    "sigma": c.sigma,
                }
                for b, c in self.correlators.items()
            },
            "warnings": list(self.warnings),
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
    return Correlator(
        basis,
        n,
        float(SIGNS @ p),
        float(np.clip(value, -1.0, 1.0)),
        float(np.sqrt(max(variance, 0.0))),
        value,
    )


def bell_fidelity(c: dict[str, Correlator], which: str = "value") -> float:
    """F = (1 + <XX> + <YY> - <ZZ>) / 4 from the correlators' `value`, `unclipped` or `raw`."""
    x, y, z = (getattr(c[b], which) for b in ("X", "Y", "Z"))
    return (1 + x + y - z) / 4


def _fidelity(bits: dict[str, np.ndarray], readout: list[float] | None) -> tuple[float, dict]:
    """The fidelity from the unclipped correlators (linear in the frequencies: the error
    propagation's slopes), and the correlators."""
    m_a = assignment(*readout[:2]) if readout else np.eye(2)
    m_b = assignment(*readout[2:]) if readout else np.eye(2)
    c = {basis: correlator(bits[basis], m_a, m_b, basis) for basis in ("X", "Y", "Z")}
    return bell_fidelity(c, "unclipped"), c


def verify(
    pairs_a: np.ndarray,
    pairs_b: np.ndarray,
    readout_a: tuple[float, float] | None,
    readout_b: tuple[float, float] | None,
    readout_shots: int | None = None,
) -> Verification:
    """readout_shots: the shots each F0/F1 was measured with; their uncertainty then widens
    the interval too (it matters once thousands of pairs were measured)."""
    readout = [*readout_a, *readout_b] if readout_a is not None and readout_b is not None else None
    corrected = readout is not None
    bits = joined_bits(pairs_a, pairs_b)
    f, c = _fidelity(bits, readout)
    raw = bell_fidelity(c, "raw")
    variance = sum(x.sigma**2 for x in c.values()) / 16
    if readout is not None and readout_shots:
        for k, value in enumerate(readout):  # error propagation, one F at a time
            step = 1e-4
            shifted = list(readout)
            shifted[k] = value - step
            slope = (f - _fidelity(bits, shifted)[0]) / step
            variance += slope**2 * value * (1 - value) / readout_shots
    sigma = float(np.sqrt(variance))
    return physical(c, float(f), sigma, float(raw), corrected)


def physical(
    c: dict[str, Correlator], unclipped: float, sigma: float, raw: float, corrected: bool
) -> Verification:
    """The verification with its estimates clipped to the physical range, with a warning for
    each that was not in it."""
    warnings = [
        f"{b}{b} correlator {x.unclipped:+.2f} before clipping to {np.sign(x.unclipped):+.0f}: "
        "readout correction beyond the data"
        for b, x in c.items()
        if x.clipped
    ]
    f = bell_fidelity(c)  # from the clipped correlators
    if f < 0 or f > 1:
        warnings.append(
            f"fidelity {f:.3f} (from the clipped correlators) before clipping to [0, 1]: "
            "the correlators are not those of a physical state"
        )
    f = float(np.clip(f, 0.0, 1.0))
    low, high = f - Z95 * sigma, f + Z95 * sigma
    if low < 0 or high > 1:
        warnings.append(
            f"fidelity's 95 % interval [{low:.3f}, {high:.3f}] before clipping to [0, 1]: "
            "the normal approximation reaches beyond the physical range"
        )
    return Verification(
        c,
        f,
        float(np.clip(low, 0.0, 1.0)),
        float(np.clip(high, 0.0, 1.0)),
        raw,
        corrected,
        sigma,
        (unclipped, unclipped - Z95 * sigma, unclipped + Z95 * sigma),
        tuple(warnings),
    )
