"""Simulated Tektronix AWG5014-like generator: waveform list, INT blocks, sequence table."""

from __future__ import annotations

import zlib

import numpy as np

from sim_backends.device import CommandError, Device, boolean, number, quoted

MAX_POINTS = 16_200_000


class SimAwg(Device):
    identity = "TEKTRONIX,AWG5014C,B0{serial},SCPI:99.0 FW:4.6.0.7-sim"

    def __init__(self, name: str, serial: int) -> None:
        self.identity = self.identity.format(serial=serial)
        super().__init__(name)

    def setup(self) -> None:
        self.add("WLISt:WAVeform:NEW", self._new)
        self.add("WLISt:WAVeform:DATA", self._data)
        self.add("WLISt:WAVeform:DATA?", self._data_query)
        self.add("WLISt:WAVeform:DELete", self._delete)
        self.add("WLISt:WAVeform:LENGth?", lambda a: str(len(self._waveform(quoted(a)[0]))))
        self.add("WLISt:SIZE?", lambda a: str(len(self.waveforms)))
        self.add("WLISt:NAME?", self._name)
        self.add("SEQuence:LENGth", self._seq_length)
        self.add("SEQuence:LENGth?", lambda a: str(len(self.sequence)))
        self.add("SEQuence:ELEMent#:WAVeform#", self._seq_element)
        self.add("AWGControl:RMODe", self._run_mode)
        self.add("AWGControl:RMODe?", lambda a: self.run_mode)
        self.add("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._amplitude)
        self.add(
            "SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]?",
            lambda a, ch: f"{self.amplitude_vpp[self._ch(ch)]:.4f}",
        )
        self.add(
            "SOURce#:FREQuency[:CW]",
            lambda a, ch: setattr(self, "sample_rate_hz", number(a, 1e7, 1.2e9)),
        )
        self.add("SOURce#:FREQuency[:CW]?", lambda a, ch: f"{self.sample_rate_hz:.1f}")
        self.add("SOURce#:WAVeform", self._source_waveform)
        self.add("SOURce#:WAVeform?", lambda a, ch: f'"{self.channel_waveform[self._ch(ch)]}"')
        self.add(
            "OUTPut#[:STATe]", lambda a, ch: self.outputs.__setitem__(self._ch(ch), boolean(a))
        )
        self.add("OUTPut#[:STATe]?", lambda a, ch: "1" if self.outputs[self._ch(ch)] else "0")
        self.add("AWGControl:RUN[:IMMediate]", lambda a: setattr(self, "running", True))
        self.add("AWGControl:STOP[:IMMediate]", lambda a: setattr(self, "running", False))
        self.add("AWGControl:RSTate?", lambda a: self._run_state())

    def reset_state(self) -> None:
        self.waveforms: dict[str, np.ndarray] = {}  # name -> uint16 words
        self.crc32: dict[str, int] = {}
        self.sequence: list[dict[int, str]] = []
        self.run_mode = "CONT"
        self.amplitude_vpp = {ch: 1.0 for ch in (1, 2, 3, 4)}
        self.outputs = {ch: False for ch in (1, 2, 3, 4)}
        self.channel_waveform = {ch: "" for ch in (1, 2, 3, 4)}
        self.sample_rate_hz = 1.2e9
        self.running = False

    @staticmethod
    def _ch(ch: int) -> int:
        if ch not in (1, 2, 3, 4):
            raise CommandError(-114, f"Header suffix out of range: {ch}")
        return ch

    def _waveform(self, name: str) -> np.ndarray:
        if name not in self.waveforms:
            raise CommandError(-224, f"Illegal parameter value: no waveform {name!r}")
        return self.waveforms[name]

    def _new(self, args: str) -> None:
        name, rest = quoted(args)
        parts = [p.strip().upper() for p in rest.split(",")]
        if len(parts) != 2 or parts[1] not in ("INT", "INTEGER"):
            raise CommandError(-224, "Illegal parameter value: expected <points>,INT")
        points = int(number(parts[0], 1, MAX_POINTS))
        if name in self.waveforms:
            raise CommandError(-224, f"Illegal parameter value: waveform {name!r} exists")
        self.waveforms[name] = np.full(points, 8191, dtype="<u2")
        self.crc32[name] = zlib.crc32(self.waveforms[name].tobytes())

    def _delete(self, args: str) -> None:
        name, _ = quoted(args)
        self._waveform(name)
        del self.waveforms[name]
        del self.crc32[name]

    def _data(self, args: str, block: bytes | None = None) -> None:
        name, rest = quoted(args)
        words = self._waveform(name)
        if block is None:
            raise CommandError(-109, "Missing parameter: binary block")
        parts = [p for p in (p.strip() for p in rest.split(",")) if p]
        start = int(number(parts[0], 0, len(words))) if parts else 0
        size = int(number(parts[1], 0, len(words))) if len(parts) > 1 else len(block) // 2
        if len(block) != 2 * size or start + size > len(words):
            raise CommandError(
                -224, f"Illegal parameter value: block of {len(block)} bytes for {size} points"
            )
        words[start : start + size] = np.frombuffer(block, dtype="<u2")
        self.crc32[name] = zlib.crc32(words.tobytes())

    def _data_query(self, args: str) -> bytes:
        return self._waveform(quoted(args)[0]).tobytes()

    def _name(self, args: str) -> str:
        index = int(number(args, 0, max(len(self.waveforms) - 1, 0)))
        names = list(self.waveforms)
        if index >= len(names):
            raise CommandError(-222, "Data out of range")
        return f'"{names[index]}"'

    def _seq_length(self, args: str) -> None:
        n = int(number(args, 0, 8000))
        self.sequence = (self.sequence + [{} for _ in range(n)])[:n]

    def _seq_element(self, args: str, element: int, channel: int) -> None:
        if not 1 <= element <= len(self.sequence):
            raise CommandError(
                -222, f"Data out of range: element {element} of {len(self.sequence)}"
            )
        name, _ = quoted(args)
        self._waveform(name)
        self.sequence[element - 1][self._ch(channel)] = name

    def _run_mode(self, args: str) -> None:
        mode = args.strip().upper()
        aliases = {
            "CONT": "CONT",
            "CONTINUOUS": "CONT",
            "TRIG": "TRIG",
            "TRIGGERED": "TRIG",
            "SEQ": "SEQ",
            "SEQUENCE": "SEQ",
        }
        if mode not in aliases:
            raise CommandError(-224, f"Illegal parameter value: {mode}")
        self.run_mode = aliases[mode]

    def _run_state(self) -> str:
        if not self.running:
            return "0"
        return "1" if self.run_mode in ("TRIG", "SEQ") else "2"

    def _amplitude(self, args: str, ch: int) -> None:
        self.amplitude_vpp[self._ch(ch)] = number(args, 0.02, 4.5)

    def _source_waveform(self, args: str, ch: int) -> None:
        name, _ = quoted(args)
        self._waveform(name)
        self.channel_waveform[self._ch(ch)] = name

    # what the physics reads -------------------------------------------------------------------
    def segment(self, index: int, channel: int) -> np.ndarray | None:
        """Normalised samples that sequence element `index` (0-based) plays on `channel`."""
        if not (0 <= index < len(self.sequence)):
            return None
        name = self.sequence[index].get(channel)
        if name is None:
            return None
        words = self.waveforms[name]
        return ((words & 0x3FFF).astype(np.float64) - 8191) / 8191

    def state(self) -> dict:
        return {
            "running": self.running,
            "outputs": {str(k): v for k, v in self.outputs.items()},
            "waveforms": {
                n: {"points": len(w), "crc32": self.crc32[n]} for n, w in self.waveforms.items()
            },
            "sequence": [{str(k): v for k, v in e.items()} for e in self.sequence],
            "amplitude_vpp": {str(k): v for k, v in self.amplitude_vpp.items()},
            "sample_rate_hz": self.sample_rate_hz,
        }
