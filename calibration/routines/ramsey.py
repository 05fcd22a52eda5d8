"""Ramsey with an artificial detuning of +Delta and -Delta: the sign and size of the carrier's
error (fine detuning) and T2*. Updates mw_frequency_hz (corrected), detuning_hz, t2star_s."""

from __future__ import annotations

import numpy as np

from calibration.fits import FitFailed, fit_ramsey
from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, bright_fraction
from sequences.operations import (
    CoolingCheck,
    CRCheck,
    Param,
    Readout,
    Sequence,
    SpinInit,
    Sweep,
    SweepAxis,
    Wait,
    pi_half_pulse,
)

ARTIFICIAL = {"nv": 0.5e6, "ion": 50.0}  # Hz: well below the pi/2 pulses' Rabi frequency
SPAN = {"nv": 8e-6, "ion": 0.2}  # s of free evolution
FULL, QUICK = (81, 200), (41, 100)  # (points, shots)
IN_SPEC_HZ = {"nv": 30e3, "ion": 5.0}


def ramsey_sequence(platform: str, shots: int) -> Sequence:
    check = CoolingCheck() if platform == "ion" else CRCheck()
    ops = (
        check,
        SpinInit(),
        pi_half_pulse(),
        Wait(Param("free_time_ns")),
        pi_half_pulse(),
        Readout(),
    )
    return Sequence("ramsey", ops, shots)


class RamseyRoutine(Routine):
    name = "ramsey"
    title = "Ramsey: fine detuning and T2*"
    depends = ("rabi",)
    reads = ("mw_frequency_hz", "pi2_amplitude_v", "readout_threshold")
    updates = ("mw_frequency_hz", "detuning_hz", "t2star_s")

    def _measure(self, node: NodeAccess, points: int, shots: int):
        f0 = node.values()["mw_frequency_hz"]
        delta = ARTIFICIAL[node.platform]
        times = np.linspace(0, SPAN[node.platform], points) * 1e9
        runs = []
        for sign in (+1, -1):
            sweep = Sweep(
                (
                    SweepAxis("mw_frequency_hz", (f0 + sign * delta,), "Hz"),
                    SweepAxis("free_time_ns", tuple(map(float, times)), "ns"),
                )
            )
            runs.append(node.run(ramsey_sequence(node.platform, shots), sweep))
        return runs

    def _fit_pair(self, node: NodeAccess, data):
        threshold = node.values()["readout_threshold"]
        delta = ARTIFICIAL[node.platform]
        fits = []
        for acq in data:
            t = acq.axes["free_time_ns"][0] * 1e-9
            fits.append(fit_ramsey(t, bright_fraction(acq, threshold), delta))
        plus, minus = (f.params["detuning_hz"] for f in fits)
        error = (plus - minus) / 2  # carrier - truth, valid while |error| < delta
        return fits, error

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        try:
            _, error = self._fit_pair(node, self._measure(node, *QUICK))
        except FitFailed as e:
            return False, f"quick Ramsey did not fit ({e})"
        if abs(error) > IN_SPEC_HZ[node.platform]:
            return False, f"carrier off by {error / 1e3:+.1f} kHz"
        return True, f"carrier within {abs(error) / 1e3:.1f} kHz"

    def acquire(self, node: NodeAccess):
        return self._measure(node, *FULL)

    def analyse(self, node: NodeAccess, data) -> Analysis:
        threshold = node.values()["readout_threshold"]
        f0 = node.values()["mw_frequency_hz"]
        try:
            fits, error = self._fit_pair(node, data)
        except FitFailed as e:
            return Analysis({}, False, f"fit failed: {e}")
        quality = min(f.quality for f in fits)
        t2 = float(np.mean([f.params["t2star_s"] for f in fits]))
        info = {"fit_plus": fits[0].params, "fit_minus": fits[1].params, "error_hz": error}
        times = data[0].axes["free_time_ns"][0] * 1e-9

        def plot(path, title):
            xy_plot(
                path,
                title,
                times,
                bright_fraction(data[0], threshold),
                fit=fits[0],
                extra=[(times, bright_fraction(data[1], threshold), "-Delta data")],
                marks={"T2*": t2},
                x_scale=1e6,
                xlabel="free evolution (us)",
                ylabel="bright fraction",
            )

        if quality < 0.5:
            return Analysis(
                {}, False, f"fit rejected: R^2 {quality:.2f} (min 0.5)", quality, info, plot
            )
        if abs(error) >= ARTIFICIAL[node.platform] * 0.8:
            return Analysis(
                {},
                False,
                f"carrier error {error:.0f} Hz is too close to the artificial "
                "detuning to tell its sign: redo ESR",
                quality,
                info,
                plot,
            )
        return Analysis(
            {"mw_frequency_hz": f0 - error, "detuning_hz": error, "t2star_s": t2},
            True,
            f"carrier corrected by {-error / 1e3:+.1f} kHz, T2* {t2 * 1e6:.2f} us",
            quality,
            info,
            plot,
        )
