"""Single-shot readout: time-resolved counts of prepared |0> and |1> give, for every window
length and threshold, F0 = P(bright | 0) and F1 = P(dark | 1); the best mean fidelity wins.
Updates readout_threshold, readout_duration_ns, f0, f1."""

from __future__ import annotations

import numpy as np

from calibration.interface import NodeAccess
from calibration.routine import Analysis, Routine
from sequences.operations import Readout, Sequence, SpinInit, Sweep, memory_check, pi_pulse

BIN_NS = {"nv": 2_000, "ion": 150_000}
BINS = 20
SHOTS, QUICK_SHOTS = 3000, 800


def readout_sequence(platform: str, shots: int) -> Sequence:
    check = memory_check(platform)
    width = BIN_NS[platform]
    bright = [Readout(width, label=f"bright_{k}") for k in range(BINS)]
    dark = [Readout(width, label=f"dark_{k}") for k in range(BINS)]
    return Sequence(
        "readout_histogram", (check, SpinInit(), *bright, SpinInit(), pi_pulse(), *dark), shots
    )


def fidelities(acq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F0 and F1 for every (window length in bins, threshold): arrays [bins, thresholds]."""
    counts = acq.counts[0][acq.valid[0]]
    bright = np.cumsum(counts[:, :BINS], axis=1)
    dark = np.cumsum(counts[:, BINS:], axis=1)
    thresholds = np.arange(1, max(int(bright.max()), 1) + 2)
    f0 = (bright[:, :, None] >= thresholds).mean(axis=0)
    f1 = (dark[:, :, None] < thresholds).mean(axis=0)
    return f0, f1, thresholds


class ReadoutRoutine(Routine):
    name = "readout"
    title = "single-shot readout: threshold, duration, F0, F1"
    depends = ("rabi",)
    reads = ("pi_amplitude_v",)
    updates = ("readout_threshold", "readout_duration_ns", "f0", "f1")

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        acq = node.run(readout_sequence(node.platform, QUICK_SHOTS), Sweep())
        f0, f1, thresholds = fidelities(acq)
        values = node.values()
        k = round(values["readout_duration_ns"] / BIN_NS[node.platform]) - 1
        t = int(np.searchsorted(thresholds, values["readout_threshold"]))
        if not (0 <= k < BINS and t < len(thresholds)):
            return False, "stored duration or threshold outside the measured range"
        m0, m1 = f0[k, t], f1[k, t]
        if abs(m0 - values["f0"]) > 0.03 or abs(m1 - values["f1"]) > 0.03:
            return (
                False,
                f"F0 {m0:.3f} / F1 {m1:.3f} drifted from {values['f0']:.3f} / {values['f1']:.3f}",
            )
        return True, f"F0 {m0:.3f}, F1 {m1:.3f}"

    def acquire(self, node: NodeAccess):
        return [node.run(readout_sequence(node.platform, SHOTS), Sweep())]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        (acq,) = data
        kept = int(acq.valid[0].sum())
        if kept < SHOTS // 4:
            return Analysis({}, False, f"only {kept} of {SHOTS} shots passed their check")
        f0, f1, thresholds = fidelities(acq)
        mean = (f0 + f1) / 2
        if f0.max() < 0.1:
            return Analysis(
                {},
                False,
                "no photons from |0>: F0 stays below 0.1 for every window; "
                "is light reaching the detector?",
            )
        k, t = np.unravel_index(int(np.argmax(mean)), mean.shape)
        width = BIN_NS[node.platform]
        duration, threshold = (k + 1) * width, float(thresholds[t])
        best0, best1 = float(f0[k, t]), float(f1[k, t])
        info = {
            "f0": best0,
            "f1": best1,
            "duration_ns": duration,
            "threshold": threshold,
            "shots_kept": kept,
        }

        def plot(path, title):
            import matplotlib.pyplot as plt

            counts = acq.counts[0][acq.valid[0]]
            b = counts[:, : k + 1].sum(axis=1)
            d = counts[:, BINS : BINS + k + 1].sum(axis=1)
            edges = np.arange(max(b.max(), d.max(), 1) + 2) - 0.5
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
            ax1.hist(b, edges, alpha=0.6, label=f"|0> (F0 {best0:.3f})")
            ax1.hist(d, edges, alpha=0.6, label=f"|1> (F1 {best1:.3f})")
            ax1.axvline(threshold - 0.5, color="C3", ls="--", label=f"threshold {threshold:g}")
            ax1.set_xlabel(f"counts in {duration / 1e3:g} us")
            ax1.set_ylabel("shots")
            ax1.legend(fontsize=8)
            ax2.plot((np.arange(BINS) + 1) * width / 1e3, mean.max(axis=1), "o-", ms=3)
            ax2.axvline(duration / 1e3, color="C3", ls="--")
            ax2.set_xlabel("readout duration (us)")
            ax2.set_ylabel("best (F0 + F1) / 2")
            fig.suptitle(title, fontsize=10)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)

        if mean[k, t] < 0.8:
            return Analysis(
                {},
                False,
                f"best mean fidelity {mean[k, t]:.3f} is below 0.8",
                float(mean[k, t]),
                info,
                plot,
            )
        return Analysis(
            {
                "readout_threshold": threshold,
                "readout_duration_ns": float(duration),
                "f0": best0,
                "f1": best1,
            },
            True,
            f"F0 {best0:.3f}, F1 {best1:.3f} at {duration / 1e3:g} us, threshold {threshold:g}",
            float(mean[k, t]),
            info,
            plot,
        )
