"""CR check (NV) / cooling check (ion) threshold: counts of many checks after a repump are a
mixture of 'not ready' (dark) and Poisson(mean) (ready). The threshold keeps 90 % of the ready
checks: the 10th percentile of the fitted Poisson. Updates cr_threshold, check_mean_counts."""

from __future__ import annotations

import numpy as np
from scipy.stats import poisson

from calibration.fits import FitFailed, fit_check_counts
from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, stored_value
from sequences.operations import CountWindow, LaserPulse, Parallel, Param, Sequence, Sweep

SHOTS, QUICK_SHOTS = 3000, 800
KEEP_READY = 0.9


def check_sequence(shots: int) -> Sequence:
    window = Param("cr_window_ns")
    ops = (
        LaserPulse("repump", Param("repump_duration_ns")),
        Parallel((LaserPulse("pump", window), CountWindow(window, path="readout", label="check"))),
    )
    return Sequence("check_histogram", ops, shots)


def threshold_for(mean: float) -> float:
    return float(max(1, poisson.ppf(1 - KEEP_READY, mean)))


class CheckThresholdRoutine(Routine):
    name = "check_threshold"
    title = "CR / cooling check threshold"
    depends = ("readout",)
    reads = ("cr_window_ns", "repump_duration_ns")
    updates = ("cr_threshold", "check_mean_counts")

    def _counts(self, node: NodeAccess, shots: int) -> tuple[np.ndarray, object]:
        acq = node.run(check_sequence(shots), Sweep())
        return acq.counts[0, :, 0], acq

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        counts, _ = self._counts(node, QUICK_SHOTS)
        try:
            fit = fit_check_counts(counts)
        except FitFailed as e:
            return False, str(e)
        stored = stored_value(node, "check_mean_counts")
        change = abs(fit.params["mean"] - stored) / stored
        if change > 0.1:
            return False, f"mean check counts {fit.params['mean']:.1f}, stored {stored:.1f}"
        return True, f"mean check counts {fit.params['mean']:.1f} (stored {stored:.1f})"

    def acquire(self, node: NodeAccess):
        return [self._counts(node, SHOTS)[1]]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        (acq,) = data
        counts = acq.counts[0, :, 0]
        if counts.max(initial=0) <= 2:
            return Analysis(
                {},
                False,
                "no photons: no check saw more than 2 counts; is light reaching the detector?",
            )
        try:
            fit = fit_check_counts(counts)
        except FitFailed as e:
            return Analysis({}, False, f"fit failed: {e}")
        mean, ready = fit.params["mean"], fit.params["ready"]
        threshold = threshold_for(mean)
        k = np.arange(counts.max() + 1)
        hist = np.bincount(counts, minlength=len(k)) / counts.size

        def plot(path, title):
            xy_plot(
                path,
                title,
                k,
                hist,
                fit=fit,
                marks={"threshold": threshold - 0.5},
                xlabel="counts in one check",
                ylabel="fraction of checks",
            )

        info = {"fit": fit.params, "errors": fit.errors, "threshold": threshold}
        if fit.quality < 0.8 or not 0.1 < ready <= 1.0:
            return Analysis(
                {},
                False,
                f"fit rejected: R^2 {fit.quality:.2f} (min 0.8), ready fraction {ready:.2f}",
                fit.quality,
                info,
                plot,
            )
        return Analysis(
            {"cr_threshold": threshold, "check_mean_counts": mean},
            True,
            f"ready mean {mean:.1f} counts ({ready:.0%} ready), threshold {threshold:g}",
            fit.quality,
            info,
            plot,
        )
