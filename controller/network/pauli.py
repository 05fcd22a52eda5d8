"""The Pauli frame of entanglement swapping and of its applications, as bits: pure code.

A Pauli (up to a phase, which no measurement sees) is two bits (x, z): X^x Z^z. Every
two-qubit Bell state is (I x P)|phi+>, phi+ = (|00> + |11>)/sqrt 2, and a Pauli on either
qubit of a Bell pair can be moved to the other (transposed, which changes only a phase), so
a pair's state is one Pauli: the XOR of its heralded state's and of every Pauli applied to
either qubit since. docs/network.md derives the swap's frame from this; the tests check it
against a state-vector calculation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sequences.network_ops import GHZ_BASES

PAULIS = ("I", "X", "Y", "Z")
"""Pauli names, as messages and records carry them."""
BELL_STATES = ("psi_plus", "psi_minus")
"""The heralded states the link layer reports (controller.link.vocabulary.OUTCOMES' names)."""


@dataclass(frozen=True)
class Pauli:
    """X^x Z^z up to a phase."""

    x: int = 0
    z: int = 0

    def __mul__(self, other: Pauli) -> Pauli:
        return Pauli(self.x ^ other.x, self.z ^ other.z)

    @property
    def name(self) -> str:
        return PAULIS[{(0, 0): 0, (1, 0): 1, (1, 1): 2, (0, 1): 3}[(self.x, self.z)]]

    @classmethod
    def named(cls, name: str) -> Pauli:
        try:
            index = PAULIS.index(name)
        except ValueError:
            raise ValueError(f"{name!r} is not a Pauli ({', '.join(PAULIS)})") from None
        return cls(*[(0, 0), (1, 0), (1, 1), (0, 1)][index])

    def anticommutes_with(self, basis: str) -> bool:
        """Does this Pauli flip the result of a measurement of the Pauli `basis`?"""
        other = Pauli.named(basis)
        return bool((self.x & other.z) ^ (self.z & other.x))


IDENTITY = Pauli()
X = Pauli(1, 0)
Z = Pauli(0, 1)

BELL_PAULI = {"phi_plus": IDENTITY, "phi_minus": Z, "psi_plus": X, "psi_minus": Pauli(1, 1)}
"""Each Bell state as (I x P)|phi+>: psi- = (|01> - |10>)/sqrt 2 = (I x XZ)|phi+> up to a sign."""

TARGET = "psi_plus"
"""The end-to-end pair's state once its frame is applied: the link layer's target too."""


def pair_pauli(state: str, applied: tuple[str, ...] = ()) -> Pauli:
    """A Bell pair's state as one Pauli: its heralded state and the Paulis applied to either
    of its qubits since the herald."""
    if state not in BELL_PAULI:
        raise ValueError(f"{state!r} is not a Bell state ({', '.join(BELL_PAULI)})")
    total = BELL_PAULI[state]
    for name in applied:
        total = total * Pauli.named(name)
    return total


def bsm_pauli(zz: int, xx: int) -> Pauli:
    """The Bell state a Bell-state measurement projected onto, from its two parities: zz = 1
    when Z x Z gave -1 (a psi state), xx = 1 when X x X gave -1 (a minus state)."""
    if zz not in (0, 1) or xx not in (0, 1):
        raise ValueError(f"parities are bits, got zz={zz!r}, xx={xx!r}")
    return Pauli(zz, xx)


@dataclass(frozen=True)
class SwapFrame:
    """What each end applies after the swap: `first` by the end-to-end pair's first node (A),
    `second` by its second (C). Together they take the pair to TARGET."""

    first: Pauli
    second: Pauli


def swap_frame(
    first_state: str,
    second_state: str,
    zz: int,
    xx: int,
    repeater_applied: tuple[str, ...] = (),
) -> SwapFrame:
    """The swap's Pauli frame, before each end's own applied Paulis (`own_correction`).

    The pair A-C after B's measurement is (I x P)|phi+> with P the product of both link
    pairs' Paulis and the measured Bell state's (docs/network.md); TARGET is (I x X)|phi+>,
    so P X is to be undone: its Z part by the first end, its X part by the second (each end
    applies one kind of gate; which end applies a Pauli changes only a global phase)."""
    rest = (
        pair_pauli(first_state, repeater_applied)
        * pair_pauli(second_state)
        * bsm_pauli(zz, xx)
        * BELL_PAULI[TARGET]
    )
    return SwapFrame(first=Pauli(0, rest.z), second=Pauli(rest.x, 0))


def own_correction(share: Pauli, own_applied: tuple[str, ...] = ()) -> Pauli:
    """An end's correction: its share of the swap's frame and the Paulis it applied itself
    to its qubit of its link pair since the herald (known only to it: undone by it)."""
    total = share
    for name in own_applied:
        total = total * Pauli.named(name)
    return total


def bsm_parities(bell_state: str) -> tuple[int, int]:
    """(zz, xx) of the Bell state a Bell-state measurement names (sequences.library's
    BELL_TABLE gives it from the two readouts): zz = 1 for a psi state, xx = 1 for a minus
    state; `bsm_pauli` is its inverse."""
    if bell_state not in BELL_PAULI:
        raise ValueError(f"{bell_state!r} is not a Bell state ({', '.join(BELL_PAULI)})")
    pauli = BELL_PAULI[bell_state]
    return pauli.x, pauli.z


def result_after(result: int, basis: str, paulis: tuple[str, ...] = ()) -> int:
    """A +1/-1 result measured in `basis` as if the Paulis had been applied to the qubit
    before the measurement: each Pauli that anticommutes with the basis flips it (X or Y flip
    a Z result, Y or Z an X result, X or Z a Y result). An end that measured its half at
    once (its electron cannot wait for the swap) applies the swap's frame here, to the bit."""
    if result not in (-1, 1):
        raise ValueError(f"a result is +1 or -1, got {result!r}")
    flips = sum(Pauli.named(name).anticommutes_with(basis) for name in paulis)
    return -result if flips % 2 else result


def werner_swap_fidelity(first: float, second: float) -> float:
    """The end-to-end fidelity of swapping two Werner-like pairs of fidelities `first` and
    `second` with a perfect Bell-state measurement: F = F1 F2 + (1 - F1)(1 - F2)/3, i.e. the
    Werner parameters (4F - 1)/3 multiply (docs/network.md, "Goodness")."""
    for value in (first, second):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"a fidelity is in [0, 1], got {value!r}")
    return first * second + (1.0 - first) * (1.0 - second) / 3.0


# GHZ (Pompili et al. 2021) ----------------------------------------------------------------------
GHZ_QUBITS = 3
"""(first end, the repeater's memory, second end): the GHZ state's qubits, in this order."""


def ghz_logical(physical: Pauli, position: int) -> Pauli:
    """A Pauli on a GHZ qubit's physical basis as the GHZ state's Pauli (up to a phase): it
    flips the GHZ's Z (X) result when it anticommutes with the basis that measures Z (X)
    there (sequences.network_ops.GHZ_BASES)."""
    bases = GHZ_BASES[position]
    return Pauli(
        int(physical.anticommutes_with(bases["Z"][0])),
        int(physical.anticommutes_with(bases["X"][0])),
    )


def ghz_frame(first_pair: Pauli, second_pair: Pauli, bright: int) -> tuple[Pauli, ...]:
    """The GHZ state's Pauli frame on (A, B's memory, C) after B's local operation.

    B holds A-B in its memory and B-C in its electron; its operation (sequences.network_ops.
    ghz_operation: the DD gate, the electron turned and read out, `bright` = 1 when it read
    bright) leaves, with both pairs phi+, the GHZ state in the bases of GHZ_BASES with the
    frame Y on C when bright. A link pair's Pauli (`pair_pauli`, physical), moved to its
    end's qubit (A or C), commutes through B's gates; it enters the frame as the GHZ's Pauli
    it is there (`ghz_logical`). The frame is applied to the stabilisers' outcomes
    (`frame_sign`), not to the qubits."""
    if bright not in (0, 1):
        raise ValueError(f"the electron's outcome is a bit (1: bright), got {bright!r}")
    return (
        ghz_logical(first_pair, 0),
        IDENTITY,
        ghz_logical(second_pair, 2) * Pauli(bright, bright),
    )


def cnot_ghz_frame(first_pair: Pauli, second_pair: Pauli, electron_z: int) -> tuple[Pauli, ...]:
    """The textbook GHZ operation's frame (Pompili et al. 2021's structure: a CNOT, memory
    control, electron target, the electron read in Z with bit electron_z): with both pairs
    phi+ it leaves (|000> + |111>)/sqrt 2 with X on C when the bit is 1, so the frame is (P1,
    I, P2 X^m) in the Pauli bases. For models written with that CNOT (bench/network_figures.py's
    planning model); an NV node cannot run it (`ghz_frame`, docs/network.md "GHZ states")."""
    if electron_z not in (0, 1):
        raise ValueError(f"the electron's Z outcome is a bit, got {electron_z!r}")
    return (first_pair, IDENTITY, second_pair * Pauli(electron_z, 0))


def ghz_result(physical: int, position: int, basis: str) -> int:
    """A +1/-1 result measured in the physical basis for the GHZ's `basis` at `position`, as
    the GHZ's Pauli's result (its sign, GHZ_BASES)."""
    return physical * GHZ_BASES[position][basis][1]


def frame_sign(frame: tuple[Pauli, ...], setting: str) -> int:
    """+1 or -1: how a Pauli frame changes a product of single-qubit results measured in
    `setting` (e.g. "XXX", "ZZI": I is a qubit left out of the product)."""
    if len(setting) != len(frame):
        raise ValueError(f"setting {setting!r} is not for {len(frame)} qubits")
    flips = sum(p.anticommutes_with(b) for p, b in zip(frame, setting, strict=True) if b != "I")
    return -1 if flips % 2 else 1


# teleportation (Hermans et al. 2022) ------------------------------------------------------------
def teleport_correction(resource: Pauli, zz: int, xx: int) -> Pauli:
    """The receiver's correction after the sender's Bell-state measurement on (the state to
    send, its half of the pair): the measured Bell state's Pauli times the resource pair's
    (the receiver holds P_resource P_bsm |state> up to a phase)."""
    return resource * bsm_pauli(zz, xx)
