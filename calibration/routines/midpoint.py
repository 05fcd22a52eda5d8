"""Midpoint routines: the detection window of a node's photons, the detectors' dark counts
and the interferometer's fringe against the piezo voltage.

Detection window: a train of excitations (spin pump, optical pi pulse) while the midpoint's
tagger records the photons' delay after each sync; the arrival histogram is an exponential
decay (the emitter's lifetime) starting at the fibre delay, blurred by detector jitter, on a
flat floor of dark counts. The window opens when the optical pulse is over (the fitted onset
+ OPTICAL_PULSE_NS: the early photons of a double excitation, and a lab's pulse reflection,
stay out) and is long enough to hold 90 % of the photons after it: lifetime x ln 10.

Double excitation (Pompili et al., Science 372, 259 (2021); Hermans et al., Nature 605, 663
(2022), supplementary): now and then the optical pi pulse excites the emitter twice, and an
early photon leaves during the pulse itself. They make a second component at the onset: uniform
over the pulse (OPTICAL_PULSE_NS, 2 ns, the labs' optical pi pulse: a fixed constant of the
fit, not a parameter) and blurred by the same jitter. The fit gives its photons as a share of
the exponential's, the double excitation per pulse (both photons reach the detectors alike), with
its Fisher error: ~0.013 from a free-space NV's ~2000 photons (SHOTS: 10 000 trains of 1000
excitations at ~3.5e-4, fewer where the memory lost its charge state). Assumed: the early
photons are uniform over a fixed 2 ns pulse (the simulator makes the same assumption, so
their agreement in tests is no independent evidence of that shape); a lab's reflection of
the excitation pulse at the onset would be fitted as double excitation and bias it upward
(the window opening after the pulse keeps both out of the heralds); the fit's bound at 0
makes its Fisher error unreliable near zero (the ions' 0.5-1.5 %). The detection probability
stays the exponential's photons (the whole wavepacket) per ready excitation; the window holds
90 % of those after the pulse, which the planning model accounts for from the stored lifetime
and onset.

The histogram is fitted by Poisson maximum likelihood, as time-correlated photon counting is:
its bins hold a few counts each (about 2000 photons over 600 bins for a free-space NV), and
an unweighted least-squares fit of them scatters the lifetime ~1.5 times more than the counts
allow while reporting a third of its real error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import curve_fit, minimize
from scipy.stats import exponnorm, norm, poisson

from calibration.interface import Acquisition, NodeAccess
from calibration.planning import LINK_PARAMETERS, OPTICAL_PULSE_NS
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, midpoint_of, stored_value
from sequences.operations import (
    LaserPulse,
    Param,
    Repeat,
    Sequence,
    SpinInit,
    Sweep,
    Wait,
    memory_check,
)

PER_CHECK = 1000  # excitations between CR / cooling checks (the memory ionises / heats)
SHOTS, QUICK_SHOTS = 10_000, 1000  # 10000: ~2000 photons of a free-space NV, its double
# excitation to +-0.013 (3000 gave +-0.024 on ~0.04)
PERIOD_WAIT_NS = 2_000
HIST_NS, BIN_NS = 300.0, 0.5
KEEP = 0.9
MIN_PHOTONS = 100


@dataclass
class TaggedRun:
    """A node's run and the midpoint's arrival histogram taken during it."""

    run: Acquisition
    centres: np.ndarray
    hist: np.ndarray

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def file(self) -> str:
        return self.run.file


def excitation_train(platform: str, shots: int) -> Sequence:
    """Per shot: a CR / cooling check, PER_CHECK excitations of the initialised memory, and
    one more check (a single try): the shots that pass it say how often the memory stayed
    ready through the train."""
    # the platform's calibrated spin pump: it re-initialises the memory fully before every
    # excitation (a shorter pump leaves each excitation's state to the one before it)
    body = (
        SpinInit(),
        LaserPulse("excitation", Param("excitation_duration_ns")),
        Wait(PERIOD_WAIT_NS),
    )
    check = memory_check(platform)
    after = replace(check, max_tries=1)
    return Sequence("excitation_train", (check, Repeat(body, PER_CHECK), after), shots=shots)


def ready_fraction(still_ready: float) -> float:
    """Mean share of a train's excitations that found the memory ready, if it is lost at a
    constant rate per excitation and `still_ready` of the shots kept it to the end."""
    if still_ready >= 1.0:
        return 1.0
    x = -np.log(max(still_ready, 1e-6))  # the train's length in loss times
    return float((1 - np.exp(-x)) / x)


def early_cdf(t, onset, jitter):
    """A double excitation's early photon: uniform over the optical pulse from the onset
    (OPTICAL_PULSE_NS), blurred by the jitter: the uniform's CDF convolved with a Gaussian,
    (sigma / T) [G(z0) - G(z1)] with G(z) = z Phi(z) + phi(z), the integral of Phi."""
    z0 = (np.asarray(t, dtype=float) - onset) / jitter
    z1 = z0 - OPTICAL_PULSE_NS / jitter

    def g(z):
        return z * norm.cdf(z) + norm.pdf(z)

    return jitter / OPTICAL_PULSE_NS * (g(z0) - g(z1))


def arrival_model(t, onset, lifetime, jitter, photons, floor, double=0.0):
    """Counts per bin at delay t (the density: for plots and the fit's starting point): the
    photons' exponential, and `double` x as many early photons over the pulse."""
    k = lifetime / jitter
    normal = exponnorm.pdf(t, k, loc=onset, scale=jitter)
    z = (np.asarray(t, dtype=float) - onset) / jitter
    early = (norm.cdf(z) - norm.cdf(z - OPTICAL_PULSE_NS / jitter)) / OPTICAL_PULSE_NS
    return floor + photons * BIN_NS * (normal + double * early)


def expected_counts(edges, onset, lifetime, jitter, photons, floor, double=0.0):
    """Expected counts in each bin between `edges`: the photons' arrival distribution
    integrated over the bin (the onset is sharper than a bin), the early photons of double
    excitations (`double` per normal photon), on the flat dark floor."""
    cdf = exponnorm.cdf(edges, lifetime / jitter, loc=onset, scale=jitter)
    if double:
        cdf = cdf + double * early_cdf(edges, onset, jitter)
    return floor + photons * np.diff(cdf)


FIT_NAMES = ("onset_ns", "lifetime_ns", "jitter_ns", "photons", "floor", "double_excitation")
FIT_BOUNDS = ((0.0, HIST_NS), (0.5, 200.0), (0.01, 5.0), (0.0, 1e9), (0.0, 1e6), (0.0, 1.0))
FIT_SCALE_MIN = np.array([1.0, 1.0, 0.1, 1.0, 1e-3, 0.01])  # the parameters' natural size


def poisson_fit(edges, hist, start) -> tuple[np.ndarray, np.ndarray]:
    """Maximum likelihood of Poisson counts per bin (parameters, their standard errors from
    the Fisher information), from `start`."""
    hist = np.asarray(hist, dtype=float)
    scale = np.maximum(np.abs(np.asarray(start, dtype=float)), FIT_SCALE_MIN)
    bounds = [(lo / s, hi / s) for (lo, hi), s in zip(FIT_BOUNDS, scale, strict=True)]

    def nll(x):
        mu = np.maximum(expected_counts(edges, *(x * scale)), 1e-12)
        return float(np.sum(mu - hist * np.log(mu)))

    x = np.clip(np.asarray(start) / scale, *np.array(bounds).T)
    for tolerance in (1e-6, 1e-8):  # restarted with a fresh simplex: one can stall short
        options = {"maxfev": 20000, "xatol": tolerance, "fatol": tolerance}
        x = minimize(nll, x, method="Nelder-Mead", bounds=bounds, options=options).x
    params = x * scale
    if not np.all(np.isfinite(params)):
        raise RuntimeError("the likelihood fit did not converge")
    # Fisher information of Poisson counts: J^T diag(1/mu) J
    mu = np.maximum(expected_counts(edges, *params), 1e-12)
    jacobian = np.empty((len(mu), len(params)))
    for k, (p, (lo, hi)) in enumerate(zip(params, FIT_BOUNDS, strict=True)):
        h = 1e-5 * max(abs(p), FIT_SCALE_MIN[k])
        up, down = params.copy(), params.copy()
        up[k], down[k] = min(p + h, hi), max(p - h, lo)
        diff = expected_counts(edges, *up) - expected_counts(edges, *down)
        jacobian[:, k] = diff / (up[k] - down[k])
    covariance = np.linalg.pinv(jacobian.T @ (jacobian / mu[:, None]))
    return params, np.sqrt(np.abs(np.diag(covariance)))


class DetectionWindowRoutine(Routine):
    name = "detection_window"
    title = "detection window at the midpoint"
    needs_midpoint = True
    depends = ("check_threshold",)
    reads = ("excitation_duration_ns", "spin_pump_duration_ns", "cr_threshold", "check_mean_counts")
    updates = LINK_PARAMETERS  # a node's values at this midpoint (per link: planning.py)

    def _histogram(self, node: NodeAccess, shots: int):
        midpoint_of(node).start_tags()
        try:
            acq = node.run(excitation_train(node.platform, shots), Sweep())
        finally:
            tags = midpoint_of(node).stop_tags()
        photons = tags[np.isin(tags["channel"], list(midpoint_of(node).detectors.values()))]
        edges = np.arange(0.0, HIST_NS + BIN_NS, BIN_NS)
        hist, _ = np.histogram(photons["delay_ps"] / 1e3, edges)
        return acq, (edges[:-1] + BIN_NS / 2), hist

    @staticmethod
    def _fit(centres, hist):
        """Poisson maximum likelihood (a least-squares fit of the density gives the start)."""
        peak = int(np.argmax(hist))
        floor0 = float(np.median(hist))
        photons0 = float(hist.sum() - floor0 * len(hist))
        p0 = [centres[max(peak - 1, 0)], 10.0, 0.3, photons0, floor0, 0.02]
        bounds = tuple(zip(*FIT_BOUNDS, strict=True))
        try:
            start, _ = curve_fit(arrival_model, centres, hist, p0=p0, bounds=bounds, maxfev=20000)
        except RuntimeError:  # a sparse histogram: the likelihood starts from the guess
            start = np.array(p0)
        # least squares often puts the floor at zero (its bins mostly hold none): start the
        # likelihood from the mean of the bins away from the peak, never at the bound
        onset, lifetime = start[0], start[1]
        away = (centres < onset - 2.0) | (centres > onset + 15 * lifetime)
        floor = float(hist[away].mean()) if np.any(away) else 0.0
        start[4] = max(floor, 0.5 / len(hist))
        start[2] = max(start[2], 0.05)
        start[5] = min(max(start[5], 0.01), 0.5)  # off its bound: the simplex moves it
        edges = np.append(centres - BIN_NS / 2, centres[-1] + BIN_NS / 2)
        params, errors = poisson_fit(edges, hist, start)
        residual = hist - expected_counts(edges, *params)
        total = np.sum((hist - hist.mean()) ** 2)
        quality = float(1 - np.sum(residual**2) / total) if total > 0 else 0.0
        fit = {name: float(v) for name, v in zip(FIT_NAMES, params, strict=True)}
        return fit, errors, quality

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        _, centres, hist = self._histogram(node, QUICK_SHOTS)
        try:
            fit, _, _ = self._fit(centres, hist)
        except (RuntimeError, ValueError) as e:
            return False, f"no arrival peak could be fitted ({e})"
        stored = stored_value(node, "photon_onset_ns")
        if abs(fit["onset_ns"] - stored) > 1.0:
            return (
                False,
                f"photons now arrive at {fit['onset_ns']:.2f} ns, calibrated at {stored:.2f} ns",
            )
        return True, f"photons arrive at {fit['onset_ns']:.2f} ns (calibrated {stored:.2f} ns)"

    def acquire(self, node: NodeAccess):
        acq, centres, hist = self._histogram(node, SHOTS)
        return [TaggedRun(acq, centres, hist)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        centres, hist = data[0].centres, data[0].hist
        floor = float(np.median(hist))
        excess = float(hist.sum() - floor * len(hist))
        if excess < MIN_PHOTONS:
            return Analysis(
                {},
                False,
                f"no photons from node {node.node} at the midpoint: "
                f"{int(hist.sum())} counts in {HIST_NS:g} ns after the syncs, "
                f"{excess:.0f} above the dark floor (min {MIN_PHOTONS})",
            )
        try:
            fit, errors, quality = self._fit(centres, hist)
        except (RuntimeError, ValueError) as e:
            return Analysis({}, False, f"fit failed: {e}")
        # the window opens when the optical pulse is over: the early photons of a double
        # excitation (and, in a lab, the pulse's reflection) stay out; it holds KEEP of the
        # photons after that
        start = fit["onset_ns"] + OPTICAL_PULSE_NS
        length = fit["lifetime_ns"] * np.log(1 / (1 - KEEP))
        # detection probability per excitation of a ready memory: the photons over the
        # excitations that found it ready (the check after the train says how many did; a
        # ready memory passes a check with the calibrated Poisson odds)
        values = node.values()
        passes = 1.0
        if "check_mean_counts" in values:
            passes = float(poisson.sf(values["cr_threshold"] - 1, values["check_mean_counts"]))
        shots = len(data[0].run.valid[0])
        still_ready = float(np.mean(data[0].run.valid[0])) / max(passes, 1e-3)
        lit = ready_fraction(min(still_ready, 1.0))
        eta = fit["photons"] / (shots * PER_CHECK * lit)
        info = {
            "fit": fit,
            "errors": list(map(float, errors)),
            "quality": quality,
            "histogram": hist.tolist(),
            "still_ready_after_train": still_ready,
            "ready_fraction": lit,
        }

        def plot(path, title):
            xy_plot(
                path,
                title,
                centres,
                hist,
                fit=lambda t: arrival_model(t, *fit.values()),
                marks={"start": start, "end": start + length},
                xlabel="delay after the sync (ns)",
                ylabel=f"counts per {BIN_NS:g} ns",
            )

        if quality < 0.7:
            return Analysis(
                {}, False, f"fit rejected: R^2 {quality:.2f} (min 0.7)", quality, info, plot
            )
        return Analysis(
            {
                "detection_window_start_ns": float(start),
                "detection_window_ns": float(length),
                "detection_probability": float(eta),
                "photon_onset_ns": fit["onset_ns"],
                "photon_lifetime_ns": fit["lifetime_ns"],
                "double_excitation": fit["double_excitation"],
                "double_excitation_sigma": float(errors[5]),
            },
            True,
            f"window {start:.2f} ns + {length:.1f} ns ({fit['photons']:.0f} photons, "
            f"lifetime {fit['lifetime_ns']:.1f} ns), detection probability {eta:.3g}, "
            f"double excitation {fit['double_excitation']:.3f} +- {errors[5]:.3f}",
            quality,
            info,
            plot,
        )


class DarkCountsRoutine(Routine):
    name = "dark_counts"
    title = "midpoint detector dark counts"
    needs_midpoint = True
    scope = "midpoint"
    updates = ("dark_count_hz_<detector>",)  # one per detector of the channel map
    SECONDS, REPEATS = 10.0, 3

    def updated_names(self, node: NodeAccess) -> tuple[str, ...]:
        return tuple(f"dark_count_hz_{name}" for name in midpoint_of(node).detectors)

    def _rates(self, node: NodeAccess) -> dict[str, tuple[float, int]]:
        counts = dict.fromkeys(midpoint_of(node).detectors, 0)
        for _ in range(self.REPEATS):
            tags = midpoint_of(node).dark_tags(self.SECONDS)
            for name, channel in midpoint_of(node).detectors.items():
                counts[name] += int(np.sum(tags["channel"] == channel))
        total = self.SECONDS * self.REPEATS
        return {name: (n / total, n) for name, n in counts.items()}

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        for name, (rate, n) in self._rates(node).items():
            stored = stored_value(midpoint_of(node), f"dark_count_hz_{name}")
            sigma = max(np.sqrt(max(n, 1)) / (self.SECONDS * self.REPEATS), 0.1)
            if abs(rate - stored) > 4 * sigma:
                return False, f"{name}: {rate:.1f} Hz, stored {stored:.1f} Hz"
        return True, "dark count rates unchanged"

    def acquire(self, node: NodeAccess):
        return [self._rates(node)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        (measured,) = data
        rates = {f"dark_count_hz_{name}": rate for name, (rate, _) in measured.items()}
        text = ", ".join(f"{name} {rate:.1f} Hz" for name, (rate, _) in measured.items())
        counts = {name: n for name, (_, n) in measured.items()}
        return Analysis(rates, True, text, None, {"counts": counts})


def fit_fringe(voltages: np.ndarray, shares: np.ndarray) -> dict:
    """psi_plus's share of the reference light against the piezo voltage,
    o + a cos(k V) + b sin(k V): k (deg per volt) by a scan of the linear fit's residual over
    a grid, then refined by least squares; the contrast C = 2 sqrt(a^2 + b^2) (the share is
    1/2 + C/2 cos(phase)), the phase at 0 V, and R^2."""
    volts = np.asarray(voltages, dtype=float)
    shares = np.asarray(shares, dtype=float)

    def linear(k: float):
        rad = np.radians(k * volts)
        design = np.column_stack([np.ones_like(rad), np.cos(rad), np.sin(rad)])
        coef, *_ = np.linalg.lstsq(design, shares, rcond=None)
        return coef, float(np.sum((shares - design @ coef) ** 2))

    span = max(float(np.ptp(volts)), 1e-9)
    step = float(np.min(np.diff(np.sort(volts)))) if len(volts) > 1 else 1.0
    grid = np.arange(360.0 / span / 2, min(K_MAX_DEG_PER_V, 180.0 / step), 0.02)
    if not len(grid):
        raise ValueError("too few voltages for a fringe")
    k0 = float(grid[int(np.argmin([linear(k)[1] for k in grid]))])
    (o, a, b), _ = linear(k0)

    def model(v, o, a, b, k):
        rad = np.radians(k * v)
        return o + a * np.cos(rad) + b * np.sin(rad)

    (o, a, b, k), _ = curve_fit(model, volts, shares, p0=[o, a, b, k0], maxfev=20000)
    residual = shares - model(volts, o, a, b, k)
    total = float(np.sum((shares - shares.mean()) ** 2))
    quality = float(1 - np.sum(residual**2) / total) if total > 0 else 0.0
    return {
        "deg_per_volt": float(k),
        "contrast": 2 * float(np.hypot(a, b)),
        "phase_at_0v_deg": float(np.degrees(np.arctan2(-b, a))),
        "offset": float(o),
        "quality": quality,
        "model": lambda v: model(np.asarray(v, dtype=float), o, a, b, k),
    }


K_MAX_DEG_PER_V = 90.0


class PhaseFringeRoutine(Routine):
    """The interferometer's fringe (single-click): the reference light through it while the
    midpoint sweeps its piezo driver across the lab's range; psi_plus's share of the light is
    1/2 + C/2 cos(phase), the phase moving by k degrees per volt. The lock (the midpoint's
    phase_lock) needs k to turn a phase into a voltage step, and C to tell a fringe from no
    light. The phase at 0 V is reported, not stored: the fibres drift it away in seconds."""

    name = "phase_fringe"
    title = "interferometer fringe (piezo sweep)"
    platforms = ("nv",)  # the ions herald their photonic qubits (two_photon): no phase
    needs_midpoint = True
    scope = "midpoint"
    updates = ("piezo_deg_per_volt", "fringe_contrast")
    POINTS, QUICK_POINTS = 151, 61
    SECONDS = 0.002  # short: the fibres drift ~15 deg in a second, the sweep must be quick
    MIN_CONTRAST, MIN_FRINGES = 0.5, 1.0
    QUICK_TOLERANCE = 0.05

    def _sweep(self, node: NodeAccess, points: int):
        """The sweep up and back down: voltages and psi_plus's shares."""
        midpoint = midpoint_of(node)
        voltages, counts = midpoint.fringe_sweep(points, self.SECONDS)
        names = list(midpoint.detectors)[:2]
        first = np.array([c[names[0]] for c in counts], dtype=float)
        second = np.array([c[names[1]] for c in counts], dtype=float)
        return np.asarray(voltages, dtype=float), first / np.maximum(first + second, 1)

    @staticmethod
    def _fit(voltages: np.ndarray, shares: np.ndarray) -> dict:
        """Each direction fitted on its own: the drift during the sweep adds to the phase
        slope going up and takes from it going down; k is their mean, the contrast and R^2
        the worse of the two."""
        half = len(voltages) // 2
        up = fit_fringe(voltages[:half], shares[:half])
        down = fit_fringe(voltages[half:], shares[half:])
        fit = dict(up)
        fit["deg_per_volt"] = (up["deg_per_volt"] + down["deg_per_volt"]) / 2
        fit["deg_per_volt_up_down"] = [up["deg_per_volt"], down["deg_per_volt"]]
        fit["contrast"] = min(up["contrast"], down["contrast"])
        fit["quality"] = min(up["quality"], down["quality"])
        return fit

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        voltages, shares = self._sweep(node, self.QUICK_POINTS)
        try:
            fit = self._fit(voltages, shares)
        except (RuntimeError, ValueError) as e:
            return False, f"no fringe could be fitted ({e})"
        stored = stored_value(midpoint_of(node), "piezo_deg_per_volt")
        if abs(fit["deg_per_volt"] - stored) > self.QUICK_TOLERANCE * stored:
            return False, f"{fit['deg_per_volt']:.2f} deg/V now, calibrated {stored:.2f} deg/V"
        return True, f"{fit['deg_per_volt']:.2f} deg/V (calibrated {stored:.2f} deg/V)"

    def acquire(self, node: NodeAccess):
        return [self._sweep(node, self.POINTS)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        ((voltages, shares),) = data
        try:
            fit = self._fit(voltages, shares)
        except (RuntimeError, ValueError) as e:
            return Analysis({}, False, f"no fringe could be fitted: {e}")
        model = fit.pop("model")
        k, contrast, quality = fit["deg_per_volt"], fit["contrast"], fit["quality"]
        fringes = abs(k) * float(np.ptp(voltages)) / 360.0
        half = len(voltages) // 2
        info = {"voltages": voltages.tolist(), "shares": shares.tolist(), **fit}

        def plot(path, title):
            xy_plot(
                path,
                title,
                voltages[:half],
                shares[:half],
                fit=model,
                xlabel="piezo voltage (V), the sweep up",
                ylabel="psi_plus share of the reference light",
            )

        if contrast < self.MIN_CONTRAST or quality < 0.8:
            return Analysis(
                {},
                False,
                f"no reference fringe: contrast {contrast:.2f} (min {self.MIN_CONTRAST}), "
                f"R^2 {quality:.2f}; is the reference light reaching the detectors?",
                quality,
                info,
                plot,
            )
        if fringes < self.MIN_FRINGES:
            return Analysis(
                {},
                False,
                f"the lab's piezo range holds {fringes:.2f} fringes ({k:.2f} deg/V): the lock "
                f"needs {self.MIN_FRINGES:g} to re-centre; widen the range (within the unit's "
                "limit switch)",
                quality,
                info,
                plot,
            )
        return Analysis(
            {"piezo_deg_per_volt": k, "fringe_contrast": contrast},
            True,
            f"{k:.2f} deg/V ({fringes:.1f} fringes in the lab's range), contrast "
            f"{contrast:.2f}, phase {fit['phase_at_0v_deg']:.0f} deg at 0 V",
            quality,
            info,
            plot,
        )
