"""Link routines: they run entanglement sessions between this node and its peer.

Two-photon visibility: Barrett-Kok pairs verified in XX, YY and ZZ. A Barrett-Kok pair is
psi+- with its coherence set by the photons' indistinguishability V (the phase cancels
between the rounds), diluted only by the dark-count heralds and the memories' initialisation
errors that the planning model (calibration.planning) predicts from the calibrated detection
probabilities, dark counts and initialisation fidelities: (<XX> + <YY>)/2 = V g, with g the
coherence at V = 1. V is that over g; its error is stored too (visibility_sigma: the
planner's margin).

Alpha for a target fidelity (single-click): from the calibrated detection probabilities,
dark counts, visibility and initialisation fidelities, the largest alpha whose conservative
fidelity (expected less one sigma of the calibrated values' errors) meets the target (the
highest rate); a short session at that alpha checks that the success per attempt is what the
model says (2 alpha eta at leading order), so the detection probabilities behind it hold.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from calibration.interface import NodeAccess
from calibration.planning import (
    Link,
    alpha_for_fidelity,
    assumed,
    barrett_kok,
    fidelity_sigma,
    link_from_calibration,
    single_click,
)
from calibration.routine import Analysis, Routine, link_of, midpoint_of, stored_value
from qnode.errors import QnodeError

VISIBILITY_PAIRS, QUICK_PAIRS = 1200, 300
MAX_SIGMA_V = 0.06
ALPHA_PAIRS = 300
DEFAULT_TARGET = 0.8
P_TOLERANCE = 0.15  # the success per attempt within 3 sigma and this share of the model


def _link(node: NodeAccess, visibility: float | None = None) -> tuple[Link, tuple[str, ...]]:
    link, midpoint = link_of(node), midpoint_of(node).node
    stations = [node.node, link.peer, midpoint]
    values = {s: link.parameters(s) for s in stations}
    if visibility is not None:
        values[midpoint] = {**values[midpoint], "visibility": visibility}
    return link_from_calibration(values, stations[:2], stations[2])


def both_photon_share(link: Link) -> float:
    """g: the coherence a Barrett-Kok herald would carry at V = 1 (the rest: dark counts and
    the memories' initialisation errors, which flip a node's phase)."""
    ideal = replace(link, visibility=1.0, phase_sigma_rad=0.0)
    return float(2 * barrett_kok(ideal).states["psi_plus"][1, 2].real)


def visibility_from(stats: dict, link: Link) -> tuple[float, float]:
    c = stats["correlators"]
    g = both_photon_share(link)
    value = (c["X"]["value"] + c["Y"]["value"]) / 2 / g
    sigma = np.hypot(c["X"]["sigma"], c["Y"]["sigma"]) / 2 / g
    return float(value), float(sigma)


class VisibilityRoutine(Routine):
    name = "visibility"
    title = "two-photon interference visibility A-B (Barrett-Kok)"
    platforms = ("nv",)  # an ion midpoint heralds two_photon only (V from it: not yet)
    depends = ("detection_window", "dark_counts")
    reads = ("detection_probability", "detection_window_ns", "dark_count_hz_*", "init_fidelity")
    updates = ("visibility", "visibility_sigma")
    scope = "midpoint"
    needs_midpoint = True
    needs_link = True

    def _measure(self, node: NodeAccess, pairs: int):
        stats = link_of(node).pairs("barrett_kok", pairs, delivery="verify")
        link, _ = _link(node, visibility=1.0)
        value, sigma = visibility_from(stats, link)
        return stats, value, sigma

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        _, value, sigma = self._measure(node, QUICK_PAIRS)
        stored = stored_value(midpoint_of(node), "visibility")
        if abs(value - stored) > 3 * sigma + 0.03:
            return False, f"V now {value:.3f} +- {sigma:.3f}, stored {stored:.3f}"
        return True, f"V {value:.3f} +- {sigma:.3f} (stored {stored:.3f})"

    def acquire(self, node: NodeAccess):
        return [self._measure(node, VISIBILITY_PAIRS)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        ((stats, value, sigma),) = data
        c = stats["correlators"]
        info = {"session": stats, "visibility": value, "sigma": sigma}

        def plot(path: Path, title: str) -> None:
            bases = ["X", "Y", "Z"]
            model = [value * both_photon_share(_link(node, 1.0)[0])] * 2 + [-1.0]
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            ax.errorbar(
                bases,
                [c[b]["value"] for b in bases],
                yerr=[1.96 * c[b]["sigma"] for b in bases],
                fmt="o",
                capsize=4,
                label="measured (readout corrected), 95 %",
            )
            ax.plot(bases, model, "_", ms=30, mew=2, color="C3", label=f"model at V = {value:.3f}")
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set_ylabel("correlator <PP> of psi+")
            ax.set_ylim(-1.2, 1.2)
            ax.legend(fontsize=8)
            ax.set_title(title, fontsize=9)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)

        if sigma > MAX_SIGMA_V:
            return Analysis(
                {},
                False,
                f"too uncertain: V {value:.3f} +- {sigma:.3f} (max {MAX_SIGMA_V})",
                None,
                info,
                plot,
            )
        if not 0.2 <= value <= 1.0 + 3 * sigma:
            return Analysis(
                {}, False, f"V {value:.3f} +- {sigma:.3f} is not a visibility", None, info, plot
            )
        value = min(value, 1.0)
        return Analysis(
            {"visibility": value, "visibility_sigma": sigma},
            True,
            f"V {value:.3f} +- {sigma:.3f} from {stats['delivered']} Barrett-Kok pairs "
            f"(fidelity {stats['fidelity']:.3f})",
            None,
            info,
            plot,
        )


class AlphaRoutine(Routine):
    name = "alpha"
    title = "single-click alpha for the target fidelity"
    platforms = ("nv",)  # the ions herald two_photon, which has no alpha
    depends = ("visibility", "phase_noise")
    reads = (
        "target_fidelity",
        "visibility",
        "detection_probability",
        "dark_count_hz_*",
        "init_fidelity",
    )
    updates = ("single_click_alpha",)
    scope = "midpoint"
    needs_midpoint = True
    needs_link = True

    @staticmethod
    def _target(node: NodeAccess) -> float:
        stored = midpoint_of(node).stored("target_fidelity")
        return DEFAULT_TARGET if stored is None else stored

    def _alpha(self, node: NodeAccess) -> tuple[float, Link]:
        link, notes = _link(node)
        if assumed(notes):
            raise QnodeError("; ".join(assumed(notes)))
        try:
            return alpha_for_fidelity(self._target(node), link), link
        except ValueError as e:
            raise QnodeError(str(e)) from None

    def quick_check(self, node: NodeAccess) -> tuple[bool, str]:
        alpha, _ = self._alpha(node)
        stored = stored_value(midpoint_of(node), "single_click_alpha")
        if abs(alpha - stored) > 0.05 * stored:
            return False, f"the calibrated values now give alpha {alpha:.4f}, stored {stored:.4f}"
        return True, f"alpha {stored:.4f} for fidelity {self._target(node)}"

    def acquire(self, node: NodeAccess):
        alpha, link = self._alpha(node)
        stats = link_of(node).pairs("single_click", ALPHA_PAIRS, delivery="Z", alpha=alpha)
        return [(alpha, link, stats)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        ((alpha, link, stats),) = data
        herald = single_click(alpha, link)
        expected_p, f = herald.p_success, herald.fidelity
        sigma_f = fidelity_sigma("single_click", link, alpha)
        p, heralded = stats["p_success"], max(stats["heralded"], 1)
        sigma = p / np.sqrt(heralded)
        info = {"alpha": alpha, "expected_p": expected_p, "fidelity": f, "session": stats}
        target = self._target(node)

        def plot(path: Path, title: str) -> None:
            grid = np.linspace(0.005, 0.5, 200)
            heralds = [single_click(a, link) for a in grid]
            fig, (ax_f, ax_p) = plt.subplots(1, 2, figsize=(9, 3.8))
            ax_f.plot(grid, [h.fidelity for h in heralds])
            ax_f.axhline(target, color="C3", ls=":", label=f"target {target}")
            ax_f.axvline(alpha, color="C3", ls="--", label=f"alpha {alpha:.4f}")
            ax_f.set_xlabel("alpha")
            ax_f.set_ylabel("expected fidelity")
            ax_p.plot(grid, [h.p_success for h in heralds], label="model")
            ax_p.errorbar([alpha], [p], yerr=[1.96 * sigma], fmt="o", capsize=4, label="measured")
            ax_p.axvline(alpha, color="C3", ls="--")
            ax_p.set_xlabel("alpha")
            ax_p.set_ylabel("success per attempt")
            for ax in (ax_f, ax_p):
                ax.legend(fontsize=8)
                ax.grid(alpha=0.3)
            fig.suptitle(title, fontsize=9)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)

        if abs(p - expected_p) > 3 * sigma + P_TOLERANCE * expected_p:
            return Analysis(
                {},
                False,
                f"success per attempt {p:.3g} +- {sigma:.2g} at alpha {alpha:.4f}, the model "
                f"says {expected_p:.3g}: the detection probabilities do not hold",
                None,
                info,
                plot,
            )
        return Analysis(
            {"single_click_alpha": alpha},
            True,
            f"alpha {alpha:.4f} for fidelity {target} (expected {f:.3f} +- {sigma_f:.3f}); "
            f"success per attempt "
            f"{p:.3g} +- {sigma:.2g} (model {expected_p:.3g})",
            None,
            info,
            plot,
        )
