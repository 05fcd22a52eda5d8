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
