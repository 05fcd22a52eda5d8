"""Simulated Tektronix AWG5014C, following the AWG5000 series programmer manual's command set
for what a lab uses: the waveform list (INT and REAL formats, partial read and write), the
sequence table (waveforms, loop counts, trigger wait, GOTO, event jumps), channel and marker
levels, trigger and event inputs, the clock, run control.

Written from the manual's command descriptions (see docs/instruments.md for the sources
followed where the manual itself was not at hand), not from qnode's driver.

Formats of WLISt:WAVeform:DATA:
- INT: one little-endian uint16 per point; bits 0-13 the DAC code (0..16382, 8191 = 0 V),
  bit 14 marker 1, bit 15 marker 2;
- REAL: five bytes per point; a little-endian IEEE float32 in [-1, 1], then one byte of
  markers (bit 6 marker 1, bit 7 marker 2).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

import numpy as np

from sim_backends.device import (
    CommandError,
    Device,
    boolean,
    choice,
    no_arguments,
    number,
    parameters,
    quoted,
    string,
)

MAX_POINTS = 16_200_000
MAX_SEQUENCE_LENGTH = 8000
MAX_LOOP_COUNT = 65536
CHANNELS = (1, 2, 3, 4)
DAC_MID = 8191
INFINITY = 9.9e37  # SCPI's "INFinity" as numbers report it
REAL_POINT = np.dtype([("value", "<f4"), ("markers", "u1")])
INT_POINT = np.dtype("<u2")

# character arguments as the manual spells them; a query answers the short form
RUN_MODES = ["CONTinuous", "TRIGgered", "GATed", "SEQuence", "ENHanced"]
SLOPES = ["POSitive", "NEGative"]
SOURCES = ["INTernal", "EXTernal"]
JUMP_TIMINGS = ["SYNChronous", "ASYNChronous"]
JUMP_TYPES = ["INDex", "NEXT", "OFF"]
WAVEFORM_TYPES = ["INTeger", "REAL"]
FILTERS_HZ = (20e6, 100e6, INFINITY)


def spelled_out(spec: str) -> list[str]:
    """Every header a spec with optional `[:NODE]` parts stands for, longest first."""
    m = re.search(r"\[([^\]]+)\]", spec)
    if not m:
        return [spec]
    with_node = spec[: m.start()] + m.group(1) + spec[m.end() :]
    without = spec[: m.start()] + spec[m.end() :]
    return spelled_out(with_node) + spelled_out(without)


def quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def integer(args: str, low: int, high: int) -> int:
    """An <NR1> argument (a decimal that is a whole number is taken, as SCPI rounds)."""
    value = number(args, low, high)
    return round(value)


def nr3(value: float) -> str:
    return format(value, ".10g").upper()


class Waveform:
    """One user waveform of the list: its points in the format it was made in."""

    def __init__(self, kind: str, points: int) -> None:
        self.kind = kind  # "INT" or "REAL"
        if kind == "INT":
            self.data = np.full(points, DAC_MID, dtype=INT_POINT)
        else:
            self.data = np.zeros(points, dtype=REAL_POINT)

    @property
    def point_bytes(self) -> int:
        return self.data.dtype.itemsize

    def normalised(self) -> np.ndarray:
        """Samples in [-1, 1] as the DAC plays them."""
        if self.kind == "INT":
            return ((self.data & 0x3FFF).astype(np.float64) - DAC_MID) / DAC_MID
        return np.clip(self.data["value"].astype(np.float64), -1.0, 1.0)

    def crc32(self) -> int:
        return zlib.crc32(self.data.tobytes())


class SequenceElement:
    def __init__(self) -> None:
        self.waveforms: dict[int, str] = {}
        self.loop_count = 1
        self.loop_infinite = False
        self.trigger_wait = False
        self.goto_state = False
        self.goto_index = 1
        self.jump_type = "OFF"
        self.jump_index = 1


class SimAwg(Device):
    identity = "TEKTRONIX,AWG5014C,B0{serial},SCPI:99.0 FW:4.6.0.7"

    def __init__(self, name: str, serial: int) -> None:
        self.identity = self.identity.format(serial=serial)
        super().__init__(name)

    def setup(self) -> None:
        add = self.add
        # waveform list
        add("WLISt:WAVeform:NEW", self._new)
        add("WLISt:WAVeform:DATA", self._write_data)
        add("WLISt:WAVeform:DATA?", self._read_data)
        add("WLISt:WAVeform:DELete", self._delete)
        add("WLISt:WAVeform:LENGth?", lambda a: str(len(self._waveform(a).data)))
        add("WLISt:WAVeform:TYPE?", lambda a: self._waveform(a).kind)
        add("WLISt:WAVeform:PREDefined?", self._predefined)
        add("WLISt:SIZE?", lambda a: no_arguments(a) or str(len(self.waveforms)))
        add("WLISt:NAME?", self._name)
        # sequence
        add("SEQuence:LENGth", self._set_sequence_length)
        add("SEQuence:LENGth?", lambda a: no_arguments(a) or str(len(self.sequence)))
        add("SEQuence:ELEMent#:WAVeform#", self._set_element_waveform)
        add("SEQuence:ELEMent#:WAVeform#?", self._element_waveform)
        self._element_setting(
            "LOOP:COUNt", "loop_count", lambda a, e: integer(a, 1, MAX_LOOP_COUNT), str
        )
        self._element_setting("LOOP:INFinite", "loop_infinite", self._bool, self._bool_reply)
        self._element_setting("TWAit", "trigger_wait", self._bool, self._bool_reply)
        self._element_setting("GOTO:STATe", "goto_state", self._bool, self._bool_reply)
        self._element_setting("GOTO:INDex", "goto_index", self._element_index, str)
        self._element_setting(
            "JTARget:TYPE", "jump_type", lambda a, e: choice(a, JUMP_TYPES), lambda v: v
        )
        self._element_setting("JTARget:INDex", "jump_index", self._element_index, str)
        add("SEQuence:JUMP[:IMMediate]", self._jump)
        add(
            "AWGControl:SEQuencer:POSition?",
            lambda a: no_arguments(a) or str(self.sequence_position),
        )
        add("AWGControl:SEQuencer:TYPE?", lambda a: no_arguments(a) or "HARD")
        # the spelling QCoDeS's TektronixAWG5014.get_sq_mode sends (see docs/instruments.md)
        add("AWGControl:SEQuence:TYPE?", lambda a: no_arguments(a) or "HARD")
        # run control
        add("AWGControl:RMODe", lambda a: setattr(self, "run_mode", self._run_mode(a)))
        add("AWGControl:RMODe?", lambda a: no_arguments(a) or self.run_mode)
        add("AWGControl:RUN[:IMMediate]", lambda a: no_arguments(a) or self._run())
        add("AWGControl:STOP[:IMMediate]", lambda a: no_arguments(a) or self._stop())
        add("AWGControl:RSTate?", lambda a: no_arguments(a) or str(self._run_state()))
        add("*TRG", lambda a: no_arguments(a) or self._force_trigger())
        add("TRIGger[:SEQuence][:IMMediate]", lambda a: no_arguments(a) or self._force_trigger())
        add("EVENt[:IMMediate]", lambda a: no_arguments(a))
        # clock
        self._setting("SOURce#:FREQuency[:CW]", "sample_rate_hz", self._sample_rate)
        self._setting("SOURce#:FREQuency:FIXed", "sample_rate_hz", self._sample_rate)
        self._setting("AWGControl:CLOCk:SOURce", "clock_source", lambda a: choice(a, SOURCES))
        self._setting("SOURce#:ROSCillator:SOURce", "reference_source", self._source)
        # trigger and event inputs
        self._setting("TRIGger[:SEQuence]:IMPedance", "trigger_impedance_ohm", self._impedance)
        self._setting("TRIGger[:SEQuence]:LEVel", "trigger_level_v", self._input_level)
        self._setting("TRIGger[:SEQuence]:SLOPe", "trigger_slope", lambda a: choice(a, SLOPES))
        self._setting("TRIGger[:SEQuence]:POLarity", "trigger_polarity", self._slope)
        self._setting("TRIGger[:SEQuence]:SOURce", "trigger_source", self._source)
        self._setting("TRIGger[:SEQuence]:TIMer", "trigger_interval_s", self._interval)
        self._setting("EVENt:IMPedance", "event_impedance_ohm", self._impedance)
        self._setting("EVENt:LEVel", "event_level_v", self._input_level)
        self._setting("EVENt:POLarity", "event_polarity", self._slope)
        self._setting("EVENt:JTIMing", "event_jump_timing", lambda a: choice(a, JUMP_TIMINGS))
        # DC outputs: one state for all four, a level each
        self._setting("AWGControl:DC#[:STATe]", "dc_state", lambda a: boolean(a))
        # channels
        volt = "SOURce#:VOLTage[:LEVel][:IMMediate]"
        self._channel_setting(f"{volt}[:AMPLitude]", "amplitude_vpp", self._amplitude)
        self._channel_setting(f"{volt}:OFFSet", "offset_v", self._offset)
        self._channel_setting("OUTPut#[:STATe]", "outputs", lambda a: boolean(a))
        self._channel_setting("OUTPut#:FILTer[:LPASs]:FREQuency", "filter_hz", self._filter)
        self._channel_setting("AWGControl:DOUTput#[:STATe]", "direct_output", boolean)
        self._channel_setting(
            "AWGControl:DC#:VOLTage[:LEVel][:IMMediate]:OFFSet", "dc_level_v", self._dc_level
        )
        add("SOURce#:COMBine:FEED", self._set_add_input)
        add("SOURce#:COMBine:FEED?", lambda a, ch: self._quoted_reply(a, self.add_input, ch))
        add("SOURce#:WAVeform", self._set_channel_waveform)
        add("SOURce#:WAVeform?", lambda a, ch: self._quoted_reply(a, self.channel_waveform, ch))
        # markers: two per channel
        marker = "SOURce#:MARKer#"
        self._marker_setting(f"{marker}:DELay", "marker_delay_s", self._marker_delay)
        self._marker_setting(
            f"{marker}:VOLTage[:LEVel][:IMMediate]:HIGH", "marker_high_v", self._marker_high
        )
        self._marker_setting(
            f"{marker}:VOLTage[:LEVel][:IMMediate]:LOW", "marker_low_v", self._marker_low
        )

    def reset_state(self) -> None:
        """*RST: the factory default setup (docs/instruments.md lists the values)."""
        self.waveforms: dict[str, Waveform] = {}
        self.sequence: list[SequenceElement] = []
        self.sequence_position = 1
        self.run_mode = "CONT"
        self.running = False
        self.sample_rate_hz = 1.2e9
        self.clock_source = "INT"
        self.reference_source = "INT"
        self.trigger_impedance_ohm = 1000.0
        self.trigger_level_v = 1.4
        self.trigger_slope = "POS"
        self.trigger_polarity = "POS"
        self.trigger_source = "EXT"
        self.trigger_interval_s = 1e-3
        self.event_impedance_ohm = 1000.0
        self.event_level_v = 1.4
        self.event_polarity = "POS"
        self.event_jump_timing = "ASYNC"
        self.dc_state = False
        self.amplitude_vpp = {ch: 1.0 for ch in CHANNELS}
        self.offset_v = {ch: 0.0 for ch in CHANNELS}
        self.outputs = {ch: False for ch in CHANNELS}
        self.filter_hz = {ch: INFINITY for ch in CHANNELS}
        self.direct_output = {ch: False for ch in CHANNELS}
        self.dc_level_v = {ch: 0.0 for ch in CHANNELS}
        self.add_input = {ch: "" for ch in CHANNELS}
        self.channel_waveform = {ch: "" for ch in CHANNELS}
        self.marker_delay_s = {(ch, m): 0.0 for ch in CHANNELS for m in (1, 2)}
        self.marker_high_v = {(ch, m): 1.0 for ch in CHANNELS for m in (1, 2)}
        self.marker_low_v = {(ch, m): 0.0 for ch in CHANNELS for m in (1, 2)}
        self.forced_triggers = 0

    # registration helpers ---------------------------------------------------------------------
    def add(self, spec: str, handler: Callable[..., str | bytes | None]) -> None:
        """Each optional node spelled out: `TRIGger[:SEQuence]:LEVel` is both
        `TRIGger:SEQuence:LEVel` and `TRIGger:LEVel`."""
        for variant in spelled_out(spec):
            super().add(variant, handler)

    def _setting(self, header: str, attribute: str, parse: Callable[[str], object]) -> None:
        """A setting with its query; a number reads back as NR3, a keyword as its short form,
        a boolean as 0/1."""
        self.add(header, lambda a, *s: setattr(self, attribute, parse(a)))
        self.add(
            header + "?", lambda a, *s: no_arguments(a) or self._reply(getattr(self, attribute))
        )

    def _channel_setting(self, header: str, attribute: str, parse: Callable[[str], object]) -> None:
        def write(args: str, ch: int) -> None:
            table = getattr(self, attribute)
            table[self._ch(ch)] = parse(args)

        self.add(header, write)

        def read(args: str, ch: int) -> str:
            no_arguments(args)
            return self._reply(getattr(self, attribute)[self._ch(ch)])

        self.add(header + "?", read)

    def _marker_setting(self, header: str, attribute: str, parse: Callable[[str], object]) -> None:
        def write(args: str, ch: int, m: int) -> None:
            key = (self._ch(ch), self._marker(m))
            getattr(self, attribute)[key] = parse(args)

        def read(args: str, ch: int, m: int) -> str:
            no_arguments(args)
            return self._reply(getattr(self, attribute)[(self._ch(ch), self._marker(m))])

        self.add(header, write)
        self.add(header + "?", read)

    def _element_setting(
        self,
        node: str,
        attribute: str,
        parse: Callable[[str, SequenceElement], object],
        show: Callable[[object], str],
    ) -> None:
        header = f"SEQuence:ELEMent#:{node}"

        def write(args: str, index: int) -> None:
            element = self._element(index)
            setattr(element, attribute, parse(args, element))

        self.add(header, write)

        def read(args: str, index: int) -> str:
            no_arguments(args)
            return show(getattr(self._element(index), attribute))

        self.add(header + "?", read)

    def _quoted_reply(self, args: str, table: dict[int, str], ch: int) -> str:
        no_arguments(args)
        return quote(table[self._ch(ch)])

    @staticmethod
    def _reply(value: object) -> str:
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, float):
            return nr3(value)
        return str(value)

    # argument checks -------------------------------------------------------------------------
    @staticmethod
    def _ch(ch: int) -> int:
        if ch not in CHANNELS:
            raise CommandError(-114, f"Header suffix out of range: {ch}")
        return ch

    @staticmethod
    def _marker(m: int) -> int:
        if m not in (1, 2):
            raise CommandError(-114, f"Header suffix out of range: {m}")
        return m

    @staticmethod
    def _bool(args: str, _element: SequenceElement) -> bool:
        return boolean(args)

    @staticmethod
    def _bool_reply(value: object) -> str:
        return "1" if value else "0"

    @staticmethod
    def _source(args: str) -> str:
        return choice(args, SOURCES)

    @staticmethod
    def _slope(args: str) -> str:
        return choice(args, SLOPES)

    @staticmethod
    def _impedance(args: str) -> float:
        ohms = number(args, 0, 1e6, unit="OHM")
        if ohms not in (50.0, 1000.0):
            raise CommandError(-224, f"Illegal parameter value: {ohms:g} Ohm (50 or 1000)")
        return ohms

    @staticmethod
    def _interval(args: str) -> float:
        return number(args, 1e-6, 10.0, unit="S")

    @staticmethod
    def _sample_rate(args: str) -> float:
        return number(args, 1e7, 1.2e9, unit="HZ")

    @staticmethod
    def _input_level(args: str) -> float:
        return number(args, -5.0, 5.0, unit="V")

    @staticmethod
    def _offset(args: str) -> float:
        return number(args, -2.25, 2.25, unit="V")

    @staticmethod
    def _marker_delay(args: str) -> float:
        return number(args, 0.0, 1e-9, unit="S")

    @staticmethod
    def _amplitude(args: str) -> float:
        return number(args, 0.02, 4.5, unit="V")

    @staticmethod
    def _dc_level(args: str) -> float:
        return number(args, -3.0, 5.0, unit="V")

    @staticmethod
    def _filter(args: str) -> float:
        text = args.strip().upper()
        if text in ("INF", "INFINITY"):
            return INFINITY
        hz = number(args, 0, INFINITY, unit="HZ")
        if hz not in FILTERS_HZ:
            raise CommandError(-224, f"Illegal parameter value: filter {hz:g} Hz")
        return hz

    @staticmethod
    def _marker_high(args: str) -> float:
        return number(args, -0.9, 2.7, unit="V")

    @staticmethod
    def _marker_low(args: str) -> float:
        return number(args, -1.0, 2.6, unit="V")

    def _run_mode(self, args: str) -> str:
        if args.strip().upper() in ("ENHANCED", "ENH"):
            return "SEQ"  # the manual: ENHanced is kept for old programs and answers SEQ
        return choice(args, RUN_MODES)

    # waveform list ---------------------------------------------------------------------------
    def _waveform(self, args: str) -> Waveform:
        return self._named(string(args))

    def _named(self, name: str) -> Waveform:
        if name not in self.waveforms:
            raise CommandError(-224, f"Illegal parameter value: no waveform {quote(name)}")
        return self.waveforms[name]

    def _predefined(self, args: str) -> str:
        """User waveforms only: the simulated list holds none of the predefined ones."""
        self._waveform(args)
        return "0"

    def _new(self, args: str) -> None:
        name, rest = quoted(args)
        parts = parameters(rest)
        if len(parts) < 2:
            raise CommandError(-109, "Missing parameter: <name>,<size>,{INTeger|REAL}")
        if len(parts) > 2:
            raise CommandError(-108, f"Parameter not allowed: {parts[2][:20]}")
        points = integer(parts[0], 1, MAX_POINTS)
        kind = choice(parts[1], WAVEFORM_TYPES)
        if not name or name.startswith("*"):
            raise CommandError(-224, f"Illegal parameter value: waveform name {quote(name)}")
        if name in self.waveforms:
            raise CommandError(-224, f"Illegal parameter value: {quote(name)} already exists")
        self.waveforms[name] = Waveform(kind, points)

    def _span(self, rest: str, length: int) -> tuple[int, int | None]:
        """<StartIndex>[,<Size>] after the name (the start defaults to 0, the size to the
        rest of the waveform or to the block's)."""
        parts = parameters(rest)
        if parts and not parts[-1]:
            parts.pop()  # the comma before a block whose bytes the framer took out
        if len(parts) > 2:
            raise CommandError(-108, "Parameter not allowed")
        start = integer(parts[0], 0, max(length - 1, 0)) if parts else 0
        size = integer(parts[1], 1, length - start) if len(parts) > 1 else None
        return start, size

    def _write_data(self, args: str, block: bytes | None = None) -> None:
        name, rest = quoted(args)
        waveform = self._named(name)
        if block is None:
            raise CommandError(-109, "Missing parameter: binary block")
        start, size = self._span(rest, len(waveform.data))
        width = waveform.point_bytes
        if len(block) % width:
            raise CommandError(
                -224, f"Illegal parameter value: {len(block)} bytes are not {width}-byte points"
            )
        points = len(block) // width
        if size is not None and points != size:
            raise CommandError(
                -224, f"Illegal parameter value: block of {points} points for size {size}"
            )
        if start + points > len(waveform.data):
            raise CommandError(-222, f"Data out of range: {start}+{points} points")
        waveform.data[start : start + points] = np.frombuffer(block, dtype=waveform.data.dtype)

    def _read_data(self, args: str) -> bytes:
        name, rest = quoted(args)
        waveform = self._named(name)
        start, size = self._span(rest, len(waveform.data))
        end = len(waveform.data) if size is None else start + size
        return waveform.data[start:end].tobytes()

    def _delete(self, args: str) -> None:
        """A name not in the list is no error: QCoDeS's driver deletes before every upload
        on that understanding ("will do nothing if the file doesn't exist")."""
        if args.strip().upper() == "ALL":
            names = list(self.waveforms)
        else:
            name = string(args)
            names = [name] if name in self.waveforms else []
        for name in names:
            del self.waveforms[name]
            self._unload(name)

    def _unload(self, name: str) -> None:
        """A deleted waveform leaves waveform memory: channels and elements that played it
        play nothing, and a run stops."""
        for ch in CHANNELS:
            if self.channel_waveform[ch] == name:
                self.channel_waveform[ch] = ""
                self.running = False
        for element in self.sequence:
            for ch in [c for c, n in element.waveforms.items() if n == name]:
                del element.waveforms[ch]
                self.running = False

    def _name(self, args: str) -> str:
        names = list(self.waveforms)
        if not names:
            raise CommandError(-222, "Data out of range: the waveform list is empty")
        return quote(names[integer(args, 0, len(names) - 1)])

    # sequence --------------------------------------------------------------------------------
    def _element(self, index: int) -> SequenceElement:
        if not 1 <= index <= len(self.sequence):
            raise CommandError(-222, f"Data out of range: element {index} of {len(self.sequence)}")
        return self.sequence[index - 1]

    def _element_index(self, args: str, _element: SequenceElement) -> int:
        return integer(args, 1, max(len(self.sequence), 1))

    def _set_sequence_length(self, args: str) -> None:
        n = integer(args, 0, MAX_SEQUENCE_LENGTH)
        self.sequence = self.sequence[:n] + [
            SequenceElement() for _ in range(n - len(self.sequence))
        ]
        self.sequence_position = min(self.sequence_position, max(n, 1))

    def _set_element_waveform(self, args: str, index: int, channel: int) -> None:
        element = self._element(index)
        name = string(args)
        if name:
            self._named(name)
            element.waveforms[self._ch(channel)] = name
        else:
            element.waveforms.pop(self._ch(channel), None)

    def _element_waveform(self, args: str, index: int, channel: int) -> str:
        no_arguments(args)
        return quote(self._element(index).waveforms.get(self._ch(channel), ""))

    def _jump(self, args: str) -> None:
        self.sequence_position = integer(args, 1, max(len(self.sequence), 1))

    # run control -----------------------------------------------------------------------------
    def _run(self) -> None:
        self.running = True
        self.sequence_position = 1

    def _stop(self) -> None:
        self.running = False

    def _run_state(self) -> int:
        """0 stopped, 1 waiting for trigger, 2 running."""
        if not self.running:
            return 0
        if self.run_mode in ("TRIG", "GAT"):
            return 1
        if self.run_mode == "SEQ" and self.sequence:
            return 1 if self.sequence[self.sequence_position - 1].trigger_wait else 2
        return 2

    def _force_trigger(self) -> None:
        self.forced_triggers += 1

    def _set_add_input(self, args: str, ch: int) -> None:
        name = string(args)
        if name.upper() in ("ESIG", "ESIGNAL"):
            self.add_input[self._ch(ch)] = "ESIG"
        elif name == "":
            self.add_input[self._ch(ch)] = ""
        else:
            raise CommandError(-224, f"Illegal parameter value: {quote(name)}")

    def _set_channel_waveform(self, args: str, ch: int) -> None:
        name = string(args)
        if name:
            self._named(name)
        self.channel_waveform[self._ch(ch)] = name

    # what the physics reads -------------------------------------------------------------------
    def segment(self, index: int, channel: int) -> np.ndarray | None:
        """Normalised samples that sequence element `index` (0-based) plays on `channel`."""
        if not (0 <= index < len(self.sequence)):
            return None
        name = self.sequence[index].waveforms.get(channel)
        if name is None or name not in self.waveforms:
            return None
        return self.waveforms[name].normalised()

    def state(self) -> dict:
        return {
            "running": self.running,
            "run_mode": self.run_mode,
            "outputs": {str(k): v for k, v in self.outputs.items()},
            "waveforms": {
                n: {"points": len(w.data), "type": w.kind, "crc32": w.crc32()}
                for n, w in self.waveforms.items()
            },
            "sequence": [{str(k): v for k, v in e.waveforms.items()} for e in self.sequence],
            "loop_counts": [e.loop_count for e in self.sequence],
            "amplitude_vpp": {str(k): v for k, v in self.amplitude_vpp.items()},
            "offset_v": {str(k): v for k, v in self.offset_v.items()},
            "sample_rate_hz": self.sample_rate_hz,
            "trigger_impedance_ohm": self.trigger_impedance_ohm,
        }
