"""Named sequences that `qnode run NAME` knows; calibration builds on the same blocks."""

from __future__ import annotations

from collections.abc import Callable

from sequences.memory import MemoryGate, MemoryReadout, ReadoutSparingMemory
from sequences.operations import (
    MwPulse,
    Param,
    Readout,
    Sequence,
    SpinInit,
    Wait,
    memory_check,
    pi_half_pulse,
    pi_pulse,
)


def rabi(platform: str = "nv", shots: int = 200) -> Sequence:
    """Sweep `duration_ns` (and/or `rabi_amplitude_v`): an oscillation at the Rabi frequency."""
    pulse = MwPulse(Param("rabi_amplitude_v"), Param("duration_ns"))
    return Sequence("rabi", (memory_check(platform), SpinInit(), pulse, Readout()), shots)


def esr(platform: str = "nv", shots: int = 200) -> Sequence:
    """Pulsed ODMR: sweep `mw_frequency_hz`; a dip at the resonance."""
    pulse = MwPulse(Param("rabi_amplitude_v"), Param("esr_pulse_ns"))
    return Sequence("esr", (memory_check(platform), SpinInit(), pulse, Readout()), shots)


def ramsey(platform: str = "nv", shots: int = 200) -> Sequence:
    """Sweep `free_time_ns`: fringes at the detuning, decaying with T2*. The ramsey
    calibration routine runs this sequence too."""
    ops = (
        memory_check(platform),
        SpinInit(),
        pi_half_pulse(),
        Wait(Param("free_time_ns")),
        pi_half_pulse(),
        Readout(),
    )
    return Sequence("ramsey", ops, shots)


def readout(platform: str = "nv", shots: int = 1000) -> Sequence:
    """Two readouts per shot: after initialisation (bright) and after a pi pulse (dark)."""
    ops = (
        memory_check(platform),
        SpinInit(),
        Readout(label="bright"),
        SpinInit(),
        pi_pulse(),
        Readout(label="dark"),
    )
    return Sequence("readout", ops, shots)


BELL_TABLE: dict[tuple[int, int], str] = {
    (+1, -1): "phi_minus",
    (-1, -1): "phi_plus",
    (+1, +1): "psi_minus",
    (-1, +1): "psi_plus",
}
"""bell_measurement's outcome (electron bit, memory bit; +1 bright) -> the Bell state of
(electron, memory) it projected onto, in the frame SwapToMemory writes (a stored electron's
+x stays +x, as MemoryReadout reads it back): so a swap's BSM names the Bell state of its two
electron halves, one of them stored. The memory bit is minus the ZZ parity (-1: phi), the
electron bit minus the phase (+1: minus). That frame is half a turn about z from the
nucleus's own axes at the gate's start, where a derivation of the gate alone would write
the states (and read every phase inverted: hil_tests/test_memory_delivery.py checks both on
the papers' Hamiltonian, with product states written by SwapToMemory); on the simulator,
hil_tests/test_bsm_round.py checks the swapped pair's true state after the frame."""


def bell_measurement(
    memory: str = "c13",
    shots: int = 1,
    frame_deg: float = 0.0,
    epoch: bool = False,
    attempt_phase_deg: float = 0.0,
) -> Sequence:
    """The Bell-state measurement of the electron and a memory qubit (Pompili et al. 2021,
    their swap's structure; the angles are ours): the DD gate exp(+i pi/4 Z_e X_n) (MemoryGate
    at 270 degrees) is a CNOT (electron control) up to Rz_e(pi/2) and Rx_n(pi/2), which the
    readouts' bases absorb: the electron then reads in Y (pi/2 about x) and the memory in Y,
    so the memory's readout is the ZZ parity (its sign: BELL_TABLE) and the electron's the
    phase (BELL_TABLE;
    replayed on the papers' Hamiltonian in hil_tests/test_bsm.py). No charge check first:
    its light would destroy the electron's half. The electron's readout spares the memory
    (ReadoutSparingMemory: a pi pulse after a dark outcome instead of the spin pump, held
    so both branches leave the memory alike), whose Y coherence carries the parity. The
    parity survives an unknown time since the memory was written (Z_e Z_n commutes with its
    precession); the phase bit needs the memory's frame: in the program that wrote it, or
    `frame_deg`, a known rotation of the stored state to undo (the phase per attempt).
    `epoch`: the memory was written on the sequencer's Larmor epoch in an earlier program;
    its gate starts ALIGNed (an unechoed wait of up to a Larmor period: the electron's half,
    if in a superposition, picks up a conditional phase there; the parity does not).
    `attempt_phase_deg`: the stored state's turn per attempt of the program's attempt loop,
    fed forward in real time (MemoryGate's): a BSM right after its link's herald, in the
    same program (plan.round_sequence, delivery "bsm"), undoes the turn of the attempts that
    only the herald counts; `frame_deg` adds the attempts known before the program."""
    ops = (
        MemoryGate(
            memory,
            angle_deg=270.0,
            frame_deg=frame_deg,
            epoch=epoch,
            attempt_phase_deg=attempt_phase_deg,
            named_outcomes=True,
        ),
        pi_half_pulse(0.0),
        ReadoutSparingMemory(memory, label="electron"),
        MemoryReadout(memory, basis="y", label="memory"),
    )
    return Sequence(f"bell_measurement_{memory}", ops, shots)


LIBRARY: dict[str, Callable[..., Sequence]] = {
    "rabi": rabi,
    "esr": esr,
    "ramsey": ramsey,
    "readout": readout,
}
