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


def _psi(coherence: float, sign: float) -> np.ndarray:
    rho = np.zeros((4, 4), dtype=complex)
    rho[1, 1] = rho[2, 2] = 0.5
    rho[1, 2] = rho[2, 1] = sign * coherence / 2
    return rho


def single_click(alpha: float, link: Link, alpha_b: float | None = None) -> Herald:
    """Each node in sqrt(1-alpha)|1> + sqrt(alpha)|0> (alpha: its bright population; node B's
    may differ), one optical pi pulse, one click."""
    alpha_a, alpha_b = alpha, alpha if alpha_b is None else alpha_b
    for a in (alpha_a, alpha_b):
        if not 0 <= a <= 1:
            raise ValueError(f"alpha {a} must lie in [0, 1]")
    if alpha_a + alpha_b == 0:
        raise ValueError("neither node is bright: nothing can herald")
    ea, eb = link.eta_a, link.eta_b
    coherence = link.visibility * np.exp(-(link.phase_sigma_rad**2) / 2)
    # per detector: one photon from A (|01>) or B (|10>), coherent with each other; both
    # emitted; neither (a dark count)
    w_a = alpha_a * (1 - alpha_b) * ea / 2
    w_b = (1 - alpha_a) * alpha_b * eb / 2
    w_both = alpha_a * alpha_b * _one_click_two_photons(ea, eb, link.visibility) / 2
    w_dark = (1 - alpha_a) * (1 - alpha_b) * link.dark_prob
    total = w_a + w_b + w_both + w_dark
    states = {}
    for outcome, sign in (("psi_plus", 1.0), ("psi_minus", -1.0)):
        rho = np.zeros((4, 4), dtype=complex)
        rho[1, 1], rho[2, 2] = w_a, w_b
        rho[1, 2] = rho[2, 1] = sign * coherence * np.sqrt(w_a * w_b)
        rho[0, 0] += w_both
        rho[3, 3] += w_dark
        states[outcome] = rho / total
    return Herald(2 * total, states, {"psi_plus": 0.5, "psi_minus": 0.5})


def barrett_kok(link: Link) -> Herald:
    """Both nodes in (|0> + |1>)/sqrt 2; a click in each of two rounds with a pi pulse
    between. Same detector twice: psi_plus; different detectors: psi_minus. The phase
    cancels between the rounds."""
    ea, eb = link.eta_a, link.eta_b
    coherence = link.visibility
    pd = link.dark_prob
    two = _one_click_two_photons(ea, eb, link.visibility)
    # per ordered pair of detectors (4 of them): one-photon sector clicks twice
    w_good = 0.5 * ((ea + eb) / 4) ** 2
    # |00> emits two photons (one click), after the pi pulse |11> is dark (a dark count): ends |11>
    # |11> dark count, after the pi pulse |00> emits (one click): ends |00>
    w_11 = 0.25 * two / 2 * pd
    w_00 = 0.25 * pd * two / 2
    total = w_good + w_11 + w_00
    states = {}
    for outcome, sign in (("psi_plus", 1.0), ("psi_minus", -1.0)):
        rho = w_good * _psi(coherence, sign)
        rho[0, 0] += w_00
        rho[3, 3] += w_11
        states[outcome] = rho / total
    return Herald(4 * total, states, {"psi_plus": 0.5, "psi_minus": 0.5})


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


def link_from_calibration(values: dict[str, dict[str, float]], nodes: list[str], midpoint: str):
    """The heralding model's inputs from calibrated parameters (station -> name -> value),
    with notes on what was assumed."""
    notes = []
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
