"""Fits of calibration data (scipy), each returning its parameters and a quality figure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import poisson


@dataclass
class Fit:
    params: dict[str, float]
    errors: dict[str, float]
    quality: float  # R^2 of the fit to the data
    model: Callable[[np.ndarray], np.ndarray]  # x -> y with the fitted parameters

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model(x)


class FitFailed(Exception):
    pass


def _fit(func, x, y, p0, names, bounds=(-np.inf, np.inf)) -> Fit:
    try:
        popt, pcov = curve_fit(func, x, y, p0=p0, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError) as e:
        raise FitFailed(f"the fit did not converge ({e})") from None
    residual = y - func(x, *popt)
    total = np.sum((y - np.mean(y)) ** 2)
    quality = float(1 - np.sum(residual**2) / total) if total > 0 else 0.0
    errs = (
        np.sqrt(np.clip(np.diag(pcov), 0, None))
        if np.all(np.isfinite(pcov))
        else np.full(len(popt), np.inf)
    )

    def model(xx: np.ndarray) -> np.ndarray:
        return func(xx, *popt)

    return Fit(
        dict(zip(names, map(float, popt), strict=True)),
        dict(zip(names, map(float, errs), strict=True)),
        quality,
        model,
    )


def _best_fit(func, x, y, starts, names, bounds, failure: str) -> Fit:
    """The best (highest R^2) of fits from several starting points: oscillation fits have
    local minima at the wrong frequency."""
    best = None
    for p0 in starts:
        try:
            fit = _fit(func, x, y, p0, names, bounds=bounds)
        except FitFailed:
            continue
        if best is None or fit.quality > best.quality:
            best = fit
    if best is None:
        raise FitFailed(failure)
    return best


def rabi_lineshape(f_hz, f0_hz, rabi_hz, pulse_s, offset, scale):
    """Bright fraction after a square pulse at detuning f - f0: offset - scale * P(flip)."""
    omega, delta = 2 * np.pi * rabi_hz, 2 * np.pi * (f_hz - f0_hz)
    general = np.sqrt(omega**2 + delta**2)
    flip = omega**2 / np.maximum(general**2, 1e-30) * np.sin(general * pulse_s / 2) ** 2
    return offset - scale * flip


def fit_esr(f_hz: np.ndarray, bright: np.ndarray, pulse_s: float) -> Fit:
    """Pulsed-ODMR dip: the exact Rabi lineshape of a square pulse of known length."""
    f0 = float(f_hz[np.argmin(bright)])
    offset = float(np.percentile(bright, 90))
    depth = max(offset - float(np.min(bright)), 0.05)
    # a dip of depth d at zero detuning means sin^2(Omega T / 2) = d / scale; start below pi
    rabi0 = 0.25 / pulse_s

    def model(f, f0_, rabi, offset_, scale):
        return rabi_lineshape(f, f0_, rabi, pulse_s, offset_, scale)

    span = float(f_hz.max() - f_hz.min())
    return _fit(
        model,
        f_hz,
        bright,
        [f0, rabi0, offset, depth * 1.2],
        ["f0_hz", "rabi_hz", "offset", "scale"],
        bounds=([f_hz.min() - span, 1e3, 0, 0], [f_hz.max() + span, 1 / pulse_s, 1.2, 1.2]),
    )


def dominant_frequency(t_s: np.ndarray, y: np.ndarray) -> float:
    """The strongest frequency in evenly sampled data (zero-padded FFT), 0 if none."""
    if len(t_s) < 4:
        return 0.0
    dt = float(t_s[1] - t_s[0])
    spectrum = np.abs(np.fft.rfft(y - np.mean(y), n=8 * len(y)))
    freqs = np.fft.rfftfreq(8 * len(y), dt)
    return float(freqs[1 + int(np.argmax(spectrum[1:]))])


def fit_rabi_amplitude(amplitude_v: np.ndarray, bright: np.ndarray) -> Fit:
    """Bright fraction vs amplitude at fixed duration: offset + contrast/2 * cos(pi A / A_pi)."""

    def model(a, a_pi, offset, contrast):
        return offset + contrast / 2 * np.cos(np.pi * a / a_pi)

    # guesses of A_pi: half the period of the strongest oscillation, and the first minimum
    guesses = []
    f = dominant_frequency(amplitude_v, bright) if len(bright) > 3 else 0.0
    if f > 0:
        guesses.append(1 / (2 * f))
    smooth = np.convolve(bright, np.ones(3) / 3, mode="same")
    mid = (smooth.max() + smooth.min()) / 2
    below = np.flatnonzero(smooth[1:-1] < mid) + 1
    if below.size:
        start = below[0]
        end = start
        while end + 1 < len(smooth) - 1 and smooth[end + 1] < mid:
            end += 1
        guesses.append(float(amplitude_v[start + int(np.argmin(smooth[start : end + 1]))]))
    starts = [[max(g * f, 1e-3), 0.5, 0.8] for g in guesses or [0.5] for f in (1.0, 0.85, 1.15)]
    return _best_fit(
        model,
        amplitude_v,
        bright,
        starts,
        ["a_pi_v", "offset", "contrast"],
        ([1e-3, 0, 0], [10, 1, 1.2]),
        "no Rabi oscillation could be fitted",
    )


def ramsey_model(t_s, offset, amplitude, detuning_hz, t2star_s):
    """pi/2 - t - pi/2: dark at t = 0, fringes at the detuning, Gaussian decay with T2*."""
    return offset - amplitude * np.exp(-((t_s / t2star_s) ** 2)) * np.cos(
        2 * np.pi * detuning_hz * t_s
    )


def fit_ramsey(t_s: np.ndarray, bright: np.ndarray, detuning_guess_hz: float) -> Fit:
    span = float(t_s.max())
    seen = dominant_frequency(t_s, bright)
    if seen > 0:
        detuning_guess_hz = seen
    starts = [
        [0.5, 0.45, detuning_guess_hz * f, t2]
        for f in (0.9, 1.0, 1.1)
        for t2 in (span / 4, span / 2)
    ]
    bounds = ([0, 0, 0, span / 100], [1, 1, 10 * detuning_guess_hz, 10 * span])
    return _best_fit(
        ramsey_model,
        t_s,
        bright,
        starts,
        ["offset", "amplitude", "detuning_hz", "t2star_s"],
        bounds,
        "no Ramsey fringes could be fitted",
    )


def fit_check_counts(counts: np.ndarray) -> Fit:
    """CR / cooling check counts: a mixture of 'not ready' (dark) and Poisson(mean) (ready)."""
    counts = np.asarray(counts, dtype=int)
    k = np.arange(counts.max() + 1) if counts.size else np.arange(1)
    hist = np.bincount(counts, minlength=len(k)) / max(counts.size, 1)
    bright = counts[counts > 2]
    if bright.size < 10:
        raise FitFailed(f"only {bright.size} of {counts.size} checks saw more than 2 photons")
    mean0, ready0 = float(bright.mean()), bright.size / counts.size

    def model(kk, mean, ready, dark_mean):
        return ready * poisson.pmf(kk, mean) + (1 - ready) * poisson.pmf(kk, dark_mean)

    return _fit(
        model,
        k,
        hist,
        [mean0, ready0, 0.05],
        ["mean", "ready", "dark_mean"],
        bounds=([0.5, 0, 0], [1e4, 1, 2]),
    )
