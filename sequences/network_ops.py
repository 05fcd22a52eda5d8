"""A repeater node's local operations for the network's applications (docs/network.md,
"GHZ states"), on an NV node's electron and its 13C memory.

GHZ (Pompili et al., Science 372, 259 (2021)): B holds A-B in its memory (m) and B-C in its
electron (e); a two-qubit gate between them and the electron's readout leave (A, m, C) in a
GHZ state up to a Pauli frame known from the outcome. The textbook form is a CNOT (m control,
e target) and e read in Z. The node's only two-qubit gate is the DD gate
exp(-i theta/2 Z_e X_m) (sequences.memory.MemoryGate; Taminiau et al. 2014), and with
electron rotations and the memory's precession (about z) it cannot make a Z_e Z_m coupling
(the Lie algebra of Z_e X_m, Z_e Y_m, the electron's rotations and Z_m has no e (x) Z_m
term), so the electron's readout can never carry the textbook parity Z_e Z_m. What it can
carry is X_e X_m: the gate at 90 degrees, the electron's pi/2 about x, its readout (b = +1
bright). That leaves (A, m, C) in the GHZ state (|000> + |111>)/sqrt 2 in other local bases:
`GHZ_BASES` names them, for each qubit the physical basis (and sign) that measures each of the
GHZ state's Paulis; in those bases the bright outcome leaves the frame Y on C
(`controller.network.pauli.ghz_frame`). Ideally: exp(-i pi/4 Z_e X_m), the electron turned by
-pi/2 about x (the compiled pi/2 in the model's sense) and read in Z, then Z on the memory (its
frame as the compiler keeps it is half a turn from the gate's axis). Derived from the sequence
replayed on H = omega_L I_z + |1><1| (A_par I_z + A_perp I_x) (hil_tests/test_compiler_memory.
py's model) with A and C as ideal qubits, the A-B pair's memory half as SwapToMemory writes it
(in the gate's own axes, the heralded state with a Z on the memory: sequences.library's
BELL_TABLE; A's X and Y results take that sign) and the memory read after it in the same
program: hil_tests/test_network_ops.py checks every stabiliser's sign there for both
outcomes. Through the five daemons the GHZ operation runs as a program of its own after the
B-C session, and its stabilisers come out near 0 on the simulator (120 shots: 0.1-0.5): the
electron's half meets the gate's unechoed ALIGN (hil_tests/test_network_ops.py's epoch test);
not yet verified against the simulator's state.

The bases are the model's (MemoryReadout's for the memory, Pauli's for A and C). The link
layer reads an electron's X as pi/2 about +y, bright = -x, and memory_measure flips its X bit
to match: a reflection of the model's X, which the network service undoes on GHZ's and
teleportation's X results (controller.network.node_operations.LINK_X_SIGN).

Like the BSM (sequences.library.bell_measurement) the gate acts in the memory's frame: a
memory written on the sequencer's Larmor epoch by an earlier program (the link layer's
SwapToMemory) is reached by an `epoch` gate, its known turn since (the phase per attempt)
undone by `frame_deg`; the electron's readout spares the memory (ReadoutSparingMemory), which
is read later in a GHZ setting's basis (memory_measure, on the epoch too). No charge check
first: its light would destroy the electron's half.

Teleportation (Hermans et al., Nature 605, 663 (2022)): the sender holds the state to send in
its memory while its electron makes its link, then measures (electron, memory) in the Bell
basis (sequences.library.bell_measurement). `prepare_memory_state` writes a cardinal state
there: the memory reset (MemoryInit), the electron turned to the state from |0>, the state
moved in (SwapToMemory), as hil_tests/test_compiler_memory.py stores and reads back each
cardinal state on the papers' Hamiltonian.
"""

from __future__ import annotations

from sequences.memory import MemoryGate, MemoryInit, ReadoutSparingMemory, SwapToMemory
from sequences.operations import (
    MwPulse,
    Operation,
    Sequence,
    memory_check,
    pi_half_pulse,
    pi_pulse,
)

GHZ_GATE_DEG = 90.0
"""The DD gate's angle: exp(-i pi/4 Z_e X_m)."""
GHZ_ELECTRON_PHASE_DEG = 0.0
"""The electron's pi/2 before its readout (about x): the readout then measures X_e X_m."""

GHZ_BASES: tuple[dict[str, tuple[str, int]], ...] = (
    {"Z": ("X", -1), "X": ("Z", 1), "Y": ("Y", 1)},
    {"Z": ("X", -1), "X": ("Z", 1), "Y": ("Y", 1)},
    {"Z": ("X", 1), "X": ("Y", -1), "Y": ("Z", -1)},
)
"""(first end A, B's memory, second end C): for each Pauli of the GHZ state, the physical
basis each qubit is measured in and the sign its +1/-1 result takes (B's memory in the frame
SwapToMemory writes and MemoryReadout reads; A and C in the Pauli bases of their link pair's
qubits). Y = iXZ on each."""


def ghz_operation(
    memory: str = "c13",
    shots: int = 1,
    frame_deg: float = 0.0,
    epoch: bool = False,
    attempt_phase_deg: float = 0.0,
) -> Sequence:
    """B's GHZ operation: MemoryGate at 90 degrees (in the memory's frame: `epoch`,
    `frame_deg` and `attempt_phase_deg` as bell_measurement's: in the link's program right
    after the herald, plan.round_sequence's delivery "ghz", the attempts' turn is fed
    forward), the electron's pi/2 about x, its readout sparing the memory (bright: b = +1).
    The memory keeps its half, measured later in a GHZ setting's basis (GHZ_BASES)."""
    ops = (
        MemoryGate(
            memory,
            angle_deg=GHZ_GATE_DEG,
            frame_deg=frame_deg,
            epoch=epoch,
            attempt_phase_deg=attempt_phase_deg,
            named_outcomes=True,
        ),
        pi_half_pulse(GHZ_ELECTRON_PHASE_DEG),
        ReadoutSparingMemory(memory, label="electron"),
    )
    return Sequence(f"ghz_operation_{memory}", ops, shots)


STATE_PREPARATIONS: dict[str, MwPulse | None] = {
    "+Z": None,
    "-Z": pi_pulse(0.0),
    "+X": pi_half_pulse(90.0),
    "-X": pi_half_pulse(270.0),
    "+Y": pi_half_pulse(180.0),
    "-Y": pi_half_pulse(0.0),
}
"""The electron's pulse from |0> (bright, +Z) to each cardinal state (the model's rotation
sense: hil_tests/test_compiler_memory.py's CARDINAL). The names are
controller.network.estimators.CARDINAL_STATES'."""


def prepare_memory_state(state: str, platform: str = "nv", memory: str = "c13") -> Sequence:
    """The cardinal `state` written into the memory (in the frame SwapToMemory sets and
    MemoryReadout reads), on the sequencer's Larmor epoch so that a later program's BSM
    (`epoch`) finds its frame: the charge check, MemoryInit, the electron's preparation,
    SwapToMemory (the electron is left in |0>, free for its link)."""
    if state not in STATE_PREPARATIONS:
        raise ValueError(f"{state!r} is not a cardinal state ({', '.join(STATE_PREPARATIONS)})")
    prep = STATE_PREPARATIONS[state]
    ops: tuple[Operation, ...] = (
        memory_check(platform),
        MemoryInit(memory),
        *((prep,) if prep is not None else ()),
        SwapToMemory(memory, epoch=True),
    )
    return Sequence(f"prepare_memory_{memory}", ops, 1)
