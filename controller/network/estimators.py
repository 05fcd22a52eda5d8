"""Estimators of the applications' figures, with 95 % intervals: pure code, numpy only.

GHZ (Pompili et al., Science 372, 259 (2021)): the state (|000> + |111>)/sqrt 2 on (A, B's
memory, C) has the stabiliser group {III, ZZI, ZIZ, IZZ, XXX, -XYY, -YXY, -YYX}; its fidelity
is the group's mean expectation, F = (1 + sum of the seven)/8, measured in five settings (ZZZ
gives the three ZZ terms at once). From the generators alone (XXX, ZZI, IZZ: settings XXX and
ZZZ) a lower bound, F >= (<XXX> + <ZZI> + <IZZ> - 1)/2 (Toth and Guehne, PRL 94, 060501
(2005): the product of commuting projectors (1 + S)/2 is at least their sum minus 2).

Teleportation (Hermans et al., Nature 605, 663 (2022)): the six cardinal states, each
measured by the receiver in its own basis after the correction; the average fidelity is the
mean of the six success fractions, against the classical bound 2/3 (Massar and Popescu, PRL
74, 1259 (1995)); through a Werner-like resource of fidelity F it is (2F + 1)/3 (Horodecki,
Horodecki and Horodecki, PRA 60, 1888 (1999)).

Each interval is the estimate +- 1.96 sigma, sigma from the shots' sample variances per
setting (the shots of one setting are independent; settings are independent of each other),
never of zero width: a plain (Wald) interval of all-success data is [1, 1], which claims
certainty from a few shots. So the variances take two pseudo-shots at the extremes (each
setting's +-m, m its number of terms; for a success fraction, Agresti and Coull, Am. Stat.
52, 119 (1998): two successes and two failures added), and the interval is clipped to what
the figure can be.
Results are +1/-1 per qubit; a Pauli frame per shot (controller.network.pauli) flips the
products it anticommutes with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from controller.network.pauli import Pauli, frame_sign

Z95 = 1.959963984540054
"""The standard normal's two-sided 95 % quantile."""
CLASSICAL_BOUND = 2.0 / 3.0

GHZ_SETTINGS: dict[str, tuple[tuple[str, int], ...]] = {
    "ZZZ": (("ZZI", 1), ("ZIZ", 1), ("IZZ", 1)),
    "XXX": (("XXX", 1),),
    "XYY": (("XYY", -1),),
    "YXY": (("YXY", -1),),
    "YYX": (("YYX", -1),),
}
"""Each measurement setting and the stabilisers (with their sign in the group) it gives."""
GHZ_GENERATORS: dict[str, tuple[tuple[str, int], ...]] = {
    "ZZZ": (("ZZI", 1), ("IZZ", 1)),
    "XXX": (("XXX", 1),),
}

CARDINAL_STATES: dict[str, tuple[str, int]] = {
    "+Z": ("Z", 1),
    "-Z": ("Z", -1),
    "+X": ("X", 1),
    "-X": ("X", -1),
    "+Y": ("Y", 1),
    "-Y": ("Y", -1),
}
"""Each state to teleport: the basis the receiver measures and the result that is success."""


@dataclass(frozen=True)
class Estimate:
    value: float
    sigma: float
    low: float
    high: float
    shots: int

    def above(self, bound: float) -> bool:
        """The whole 95 % interval above `bound`."""
        return self.low > bound


def _estimate(
    value: float, variance: float, shots: int, centre: float | None = None, top: float = 1.0
) -> Estimate:
    """value, and the interval centre +- Z95 sigma (centre: value unless an adjusted one is
    given), widened to hold the value itself and clipped to the figure's range [0, top]."""
    sigma = float(np.sqrt(max(variance, 0.0)))
    mid = value if centre is None else centre
    low = max(min(mid - Z95 * sigma, value), 0.0)
    high = min(max(mid + Z95 * sigma, value), top)
    return Estimate(value, sigma, low, high, shots)


def stabiliser_values(
    setting: str,
    results: np.ndarray,
    frames: Sequence[tuple[Pauli, ...]] | None = None,
    terms: Mapping[str, tuple[tuple[str, int], ...]] = GHZ_SETTINGS,
) -> np.ndarray:
    """Per shot, the sum of the setting's signed stabiliser products, each corrected by the
    shot's Pauli frame: `results` is (shots, qubits) of +1/-1 measured in `setting`."""
    results = np.asarray(results)
    if results.ndim != 2 or results.shape[1] != len(setting):
        raise ValueError(f"results of {setting} are (shots, {len(setting)}), got {results.shape}")
    if not np.isin(results, (-1, 1)).all():
        raise ValueError("results are +1 or -1")
    if frames is not None and len(frames) != len(results):
        raise ValueError(f"{len(frames)} frames for {len(results)} shots")
    values = np.zeros(len(results))
    for stabiliser, sign in terms[setting]:
        if any(b not in ("I", m) for b, m in zip(stabiliser, setting, strict=True)):
            raise ValueError(f"{stabiliser} is not measured in setting {setting}")
        mask = np.array([b != "I" for b in stabiliser])
        products = np.prod(results[:, mask], axis=1)
        if frames is not None:
            products = products * np.array([frame_sign(f, stabiliser) for f in frames])
        values += sign * products
    return values


def _mean_and_variance(values: np.ndarray, extreme: float) -> tuple[float, float]:
    """The mean, and the variance of the mean with two pseudo-shots at +-extreme (so that
    identical shots do not make it zero)."""
    if len(values) < 2:
        raise ValueError("an estimate needs at least two shots per setting")
    padded = np.concatenate([values, [extreme, -extreme]])
    return float(np.mean(values)), float(np.var(padded, ddof=1) / len(values))


def _extreme(setting: str, terms: Mapping[str, tuple[tuple[str, int], ...]]) -> float:
    return float(len(terms[setting]))


def ghz_fidelity(values_by_setting: Mapping[str, np.ndarray]) -> Estimate:
    """F = (1 + sum over the five settings of their mean values)/8 (`stabiliser_values`)."""
    missing = set(GHZ_SETTINGS) - set(values_by_setting)
    if missing:
        raise ValueError(f"the GHZ fidelity needs the settings {sorted(missing)} too")
    total, variance, shots = 1.0, 0.0, 0
    for setting in GHZ_SETTINGS:
        values = np.asarray(values_by_setting[setting])
        mean, var = _mean_and_variance(values, _extreme(setting, GHZ_SETTINGS))
        total, variance = total + mean, variance + var
        shots += len(values_by_setting[setting])
    return _estimate(total / 8.0, variance / 64.0, shots)


def ghz_fidelity_bound(values_by_setting: Mapping[str, np.ndarray]) -> Estimate:
    """F >= (<XXX> + <ZZI> + <IZZ> - 1)/2, from `stabiliser_values(..., GHZ_GENERATORS)`."""
    zz, zz_var = _mean_and_variance(np.asarray(values_by_setting["ZZZ"]), 2.0)
    xxx, xxx_var = _mean_and_variance(np.asarray(values_by_setting["XXX"]), 1.0)
    shots = len(values_by_setting["ZZZ"]) + len(values_by_setting["XXX"])
    return _estimate((xxx + zz - 1.0) / 2.0, (zz_var + xxx_var) / 4.0, shots)


def corrected_outcome(basis: str, result: int, correction: Pauli) -> int:
    """The receiver's +1/-1 result in `basis` with its correction applied in software."""
    return -result if correction.anticommutes_with(basis) else result


def teleport_fidelity(successes: Mapping[str, tuple[int, int]]) -> Estimate:
    """The average fidelity over the six cardinal states, from (successes, shots) per state:
    the mean of the six fractions; the interval around the mean of the Agresti-Coull adjusted
    fractions (k + 2) / (n + 4), each with its variance f (1 - f) / (n + 4)."""
    missing = set(CARDINAL_STATES) - set(successes)
    if missing:
        raise ValueError(f"the average fidelity needs the states {sorted(missing)} too")
    fractions, adjusted, variance, shots = [], [], 0.0, 0
    for state in CARDINAL_STATES:
        good, n = successes[state]
        if n < 2 or not 0 <= good <= n:
            raise ValueError(f"{state}: {good} successes in {n} shots")
        fractions.append(good / n)
        f = (good + 2) / (n + 4)
        adjusted.append(f)
        variance += f * (1 - f) / (n + 4)
        shots += n
    count = len(CARDINAL_STATES)
    return _estimate(
        float(np.mean(fractions)), variance / count**2, shots, centre=float(np.mean(adjusted))
    )


PSI_PLUS_CORRELATORS = {"X": 1, "Y": 1, "Z": -1}
"""psi+ = (|01> + |10>)/sqrt 2: <XX> = <YY> = +1, <ZZ> = -1."""


def bell_fidelity(products_by_basis: Mapping[str, np.ndarray]) -> Estimate:
    """The fidelity of end-to-end pairs with psi+, F = (1 + <XX> + <YY> - <ZZ>)/4, from
    each basis's per-pair products of the two ends' +1/-1 results, each already multiplied
    by its sign in psi+ (`PSI_PLUS_CORRELATORS`), so F = (1 + sum of the three means)/4."""
    missing = set(PSI_PLUS_CORRELATORS) - set(products_by_basis)
    if missing:
        raise ValueError(f"the Bell-state fidelity needs the bases {sorted(missing)} too")
    total, variance, shots = 1.0, 0.0, 0
    for basis in PSI_PLUS_CORRELATORS:
        values = np.asarray(products_by_basis[basis])
        mean, var = _mean_and_variance(values, 1.0)
        total, variance, shots = total + mean, variance + var, shots + len(values)
    return _estimate(total / 4.0, variance / 16.0, shots)
