"""Ramsey with an artificial detuning of +Delta and -Delta: the sign and size of the carrier's
error (fine detuning) and T2*. Updates mw_frequency_hz (corrected), detuning_hz, t2star_s.

A platform may need stages: the ion's ESR leaves the carrier ~1 kHz off, far more than a
T2*-long Ramsey can tell apart, so a short Ramsey at a large detuning corrects the carrier
first and a long one at a small detuning refines it and measures T2*."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.fits import FitFailed, fit_ramsey
from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, bright_fraction
from sequences.library import ramsey
from sequences.operations import Sweep, SweepAxis


@dataclass(frozen=True)
class Stage:
    detuning_hz: float  # artificial, well below the pi/2 pulses' Rabi frequency
    span_s: float  # longest free evolution
    points: int


STAGES = {
    "nv": (Stage(0.5e6, 8e-6, 81),),
    "ion": (Stage(5e3, 0.6e-3, 61), Stage(200.0, 0.2, 161)),
}
SHOTS, QUICK_SHOTS = 200, 100


@dataclass
class StageResult:
    """One stage: its +Delta and -Delta runs, their fits, the carrier error it found."""

    stage: Stage
    runs: list
    fits: list
    error_hz: float
    carrier_after: float

    @property
    def run_id(self) -> str:
        return self.runs[0].run_id

    @property
    def file(self) -> str:
        return self.runs[0].file

    @property
    def resolved(self) -> bool:
        return abs(self.error_hz) < 0.8 * self.stage.detuning_hz


IN_SPEC_HZ = {"nv": 30e3, "ion": 20.0}


class RamseyRoutine(Routine):
    name = "ramsey"
    title = "Ramsey: fine detuning and T2*"
    depends = ("rabi",)
    reads = ("mw_frequency_hz", "pi2_amplitude_v", "readout_threshold")
    updates = ("mw_frequency_hz", "detuning_hz", "t2star_s")

    def _pair(self, node: NodeAccess, carrier: float, stage: Stage, points: int, shots: int):
        times = np.linspace(0, stage.span_s, points) * 1e9
        runs = []
        for sign in (+1, -1):
            sweep = Sweep(
                (
                    SweepAxis("mw_frequency_hz", (carrier + sign * stage.detuning_hz,), "Hz"),
                    SweepAxis("free_time_ns", tuple(map(float, times)), "ns"),
                )
            )
            runs.append(node.run(ramsey(node.platform, shots), sweep))
        return runs

    def _fit_pair(self, node: NodeAccess, runs, stage: Stage):
        threshold = node.values()["readout_threshold"]
        fits = []
        for acq in runs:
            t = acq.axes["free_time_ns"][0] * 1e-9
            fits.append(fit_ramsey(t, bright_fraction(acq, threshold), stage.detuning_hz))
        plus, minus = (f.params["detuning_hz"] for f in fits)
        return fits, (plus - minus) / 2  # carrier - truth, valid while |error| < detuning

    def _stages(self, node: NodeAccess, shots: int) -> list[StageResult]:
        """Run the stages, each at the carrier the previous one corrected."""
        carrier = node.values()["mw_frequency_hz"]
        done = []
        for stage in STAGES[node.platform]:
            runs = self._pair(node, carrier, stage, stage.points, shots)
            fits, error = self._fit_pair(node, runs, stage)
            result = StageResult(stage, runs, fits, error, carrier - error)
            done.append(result)
            if not result.resolved:
                break  # the sign cannot be told: analyse says so
            carrier = result.carrier_after
        return done

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        stage = STAGES[node.platform][-1]
        try:
            runs = self._pair(
                node, node.values()["mw_frequency_hz"], stage, stage.points, QUICK_SHOTS
            )
            _, error = self._fit_pair(node, runs, stage)
        except FitFailed as e:
            return False, f"quick Ramsey did not fit ({e})"
        if abs(error) > IN_SPEC_HZ[node.platform]:
            return False, f"carrier off by {error:+.0f} Hz"
        return True, f"carrier within {abs(error):.0f} Hz"

    def acquire(self, node: NodeAccess):
        try:
            return self._stages(node, SHOTS)
        except FitFailed:
            return []

    def analyse(self, node: NodeAccess, data) -> Analysis:
        if not data:
            return Analysis({}, False, "fit failed: no Ramsey fringes could be fitted")
        threshold = node.values()["readout_threshold"]
        f0 = node.values()["mw_frequency_hz"]
        last = data[-1]
        quality = min(f.quality for result in data for f in result.fits)
        t2 = float(np.mean([f.params["t2star_s"] for f in last.fits]))
        total = f0 - last.carrier_after
        info = {
            "stages": [
                {
                    "detuning_hz": r.stage.detuning_hz,
                    "error_hz": r.error_hz,
                    "fit_plus": r.fits[0].params,
                    "fit_minus": r.fits[1].params,
                }
                for r in data
            ]
        }
        times = last.runs[0].axes["free_time_ns"][0] * 1e-9
        scale, unit = (1e6, "us") if last.stage.span_s < 1e-3 else (1e3, "ms")

        def plot(path, title):
            xy_plot(
                path,
                title,
                times,
                bright_fraction(last.runs[0], threshold),
                fit=last.fits[0],
                extra=[(times, bright_fraction(last.runs[1], threshold), "-Delta data")],
                marks={"T2*": t2},
                x_scale=scale,
                xlabel=f"free evolution ({unit})",
                ylabel="bright fraction",
            )

        if quality < 0.5:
            return Analysis(
                {}, False, f"fit rejected: R^2 {quality:.2f} (min 0.5)", quality, info, plot
            )
        if not last.resolved:
            return Analysis(
                {},
                False,
                f"carrier error {last.error_hz:.0f} Hz is too close to the "
                f"artificial detuning of {last.stage.detuning_hz:g} Hz to tell its "
                "sign: redo ESR",
                quality,
                info,
                plot,
            )
        return Analysis(
            {"mw_frequency_hz": last.carrier_after, "detuning_hz": total, "t2star_s": t2},
            True,
            f"carrier corrected by {-total / 1e3:+.2f} kHz, T2* {t2 * 1e6:.2f} us",
            quality,
            info,
            plot,
        )
