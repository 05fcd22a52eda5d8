"""Simulated R&S SGS100A SGMA RF source; its carrier drives the node's qubit.

The command set is the SGS100A's remote-control subset a lab uses (the parameters of
QCoDeS's `RohdeSchwarzSGS100A` and qnode's driver), in R&S spelling: `[SOURce<hw>]:...`
with <hw> = 1 only (an SGS100A has one RF path, so SOURce2 is -114), long and short forms,
units with multipliers, MIN/MAX/DEF. docs/instruments.md says where each range and *RST
value comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim_backends.device import (
    CommandError,
    Device,
    boolean,
    choice,
    no_arguments,
    number,
    numeric_query,
)
from sim_backends.physics import MicrowaveDrive

FREQUENCY_HZ = (1e6, 12.75e9)  # SGS100A with the 12.75 GHz frequency option
POWER_DBM = (-120.0, 25.0)  # with the electronic step attenuator option
RST_FREQUENCY_HZ = 3.0e9
RST_POWER_DBM = -30.0


@dataclass(frozen=True)
class NumericSetting:
    header: str
    low: float
    high: float
    unit: str
    reset: float


@dataclass(frozen=True)
class ChoiceSetting:
    header: str
    options: tuple[str, ...]
    reset: str


NUMERIC = {
    "phase_deg": NumericSetting("PHASe", -359.9, 359.9, "DEG", 0.0),
    "i_offset_pct": NumericSetting("IQ:IMPairment:LEAKage:I", -10.0, 10.0, "PCT", 0.0),
    "q_offset_pct": NumericSetting("IQ:IMPairment:LEAKage:Q", -10.0, 10.0, "PCT", 0.0),
    "iq_gain_imbalance_db": NumericSetting(
        "IQ:IMPairment:IQRatio[:MAGNitude]", -1.0, 1.0, "DB", 0.0
    ),
    "iq_quadrature_deg": NumericSetting("IQ:IMPairment:QUADrature[:ANGLe]", -8.0, 8.0, "DEG", 0.0),
    "pulse_delay_s": NumericSetting("PULM:DELay", 0.0, 100.0, "S", 0.0),
    "pulse_double_delay_s": NumericSetting("PULM:DOUBle:DELay", 40e-9, 100.0, "S", 40e-9),
    "pulse_double_width_s": NumericSetting("PULM:DOUBle:WIDTh", 20e-9, 100.0, "S", 1e-6),
    "pulse_period_s": NumericSetting("PULM:PERiod", 100e-9, 100.0, "S", 10e-6),
    "pulse_width_s": NumericSetting("PULM:WIDTh", 20e-9, 100.0, "S", 1e-6),
}
"""`[SOURce<hw>]:` numeric settings: attribute -> header, range, unit, *RST value."""

SOURCE_CHOICES = {
    "pulse_source": ChoiceSetting("PULM:SOURce", ("INTernal", "EXTernal"), "INT"),
    "pulse_mode": ChoiceSetting("PULM:MODE", ("SINGle", "DOUBle"), "SING"),
    "pulse_polarity": ChoiceSetting("PULM:POLarity", ("NORMal", "INVerted"), "NORM"),
    "pulse_gate_polarity": ChoiceSetting(
        "PULM:TRIGger:EXTernal:GATE:POLarity", ("NORMal", "INVerted"), "NORM"
    ),
    "pulse_trigger_impedance": ChoiceSetting(
        "PULM:TRIGger:EXTernal:IMPedance", ("G50", "G10K"), "G50"
    ),
    "pulse_trigger_slope": ChoiceSetting(
        "PULM:TRIGger:EXTernal:SLOPe", ("NEGative", "POSitive"), "POS"
    ),
    "pulse_trigger_mode": ChoiceSetting("PULM:TRIGger:MODE", ("AUTO", "EXTernal", "EGATe"), "AUTO"),
    "reference_source": ChoiceSetting("ROSCillator:SOURce", ("INTernal", "EXTernal"), "INT"),
    "reference_output_frequency": ChoiceSetting(
        "ROSCillator:OUTPut:FREQuency", ("10MHZ", "100MHZ", "1000MHZ"), "10MHZ"
    ),
    "reference_external_frequency": ChoiceSetting(
        "ROSCillator:EXTernal:FREQuency", ("10MHZ", "100MHZ", "1000MHZ"), "10MHZ"
    ),
    "lo_source": ChoiceSetting("LOSCillator:SOURce", ("INTernal", "EXTernal"), "INT"),
    "operation_mode": ChoiceSetting("OPMode", ("NORMal", "BBBYpass"), "NORM"),
}
"""`[SOURce<hw>]:` character-data settings: attribute -> header, options, *RST value."""

CONNECTOR_CHOICES = {
    "ref_lo_output": ChoiceSetting("CONNector:REFLo:OUTPut", ("REF", "LO", "OFF"), "OFF"),
    "trigger_connector_mode": ChoiceSetting(
        "CONNector:TRIGger:OMODe", ("SVALid", "SNVALid", "PVOut", "PETrigger", "PEMSource"), "SVAL"
    ),
}

SOURCE_BOOLEANS = {
    "iq": ("IQ:STATe", False),
    "iq_impairments": ("IQ:IMPairment[:STATe]", False),
    "pulse_modulation": ("PULM:STATe", False),
}


def format_number(value: float) -> str:
    """A reply as R&S writes it: no exponent for a frequency, no trailing zeros."""
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


class SimMicrowaveSource(Device):
    identity = "Rohde&Schwarz,SGS100A,1416.0505k02/{serial},4.2.76.0-sim"

    def __init__(self, name: str, drive: MicrowaveDrive, serial: int) -> None:
        self.drive = drive
        self.identity = self.identity.format(serial=serial)
        self.settings: dict[str, float | str | bool] = {}
        super().__init__(name)

    def _source(self, header: str, handler: Callable[[str], str | None]) -> None:
        """`[SOURce<hw>]:header`: one RF path, so <hw> is 1 (SOURce2 -> -114)."""

        def checked(args: str, hw: int = 1) -> str | None:
            if hw != 1:
                raise CommandError(-114, f"Header suffix out of range: SOURce{hw}")
            return handler(args)

        self.add(f"[SOURce#]:{header}", checked)

    def setup(self) -> None:
        d = self.drive
        self._source(
            "FREQuency[:CW]",
            lambda a: setattr(d, "frequency_hz", number(a, *FREQUENCY_HZ, "HZ", RST_FREQUENCY_HZ)),
        )
        self._source(
            "FREQuency[:CW]?",
            lambda a: format_number(
                numeric_query(a, d.frequency_hz, *FREQUENCY_HZ, RST_FREQUENCY_HZ)
            ),
        )
        power = "POWer[:LEVel][:IMMediate][:AMPLitude]"
        self._source(
            power, lambda a: setattr(d, "power_dbm", number(a, *POWER_DBM, "DBM", RST_POWER_DBM))
        )
        self._source(
            power + "?",
            lambda a: format_number(numeric_query(a, d.power_dbm, *POWER_DBM, RST_POWER_DBM)),
        )
        self.add("OUTPut#[:STATe]", lambda a, n=1: setattr(d, "output", boolean(self._one(a, n))))
        self.add("OUTPut#[:STATe]?", lambda a, n=1: self._flag(d.output, a, n))
        for key, spec in NUMERIC.items():
            self._source(spec.header, self._numeric_setter(key, spec))
            self._source(spec.header + "?", self._numeric_getter(key, spec))
        for key, (header, _) in SOURCE_BOOLEANS.items():
            self._source(header, lambda a, key=key: self.settings.__setitem__(key, boolean(a)))
            self._source(header + "?", lambda a, key=key: self._flag(bool(self.settings[key]), a))
        for key, option in SOURCE_CHOICES.items():
            self._source(option.header, self._choice_setter(key, option))
            self._source(option.header + "?", self._choice_getter(key))
        for key, option in CONNECTOR_CHOICES.items():
            self.add(option.header, self._choice_setter(key, option))
            self.add(option.header + "?", self._choice_getter(key))

    @staticmethod
    def _one(args: str, n: int) -> str:
        if n != 1:
            raise CommandError(-114, f"Header suffix out of range: OUTPut{n}")
        return args

    def _flag(self, value: bool, args: str, n: int = 1) -> str:
        self._one("", n)
        no_arguments(args)
        return "1" if value else "0"

    def _numeric_setter(self, key: str, spec: NumericSetting) -> Callable[[str], None]:
        def set_value(args: str) -> None:
            self.settings[key] = number(args, spec.low, spec.high, spec.unit, spec.reset)

        return set_value

    def _numeric_getter(self, key: str, spec: NumericSetting) -> Callable[[str], str]:
        def get_value(args: str) -> str:
            current = float(self.settings[key])
            return format_number(numeric_query(args, current, spec.low, spec.high, spec.reset))

        return get_value

    def _choice_setter(self, key: str, option: ChoiceSetting) -> Callable[..., None]:
        def set_value(args: str) -> None:
            self.settings[key] = choice(args, option.options)

        return set_value

    def _choice_getter(self, key: str) -> Callable[..., str]:
        def get_value(args: str) -> str:
            no_arguments(args)
            return str(self.settings[key])

        return get_value

    def reset_state(self) -> None:
        self.drive.frequency_hz = RST_FREQUENCY_HZ
        self.drive.power_dbm = RST_POWER_DBM
        self.drive.output = False
        self.settings = {key: spec.reset for key, spec in NUMERIC.items()}
        self.settings.update({key: reset for key, (_, reset) in SOURCE_BOOLEANS.items()})
        self.settings.update({key: o.reset for key, o in SOURCE_CHOICES.items()})
        self.settings.update({key: o.reset for key, o in CONNECTOR_CHOICES.items()})

    @property
    def iq(self) -> bool:
        return bool(self.settings["iq"])

    def state(self) -> dict:
        return {
            "frequency_hz": self.drive.frequency_hz,
            "power_dbm": self.drive.power_dbm,
            "output": self.drive.output,
            **self.settings,
            "event_status": self.event_status,
            "errors": [list(e) for e in self.errors],
        }
