"""Simulated piezo fibre-stretcher driver with a phase-lock loop (MDT694B-like serial).

The interferometer phase drifts as a random walk in wall time; with the lock on, the loop holds
it at the set point up to a residual: an Ornstein-Uhlenbeck process in wall time (the loop's
bandwidth sets its correlation time) whose spread is the lock's phase noise, a hidden truth
of the midpoint (`phase_noise_deg`). The midpoint's photons see the same phase as the
reference light: a wrong set point rotates the heralded state.
"""

from __future__ import annotations

import time

import numpy as np

from sim_backends.device import CommandError, Device, number
from sim_backends.framing import Message

MAX_VOLTAGE = 150.0
DEG_PER_VOLT = 12.0
LOCK_CORRELATION_S = 0.005
"""Correlation time of the locked residual (a loop bandwidth of about 30 Hz)."""


class SimPhaseStabiliser(Device):
    terminator = b"\r"
    reply_terminator = b">"
    allow_blocks = False
    scpi_headers = False

    def __init__(
        self, name: str, rng: np.random.Generator, drift_deg_per_sqrt_s: float, serial: int
    ) -> None:
        self.rng = rng
        self.drift = drift_deg_per_sqrt_s
        self.serial = serial
        self.residual_sigma_deg = 2.0
        """The lock's phase noise; the lab sets it from the midpoint's truth."""
        super().__init__(name)

    def setup(self) -> None:
        self._commands.clear()
        self.add("id?", lambda a: f"MDT694B Piezo Control Module SN{self.serial} FW1.09-sim\r")
        self.add("xvoltage=", lambda a: self._set_voltage(a))
        self.add("xvoltage?", lambda a: f"[{self.voltage:7.2f}]\r")
        self.add("lock=", lambda a: self._set_lock(a))
        self.add("lock?", lambda a: f"[{1 if self.lock else 0}]\r")
        self.add("setpoint=", lambda a: self._set(setattr(self, "setpoint", number(a, -360, 360))))
        self.add("setpoint?", lambda a: f"[{self.setpoint:8.3f}]\r")
        self.add("error?", lambda a: f"[{self.phase_error():8.3f}]\r")
        self.add("ref=", lambda a: self._set_reference(a))
        self.add("ref?", lambda a: f"[{1 if self.reference else 0}]\r")

    @staticmethod
    def _set(_=None) -> str:
        return ""

    def _set_voltage(self, args: str) -> str:
        self.voltage = number(args, 0.0, MAX_VOLTAGE)
        return ""

    def _set_lock(self, args: str) -> str:
        value = args.strip()
        if value not in ("0", "1"):
            raise CommandError(-224, "lock takes 0 or 1")
        self.lock = value == "1"
        return ""

    def execute(self, message: Message):
        # MDT commands are `name=value` with no space: split at '=' so the table can match.
        text = message.text
        if "=" in text:
            head, _, value = text.partition("=")
            message = Message(f"{head}= {value}", message.block)
        return super().execute(message)

    def _set_reference(self, args: str) -> str:
        value = args.strip()
        if value not in ("0", "1"):
            raise CommandError(-224, "ref takes 0 or 1")
        self.reference = value == "1"
        return ""

    def reset_state(self) -> None:
        self.voltage = 0.0
        self.reference = False
        self.lock = False
        self.setpoint = 0.0
        self._phase = float(self.rng.uniform(-180, 180))
        self._residual = 0.0
        self._last = time.monotonic()

    def phase(self) -> float:
        """Interferometer phase in degrees (wrapped), drifting and corrected by the lock."""
        now = time.monotonic()
        dt, self._last = now - self._last, now
        dt = max(dt, 0.0)
        self._phase += float(self.rng.normal(0.0, self.drift * np.sqrt(dt)))
        if self.lock:  # the loop cancels the drift, up to its residual
            keep = np.exp(-dt / LOCK_CORRELATION_S)
            self._residual = keep * self._residual + float(
                self.rng.normal(0.0, self.residual_sigma_deg * np.sqrt(1 - keep**2))
            )
            self._phase = self.setpoint - DEG_PER_VOLT * self.voltage + self._residual
        return (self._phase + DEG_PER_VOLT * self.voltage + 180) % 360 - 180

    def phase_path(self, seconds: float, points: int = 64) -> np.ndarray:
        """The phase (degrees) at `points` times over the next `seconds` (a count that long):
        the locked residual's OU path, or the free random walk. The state moves on with it."""
        now = self.phase()
        if seconds <= 0 or points < 2:
            return np.array([now])
        dt = seconds / (points - 1)
        steps = self.rng.normal(0.0, 1.0, points - 1)
        if not self.lock:
            walk = np.concatenate(([0.0], np.cumsum(self.drift * np.sqrt(dt) * steps)))
            self._phase += float(walk[-1])
            return now + walk
        keep = float(np.exp(-dt / LOCK_CORRELATION_S))
        noise = self.residual_sigma_deg * np.sqrt(1 - keep**2) * steps
        path = np.empty(points)
        path[0] = self._residual
        for k in range(1, points):
            path[k] = keep * path[k - 1] + noise[k - 1]
        self._residual = float(path[-1])
        return now - (path[0] - path)

    def phase_error(self) -> float:
        return (self.phase() - self.setpoint + 180) % 360 - 180

    def unknown_command(self, message: Message) -> str:
        return "CMD_NOT_DEFINED\r"

    def error_reply(self, error: CommandError) -> str:
        return "CMD_ARG_INVALID\r"

    def state(self) -> dict:
        return {
            "voltage_v": self.voltage,
            "lock": self.lock,
            "setpoint_deg": self.setpoint,
            "reference": self.reference,
        }
