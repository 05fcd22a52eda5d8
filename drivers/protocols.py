"""Capabilities as small Protocols (as Bluesky's protocols.py): code asks for what it uses.

One Protocol per role of a lab file. Each lists what the control code calls on an instrument
of that role (the node runtime, the link layer, the midpoint daemon, calibration's access to
the midpoint), and no more: a method that only tests or benchmarks call on one model stays on
its class. Every driver class of the registry fits the Protocol of its role (the type checker
checks it in drivers/registry.py, a test at run time), so another model of a role fits
wherever the role is asked for.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from drivers.base import Health, Range
from sequences.program import Event, Program


@runtime_checkable
class Instrument(Protocol):
    """What every role offers: a lifecycle without I/O before `open()`, the identity, the safe
    state and the health report of `qnode instruments check`."""

    name: str

    @property
    def is_open(self) -> bool: ...
    def open(self) -> None: ...
    def close(self) -> None: ...
    def identity(self) -> str: ...
    def safe_state(self) -> None: ...
    def health(self) -> Health: ...


@runtime_checkable
class MicrowaveSource(Instrument, Protocol):
    """The carrier the AWG's IQ pulses modulate (role `microwave_source`)."""

    def set_frequency(self, hz: float) -> None: ...
    def set_power(self, dbm: float) -> None: ...
    def set_output(self, on: bool) -> None: ...


@runtime_checkable
class WaveformGenerator(Instrument, Protocol):
    """The AWG (role `awg`): waveforms played as sequence elements, one per segment the
    sequencer triggers."""

    def upload_waveform(self, name: str, samples: np.ndarray) -> None: ...
    def set_sequence(self, elements: list[dict[int, str]]) -> None: ...
    def set_sample_rate(self, hz: float) -> None: ...
    def set_amplitude(self, channel: int, vpp: float) -> None: ...
    def set_output(self, channel: int, on: bool) -> None: ...
    def run(self) -> None: ...
    def stop(self) -> None: ...


@runtime_checkable
class RealTimeSequencer(Instrument, Protocol):
    """The sequencer that times a node's shots (role `sequencer`): a program in the format of
    sequences.program in, events out; software heralds for platforms without a herald line."""

    def load(self, program: Program) -> None: ...
    def run(self) -> None: ...
    def stop(self) -> None: ...
    def state(self) -> str:
        """IDLE, RUNNING, WAITING or HALTED."""
        ...

    def read_events(self) -> list[Event]: ...
    def send_herald(self, outcome: str, port: int = 0) -> None:
        """fail, psi_plus or psi_minus: the outcome of the attempt the sequencer waits on, on
        the herald input of the link's `port` (a node between two midpoints has two)."""
        ...

    def set_watchdog(self, seconds: float) -> None:
        """The host watchdog (0: off): a running program halts with every line safe when
        no `pet_watchdog` comes for this long."""
        ...

    def pet_watchdog(self) -> None: ...
    def watchdog_tripped(self) -> bool:
        """Whether the watchdog halted the last program."""
        ...


@runtime_checkable
class TimeTagger(Instrument, Protocol):
    """A time tagger (role `time_tagger`): per-input counters and time tags, for a node's
    readout and the midpoint's calibration. Tags are structured arrays of
    qnode.records.TAG_DTYPE. The herald logic and the sync output are their own instrument
    (HeraldLogic), as on a real station."""

    def set_enabled(self, channel: int, on: bool) -> None: ...
    def set_integration(self, seconds: float) -> None: ...
    def count(self, channel: int) -> int:
        """The input's counts over its last completed integration period; reads of several
        inputs in a row see the same period."""
        ...

    def counts(self, channels: list[int]) -> dict[int, int]:
        """Several inputs' counts of one period, read together."""
        ...

    def fresh_counts(self, channels: list[int], seconds: float) -> dict[int, int]:
        """Counts over at least `seconds` of light that all arrived after the call."""
        ...

    def acquire_tags(self, seconds: float) -> np.ndarray: ...
    def start_tags(self) -> None: ...
    def stop_tags(self) -> np.ndarray: ...


@runtime_checkable
class HeraldLogic(Instrument, Protocol):
    """The midpoint's herald logic (role `herald_logic`): the CPLD/FPGA behind the detectors
    that drives the shared sync output and records each heralding attempt's clicks
    (qnode.records.CLICK_DTYPE) in its herald windows."""

    def set_sync_auto(self, on: bool) -> None: ...
    def sync_count(self) -> int: ...
    def set_click_mode(self, software: bool) -> None: ...
    def set_herald_windows(self, windows: list[tuple[float, float]]) -> None: ...
    def arm_clicks(self, on: bool) -> None: ...
    def read_clicks(self) -> np.ndarray: ...


@runtime_checkable
class Laser(Instrument, Protocol):
    """A laser behind an optical path's AOM (role `laser`)."""

    def set_power(self, watts: float) -> None: ...
    def set_enabled(self, on: bool) -> None: ...
    def set_constant_power(self) -> None:
        """Run in constant power, the mode set_power steers."""
        ...

    def power(self) -> float: ...
    def measured_power(self) -> float:
        """The power emitted now (rising after the laser turns on)."""
        ...


@runtime_checkable
class PhaseStabiliser(Instrument, Protocol):
    """The piezo driver of the interferometer's fibre stretcher at the midpoint (role
    `phase_stabiliser`): a voltage, nothing more. The lock that holds the phase is qnode's
    (controller/midpoint/phase_lock.py); `limits["voltage_v"]` is the lab's range for it."""

    limits: dict[str, Range]

    def set_voltage(self, volts: float) -> None: ...
    def voltage(self) -> float: ...


CAPABILITIES: dict[str, type[Instrument]] = {
    "microwave_source": MicrowaveSource,
    "awg": WaveformGenerator,
    "sequencer": RealTimeSequencer,
    "time_tagger": TimeTagger,
    "herald_logic": HeraldLogic,
    "laser": Laser,
    "phase_stabiliser": PhaseStabiliser,
}
"""The capability each role of a lab file stands for."""
