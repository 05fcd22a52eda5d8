"""Operations, sequences and sweeps: what an experiment is, before any hardware is involved.

Values are numbers or `Param("name")`, a reference resolved at compile time from the node's
calibrated parameters or from the sweep point. Durations are in ns, amplitudes in V (AWG peak
output), phases in degrees, frequencies in Hz.

Everything here converts to and from plain data (`to_data` / `from_data`) so a sequence can
travel to the node daemon as msgpack; nothing is pickled.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from qnode.errors import QnodeError


@dataclass(frozen=True)
class Param:
    """A value the compiler looks up: a node parameter or a sweep axis."""

    name: str


Value = float | int | Param


@dataclass(frozen=True)
class Operation:
    """Base of every operation (each a frozen dataclass); `KIND` is its name in data form."""

    KIND: ClassVar[str]


@dataclass(frozen=True)
class Wait(Operation):
    KIND = "wait"
    duration_ns: Value


@dataclass(frozen=True)
class LaserPulse(Operation):
    """Light on the memory through one optical path (its AOM's TTL line)."""

    KIND = "laser"
    path: str
    duration_ns: Value


@dataclass(frozen=True)
class SpinInit(Operation):
    """Optical pumping into |0> (NV: A1 spin pump; ion: optical pumping)."""

    KIND = "spin_init"
    duration_ns: Value = Param("spin_pump_duration_ns")


@dataclass(frozen=True)
class MwPulse(Operation):
    """An IQ pulse from the AWG through the microwave chain."""

    KIND = "mw"
    amplitude_v: Value
    duration_ns: Value
    phase_deg: Value = 0.0
    shape: str = "square"


def pi_pulse(phase_deg: Value = 0.0) -> MwPulse:
    return MwPulse(Param("pi_amplitude_v"), Param("pi_duration_ns"), phase_deg)


def pi_half_pulse(phase_deg: Value = 0.0) -> MwPulse:
    return MwPulse(Param("pi2_amplitude_v"), Param("pi_duration_ns"), phase_deg)


@dataclass(frozen=True)
class CountWindow(Operation):
    """Count photons on a counter input for a window, with one light path on (or none)."""

    KIND = "count"
    duration_ns: Value
    path: str | None = "readout"
    counter: str = "readout"
    label: str = "counts"


@dataclass(frozen=True)
class Readout(CountWindow):
    """Single-shot readout: the readout light and its counter for the readout window."""

    KIND = "readout"
    duration_ns: Value = Param("readout_duration_ns")
    path: str | None = "readout"
    counter: str = "readout"
    label: str = "readout"


@dataclass(frozen=True)
class CRCheck(Operation):
    """NV charge-resonance check: count under pump + readout light; below threshold, repump
    (green) and try again, at most `max_tries` times. A shot whose check never passed is
    flagged and left out of the results."""

    KIND = "cr_check"
    threshold: Value = Param("cr_threshold")
    window_ns: Value = Param("cr_window_ns")
    repump_ns: Value = Param("repump_duration_ns")
    max_tries: int = 100


@dataclass(frozen=True)
class CoolingCheck(CRCheck):
    """The ion's cooling check: the same block, with Doppler cooling as the repump."""

    KIND = "cooling_check"


def memory_check(platform: str) -> CRCheck:
    """The check block that opens a shot on this platform: the ion's cooling check, the NV's
    charge-resonance check (a CoolingCheck is a CRCheck)."""
    return CoolingCheck() if platform == "ion" else CRCheck()


@dataclass(frozen=True)
class Decoupling(Operation):
    """XY-n dynamical decoupling: n pi pulses spaced by tau, in XY-8 blocks (XYXYYXYX) when n
    is a multiple of 8, else X, Y, X, Y, ..."""

    KIND = "xy"
    n: int
    tau_ns: Value


@dataclass(frozen=True)
class WaitSync(Operation):
    """Wait for the midpoint's shared sync (so both nodes' attempt loops start together)."""

    KIND = "wait_sync"
    timeout_ns: Value = 1_000_000_000
    port: int = 0
    """The sync input of the link to wait on (a node between two midpoints has one per link:
    the lab file's channels.links)."""


PROTOCOLS = ("single_click", "barrett_kok", "two_photon")
"""The heralding protocols an entanglement attempt runs."""


@dataclass(frozen=True)
class EntanglementAttempt(Operation):
    """The attempt loop, timed by the sequencer until the herald input fires.

    single_click: spin init, an alpha rotation (`alpha_amplitude_v` for the pi-pulse length),
    the optical pi pulse, then the herald window. barrett_kok: two rounds, pi/2 first and a
    pi pulse between them; both rounds must herald. two_photon (trapped ions): spin init
    (optical pumping), the excitation pulse from the pumped state, then the herald window;
    no rotation (the emitted photon's polarisation is the ion's qubit; the midpoint heralds
    on two photons). At most `max_attempts` attempts; the herald outcome and the number of
    attempts are reported as events.
    """

    KIND = "attempt"
    protocol: str = "single_click"  # one of PROTOCOLS
    alpha_amplitude_v: Value = Param("alpha_amplitude_v")
    excitation_ns: Value = Param("excitation_duration_ns")
    window_ns: Value = Param("herald_window_ns")
    max_attempts: int = 100_000
    port: int = 0
    """The link's sync/herald input pair (channels.links); on a node with a fibre switch the
    compiler also points the switch at this link's midpoint."""
    echo: bool = False
    """The electron's echo pi pulse after the last optical pi pulse, without the padding: a
    node whose peer protects a stored pair (the heralded state stays psi+/psi- only if both
    electrons echo)."""
    protect_memory: bool = False
    """A pair is stored in this node's memory: after the last optical pi pulse of an attempt
    (Barrett-Kok: the second; its pi pulse between the rounds echoes the first) an electron pi
    pulse (the echo: the spin pump then resets only the formerly bright part, so a stored 13C
    dephases per attempt in proportion to alpha; Kalb et al. PRA 2018, Pompili et al. 2021),
    and the attempt's period padded to a whole number of the memories' Larmor periods (the
    stored state's frame is kept whatever the number of attempts). The echo flips this
    electron (X): the heralded psi+/psi- become phi+/phi- unless the peer echoes too (X on
    both: psi+ stays, psi- only changes sign)."""
    last_shot_on_herald: bool = False
    """A heralded attempt makes its shot the program's last (the shot's other operations and
    its end still run): a round that wants one pair and re-initialises a waiting memory every
    `max_attempts` attempts runs many shots in one program instead of a program per shot.
    Both nodes of a link stop at the same shot, since both see the same herald."""


@dataclass(frozen=True)
class Repeat(Operation):
    """Pulses and waits repeated `count` times inside one shot, timed by the sequencer (an
    excitation train, a detection-window histogram). No readouts or checks inside."""

    KIND = "repeat"
    operations: tuple[Operation, ...]
    count: int


@dataclass(frozen=True)
class Parallel(Operation):
    """Operations that start together (e.g. pump and readout light for a CR check)."""

    KIND = "parallel"
    operations: tuple[Operation, ...]


OPERATIONS: dict[str, type[Operation]] = {
    cls.KIND: cls
    for cls in (
        Wait,
        LaserPulse,
        SpinInit,
        MwPulse,
        CountWindow,
        Readout,
        CRCheck,
        CoolingCheck,
        Decoupling,
        EntanglementAttempt,
        WaitSync,
        Repeat,
        Parallel,
    )
}


@dataclass(frozen=True)
class Sequence:
    name: str
    operations: tuple[Operation, ...]
    shots: int = 100


@dataclass(frozen=True)
class SweepAxis:
    name: str
    values: tuple[float, ...]
    unit: str = ""

    @classmethod
    def linspace(cls, name: str, start: float, stop: float, n: int, unit: str = "") -> SweepAxis:
        if n < 1:
            raise ValueError(f"sweep {name}: need at least one point, got {n}")
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise ValueError(f"sweep {name}: start and stop must be finite, got {start}, {stop}")
        return cls(name, tuple(float(v) for v in np.linspace(start, stop, n)), unit)


@dataclass(frozen=True)
class Sweep:
    """A grid over one or more axes; points run in row-major order (last axis fastest)."""

    axes: tuple[SweepAxis, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes) or (1,)

    @property
    def size(self) -> int:
        """The number of points, without making them (a bound is checked against this)."""
        return math.prod(self.shape)

    def points(self) -> list[dict[str, float]]:
        if not self.axes:
            return [{}]
        names = [a.name for a in self.axes]
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(a.values for a in self.axes))
        ]


# ---- plain data (msgpack-able) ---------------------------------------------------------------


class SequenceDataError(QnodeError):
    """A sequence in data form is malformed; the message names where."""


def _value_to_data(v: Any) -> Any:
    if isinstance(v, Param):
        return {"param": v.name}
    if isinstance(v, Operation):
        return operation_to_data(v)
    if isinstance(v, tuple):
        return [_value_to_data(x) for x in v]
    return v


def operation_to_data(op: Operation) -> dict:
    data = {"op": op.KIND}
    for f in fields(op):
        data[f.name] = _value_to_data(getattr(op, f.name))
    return data


def to_data(sequence: Sequence, sweep: Sweep | None = None) -> dict:
    data = {
        "name": sequence.name,
        "shots": sequence.shots,
        "operations": [operation_to_data(op) for op in sequence.operations],
    }
    if sweep is not None:
        data["sweep"] = [
            {"name": a.name, "values": list(a.values), "unit": a.unit} for a in sweep.axes
        ]
    return data


def _value_from_data(v: Any, where: str) -> Any:
    if isinstance(v, dict) and set(v) == {"param"}:
        if not isinstance(v["param"], str):
            raise SequenceDataError(f"{where}: parameter name must be a string")
        return Param(v["param"])
    if isinstance(v, dict):
        return operation_from_data(v, where)
    if isinstance(v, list):
        return tuple(_value_from_data(x, f"{where}[{i}]") for i, x in enumerate(v))
    if isinstance(v, bool) or not isinstance(v, (int, float, str, type(None))):
        raise SequenceDataError(f"{where}: unexpected value {v!r}")
    return v


def operation_from_data(data: Any, where: str = "operation") -> Operation:
    if not isinstance(data, dict) or not isinstance(data.get("op"), str):
        raise SequenceDataError(f"{where}: an operation is a map with an 'op' name")
    cls = OPERATIONS.get(data["op"])
    if cls is None:
        raise SequenceDataError(
            f"{where}: unknown operation {data['op']!r} (known: {', '.join(OPERATIONS)})"
        )
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known - {"op"}
    if unknown:
        raise SequenceDataError(
            f"{where} ({cls.KIND}): unknown field(s) {', '.join(sorted(unknown))}"
        )
    flags = {f.name for f in fields(cls) if isinstance(f.default, bool)}
    kwargs = {
        k: v if k in flags and isinstance(v, bool) else _value_from_data(v, f"{where}.{k}")
        for k, v in data.items()
        if k != "op"
    }  # a flag (EntanglementAttempt's echo) is a bool; anywhere else a bool is refused
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise SequenceDataError(f"{where} ({cls.KIND}): {e}") from None


def from_data(data: Any) -> tuple[Sequence, Sweep]:
    if not isinstance(data, dict):
        raise SequenceDataError("a sequence is a map with name, shots, operations")
    name, shots, ops = data.get("name"), data.get("shots", 100), data.get("operations")
    if not isinstance(name, str) or not name:
        raise SequenceDataError("sequence: 'name' must be a non-empty string")
    if not isinstance(shots, int) or isinstance(shots, bool) or not 1 <= shots <= 10_000_000:
        raise SequenceDataError(
            f"sequence {name}: 'shots' must be an integer in 1..1e7, got {shots!r}"
        )
    if not isinstance(ops, list) or not ops:
        raise SequenceDataError(f"sequence {name}: 'operations' must be a non-empty list")
    operations = tuple(operation_from_data(op, f"operation {i}") for i, op in enumerate(ops))
    axes = []
    for i, axis in enumerate(data.get("sweep") or []):
        if not isinstance(axis, dict) or not isinstance(axis.get("name"), str):
            raise SequenceDataError(f"sweep axis {i}: a map with 'name' and 'values'")
        values = axis.get("values")
        if (
            not isinstance(values, list)
            or not values
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            )
        ):
            raise SequenceDataError(
                f"sweep axis {axis['name']}: 'values' must be a non-empty list of numbers, "
                "all finite"
            )
        axes.append(
            SweepAxis(axis["name"], tuple(float(v) for v in values), str(axis.get("unit", "")))
        )
    return Sequence(name, operations, shots), Sweep(tuple(axes))


# The memory qubits' operations (sequences/memory.py) add themselves to OPERATIONS on import.
import sequences.memory  # noqa: E402, F401
