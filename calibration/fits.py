"""Fits of calibration data (scipy), each returning its parameters and a quality figure."""

from __future__ import annotations

import math
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


# spin preparation and readout from count histograms ------------------------------------------
@dataclass
class PreparationFit:
    """Prepared |0> and prepared |1> shots' count histograms over one readout window, fitted
    as mixtures of the bright state's and the dark state's count distributions.

    bright: the spin stays bright for an exponential time (the readout light pumps it away,
    `flips` = window / flip time) and counts Poisson(bright_mean x the bright share of the
    window + dark_mean x the rest); dark: Poisson(dark_mean). A prepared |0> shot is bright
    with probability `init` (the initialisation fidelity); a prepared |1> shot (a pi pulse
    after the initialisation) is dark with `prep1` (initialisation and pi pulse). What reads
    dark beyond the bright state's own zero counts (its early flips) is the preparation's
    error, not the readout's."""

    bright_mean: float
    flips: float
    dark_mean: float
    init: float
    prep1: float
    init_sigma: float
    prep1_sigma: float
    shots: tuple[int, int]

    def bright(self, n: np.ndarray) -> np.ndarray:
        return _bright_pmf(n, self.bright_mean, self.flips, self.dark_mean)

    def dark(self, n: np.ndarray) -> np.ndarray:
        return poisson.pmf(n, self.dark_mean)

    @property
    def initialisation(self) -> tuple[float, float]:
        """The initialisation fidelity and its error from both preparations: prepared |0>'s
        (unbiased, but its zero-count shots are shared with the bright state's early flips:
        noisy) and prepared |1>'s (a bright shot among dark ones stands out: precise, but it
        holds the pi pulse's error too, so it is a lower bound). Where the two agree (within
        2 sigma: no pi-pulse error resolved) their weighted mean, which errs low by any
        unresolved pi-pulse error (the cautious side for planning); else prepared |0>'s."""
        s0, s1 = max(self.init_sigma, 1e-6), max(self.prep1_sigma, 1e-6)
        if self.init - self.prep1 > 2 * math.hypot(s0, s1):
            return self.init, self.init_sigma
        w0, w1 = 1 / s0**2, 1 / s1**2
        return (w0 * self.init + w1 * self.prep1) / (w0 + w1), 1 / math.sqrt(w0 + w1)

    def readout(self, threshold: float) -> tuple[float, float]:
        """The readout's own F0 = P(counts >= threshold | bright), F1 = P(below | dark)."""
        below = np.arange(int(np.ceil(threshold)))
        return float(1 - self.bright(below).sum()), float(self.dark(below).sum())


_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(96)
_S = (_NODES + 1) / 2  # flip times as shares of the window, in (0, 1)
_W = _WEIGHTS / 2


def _bright_pmf(n: np.ndarray, mean: float, flips: float, dark: float) -> np.ndarray:
    n = np.asarray(n)[..., None]
    early = _W * flips * np.exp(-flips * _S) * poisson.pmf(n, mean * _S + dark * (1 - _S))
    return early.sum(axis=-1) + np.exp(-flips) * poisson.pmf(n[..., 0], mean)


def _nll(theta, h0, h1, n) -> float:
    mean, flips, dark, w0, w1 = theta
    b, d = _bright_pmf(n, mean, flips, dark), poisson.pmf(n, dark)
    p0 = np.clip(w0 * b + (1 - w0) * d, 1e-300, None)
    p1 = np.clip(w1 * d + (1 - w1) * b, 1e-300, None)
    return float(-(h0 @ np.log(p0) + h1 @ np.log(p1)))


def fit_preparation(counts0: np.ndarray, counts1: np.ndarray) -> PreparationFit:
    """Maximum likelihood over both histograms (counts per shot of prepared |0> and |1>);
    the errors of `init` and `prep1` from the likelihood's curvature (the others profiled)."""
    from scipy.optimize import minimize

    counts0, counts1 = np.asarray(counts0, int), np.asarray(counts1, int)
    if len(counts0) < 50 or len(counts1) < 50:
        raise FitFailed("too few shots for the preparation fit")
    top = int(max(counts0.max(), counts1.max(), 1))
    n = np.arange(top + 1)
    h0 = np.bincount(counts0, minlength=top + 1).astype(float)
    h1 = np.bincount(counts1, minlength=top + 1).astype(float)
    mean0 = max(float(counts0[counts0 > 0].mean()) if (counts0 > 0).any() else 1.0, 0.5)
    start = [mean0 * 1.2, 0.5, max(float(np.mean(counts1 == 1)), 1e-3), 0.98, 0.98]
    bounds = [(0.2, 10 * top + 10), (0.0, 50.0), (1e-6, 5.0), (0.5, 1.0), (0.5, 1.0)]
    best = None
    for flips in (0.05, 0.5, 2.0):  # the flip rate has a shallow likelihood: a few starts
        start[1] = flips
        res = minimize(_nll, start, args=(h0, h1, n), method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    theta = np.array(best.x, float)
    cov = _covariance(lambda t: _nll(t, h0, h1, n), theta, bounds)
    sigma = np.sqrt(np.clip(np.diag(cov), 0, None))
    mean, flips, dark, init, prep1 = (float(x) for x in theta)
    return PreparationFit(
        mean,
        flips,
        dark,
        init,
        prep1,
        init_sigma=float(sigma[3]),
        prep1_sigma=float(sigma[4]),
        shots=(len(counts0), len(counts1)),
    )


def _covariance(f, theta: np.ndarray, bounds) -> np.ndarray:
    """The inverse of the numerical Hessian (a step that stays within the bounds: one-sided
    at a bound); a parameter the likelihood does not constrain gets a zero row."""
    k = len(theta)
    steps = np.array([max(abs(x) * 1e-3, 1e-5) for x in theta])
    shift = np.zeros(k)
    for i, (lo, hi) in enumerate(bounds):  # centre the stencil inside the bounds
        if theta[i] + 2 * steps[i] > hi:
            shift[i] = -2 * steps[i]
        elif theta[i] - 2 * steps[i] < lo:
            shift[i] = 2 * steps[i]
    centre = theta + shift
    h = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            e_i, e_j = np.eye(k)[i] * steps[i], np.eye(k)[j] * steps[j]
            h[i, j] = h[j, i] = (
                f(centre + e_i + e_j)
                - f(centre + e_i - e_j)
                - f(centre - e_i + e_j)
                + f(centre - e_i - e_j)
            ) / (4 * steps[i] * steps[j])
    return np.linalg.pinv(h, rcond=1e-10)


# nuclear-spin memory (13C) ------------------------------------------------------------------
def gaussian_dip(x, centre, width, depth, offset):
    """A resonance dip of the electron's coherence under decoupling."""
    return offset - depth * np.exp(-((x - centre) ** 2) / (2 * width**2))


def fit_dips(tau_ns: np.ndarray, bright: np.ndarray, noise: float) -> list[Fit]:
    """Every dip that stands `5 noise` below the baseline (the median), each fitted alone
    with a Gaussian over its neighbourhood; sorted by centre. `noise` is one point's
    standard error."""
    tau_ns, bright = np.asarray(tau_ns, float), np.asarray(bright, float)
    baseline = float(np.median(bright))
    below = bright < baseline - 5 * noise
    step = float(np.median(np.diff(tau_ns))) if len(tau_ns) > 1 else 1.0
    fits: list[Fit] = []
    i = 0
    while i < len(bright):
        if not below[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(bright) and below[j + 1]:
            j += 1
        lowest = i + int(np.argmin(bright[i : j + 1]))
        half = max(3 * (j - i + 1), 6)
        lo, hi = max(lowest - half, 0), min(lowest + half + 1, len(bright))
        x, y = tau_ns[lo:hi], bright[lo:hi]
        depth = baseline - float(bright[lowest])
        width = max((j - i + 1) * step / 2.5, step / 2)
        try:
            fit = _fit(
                gaussian_dip,
                x,
                y,
                [float(tau_ns[lowest]), width, depth, baseline],
                ["centre_ns", "width_ns", "depth", "offset"],
                bounds=([x.min(), step / 10, 0, 0], [x.max(), x.max() - x.min(), 1.2, 1.2]),
            )
            fits.append(fit)
        except FitFailed:
            pass
        i = j + 1
    return sorted(fits, key=lambda f: f.params["centre_ns"])


def resonance_order(centres_ns: list[float]) -> tuple[float, list[int]]:
    """The mean precession frequency (Hz) and the order k of each resonance, from dips at
    tau_k = (2k - 1) / (4 f): consecutive resonances are 1 / (2 f) apart. Dips of other
    spins or missing resonances are allowed: the spacing is the smallest gap's multiple
    that fits all of them."""
    if len(centres_ns) < 2:
        raise FitFailed("one resonance alone does not tell its order: need two")
    gaps = np.diff(sorted(centres_ns))
    spacing = float(np.min(gaps))
    multiples = np.round(gaps / spacing)
    if np.any(np.abs(gaps / spacing - multiples) > 0.1):
        raise FitFailed(
            "the dips are not evenly spaced (more than one spin, or noise): spacings "
            + ", ".join(f"{g:.0f}" for g in gaps)
            + " ns"
        )
    # the least-squares spacing from all dips and their whole multiples
    steps = np.concatenate([[0], np.cumsum(multiples)])
    slope, _ = np.polyfit(steps, sorted(centres_ns), 1)
    mean_hz = 1 / (2 * slope * 1e-9)
    orders = [round((4 * c * 1e-9 * mean_hz + 1) / 2) for c in sorted(centres_ns)]
    return float(mean_hz), orders


def gate_model(n, n_pi2, offset, amplitude):
    """Electron coherence after n pulses on a resonance with an unpolarised nucleus: the two
    branches turn it by +-theta, theta = pi/2 n / n_pi2, their overlap cos(theta)."""
    return offset + amplitude * np.cos(np.pi / 2 * n / n_pi2)


def fit_gate(n_pulses: np.ndarray, bright: np.ndarray) -> Fit:
    n_pulses, bright = np.asarray(n_pulses, float), np.asarray(bright, float)
    offset = float(np.mean(bright))
    amplitude = max(float(bright[0] - offset), 0.05)
    crossing = np.flatnonzero(bright < offset)
    guesses = [float(n_pulses[crossing[0]])] if crossing.size else []
    guesses += [float(np.max(n_pulses)) / f for f in (1, 2, 4)]
    starts = [[g * f, offset, amplitude] for g in guesses for f in (0.8, 1.0, 1.25)]
    return _best_fit(
        gate_model,
        n_pulses,
        bright,
        starts,
        ["n_pi2", "offset", "amplitude"],
        ([2, 0, 0], [10 * float(np.max(n_pulses)), 1, 1]),
        "no conditional rotation could be fitted",
    )


def attempt_decay(n, n_1e, offset, amplitude):
    """Memory coherence after n entanglement attempts (Kalb et al., PRA 97, 062330 (2018)):
    each attempt dephases by a small random phase, the coherence decays as exp(-n / N_1/e)."""
    return offset + amplitude * np.exp(-n / n_1e)


def fit_attempt_decay(attempts: np.ndarray, value: np.ndarray, sigma: np.ndarray) -> Fit:
    attempts, value = np.asarray(attempts, float), np.asarray(value, float)
    top = float(np.max(attempts))
    amplitude = min(max(float(value[0] - value[-1]), 0.05), 1.2)  # within the bounds
    try:
        popt, pcov = curve_fit(
            attempt_decay,
            attempts,
            value,
            p0=[top / 3, float(np.clip(value[-1], -0.2, 1.2)), amplitude],
            sigma=np.maximum(np.asarray(sigma, float), 1e-3),
            absolute_sigma=True,
            bounds=([1, -0.2, 0], [100 * top, 1.2, 1.2]),
            maxfev=20000,
        )
    except (RuntimeError, ValueError) as e:
        raise FitFailed(f"the decay did not fit ({e})") from None
    residual = value - attempt_decay(attempts, *popt)
    total = np.sum((value - value.mean()) ** 2)
    names = ["n_1e", "offset", "amplitude"]
    errs = np.sqrt(np.clip(np.diag(pcov), 0, None))
    return Fit(
        dict(zip(names, map(float, popt), strict=True)),
        dict(zip(names, map(float, errs), strict=True)),
        float(1 - np.sum(residual**2) / total) if total > 0 else 0.0,
        lambda x: attempt_decay(x, *popt),
    )


def precession_model(t_s, offset, amplitude, frequency_hz, phase, t2_s):
    """A nuclear Ramsey fringe: the gates' own phase is free (their timing sets it)."""
    return offset - amplitude * np.exp(-((t_s / t2_s) ** 2)) * np.cos(
        2 * np.pi * frequency_hz * t_s + phase
    )


def fit_precession(t_s: np.ndarray, bright: np.ndarray, frequency_guess_hz: float) -> Fit:
    t_s, bright = np.asarray(t_s, float), np.asarray(bright, float)
    span = float(t_s.max())
    seen = dominant_frequency(t_s, bright)
    guesses = [g for g in (seen, frequency_guess_hz) if g > 0]
    amplitude = max((float(bright.max()) - float(bright.min())) / 2, 0.05)
    starts = [
        [float(np.mean(bright)), amplitude, g * f, phase, span]
        for g in guesses
        for f in (0.999, 1.0, 1.001)
        for phase in (-1.0, 0.0, 1.0)
    ]
    nyquist = 0.5 / float(t_s[1] - t_s[0])
    return _best_fit(
        precession_model,
        t_s,
        bright,
        starts,
        ["offset", "amplitude", "frequency_hz", "phase", "t2_s"],
        ([0, 0, 0, -2 * np.pi, span / 20], [1, 1, nyquist, 2 * np.pi, 1e3 * span]),
        "no precession fringes could be fitted",
    )
