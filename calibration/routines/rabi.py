"""Rabi oscillation in amplitude at the fixed pulse length: pi and pi/2 amplitudes."""

from __future__ import annotations

import numpy as np

from calibration.fits import FitFailed, fit_rabi_amplitude
from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, bright_fraction
from sequences.operations import (
    MwPulse,
    Param,
    Readout,
    Sequence,
    SpinInit,
    Sweep,
    SweepAxis,
    memory_check,
    pi_pulse,
)

POINTS, SHOTS = 51, 200
QUICK_PULSES, QUICK_SHOTS = 5, 400


class RabiRoutine(Routine):
    name = "rabi"
    title = "Rabi: pi and pi/2 amplitudes"
    depends = ("esr",)
    reads = ("mw_frequency_hz", "pi_duration_ns", "readout_threshold")
    updates = ("pi_amplitude_v", "pi2_amplitude_v")

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        """Five pi pulses in a row amplify an amplitude error five times: must end dark."""
        ops = (memory_check(node.platform), SpinInit(), *[pi_pulse()] * QUICK_PULSES, Readout())
        acq = node.run(Sequence("rabi_check", ops, QUICK_SHOTS), Sweep())
        bright = float(bright_fraction(acq, node.values()["readout_threshold"])[0])
        if bright > 0.15:
            return False, f"{QUICK_PULSES} pi pulses leave bright fraction {bright:.2f} (max 0.15)"
        return True, f"{QUICK_PULSES} pi pulses leave bright fraction {bright:.2f}"

    def acquire(self, node: NodeAccess):
        amplitudes = np.linspace(0, node.awg_peak_v, POINTS)
        ops = (
            memory_check(node.platform),
            SpinInit(),
            MwPulse(Param("amplitude_v"), Param("pi_duration_ns")),
            Readout(),
        )
        sweep = Sweep((SweepAxis("amplitude_v", tuple(map(float, amplitudes)), "V"),))
        return [node.run(Sequence("rabi_amplitude", ops, SHOTS), sweep)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        (acq,) = data
        threshold = node.values()["readout_threshold"]
        amplitudes = acq.axes["amplitude_v"][0]
        bright = bright_fraction(acq, threshold)
        if bright.max() < 0.05:
            return Analysis(
                {},
                False,
                "no photons: the bright fraction never exceeds "
                f"{bright.max():.2f}; is light reaching the detector?",
            )
        try:
            fit = fit_rabi_amplitude(amplitudes, bright)
        except FitFailed as e:
            return Analysis(
                {}, False, f"fit failed: {e}", plot=self._plotter(acq, None, None, threshold)
            )
        a_pi = fit.params["a_pi_v"]
        info = {"fit": fit.params, "errors": fit.errors, "quality": fit.quality}
        plot = self._plotter(acq, fit, a_pi, threshold)
        if fit.params["contrast"] < 0.3 or fit.quality < 0.8:
            return Analysis(
                {},
                False,
                f"fit rejected: contrast {fit.params['contrast']:.2f} "
                f"(min 0.3), R^2 {fit.quality:.2f} (min 0.8)",
                fit.quality,
                info,
                plot,
            )
        if a_pi > node.awg_peak_v:
            return Analysis(
                {},
                False,
                f"a pi pulse needs {a_pi:.3f} V, beyond the lab limit of "
                f"{node.awg_peak_v:g} V: lengthen pi_duration_ns",
                fit.quality,
                info,
                plot,
            )
        return Analysis(
            {"pi_amplitude_v": a_pi, "pi2_amplitude_v": a_pi / 2},
            True,
            f"pi at {a_pi:.4f} V (contrast {fit.params['contrast']:.2f})",
            fit.quality,
            info,
            plot,
        )

    @staticmethod
    def _plotter(acq, fit, a_pi, threshold):
        amplitudes = acq.axes["amplitude_v"][0]

        def plot(path, title):
            marks = {"pi": a_pi, "pi/2": a_pi / 2} if a_pi else None
            xy_plot(
                path,
                title,
                amplitudes,
                bright_fraction(acq, threshold),
                fit=fit,
                marks=marks,
                xlabel="pulse amplitude (V)",
                ylabel="bright fraction",
            )

        return plot
