"""A memory node's qubits and the pairs they hold, as pure decisions (no I/O, no clock).

A node such as B (link AB through M1, link BC through M2) has one communication qubit, its
electron (qubit `<node>`, e.g. "B"), and the memory qubits of its lab file's `memories`
(qubits `<node>.<memory>`, e.g. "B.c13"). A heralded pair lands in the electron; to make
another link the node must free the electron, so the pair is moved into a free memory qubit
(`deliver_to_memory`: the node runtime runs the swap-to-memory operation), where it loses
fidelity with every attempt on any link and with time (calibration.planning: the planning
model of the memory). `NodeMemory` keeps each stored pair's link, id, peer, heralded state,
goodness (the fidelity expected if it were delivered now), time stamps and the attempts made
since it was stored, and decides:

- the cut-off: a stored pair whose expected fidelity falls below its request's minimum is
  discarded, with the reason "cut-off" and the numbers (`on_attempts`, `on_time`);
- scheduling: `may_attempt(link, ...)` allows an attempt block only with the electron free
  and only as long as no stored pair would cross its cut-off during it; it says how many
  attempts remain before the first stored pair's cut-off, so a session bounds its block.

Every decision returns what the caller must do (`Move`, `Discard`, `Refused`, `Permit`);
discards name the peer, which must be told (a pair is discarded on both ends, never counted
silently). Times are the caller's clock (seconds, monotonic), passed with each event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from calibration.planning import (
    Memory,
    attempts_before,
    memory_coherence,
    memory_n_1e,
    stored_fidelity,
)
from controller.labconfig import LabConfig
from controller.link.vocabulary import HOLD_ATTEMPTS_DEFAULT, HOLD_ATTEMPTS_MAX, HOLD_ATTEMPTS_MIN
from qnode.errors import QnodeError

CUT_OFF = "cut-off"
UNBOUNDED = 2**62
"""The attempt budget when no stored pair limits it."""
HOLD_FRACTION = 0.2
"""A memory waiting in |0> for a pair is initialised again after this fraction of its N_1/e."""


def hold_attempts(memory: Memory | None, alpha: float, per_attempt: int) -> int:
    """Attempts a round delivering into memory makes before the memory is initialised again.
    The memory waits in |0> through them, and each reset of the electron (the bright part of
    an attempt) leaves the nucleus turned a little about the hyperfine's tilted axis
    (A_perp): its population decays, more slowly than a stored coherence does from the same
    resets (Kalb et al., PRA 97, 062330 (2018)). A fifth of the coherence's N_1/e at the
    session's alpha keeps that loss small; without the memory's calibration,
    HOLD_ATTEMPTS_DEFAULT. `per_attempt`: memory-disturbing excitations per attempt."""
    if memory is None:
        return HOLD_ATTEMPTS_DEFAULT
    n = HOLD_FRACTION * memory_n_1e(alpha, memory) / per_attempt
    return int(min(HOLD_ATTEMPTS_MAX, max(HOLD_ATTEMPTS_MIN, n)))


@dataclass
class StoredPair:
    """One half of a pair, held in one of this node's qubits."""

    pair_id: str
    link: str
    peer: str
    outcome: str
    """The heralded Bell state ("psi_plus" or "psi_minus"; the Pauli frame is the link's)."""
    fidelity_heralded: float
    """The planning model's expected fidelity of the pair as heralded (the link's Expectation)."""
    fidelity_min: float
    """The request's minimum: below it the pair is cut off."""
    heralded_at: float
    qubit: str
    parity: float = 1.0
    """Its population in the heralded subspace (|01>, |10>): 1 for a psi+/psi- mixture."""
    stored_at: float | None = None
    """When it was moved into the memory qubit (None: still in the electron)."""
    attempts: dict[tuple[str, float], int] = field(default_factory=dict)
    """(link, alpha) -> attempts made since it was stored."""
    goodness: float = 0.0
    """The fidelity expected if it were delivered now."""

    @property
    def in_memory(self) -> bool:
        return self.stored_at is not None

    def attempts_by_link(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (link, _alpha), n in self.attempts.items():
            out[link] = out.get(link, 0) + n
        return out

    def blocks(self) -> list[tuple[int, float]]:
        """(attempts, alpha) blocks, as the planning model takes them."""
        return [(n, alpha) for (_link, alpha), n in self.attempts.items()]

    def as_dict(self) -> dict:
        return {
            "pair_id": self.pair_id,
            "link": self.link,
            "peer": self.peer,
            "outcome": self.outcome,
            "qubit": self.qubit,
            "fidelity_heralded": self.fidelity_heralded,
            "fidelity_min": self.fidelity_min,
            "goodness": self.goodness,
            "heralded_at": self.heralded_at,
            "stored_at": self.stored_at,
            "attempts": self.attempts_by_link(),
        }


@dataclass(frozen=True)
class Move:
    """Run the swap-to-memory operation: the pair's half from `source` into `target`."""

    pair_id: str
    link: str
    source: str
    target: str


@dataclass(frozen=True)
class Refused:
    pair_id: str
    reason: str


@dataclass(frozen=True)
class Discard:
    """Discard the pair here and tell its peer (the same reason on both ends)."""

    pair_id: str
    link: str
    peer: str
    qubit: str
    reason: str
    detail: dict = field(default_factory=dict)

    @property
    def message(self) -> str:
        d = self.detail
        if self.reason != CUT_OFF:
            return self.reason
        attempts = ", ".join(f"{k} {v}" for k, v in d["attempts"].items()) or "none"
        return (
            f"cut-off: expected fidelity {d['expected_fidelity']:.4f} below the minimum "
            f"{d['fidelity_min']:g} after {d['stored_s']:.6g} s in {self.qubit} and attempts "
            f"({attempts})"
        )


@dataclass(frozen=True)
class Permit:
    """May the node attempt on a link now, and how many attempts until a cut-off."""

    allowed: bool
    budget: int
    """Attempts (at the asked alpha) before the first stored pair's cut-off (UNBOUNDED: none)."""
    reason: str = ""


class NodeMemory:
    """The qubits of one memory node and the pairs they hold."""

    def __init__(
        self, node: str, memories: list[str], links: dict[str, str], model: Memory | None
    ) -> None:
        self.node = node
        self.links = dict(links)
        """Link name -> the peer at its other end."""
        self.model = model
        self.electron = node
        self.memory_qubits = [f"{node}.{m}" for m in memories]
        self.holding: dict[str, StoredPair | None] = dict.fromkeys(
            [self.electron, *self.memory_qubits]
        )

    @classmethod
    def for_node(cls, lab: LabConfig, node: str, model: Memory | None) -> NodeMemory:
        """From the lab file: the node's memory qubits and its links."""
        config = lab.nodes.get(node)
        if config is None or config.kind != "memory":
            raise QnodeError(f"{node} is not a memory node of the lab {lab.lab.name}")
        links = {name: link.peer(node) for name, link in lab.links_of(node).items()}
        return cls(node, list(config.memories), links, model)

    # what it holds -----------------------------------------------------------------------------
    def pairs(self) -> list[StoredPair]:
        return [p for p in self.holding.values() if p is not None]

    def pair(self, pair_id: str) -> StoredPair:
        for p in self.pairs():
            if p.pair_id == pair_id:
                return p
        raise QnodeError(f"{self.node} holds no pair {pair_id}")

    def electron_free(self) -> bool:
        return self.holding[self.electron] is None

    def free_memory(self) -> str | None:
        return next((q for q in self.memory_qubits if self.holding[q] is None), None)

    def as_dict(self) -> dict:
        return {q: (p.as_dict() if p else None) for q, p in self.holding.items()}

    # events --------------------------------------------------------------------------------------
    def on_heralded(
        self,
        *,
        link: str,
        pair_id: str,
        outcome: str,
        fidelity: float,
        fidelity_min: float,
        now: float,
        parity: float = 1.0,
    ) -> StoredPair:
        """A delivered pair: its half is in the electron (which must have been free: an attempt
        was only allowed with it free)."""
        if link not in self.links:
            raise QnodeError(f"{self.node} has no link {link} (its links: {', '.join(self.links)})")
        held = self.holding[self.electron]
        if held is not None:
            raise QnodeError(
                f"{self.node}: pair {pair_id} heralded on {link} while the electron holds "
                f"{held.pair_id} of {held.link}"
            )
        pair = StoredPair(
            pair_id=pair_id,
            link=link,
            peer=self.links[link],
            outcome=outcome,
            fidelity_heralded=fidelity,
            fidelity_min=fidelity_min,
            heralded_at=now,
            qubit=self.electron,
            parity=parity,
            goodness=fidelity,
        )
        self.holding[self.electron] = pair
        return pair

    def deliver_to_memory(self, pair_id: str, now: float) -> Move | Refused | Discard:
        """Move the electron's pair into a free memory qubit: a Move for the node runtime, or
        Refused (it stays in the electron) with the reason, or at once a cut-off Discard if the
        move alone would take it under its minimum."""
        pair = self.holding[self.electron]
        if pair is None or pair.pair_id != pair_id:
            return Refused(pair_id, f"the electron of {self.node} does not hold {pair_id}")
        if self.model is None:
            return Refused(
                pair_id,
                f"{self.node}'s memory is not calibrated (c13_n_1e_at_alpha, c13_n_1e_alpha, "
                "c13_t2_s, c13_move_fidelity): a stored pair's fidelity cannot be planned",
            )
        target = self.free_memory()
        if target is None:
            if not self.memory_qubits:
                return Refused(pair_id, f"{self.node} has no memory qubit (lab file `memories`)")
            held = ", ".join(
                f"{q} holds {p.pair_id} of link {p.link}"
                for q, p in self.holding.items()
                if q != self.electron and p is not None
            )
            return Refused(pair_id, f"no free memory qubit on {self.node}: {held}")
        pair.stored_at = now
        cut = self._update(pair, now)  # the move's cost alone
        if cut is not None:
            return cut  # discarded from the electron: not worth a move
        self.holding[self.electron] = None
        self.holding[target] = pair
        pair.qubit = target
        return Move(pair_id, pair.link, self.electron, target)

    def on_prepared(self, state_id: str, link: str, now: float, fidelity_min: float = 0.0) -> str:
        """A state the node wrote into a free memory qubit itself (teleportation's input, not
        half of a pair): held and protected as a stored pair is (the attempts on `link` that
        follow echo and count against it), its goodness the planning model's from 1. Returns
        the memory qubit."""
        if link not in self.links:
            raise QnodeError(f"{self.node} has no link {link} (its links: {', '.join(self.links)})")
        target = self.free_memory()
        if target is None:
            raise QnodeError(f"no free memory qubit on {self.node}: {self.as_dict()}")
        self.holding[target] = StoredPair(
            pair_id=state_id,
            link=link,
            peer=self.node,
            outcome="prepared",
            fidelity_heralded=1.0,
            fidelity_min=fidelity_min,
            heralded_at=now,
            qubit=target,
            stored_at=now,
            goodness=1.0,
        )
        return target

    def on_move_failed(self, pair_id: str, reason: str) -> Discard:
        """The node runtime could not run the move: the pair is gone."""
        return self._discard(self.pair(pair_id), f"move into memory failed: {reason}", {})

    def on_attempts(self, link: str, attempts: int, alpha: float, now: float) -> list[Discard]:
        """Attempts were made on `link` at bright population alpha: every stored pair pays for
        them; those under their minimum are cut off. A pair still in the electron is destroyed
        by them (scheduling should never have allowed it)."""
        if link not in self.links:
            raise QnodeError(f"{self.node} has no link {link} (its links: {', '.join(self.links)})")
        if attempts < 0:
            raise QnodeError(f"{attempts} attempts on {link}: a count cannot be negative")
        out: list[Discard] = []
        if attempts == 0:
            return out
        electron = self.holding[self.electron]
        if electron is not None:
            out.append(
                self._discard(
                    electron, f"the electron was used for {attempts} attempts on {link}", {}
                )
            )
        for pair in self.pairs():
            key = (link, alpha)
            pair.attempts[key] = pair.attempts.get(key, 0) + attempts
            cut = self._update(pair, now)
            if cut is not None:
                out.append(cut)
        return out

    def on_time(self, now: float) -> list[Discard]:
        """Time passed: the stored pairs whose storage took them under their minimum."""
        return [cut for pair in self.pairs() if (cut := self._update(pair, now)) is not None]

    def release(self, pair_id: str) -> StoredPair:
        """The pair was used (swapped, measured, handed on): its qubit is free."""
        pair = self.pair(pair_id)
        self.holding[pair.qubit] = None
        return pair

    def discard(self, pair_id: str, reason: str) -> Discard:
        """Discard on request (the peer discarded it, a timeout, the request ended)."""
        return self._discard(self.pair(pair_id), reason, {})

    # scheduling ----------------------------------------------------------------------------------
    def may_attempt(
        self, link: str, alpha: float, now: float, attempts: int = 1, attempt_s: float = 0.0
    ) -> Permit:
        """Whether `attempts` attempts on `link` at alpha (each `attempt_s` long) may run now:
        the electron must be free and no stored pair may cross its cut-off during them. The
        budget is the attempts left before the first cut-off."""
        if link not in self.links:
            return Permit(
                False, 0, f"{self.node} has no link {link} (its links: {', '.join(self.links)})"
            )
        held = self.holding[self.electron]
        if held is not None:
            return Permit(
                False,
                0,
                f"the electron holds pair {held.pair_id} of {held.link}: attempting would "
                "destroy it (move it into memory or use it first)",
            )
        budget, limiting = UNBOUNDED, None
        for pair in self.pairs():
            if self.model is None or pair.stored_at is None:
                continue  # only stored pairs (the electron is free here)
            left = attempts_before(
                pair.fidelity_min,
                pair.fidelity_heralded,
                self.model,
                alpha,
                pair.blocks(),
                max(now - pair.stored_at, 0.0),
                attempt_s,
                pair.parity,
            )
            if left < budget:
                budget, limiting = left, pair
        if limiting is not None and budget < attempts:
            return Permit(
                False,
                budget,
                f"{attempts} attempts on {link} at alpha {alpha:g} would take pair "
                f"{limiting.pair_id} in {limiting.qubit} under its minimum fidelity "
                f"{limiting.fidelity_min:g} after {budget}",
            )
        return Permit(True, budget)

    # the model ---------------------------------------------------------------------------------
    def _update(self, pair: StoredPair, now: float) -> Discard | None:
        """Its goodness now; a cut-off Discard if under its minimum."""
        if pair.stored_at is None or self.model is None:
            return None  # in the electron: its decay is not modelled here (no attempt runs)
        stored_s = max(now - pair.stored_at, 0.0)
        pair.goodness = stored_fidelity(
            pair.fidelity_heralded, self.model, pair.blocks(), stored_s, pair.parity
        )
        if pair.goodness >= pair.fidelity_min:
            return None
        detail = {
            "expected_fidelity": pair.goodness,
            "fidelity_min": pair.fidelity_min,
            "fidelity_heralded": pair.fidelity_heralded,
            "stored_s": stored_s,
            "attempts": pair.attempts_by_link(),
            "coherence": memory_coherence(pair.blocks(), stored_s, self.model),
        }
        return self._discard(pair, CUT_OFF, detail)

    def _discard(self, pair: StoredPair, reason: str, detail: dict) -> Discard:
        self.holding[pair.qubit] = None
        return Discard(pair.pair_id, pair.link, pair.peer, pair.qubit, reason, detail)
