"""The midpoint's classification of the clicks of each attempt's detection windows.

A click counts only inside a calibrated detection window (a node's photons arrive at its
window start, within its window length after the attempt's excitation); dark counts outside
are ignored. Single-click: exactly one counted click in the attempt's window; the detector
says psi+ or psi-. Barrett-Kok: exactly one in each of the two rounds; the same detector
twice is psi+, one each is psi-. Anything else (none, both detectors, a click on another
input) is a fail. With software heralding every attempt's window is reported (its end as
input 0), so attempts without a click are reported as fails too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.link.vocabulary import PROTOCOLS


@dataclass(frozen=True)
class Classified:
    sync: int
    attempt: int
    outcome: str  # psi_plus, psi_minus, fail
    reason: str = ""


def in_windows(delay_ns: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    inside = np.zeros(len(delay_ns), dtype=bool)
    for start, length in windows:
        inside |= (delay_ns >= start) & (delay_ns <= start + length)
    return inside


def classify(
    clicks: np.ndarray,
    protocol: str,
    windows: list[tuple[float, float]],
    detectors: dict[str, int],
) -> list[Classified]:
    """One verdict per attempt that clicked, in the order the clicks came."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} ({', '.join(PROTOCOLS)})")
    if len(clicks) == 0:
        return []
    plus, minus = detectors["psi_plus"], detectors["psi_minus"]
    # input 0 marks a window's end (software heralding): an attempt, not a click
    counted = in_windows(clicks["delay_ps"] / 1e3, windows) & (clicks["channel"] != 0)
    keys = list(
        dict.fromkeys(zip(clicks["sync"].tolist(), clicks["attempt"].tolist(), strict=True))
    )
    out = []
    for sync, attempt in keys:
        mine = (clicks["sync"] == sync) & (clicks["attempt"] == attempt)
        kept = clicks[mine & counted]
        rounds = 1 if protocol == "single_click" else 2
        per_round = [kept[kept["round"] == r] for r in range(rounds)]
        channels = [int(r["channel"][0]) for r in per_round if len(r) == 1]
        if len(kept) == 0:
            verdict = Classified(sync, attempt, "fail", "no click in a detection window")
        elif any(len(r) != 1 for r in per_round):
            counts = "/".join(str(len(r)) for r in per_round)
            verdict = Classified(sync, attempt, "fail", f"clicks per round {counts}, not 1")
        elif any(c not in (plus, minus) for c in channels):
            verdict = Classified(sync, attempt, "fail", f"click on input {channels}: no herald")
        elif protocol == "single_click":
            verdict = Classified(sync, attempt, "psi_plus" if channels[0] == plus else "psi_minus")
        else:
            same = channels[0] == channels[1]
            verdict = Classified(sync, attempt, "psi_plus" if same else "psi_minus")
        out.append(verdict)
    return out
