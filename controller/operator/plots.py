"""Plots a person would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_sweep(data, path: Path, threshold: float = 1) -> Path:
    """Bright fraction against the (single) sweep axis, one line per readout."""
    ((name, (values, unit)),) = data.axes.items()
    fig, ax = plt.subplots(figsize=(6, 4))
    n = data.counts.shape[0]
    for k, label in enumerate(data.readouts or ["readout"]):
        ax.plot(values[:n], data.bright_fraction(threshold, k), "o-", ms=3, label=label)
    ax.set_xlabel(f"{name} ({unit})" if unit else name)
    ax.set_ylabel(f"P(counts >= {threshold:g})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"run {data.run_id} ({data.status})")
    if len(data.readouts) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_alpha_scan(
    path: Path,
    points: list[dict],
    curve: dict,
    barrett_kok: dict | None = None,
) -> Path:
    """Single-click fidelity and success per attempt against alpha: measured points with
    their 95 % intervals over the analytic curves (from the calibrated values); Barrett-Kok,
    which has no alpha, as a band."""
    fig, (ax_f, ax_p) = plt.subplots(1, 2, figsize=(10, 4))
    alphas = [p["alpha"] for p in points]
    ax_f.plot(curve["alpha"], curve["fidelity"], "-", color="C0", label="single-click, model")
    ax_f.errorbar(
        alphas,
        [p["fidelity"] for p in points],
        yerr=[
            [p["fidelity"] - p["low"] for p in points],
            [p["high"] - p["fidelity"] for p in points],
        ],
        fmt="o",
        color="C0",
        capsize=3,
        label="single-click, verified",
    )
    ax_p.plot(curve["alpha"], curve["p_success"], "-", color="C0", label="single-click, model")
    ax_p.errorbar(
        alphas,
        [p["p_success"] for p in points],
        yerr=[1.96 * p["p_sigma"] for p in points],
        fmt="o",
        color="C0",
        capsize=3,
        label="single-click, measured",
    )
    if barrett_kok is not None:
        ax_f.axhspan(barrett_kok["low"], barrett_kok["high"], color="C1", alpha=0.25)
        ax_f.axhline(barrett_kok["expected"], color="C1", label="Barrett-Kok (no alpha)")
        ax_p.axhline(barrett_kok["p_success"], color="C1", label="Barrett-Kok, measured")
    ax_f.set_xlabel("alpha (bright population)")
    ax_f.set_ylabel("Bell-state fidelity")
    ax_f.set_ylim(0.4, 1.05)
    ax_p.set_xlabel("alpha (bright population)")
    ax_p.set_ylabel("success probability per attempt")
    ax_p.set_yscale("log")
    for ax in (ax_f, ax_p):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("heralded entanglement A-B: measured over the model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
