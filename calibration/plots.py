"""Calibration plots: data, fit, and the chosen value marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def xy_plot(
    path: Path,
    title: str,
    x,
    y,
    *,
    xlabel: str,
    ylabel: str,
    fit=None,
    marks: dict[str, float] | None = None,
    x_scale: float = 1.0,
    extra: list[tuple] | None = None,
) -> None:
    """Points, a fitted curve over them, and vertical lines at the chosen values."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(np.asarray(x) * x_scale, y, "o", ms=3.5, label="data")
    for xs, ys, label in extra or []:
        ax.plot(np.asarray(xs) * x_scale, ys, "s", ms=3, label=label)
    if fit is not None:
        fine = np.linspace(np.min(x), np.max(x), 600)
        ax.plot(fine * x_scale, fit(fine), "-", lw=1.5, label="fit")
    for label, value in (marks or {}).items():
        ax.axvline(value * x_scale, color="C3", ls="--", lw=1)
        ax.annotate(
            label,
            (value * x_scale, ax.get_ylim()[1]),
            color="C3",
            fontsize=8,
            ha="left",
            va="top",
            rotation=90,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
