"""Interferometer phase noise with the lock on (single-click): the spread of the residual
phase, which enters a single-click state's coherence as exp(-sigma^2 / 2) (Humphreys et al.
2018, SI).

With the reference light on and the lock holding the set point s, the psi_plus detector's
share of the light is o + (A / 2) cos(s - s0 + delta), delta the residual phase. Short counts
at the fringe's top and bottom (s0, s0 + 180 deg) give A e^{-sigma^2/2}; short counts at
quadrature (s0 + 90 deg), where the share o - (A / 2) sin(delta) is linear in the residual,
give its variance. The photon shot noise of each count (binomial) is taken off before sigma
is solved for.

Assumed: the residual is Gaussian with zero mean and stationary over the measurement (a
small set-point error cancels: the top-bottom difference and the quadrature slope both scale
with its cosine); a 0.5 ms count against a lock loop's correlation time of a few ms averages
a few per cent of the variance away (sigma comes out ~1.6 % low at 5 ms).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, midpoint_of, stored_value

SPACING_S = 0.01
"""Between two short counts: about two correlation times of a lock loop of tens of Hz (the
counts nearly independent samples)."""
MAX_NOISE_DEG = 45.0
"""Above this the lock is not holding the phase: the routine fails rather than store it."""


def _shares(node: NodeAccess, setpoint: float, seconds: float, repeats: int):
    """psi_plus share of the reference light and the photons counted, per short count; the
    counts apart by more than the lock's correlation time, so that each is a sample of its own
    (a count long against it would average the residual away)."""
    midpoint = midpoint_of(node)
    first_name, second_name = list(midpoint.detectors)[:2]
    shares, totals = [], []
    for k in range(repeats):
        if k:
            time.sleep(SPACING_S)
        counts = midpoint.reference_counts(setpoint % 360.0, seconds)
        first, second = counts[first_name], counts[second_name]
        shares.append(first / max(first + second, 1))
        totals.append(first + second)
    return np.array(shares), np.array(totals, dtype=float)


def sigma_from(
    top: np.ndarray, bottom: np.ndarray, quadrature: np.ndarray, photons: np.ndarray
) -> tuple[float, float]:
    """(sigma in rad, the fringe amplitude A) from shares at the top, bottom and quadrature.

    top - bottom = A E[cos delta] = A e^{-s^2/2}; the quadrature shares' variance, less the
    shot noise, is (A/2)^2 Var(sin delta) = (A/2)^2 (1 - e^{-2 s^2}) / 2 (Gaussian delta)."""
    mean_cos_amplitude = float(np.mean(top) - np.mean(bottom))
    shot = float(np.mean(quadrature * (1 - quadrature) / np.maximum(photons, 1)))
    excess = max(float(np.var(quadrature, ddof=1)) - shot, 0.0)

    def mismatch(s: float) -> float:
        amplitude = mean_cos_amplitude * np.exp(s**2 / 2)
        return (amplitude / 2) ** 2 * (1 - np.exp(-2 * s**2)) / 2 - excess

    if excess <= 0 or mismatch(0.0) >= 0:
        return 0.0, mean_cos_amplitude
    upper = np.radians(89.0)
    if mismatch(upper) <= 0:
        return upper, mean_cos_amplitude * np.exp(upper**2 / 2)
    s = float(brentq(mismatch, 0.0, upper))
    return s, mean_cos_amplitude * np.exp(s**2 / 2)


class PhaseNoiseRoutine(Routine):
    name = "phase_noise"
    title = "interferometer phase noise (lock on)"
    platforms = ("nv",)  # the ions herald their photonic qubits (two_photon): no phase
    depends = ("phase_setpoint",)
    needs_midpoint = True
    scope = "midpoint"
    updates = ("phase_noise_deg",)
    SECONDS = 0.0005  # short against the residual's correlation time (a few ms)
    EXTREMES, QUADRATURE = 30, 300
    QUICK_QUADRATURE = 100
    QUICK_TOLERANCE_DEG = 5.0

    def _measure(self, node: NodeAccess, quadrature_repeats: int):
        s0 = stored_value(midpoint_of(node), "phase_setpoint_deg")
        try:
            top, _ = _shares(node, s0, self.SECONDS, self.EXTREMES)
            bottom, _ = _shares(node, s0 + 180.0, self.SECONDS, self.EXTREMES)
            quadrature, photons = _shares(node, s0 + 90.0, self.SECONDS, quadrature_repeats)
        finally:
            midpoint_of(node).reference_off()
        return top, bottom, quadrature, photons

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        top, bottom, quadrature, photons = self._measure(node, self.QUICK_QUADRATURE)
        sigma, _ = sigma_from(top, bottom, quadrature, photons)
        stored = stored_value(midpoint_of(node), "phase_noise_deg")
        measured = float(np.degrees(sigma))
        if abs(measured - stored) > self.QUICK_TOLERANCE_DEG:
            return False, f"phase noise {measured:.1f} deg, stored {stored:.1f} deg"
        return True, f"phase noise {measured:.1f} deg (stored {stored:.1f} deg)"

    def acquire(self, node: NodeAccess):
        return [self._measure(node, self.QUADRATURE)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        ((top, bottom, quadrature, photons),) = data
        sigma, amplitude = sigma_from(top, bottom, quadrature, photons)
        degrees = float(np.degrees(sigma))
        info = {
            "top": top.tolist(),
            "bottom": bottom.tolist(),
            "quadrature": quadrature.tolist(),
            "photons_per_count": float(np.mean(photons)),
            "fringe_amplitude": amplitude,
        }
        centre = (np.mean(top) + np.mean(bottom)) / 2

        def plot(path, title):
            residual = np.sort(
                np.degrees(
                    np.arcsin(np.clip((centre - quadrature) / max(amplitude / 2, 1e-9), -1, 1))
                )
            )
            cumulative = (np.arange(len(residual)) + 0.5) / len(residual)
            xy_plot(
                path,
                title,
                residual,
                cumulative,
                fit=lambda x: norm.cdf(x, scale=max(degrees, 1e-6)),
                marks={f"-sigma {degrees:.1f} deg": -degrees, "+sigma": degrees},
                xlabel="residual phase at quadrature (deg; shot noise included)",
                ylabel="fraction of counts below",
            )

        if amplitude < 0.3:
            return Analysis(
                {},
                False,
                f"no reference fringe (amplitude {amplitude:.2f}): is the reference light on "
                "and the set point calibrated?",
                None,
                info,
                plot,
            )
        if degrees > MAX_NOISE_DEG:
            return Analysis(
                {},
                False,
                f"phase noise {degrees:.1f} deg (max {MAX_NOISE_DEG:g}): the lock is not "
                "holding the interferometer",
                None,
                info,
                plot,
            )
        return Analysis(
            {"phase_noise_deg": degrees},
            True,
            f"phase noise {degrees:.1f} deg with the lock on (fringe amplitude {amplitude:.2f})",
            None,
            info,
            plot,
        )
