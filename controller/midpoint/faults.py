"""Herald faults on request, for tests and the soak (a midpoint started with --allow-faults):
the next heralds to a node are dropped, duplicated, delayed or garbled, as a lossy or
corrupting network would."""

from __future__ import annotations

from dataclasses import dataclass

from qnode.errors import QnodeError

FAULT_MODES = ("drop", "duplicate", "delay", "garble")


@dataclass
class HeraldFault:
    node: str
    mode: str
    count: int
    delay_s: float = 0.0
    after: int = 0  # heralds to let through first


class HeraldFaults:
    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.pending: list[HeraldFault] = []

    def add(self, node: str, mode: str, count: int, delay_s: float, after: int) -> HeraldFault:
        if not self.allowed:
            raise QnodeError("herald faults are off (start the midpoint with --allow-faults)")
        if mode not in FAULT_MODES:
            raise QnodeError(f"fault mode {mode!r}: one of {', '.join(FAULT_MODES)}")
        fault = HeraldFault(node, mode, count, delay_s, after)
        self.pending.append(fault)
        return fault

    def next_for(self, node: str) -> HeraldFault | None:
        """The fault that spoils the next herald to `node` (counted as used), or None."""
        fault = next((f for f in self.pending if f.node == node and f.count > 0), None)
        if fault is None:
            return None
        if fault.after > 0:
            fault.after -= 1
            return None
        fault.count -= 1
        return fault
