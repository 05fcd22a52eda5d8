"""A node's own record of each shot of a round, parsed from its sequencer's event stream:
did the sequencer herald, after how many attempts, which outcome, the readout's counts, and
whether the memory checks passed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sequences.compiler import ATTEMPTS, ATTEMPTS_EXHAUSTED, HERALD, SHOT_END

ROUND_READOUT = 1
"""The event code of a round's one readout: the compiler numbers a sequence's readouts
1, 2, ... in order and reports each with its number as the event code."""


@dataclass(frozen=True)
class OwnShot:
    heralded: bool
    attempts: int
    outcome: int  # 1 psi+, 2 psi-, 0 none (as OUTCOMES numbers them)
    counts: int  # -1: not measured
    valid: bool  # the memory checks passed
    time_ns: int
    counts_memory: int = -1  # a bsm round's second readout (the memory's); -1: none


class ShotParser:
    """Streams a round's sequencer events into shots (the run's events arrive in chunks, a
    shot may straddle two)."""

    def __init__(self, first_shot: int, measured: bool) -> None:
        self.next_shot = first_shot
        self.measured = measured
        self._fresh()

    def _fresh(self) -> None:
        self.heralded, self.attempts, self.outcome, self.counts = False, 0, 0, -1
        self.counts_memory = -1

    def feed(self, events: Iterable) -> list[tuple[int, OwnShot]]:
        """Events in (each with .code, .value, .time_ns); the shots they complete out."""
        done = []
        for e in events:
            if e.code == HERALD:
                self.heralded, self.outcome = True, int(e.value)
            elif e.code in (ATTEMPTS, ATTEMPTS_EXHAUSTED):
                self.attempts = int(e.value)
            elif e.code == SHOT_END:
                shot = OwnShot(
                    self.heralded,
                    self.attempts,
                    self.outcome,
                    self.counts,
                    e.value == 0,
                    e.time_ns,
                    self.counts_memory,
                )
                done.append((self.next_shot, shot))
                self.next_shot += 1
                self._fresh()
            elif e.code == ROUND_READOUT and self.measured:
                self.counts = int(e.value)
            elif e.code == ROUND_READOUT + 1 and self.measured:  # a bsm round's memory readout
                self.counts_memory = int(e.value)
        return done
