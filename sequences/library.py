"""Named sequences that `qnode run NAME` knows; calibration builds on the same blocks."""

from __future__ import annotations

from collections.abc import Callable

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


LIBRARY: dict[str, Callable[..., Sequence]] = {
    "rabi": rabi,
    "esr": esr,
    "ramsey": ramsey,
    "readout": readout,
}
