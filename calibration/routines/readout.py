"""Single-shot readout and spin initialisation.

Time-resolved counts of prepared |0> (spin initialisation) and prepared |1> (initialisation
and a pi pulse) give, for every window length and threshold, the fractions read bright and
dark; the best mean wins the duration and threshold. Those fractions mix the readout's error
with the preparation's: a prepared |0> that was not initialised reads dark however good the
readout. They are separated as labs do, from the count histograms at the chosen duration
(calibration.fits.fit_preparation): the bright state's counts (Poisson, its bright time cut
short by the spin flip the readout light drives: an exponential) and the dark state's
(Poisson) fitted to both histograms as mixtures; the zero-count shots beyond the bright
state's own (its early flips) are the initialisation error; the bright shots of prepared |1>
bound it more precisely from below (they hold the pi pulse's error too: PreparationFit.
initialisation combines the two). F0 = P(bright | |0>) and
F1 = P(dark | |1>) stored are the readout's own (what the verification's readout correction
divides by), init_fidelity = P(|0> after initialisation) with its error (the planning model's
initialisation error and its margin).

Each half of a shot ends with a memory check (as the entanglement rounds do): a memory that
lost its charge state (or its cooling) reads dark whatever its spin, and is neither a readout
nor an initialisation error; those shots are left out.

Updates readout_threshold, readout_duration_ns, f0, f1, init_fidelity, init_fidelity_sigma.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from calibration.fits import FitFailed, PreparationFit, fit_preparation
from calibration.interface import NodeAccess
from calibration.routine import Analysis, Routine
from sequences.operations import (
    CRCheck,
    Readout,
    Sequence,
    SpinInit,
    Sweep,
    memory_check,
    pi_pulse,
)

BIN_NS = {"nv": 2_000, "ion": 150_000}
BINS = 20
SHOTS, QUICK_SHOTS = 8000, 800
"""8000 shots: the initialisation fidelity to ~0.003 (the zero-count shots' Poisson noise,
NV); the planner's margin grows with its error."""
POST_CHECK_THRESHOLD = 2
"""As the link layer's check after a readout: a memory that lost its charge state gives next
to no counts, a ready one tens."""
MIN_INIT_FIDELITY = 0.8


def still_there(check: CRCheck) -> CRCheck:
    return replace(check, threshold=POST_CHECK_THRESHOLD, max_tries=1)


def readout_sequence(platform: str, shots: int) -> Sequence:
    check = memory_check(platform)
    width = BIN_NS[platform]
    bright = [Readout(width, label=f"bright_{k}") for k in range(BINS)]
    dark = [Readout(width, label=f"dark_{k}") for k in range(BINS)]
    after = still_there(check)
    return Sequence(
        "readout_histogram",
        (check, SpinInit(), *bright, after, SpinInit(), pi_pulse(), *dark, after),
        shots,
    )


def pure_readout(bright0: float, dark1: float, init: float, prep1: float) -> tuple[float, float]:
    """The readout's own F0, F1 from the measured P(bright | prepared |0>) and P(dark |
    prepared |1>) and the preparations' fidelities: solves
    bright0 = init F0 + (1 - init)(1 - F1), dark1 = prep1 F1 + (1 - prep1)(1 - F0)."""
    a = np.array([[init, -(1 - init)], [-(1 - prep1), prep1]])
    rhs = np.array([bright0 - (1 - init), dark1 - (1 - prep1)])
    f0, f1 = np.linalg.solve(a, rhs)
    return float(np.clip(f0, 0.0, 1.0)), float(np.clip(f1, 0.0, 1.0))


def totals(acq, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts per kept shot in the first `bins` bins: prepared |0>, prepared |1>."""
    counts = acq.counts[0][acq.valid[0]]
    return counts[:, :bins].sum(axis=1), counts[:, BINS : BINS + bins].sum(axis=1)


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
    title = "single-shot readout: threshold, duration, F0, F1; spin initialisation"
    depends = ("rabi",)
    reads = ("pi_amplitude_v",)
    updates = (
        "readout_threshold",
        "readout_duration_ns",
        "f0",
        "f1",
        "init_fidelity",
        "init_fidelity_sigma",
    )

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        acq = node.run(readout_sequence(node.platform, QUICK_SHOTS), Sweep())
        f0, f1, thresholds = fidelities(acq)
        values = node.values()
        k = round(values["readout_duration_ns"] / BIN_NS[node.platform]) - 1
        t = int(np.searchsorted(thresholds, values["readout_threshold"]))
        if not (0 <= k < BINS and t < len(thresholds)):
            return False, "stored duration or threshold outside the measured range"
        m0, m1 = f0[k, t], f1[k, t]
        # what the stored readout and initialisation make of prepared |0> and |1>
        init = values.get("init_fidelity", 1.0)
        e0 = init * values["f0"] + (1 - init) * (1 - values["f1"])
        e1 = init * values["f1"] + (1 - init) * (1 - values["f0"])
        if abs(m0 - e0) > 0.03 or abs(m1 - e1) > 0.03:
            return (
                False,
                f"bright | 0 {m0:.3f} / dark | 1 {m1:.3f} drifted from {e0:.3f} / {e1:.3f} "
                "(stored readout and initialisation)",
            )
        return True, f"bright | 0 {m0:.3f}, dark | 1 {m1:.3f} (as stored: {e0:.3f}, {e1:.3f})"

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
        measured0, measured1 = float(f0[k, t]), float(f1[k, t])
        try:
            prep: PreparationFit | None = fit_preparation(*totals(acq, int(k) + 1))
        except FitFailed as e:
            prep, why = None, str(e)
        if prep is not None:
            best0, best1 = pure_readout(measured0, measured1, prep.init, prep.prep1)
        else:
            best0, best1 = measured0, measured1
        info = {
            "f0": best0,
            "f1": best1,
            "measured_f0": measured0,
            "measured_f1": measured1,
            "duration_ns": duration,
            "threshold": threshold,
            "shots_kept": kept,
        }
        if prep is not None:
            init, init_sigma = prep.initialisation
            info.update(
                init_fidelity=init,
                init_fidelity_sigma=init_sigma,
                prep0_fidelity=prep.init,
                prep0_sigma=prep.init_sigma,
                prep1_fidelity=prep.prep1,
                prep1_sigma=prep.prep1_sigma,
                model_f0_f1=prep.readout(threshold),
            )

        def plot(path, title):
            import matplotlib.pyplot as plt

            counts = acq.counts[0][acq.valid[0]]
            b = counts[:, : k + 1].sum(axis=1)
            d = counts[:, BINS : BINS + k + 1].sum(axis=1)
            edges = np.arange(max(b.max(), d.max(), 1) + 2) - 0.5
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
            ax1.hist(b, edges, alpha=0.6, label=f"|0> (F0 {best0:.3f})")
            ax1.hist(d, edges, alpha=0.6, label=f"|1> (F1 {best1:.3f})")
            if prep is not None:
                n = np.arange(len(edges) - 1)
                model0 = prep.init * prep.bright(n) + (1 - prep.init) * prep.dark(n)
                ax1.plot(n, len(b) * model0, "k.-", lw=0.8, ms=3, label="fit |0>")
                ax1.set_yscale("log")
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

        if prep is None:
            return Analysis(
                {}, False, f"initialisation not separated from readout: {why}", None, info, plot
            )
        init, init_sigma = prep.initialisation
        if init < MIN_INIT_FIDELITY:
            return Analysis(
                {},
                False,
                f"initialisation fidelity {init:.3f} is below {MIN_INIT_FIDELITY}",
                None,
                info,
                plot,
            )
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
                "init_fidelity": init,
                "init_fidelity_sigma": init_sigma,
            },
            True,
            f"F0 {best0:.3f}, F1 {best1:.3f} (readout; measured with the preparation "
            f"{measured0:.3f}, {measured1:.3f}) at {duration / 1e3:g} us, threshold "
            f"{threshold:g}; initialisation {init:.4f} +- {init_sigma:.4f} (prepared |0> "
            f"{prep.init:.4f} +- {prep.init_sigma:.4f}, |1> {prep.prep1:.4f} +- "
            f"{prep.prep1_sigma:.4f})",
            float(mean[k, t]),
            info,
            plot,
        )
