"""Microwave resonance by pulsed ODMR: a coarse search, then a fine scan fitted with the
exact lineshape of a square pulse. Updates mw_frequency_hz."""

from __future__ import annotations

import numpy as np

from calibration.fits import FitFailed, fit_esr
from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, bright_fraction, stored_value
from sequences.operations import (
    MwPulse,
    Readout,
    Sequence,
    SpinInit,
    Sweep,
    SweepAxis,
    memory_check,
)

SEARCH = {"nv": (2.80e9, 2.95e9), "ion": (3.2250e9, 3.2270e9)}
PULSE = {"nv": (0.05, 400.0), "ion": (0.2, 4_000.0)}  # (amplitude V, duration ns)
COARSE_STEP_HZ = {"nv": 1.0e6, "ion": 0.05e6}
FINE_HALF_SPAN_HZ = {"nv": 3.0e6, "ion": 0.3e6}
QUICK_SHOTS = 1500


def esr_sequence(platform: str, shots: int) -> Sequence:
    amplitude, duration = PULSE[platform]
    check = memory_check(platform)
    return Sequence("esr", (check, SpinInit(), MwPulse(amplitude, duration), Readout()), shots)


class EsrRoutine(Routine):
    name = "esr"
    title = "microwave resonance (pulsed ODMR)"
    updates = ("mw_frequency_hz",)
    reads = ("esr_start_hz", "esr_stop_hz", "readout_threshold")

    def _scan(self, node: NodeAccess, freqs: np.ndarray, shots: int):
        sweep = Sweep((SweepAxis("mw_frequency_hz", tuple(float(f) for f in freqs), "Hz"),))
        return node.run(esr_sequence(node.platform, shots), sweep)

    def search_range(self, node: NodeAccess) -> tuple[float, float]:
        lo, hi = SEARCH[node.platform]
        return node.stored("esr_start_hz") or lo, node.stored("esr_stop_hz") or hi

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        f0 = stored_value(node, "mw_frequency_hz")
        offset = FINE_HALF_SPAN_HZ[node.platform] / 3
        # the fixed, uncalibrated pulse makes a shallow dip with a slow memory (Rabi at the
        # low end of its range): enough shots that its depth stands out of the noise
        acq = self._scan(node, np.array([f0 - offset, f0, f0 + offset]), QUICK_SHOTS)
        low, centre, high = bright_fraction(acq, node.values()["readout_threshold"])
        # the largest binomial error of a difference, over the shots whose check passed
        kept = np.maximum(acq.valid.sum(axis=1), 1)
        sigma = float(np.sqrt(0.25 / kept[0] + 0.25 / kept[2]))
        if not (centre < low - 2 * sigma and centre < high - 2 * sigma):
            return False, f"no dip at the stored {f0 / 1e9:.6f} GHz"
        if abs(high - low) > 3 * sigma:
            return False, f"dip is lopsided ({low:.2f} vs {high:.2f}): the resonance moved"
        return True, f"dip centred at {f0 / 1e9:.6f} GHz"

    def acquire(self, node: NodeAccess):
        lo, hi = self.search_range(node)
        step = COARSE_STEP_HZ[node.platform]
        coarse = self._scan(node, np.arange(lo, hi + step / 2, step), 100)
        threshold = node.values()["readout_threshold"]
        bright = bright_fraction(coarse, threshold)
        if bright.max() < 0.05:
            return [coarse]  # nothing to refine: analyse says why
        centre = float(coarse.axes["mw_frequency_hz"][0][int(np.argmin(bright))])
        half = FINE_HALF_SPAN_HZ[node.platform]
        fine = self._scan(node, np.linspace(centre - half, centre + half, 61), 250)
        return [coarse, fine]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        threshold = node.values()["readout_threshold"]
        coarse = data[0]
        f_coarse = coarse.axes["mw_frequency_hz"][0]
        b_coarse = bright_fraction(coarse, threshold)
        lo, hi = f_coarse.min(), f_coarse.max()
        span = f"{lo / 1e9:.3f}-{hi / 1e9:.3f} GHz"
        if b_coarse.max() < 0.05:
            return Analysis(
                {},
                False,
                f"no photons: the bright fraction is at most "
                f"{b_coarse.max():.2f} over {span}; is light reaching the detector?",
            )
        noise = np.sqrt(np.median(b_coarse) * (1 - np.median(b_coarse)) / 100) + 1e-3
        dip = float(np.median(b_coarse) - b_coarse.min())
        if dip < 5 * noise:
            return Analysis(
                {},
                False,
                f"no resonance dip in the scan range {span}: the deepest "
                f"point is {dip:.2f} below the median (noise {noise:.2f})",
                plot=self._plotter(coarse, None, None, threshold),
            )
        fine = data[1]
        freqs = fine.axes["mw_frequency_hz"][0]
        bright = bright_fraction(fine, threshold)
        pulse_s = PULSE[node.platform][1] * 1e-9
        try:
            fit = fit_esr(freqs, bright, pulse_s)
        except FitFailed as e:
            return Analysis(
                {}, False, f"fit failed: {e}", plot=self._plotter(fine, None, None, threshold)
            )
        f0 = fit.params["f0_hz"]
        contrast = fit.params["offset"] - float(fit(np.array([f0]))[0])
        info = {"fit": fit.params, "errors": fit.errors, "quality": fit.quality}
        plot = self._plotter(fine, fit, f0, threshold)
        if not freqs.min() <= f0 <= freqs.max():
            return Analysis(
                {},
                False,
                f"fitted resonance {f0 / 1e9:.6f} GHz lies outside the fine scan",
                fit.quality,
                info,
                plot,
            )
        if fit.quality < 0.6 or contrast < 0.1:
            return Analysis(
                {},
                False,
                f"fit rejected: R^2 {fit.quality:.2f} (min 0.6), contrast {contrast:.2f} (min 0.1)",
                fit.quality,
                info,
                plot,
            )
        if fit.errors["f0_hz"] > 100e3:
            return Analysis(
                {},
                False,
                f"resonance uncertain by {fit.errors['f0_hz'] / 1e3:.0f} kHz (max 100 kHz)",
                fit.quality,
                info,
                plot,
            )
        return Analysis(
            {"mw_frequency_hz": f0},
            True,
            f"resonance {f0 / 1e9:.6f} GHz +- {fit.errors['f0_hz'] / 1e3:.0f} kHz",
            fit.quality,
            info,
            plot,
        )

    @staticmethod
    def _plotter(acq, fit, f0, threshold):
        freqs = acq.axes["mw_frequency_hz"][0]

        def plot(path, title):
            xy_plot(
                path,
                title,
                freqs,
                bright_fraction(acq, threshold),
                fit=fit,
                marks={"resonance": f0} if f0 else None,
                x_scale=1e-9,
                xlabel="microwave frequency (GHz)",
                ylabel="bright fraction",
            )

        return plot
