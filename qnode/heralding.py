"""The heralded two-node state and its probability, for single-click and Barrett-Kok.

Leading-order model of Humphreys et al. 2018 (SI) and Barrett & Kok 2005. Each node's bright
state (|0> in the register: NV ms=0, ion bright level) emits one photon per excitation; a
photon reaches a midpoint detector with probability eta (emission, collection, fibre,
detector); the beam splitter erases which-path information up to the photons' overlap
(`visibility`) and the interferometer phase noise (Gaussian, `phase_sigma_rad`; single-click
only); each detector clicks on its own with `dark_prob` per window. Detectors do not resolve
photon number, so two photons on one detector are one click.

States are 4x4 density matrices over (A, B), basis |00>, |01>, |10>, |11> (0 = bright).
psi_plus/psi_minus are (|01> +- |10>)/sqrt 2.

Shared like a header: the simulated lab draws its heralded states from it, and the controller
uses it for the analytic expectation next to a measured fidelity and to choose alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qnode.errors import QnodeError

NOMINAL_VISIBILITY = 0.9
"""Assumed (and said so) until the visibility routine has measured it."""

KET = {s: np.eye(4)[i] for i, s in enumerate(("00", "01", "10", "11"))}
PSI_PLUS = (KET["01"] + KET["10"]) / np.sqrt(2)
PSI_MINUS = (KET["01"] - KET["10"]) / np.sqrt(2)


def bell_state(outcome: str) -> np.ndarray:
    psi = PSI_PLUS if outcome == "psi_plus" else PSI_MINUS
    return np.outer(psi, psi).astype(complex)


@dataclass(frozen=True)
class Link:
    """What the physics needs of the two nodes and the midpoint."""

    eta_a: float
    eta_b: float
    visibility: float
    dark_prob: float  # per detector, per detection window
    phase_sigma_rad: float = 0.0

    @property
    def eta(self) -> float:
        return float(np.sqrt(self.eta_a * self.eta_b))


@dataclass(frozen=True)
class Herald:
    p_success: float  # per attempt, both outcomes together
    states: dict[str, np.ndarray]  # outcome -> state of (A, B) given that outcome
    weights: dict[str, float]  # outcome -> its share of the successes


def _one_click_two_photons(eta_a: float, eta_b: float, visibility: float) -> float:
    """Both nodes emitted: probability of exactly one click (one photon lost, or both bunched
    onto one detector, which Hong-Ou-Mandel interference favours)."""
    one_lost = eta_a * (1 - eta_b) + eta_b * (1 - eta_a)
    both_same = eta_a * eta_b * (1 + visibility) / 2
    return one_lost + both_same


XX = np.kron(np.array([[0, 1], [1, 0]]), np.array([[0, 1], [1, 0]])).astype(complex)


def _click(rho: np.ndarray, link: Link, sign: float, coherence: float) -> np.ndarray:
    """One click on one detector (sign +1: the psi_plus detector), leading order, as a map on
    the joint state (unnormalised; its trace is the probability). A bright node emits: |01>
    (A bright) is seen with eta_a / 2 per detector, |10> with eta_b / 2, and their coherence
    survives as far as the photons are indistinguishable and the phase is held; |00> gives
    one click when the two photons bunch or one is lost; |11> only by a dark count.
    Emission entangles the memories with photon number: every other coherence is gone."""
    ea, eb = link.eta_a, link.eta_b
    c = coherence
    out = np.zeros((4, 4), dtype=complex)
    out[1, 1] = ea / 2 * rho[1, 1]
    out[2, 2] = eb / 2 * rho[2, 2]
    out[1, 2] = sign * c * np.sqrt(ea * eb) / 2 * rho[1, 2]
    out[2, 1] = np.conj(out[1, 2])
    out[0, 0] = rho[0, 0] * _one_click_two_photons(ea, eb, link.visibility) / 2
    out[3, 3] = rho[3, 3] * link.dark_prob
    return out


def _herald(parts: dict[str, np.ndarray]) -> Herald:
    weights = {k: float(np.trace(v).real) for k, v in parts.items()}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("nothing can herald from these states")
    states = {
        k: v / w if w > 0 else v for (k, v), w in zip(parts.items(), weights.values(), strict=True)
    }
    return Herald(total, states, {k: w / total for k, w in weights.items()})


def single_click_from_states(rho_a: np.ndarray, rho_b: np.ndarray, link: Link) -> Herald:
    """Single-click from the memories' actual states at the optical pulse (any 2x2 density
    matrices: an initialisation error or a mis-set rotation shows in the heralded state)."""
    rho = np.kron(rho_a, rho_b)
    c = link.visibility * np.exp(-(link.phase_sigma_rad**2) / 2)
    return _herald({"psi_plus": _click(rho, link, 1.0, c), "psi_minus": _click(rho, link, -1.0, c)})


def barrett_kok_from_states(rho_a: np.ndarray, rho_b: np.ndarray, link: Link) -> Herald:
    """Barrett-Kok from the actual states after the first pi/2: a click, both memories
    flipped, a click. Same detector twice: psi_plus; one each: psi_minus. The states are
    after the second round (the flip included). The visibility enters the state once, as in
    the closed form (each round's click carries its square root; the phase cancels)."""
    rho = np.kron(rho_a, rho_b)
    c = np.sqrt(link.visibility)
    parts = {"psi_plus": np.zeros((4, 4), complex), "psi_minus": np.zeros((4, 4), complex)}
    for first in (1.0, -1.0):
        flipped = XX @ _click(rho, link, first, c) @ XX
        for second in (1.0, -1.0):
            outcome = "psi_plus" if first == second else "psi_minus"
            parts[outcome] += _click(flipped, link, second, c)
    return _herald(parts)


def _pure(bright_population: float) -> np.ndarray:
    psi = np.array([np.sqrt(bright_population), np.sqrt(1 - bright_population)])
    return np.outer(psi, psi).astype(complex)


def single_click(alpha: float, link: Link, alpha_b: float | None = None) -> Herald:
    """Each node in sqrt(alpha)|0> + sqrt(1-alpha)|1> (alpha: its bright population; node B's
    may differ), one optical pi pulse, one click."""
    alpha_a, alpha_b = alpha, alpha if alpha_b is None else alpha_b
    for a in (alpha_a, alpha_b):
        if not 0 <= a <= 1:
            raise ValueError(f"alpha {a} must lie in [0, 1]")
    if alpha_a + alpha_b == 0:
        raise ValueError("neither node is bright: nothing can herald")
    return single_click_from_states(_pure(alpha_a), _pure(alpha_b), link)


def barrett_kok(link: Link) -> Herald:
    """Both nodes in (|0> + |1>)/sqrt 2; a click in each of two rounds with a pi pulse
    between. Same detector twice: psi_plus; different detectors: psi_minus. The phase
    cancels between the rounds."""
    return barrett_kok_from_states(_pure(0.5), _pure(0.5), link)


def fidelity(rho: np.ndarray, outcome: str) -> float:
    psi = PSI_PLUS if outcome == "psi_plus" else PSI_MINUS
    return float(np.real(psi @ rho @ psi))


def _single_click_fidelity(alpha: float, link: Link) -> float:
    return fidelity(single_click(alpha, link).states["psi_plus"], "psi_plus")


def alpha_for_fidelity(target: float, link: Link) -> float:
    """The largest alpha (the highest rate) whose single-click state meets `target`.

    The fidelity is 1 - alpha at large alpha and falls again at very small alpha, where dark
    counts outnumber photons: find its best alpha first, then search above it."""
    lo, hi = 1e-7, 0.5
    for _ in range(100):  # golden-section search for the best alpha
        a = hi - (hi - lo) / 1.618034
        b = lo + (hi - lo) / 1.618034
        if _single_click_fidelity(a, link) >= _single_click_fidelity(b, link):
            hi = b
        else:
            lo = a
    best = (lo + hi) / 2
    if _single_click_fidelity(best, link) < target:
        raise ValueError(
            f"fidelity {target} is out of reach with this link (best "
            f"{_single_click_fidelity(best, link):.3f} at alpha {best:.3g})"
        )
    lo, hi = best, 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        if _single_click_fidelity(mid, link) >= target:
            lo = mid
        else:
            hi = mid
    return lo


def link_from_calibration(
    values: dict[str, dict[str, float]], nodes: list[str], midpoint: str
) -> tuple[Link, tuple[str, ...]]:
    """The heralding model's inputs from calibrated parameters (station -> name -> value),
    with notes on what was assumed."""
    notes: list[str] = []
    missing = [
        f"{n}.detection_probability"
        for n in nodes
        if values[n].get("detection_probability") is None
    ]
    missing += [
        f"{n}.detection_window_ns" for n in nodes if not values[n].get("detection_window_ns")
    ]
    if missing:
        raise QnodeError("not calibrated: " + ", ".join(missing) + " (`qnode calibrate`)")
    m = values[midpoint]
    visibility = m.get("visibility")
    if visibility is None:
        visibility = NOMINAL_VISIBILITY
        notes.append(f"visibility not calibrated: nominal {NOMINAL_VISIBILITY} assumed")
    darks = [v for k, v in m.items() if k.startswith("dark_count_hz_")]
    if not darks:
        raise QnodeError(f"not calibrated: {midpoint}.dark_count_hz_* (`qnode calibrate`)")
    window_ns = float(np.mean([values[n]["detection_window_ns"] for n in nodes]))
    phase_deg = m.get("phase_noise_deg", 0.0)
    return (
        Link(
            eta_a=values[nodes[0]]["detection_probability"],
            eta_b=values[nodes[1]]["detection_probability"],
            visibility=visibility,
            dark_prob=float(np.mean(darks)) * window_ns * 1e-9,
            phase_sigma_rad=math.radians(phase_deg),
        ),
        tuple(notes),
    )
