"""The midpoint's classification of the clicks of each attempt's detection windows (the
clicks the herald logic instrument, drivers/herald_logic.py, recorded).

A click counts only inside a calibrated detection window (a node's photons arrive at its
window start, within its window length after the attempt's excitation); dark counts outside
are ignored. Single-click: exactly one counted click in the attempt's window; the detector
says psi+ or psi-. Barrett-Kok: exactly one in each of the two rounds; the same detector
twice is psi+, one each is psi-. Two-photon (the ions' polarisation qubits, four detectors
behind polarising beam splitters): exactly two counted clicks in the attempt's window, on
orthogonal polarisations; both on the same beam-splitter output is psi+, one on each psi-.
Anything else (none, both detectors, a click on another input, two clicks of one
polarisation, three clicks) is a fail with its reason. With software heralding every
attempt's window is reported (its end as input 0), so attempts without a click are reported
as fails too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.link.vocabulary import PROTOCOLS

DETECTORS = {
    "single_click": ("psi_plus", "psi_minus"),
    "barrett_kok": ("psi_plus", "psi_minus"),
    "two_photon": ("out1_h", "out1_v", "out2_h", "out2_v"),
}
"""The detectors (names of the lab file's channel map) each protocol heralds with."""
TWO_PHOTON_PLACES = {"out1_h": (1, "H"), "out1_v": (1, "V"), "out2_h": (2, "H"), "out2_v": (2, "V")}
"""Two-photon: each detector's beam-splitter output and polarisation."""


def missing_detectors(protocol: str, detectors: dict[str, int]) -> list[str]:
    """The detectors this protocol needs that the channel map lacks (empty: it can herald)."""
    return [name for name in DETECTORS[protocol] if name not in detectors]


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
    missing = missing_detectors(protocol, detectors)
    if missing:
        raise ValueError(f"{protocol} needs detectors {', '.join(missing)}")
    if protocol == "two_photon":
        return _two_photon(clicks, windows, detectors)
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


def _attempts(clicks: np.ndarray) -> list[tuple[int, int]]:
    return list(
        dict.fromkeys(zip(clicks["sync"].tolist(), clicks["attempt"].tolist(), strict=True))
    )


def _two_photon(
    clicks: np.ndarray, windows: list[tuple[float, float]], detectors: dict[str, int]
) -> list[Classified]:
    place = {detectors[name]: spot for name, spot in TWO_PHOTON_PLACES.items()}
    counted = in_windows(clicks["delay_ps"] / 1e3, windows) & (clicks["channel"] != 0)
    out = []
    for sync, attempt in _attempts(clicks):
        mine = (clicks["sync"] == sync) & (clicks["attempt"] == attempt)
        channels = [int(c) for c in clicks[mine & counted]["channel"]]
        if not channels:
            verdict = Classified(sync, attempt, "fail", "no click in a detection window")
        elif len(channels) != 2:
            verdict = Classified(sync, attempt, "fail", f"{len(channels)} clicks, not 2")
        elif any(c not in place for c in channels):
            verdict = Classified(sync, attempt, "fail", f"click on input {channels}: no herald")
        else:
            (out_1, pol_1), (out_2, pol_2) = (place[c] for c in channels)
            if pol_1 == pol_2:
                verdict = Classified(
                    sync, attempt, "fail", f"two clicks in polarisation {pol_1}, not orthogonal"
                )
            else:
                outcome = "psi_plus" if out_1 == out_2 else "psi_minus"
                verdict = Classified(sync, attempt, outcome)
        out.append(verdict)
    return out
