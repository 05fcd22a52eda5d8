"""Interferometer phase noise as the heralds see it (single-click): the spread of the phase at
heralding times under the midpoint's stabilisation schedule, which enters a single-click
state's coherence as exp(-sigma^2 / 2) (Humphreys et al. 2018, SI).

The midpoint stabilises in bursts between heralding periods (controller/midpoint/
phase_lock.py); between them the phase moves on: the fast noise no burst can follow, the
drift since the burst, and the burst's own estimate's error. The midpoint samples it as the
heralds would: after each burst, short counts of the reference light at random times before
the next (`lock_samples`), the piezo a set offset from the lock point for each count. psi_plus's
share of the light is o + (A / 2) cos(offset + delta), delta the phase the heralds would see.
Counts at the fringe's top and bottom (offsets 0, 180 deg) give A e^{-sigma^2/2}; counts at
quadrature (offset 90 deg), where the share o - (A / 2) sin(delta) is linear in delta, give
its variance. The photon shot noise of each count (binomial) is taken off before sigma is
solved for.

Assumed: delta is Gaussian with zero mean (the lock aims at the top; a small offset cancels:
the top-bottom difference and the quadrature slope both scale with its cosine); a 0.1 ms
count against the fast noise's correlation time (~0.5 ms in the simulated lab) averages ~7 %
of its variance away (sigma ~3 % low); the calibrated degrees per volt put the quadrature
count a quarter fringe away (an error of a few per cent tilts it by a few degrees: negligible
against cos).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, midpoint_of, stored_value

MAX_NOISE_DEG = 45.0
"""Above this the lock is not holding the phase: the routine fails rather than store it."""


def _shares(node: NodeAccess, offset_deg: float, seconds: float, samples: int):
    """psi_plus's share of the reference light and the photons counted, per short count at a
    heralding time, `offset_deg` of piezo from the lock point."""
    midpoint = midpoint_of(node)
    first_name, second_name = list(midpoint.detectors)[:2]
    counts = midpoint.lock_samples(offset_deg, seconds, samples)
    first = np.array([c[first_name] for c in counts], dtype=float)
    second = np.array([c[second_name] for c in counts], dtype=float)
    return first / np.maximum(first + second, 1), first + second


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
    title = "interferometer phase noise at heralding (stabilised in bursts)"
    platforms = ("nv",)  # the ions herald their photonic qubits (two_photon): no phase
    depends = ("phase_fringe",)
    needs_midpoint = True
    scope = "midpoint"
    updates = ("phase_noise_deg",)
    SECONDS = 0.0001  # short against the fast noise's correlation time (~0.5 ms)
    EXTREMES, QUADRATURE = 50, 600
    QUICK_QUADRATURE = 200
    QUICK_TOLERANCE_DEG = 5.0

    def _measure(self, node: NodeAccess, quadrature_samples: int):
        top, _ = _shares(node, 0.0, self.SECONDS, self.EXTREMES)
        bottom, _ = _shares(node, 180.0, self.SECONDS, self.EXTREMES)
        quadrature, photons = _shares(node, 90.0, self.SECONDS, quadrature_samples)
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
                f"no reference fringe (amplitude {amplitude:.2f}): is the reference light "
                "reaching the detectors, and the fringe calibrated?",
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
            f"phase noise {degrees:.1f} deg at heralding times (fringe amplitude {amplitude:.2f})",
            None,
            info,
            plot,
        )
