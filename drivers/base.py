"""What every driver shares: lifecycle, limits, and the health report `instruments check` uses.

As in QMI: no I/O in `__init__`, explicit `open()`/`close()`, a context manager.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

from drivers.transport import (
    Backoff,
    SerialTransport,
    Transport,
    VisaSocketTransport,
    ZmqTransport,
    split_zmq_resource,
)
from qnode.errors import InstrumentConnectionError, LimitError

Range = tuple[float, float]


@dataclass(frozen=True)
class Health:
    """One row of `qnode instruments check`."""

    identity: str
    state: str
    errors: list[str]


class Driver:
    """Base of every instrument driver.

    ROLE names the capability; FAMILY the real instrument whose command set it follows;
    RANGES the instrument's own hardware ranges, which lab limits must lie within.
    """

    ROLE: ClassVar[str]
    FAMILY: ClassVar[str]
    TRANSPORT: ClassVar[Literal["tcp", "serial", "zmq"]]
    RANGES: ClassVar[dict[str, Range]]
    READ_TERMINATION: ClassVar[str] = "\n"
    WRITE_TERMINATION: ClassVar[str] = "\n"
    BAUDRATE: ClassVar[int] = 115200

    def __init__(
        self,
        name: str,
        resource: str,
        limits: Mapping[str, Range],
        timeout_s: float = 2.0,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.name = name
        self.resource = resource
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.limits = check_limits(type(self), dict(limits))
        self._transport: Transport | None = None

    # lifecycle -----------------------------------------------------------------------------
    def _make_transport(self) -> Transport:
        if self.TRANSPORT == "zmq":  # SCPI over ZeroMQ REQ/REP (the resource's first endpoint)
            return ZmqTransport(self.name, split_zmq_resource(self.resource)[0], self.timeout_s)
        if self.TRANSPORT == "tcp":
            return VisaSocketTransport(
                self.name,
                self.resource,
                self.timeout_s,
                read_termination=self.READ_TERMINATION,
                write_termination=self.WRITE_TERMINATION,
                backoff=self.backoff,
            )
        return SerialTransport(
            self.name,
            self.resource,
            self.timeout_s,
            baudrate=self.BAUDRATE,
            read_termination=self.READ_TERMINATION,
            write_termination=self.WRITE_TERMINATION,
            backoff=self.backoff,
        )

    def open(self) -> None:
        if self._transport is not None:
            return
        transport = self._make_transport()
        transport.open()
        self._transport = transport
        try:
            self._on_open()
        except Exception:
            self.close()
            raise

    def _on_open(self) -> None:
        """Hook: bring the instrument into a known protocol state after connecting."""

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise InstrumentConnectionError(self.name, "not open: call open() first")
        return self._transport

    # limits ---------------------------------------------------------------------------------
    def check_limit(self, quantity: str, value: float) -> float:
        """Refuse a value outside the lab limit before anything is written."""
        lo, hi = self.limits[quantity]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
            raise LimitError(self.name, quantity, float(value), (lo, hi))
        return float(value)

    # what every role must offer -----------------------------------------------------------
    def identity(self) -> str:
        raise NotImplementedError

    def safe_state(self) -> None:
        raise NotImplementedError

    def health(self) -> Health:
        raise NotImplementedError


class LimitsError(ValueError):
    """A lab limit that a driver class cannot take: `key` names the limit, `problem` says
    what is wrong with it (the lab-file loader reports both at the limit's key path)."""

    def __init__(self, driver: str, key: str, problem: str) -> None:
        self.driver = driver
        self.key = key
        self.problem = problem
        super().__init__(f"{driver}: limit '{key}': {problem}")


def check_limits(cls: type[Driver], limits: dict[str, Range]) -> dict[str, Range]:
    """Every hardware range needs a lab limit inside it, and every lab limit a hardware range;
    raises LimitsError naming the limit. The one check of instrument limits: the lab-file
    loader calls it too, so a bad file fails when it is loaded."""
    name = cls.__name__
    for key in limits:
        if key not in cls.RANGES:
            known = ", ".join(sorted(cls.RANGES)) or "none"
            raise LimitsError(name, key, f"unknown limit (the driver knows: {known})")
    for key, (lo_hw, hi_hw) in cls.RANGES.items():
        if key not in limits:
            raise LimitsError(
                name, key, f"missing limit (the driver's range is [{lo_hw:g}, {hi_hw:g}])"
            )
        lo, hi = limits[key]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise LimitsError(name, key, f"[{lo:g}, {hi:g}]: both ends must be finite numbers")
        if lo > hi:
            raise LimitsError(name, key, f"[{lo:g}, {hi:g}]: lower end above upper")
        if lo < lo_hw or hi > hi_hw:
            raise LimitsError(
                name,
                key,
                f"[{lo:g}, {hi:g}] lies outside the driver's own range [{lo_hw:g}, {hi_hw:g}]",
            )
        limits[key] = (float(lo), float(hi))
    return limits
