"""IEEE 488.2 / SCPI-1999 behaviour of the simulated SCPI instruments, over real TCP with
pyvisa as any independent client would speak to them (node A's SGS100A unless a rule needs
another command set). Each test asserts what a user checks: the read-back, the error queue,
the status registers, and the instrument's own state."""

from __future__ import annotations

import pytest
import pyvisa

from sim_backends.device import Device, scpi_pattern
from sim_backends.framing import Message

MW = "A.mw"
REPLY_TIMEOUT_MS = 2000
NO_REPLY_TIMEOUT_MS = 400
"""A query that fails gets no reply (as on the real instrument's raw socket): the client's
own timeout ends the read."""


@pytest.fixture(scope="module")
def rm():
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()  # pyvisa shares this session process-wide: qnode's transport reopens


def _open(rm, resource: str):
    inst = rm.open_resource(resource, read_termination="\n", write_termination="\n")
    inst.timeout = REPLY_TIMEOUT_MS
    return inst


@pytest.fixture
def mw(rm, sim):
    inst = _open(rm, sim.resources[MW])
    inst.write("*RST;*CLS;*ESE 0;*SRE 0")
    yield inst
    inst.write("*RST;*CLS;*ESE 0;*SRE 0")
    inst.close()


def errors(inst) -> str:
    return inst.query("SYST:ERR:ALL?")


def no_reply(inst, query: str) -> None:
    inst.timeout = NO_REPLY_TIMEOUT_MS
    try:
        with pytest.raises(pyvisa.errors.VisaIOError):
            inst.query(query)
    finally:
        inst.timeout = REPLY_TIMEOUT_MS


# units and multipliers ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "query", "value"),
    [
        ("SOUR1:FREQ 2.86GHZ", "SOUR1:FREQ?", 2.86e9),
        ("SOUR:FREQ 2900MHz", "FREQ?", 2.9e9),  # MHZ is mega (IEEE 488.2's exception)
        ("FREQ 2870 MAHZ", "FREQ?", 2.87e9),  # MA: mega
        ("FREQ 2875000 kHz", "FREQ?", 2.875e9),
        ("FREQ 2.5 GHz", "FREQ?", 2.5e9),  # white space before the suffix
        ("SOUR:POW -5dBm", "POW?", -5.0),
        ("POW -7.5 DBM", "POW?", -7.5),
        ("PULM:WIDT 100 ns", "PULM:WIDT?", 100e-9),
        ("PULM:WIDT 100 ms", "PULM:WIDT?", 0.1),  # M is milli: never 100 s
        ("PULM:PER 2 us", "PULM:PER?", 2e-6),
        ("IQ:IMP:LEAK:I 2.5PCT", "IQ:IMP:LEAK:I?", 2.5),
        ("PHAS 45 DEG", "PHAS?", 45.0),
    ],
)
def test_units_and_multipliers(mw, command, query, value):
    mw.write(command)
    assert float(mw.query(query)) == pytest.approx(value)
    assert errors(mw) == '0,"No error"'


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("POW 1 mV", -131),  # a unit that is not the parameter's
        ("FREQ 2.87 GV", -131),
        ("FREQ 1 s", -131),
        ("PULM:WIDT 100 mV", -131),
        ("PULM:WIDT 1 xyz", -131),
        ("*ESE 4 mV", -138),  # a parameter that takes no suffix
    ],
)
def test_a_foreign_unit_is_refused_never_dropped(mw, sim, command, code):
    before = sim.state(MW)
    mw.write(command)
    assert errors(mw).startswith(f"{code},")
    after = sim.state(MW)
    assert after["power_dbm"] == before["power_dbm"]
    assert after["frequency_hz"] == before["frequency_hz"]
    assert after["pulse_width_s"] == before["pulse_width_s"]
    assert mw.query("*ESE?") == "0"


def test_awg_amplitude_in_millivolts_is_never_read_as_volts(rm, sim):
    """The issue's case: `SOUR1:VOLT:AMPL 1 mV` read back 1.0 V. Now it is 1e-3 V (below
    the AWG's range: refused with -222) or refused for its suffix, never 1 V."""
    awg = _open(rm, sim.resources["A.awg"])
    try:
        awg.write("*CLS;:SOUR1:VOLT:AMPL 0.5")
        awg.write("SOUR1:VOLT:AMPL 1 mV")
        assert float(awg.query("SOUR1:VOLT:AMPL?")) == pytest.approx(0.5)
        assert awg.query("SYST:ERR?").split(",")[0] in ("-222", "-138")
    finally:
        awg.write("*CLS")
        awg.close()


def test_min_max_def_as_values_and_as_query_arguments(mw, sim):
    assert float(mw.query("SOUR:FREQ? MAX")) == 12.75e9
    assert float(mw.query("FREQ? MINimum")) == 1e6
    mw.write("FREQ MAX")
    assert sim.state(MW)["frequency_hz"] == 12.75e9
    mw.write("POW min")
    assert float(mw.query("POW?")) == -120.0
    mw.write("POW DEF")
    assert float(mw.query("POW?")) == float(mw.query("POW? DEF"))
    mw.write("PHAS MAXIMUM")
    assert float(mw.query("PHAS?")) == 359.9
    assert errors(mw) == '0,"No error"'


def test_out_of_range_extra_and_missing_parameters(mw, sim):
    mw.write("FREQ 99 GHZ")
    mw.write("FREQ 2e9,3e9")
    mw.write("FREQ")
    mw.write("OUTP ON,OFF")
    assert errors(mw) == (
        '-222,"Data out of range;9.9e+10",-108,"Parameter not allowed;2e9,3e9",'
        '-109,"Missing parameter",-108,"Parameter not allowed;ON,OFF"'
    )
    assert sim.state(MW)["frequency_hz"] == 3e9  # the *RST value, untouched


# headers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ":SOURce1:FREQuency:CW 2.1e9",
        "source:frequency 2.1e9",
        "SOUR1:FREQ:CW 2100000000",
        "FREQ 2.1GHZ",
        ":FREQ 2100 MHZ",
    ],
)
def test_long_short_optional_nodes_and_leading_colon(mw, sim, command):
    mw.write(command)
    assert sim.state(MW)["frequency_hz"] == 2.1e9
    assert errors(mw) == '0,"No error"'


def test_second_rf_path_is_a_header_suffix_error(mw):
    no_reply(mw, "SOUR2:FREQ?")
    mw.write("OUTP2:STAT ON")
    assert errors(mw) == (
        '-114,"Header suffix out of range;SOURce2",-114,"Header suffix out of range;OUTPut2"'
    )


def test_compound_message_follows_the_header_path(mw, sim):
    assert mw.query("SOUR:FREQ 2.2GHZ;POW -8;:OUTP ON;:SOUR:FREQ?;POW?;:OUTP?") == (
        "2200000000;-8;1"
    )
    state = sim.state(MW)
    assert (state["frequency_hz"], state["power_dbm"], state["output"]) == (2.2e9, -8.0, True)
    mw.write("SOUR:FREQ 2.3GHZ;OUTP OFF")  # relative: SOUR:OUTP does not exist
    assert errors(mw).startswith('-113,"Undefined header;SOUR:OUTP OFF"')
    assert sim.state(MW)["output"] is True


@pytest.mark.parametrize(
    ("value", "on"), [("ON", True), ("1", True), ("0.6", True), ("0.4", False), ("OFF", False)]
)
def test_booleans(mw, value, on):
    mw.write(f"OUTP {value}")
    assert mw.query("OUTP?") == ("1" if on else "0")
    assert errors(mw) == '0,"No error"'


def test_bad_boolean_and_character_data_are_refused(mw):
    mw.write("OUTP MAYBE")
    mw.write("PULM:SOUR SIDEWAYS")
    mw.write("OUTP 'ON'")
    assert errors(mw) == (
        '-224,"Illegal parameter value;MAYBE is not ON/OFF",'
        '-224,"Illegal parameter value;SIDEWAYS",'
        """-104,"Data type error;'ON' is not ON/OFF\""""
    )


# strings and blocks -------------------------------------------------------------------------------
def test_semicolon_and_hash_inside_single_quotes_are_data(mw):
    mw.write("BOGUS 'a;b#15xyz'")  # one command, one error: ';' and '#' are in the string
    assert mw.query("SYST:ERR:COUN?") == "1"
    assert errors(mw) == """-113,"Undefined header;BOGUS 'a;b#15xyz'\""""


def test_quotes_in_an_error_message_are_doubled(mw):
    mw.write('BOGUS "x"')
    assert mw.query("SYST:ERR?") == '-113,"Undefined header;BOGUS ""x"""'


def test_indefinite_block_runs_to_the_end_of_the_message(mw):
    mw.write_raw(b"SOUR:FREQ #0\x01\x02;*IDN? 3\n")
    assert mw.query("*IDN?").startswith("Rohde&Schwarz,SGS100A")  # framing resumed
    assert errors(mw) == '-168,"Block data not allowed;SOUR:FREQ"'


def test_awg_takes_single_quoted_names_and_indefinite_blocks(rm, sim):
    awg = _open(rm, sim.resources["A.awg"])
    try:
        awg.write("WLIS:WAV:DEL 'q''s'")  # may not exist yet
        awg.query("SYST:ERR:ALL?")
        awg.write("WLIS:WAV:NEW 'q''s',4,INT")
        words = bytes([0x01, 0x20, 0x02, 0x20, 0x03, 0x20, 0x04, 0x20])  # no '\n' byte
        awg.write_raw(b"WLIS:WAV:DATA 'q''s',0,4,#0" + words + b"\n")
        assert awg.query("SYST:ERR:ALL?") == '0,"No error"'
        data = awg.query_binary_values('WLIS:WAV:DATA? "q\'s"', datatype="B", container=bytes)
        assert data == words
    finally:
        awg.write("WLIS:WAV:DEL 'q''s'")
        awg.close()


# status registers and the error queue -------------------------------------------------------------
def _provoke_command_error(inst) -> None:
    inst.write("BOGUS")


def _provoke_execution_error(inst) -> None:
    inst.write("FREQ 99 GHZ")


def _provoke_device_error(inst) -> None:
    for _ in range(40):  # the queue overflows: -350 Queue overflow (device-specific class)
        inst.write("FREQ 99 GHZ")


def _provoke_query_error(inst) -> None:
    inst.query("*IDN?;*OPC?")  # *IDN?'s arbitrary reply must end the message


@pytest.mark.parametrize(
    ("provoke", "bit", "code"),
    [
        (_provoke_command_error, 32, -113),  # CME
        (_provoke_execution_error, 16, -222),  # EXE
        (_provoke_device_error, 8, -350),  # DDE
        (_provoke_query_error, 4, -440),  # QYE
    ],
)
def test_each_error_class_sets_its_event_status_bit(mw, provoke, bit, code):
    assert mw.query("*ESR?") == "0"
    assert mw.query("*STB?") == "0"
    provoke(mw)
    assert int(mw.query("*STB?")) & 4  # EAV: the error queue is not empty
    assert int(mw.query("*ESR?")) & bit
    assert mw.query("*ESR?") == "0"  # read and cleared
    queue = errors(mw)
    assert f"{code}," in queue
    assert mw.query("*STB?") == "0"


def test_esb_and_mss_follow_the_enable_registers(mw):
    mw.write("*ESE 32;*SRE 32")
    assert (mw.query("*ESE?"), mw.query("*SRE?")) == ("32", "32")
    mw.write("BOGUS")
    assert int(mw.query("*STB?")) == 4 | 32 | 64  # EAV, ESB, MSS
    mw.write("*CLS")  # the queue and the event register, not the enable registers
    assert mw.query("*STB?") == "0"
    assert mw.query("*ESE?") == "32"


def test_opc_sets_the_operation_complete_bit(mw):
    mw.write("*OPC")
    assert mw.query("*ESR?") == "1"
    assert mw.query("*OPC?") == "1"
    mw.write("*WAI")
    assert mw.query("*TST?") == "0"


def test_error_queue_formats(mw):
    assert mw.query("SYST:ERR?") == '0,"No error"'
    assert mw.query("SYST:ERR:NEXT?") == '0,"No error"'
    assert mw.query("SYST:ERR:ALL?") == '0,"No error"'
    assert mw.query("SYST:VERS?") == "1999.0"
    mw.write("BOGUS1")
    mw.write("FREQ 1 THZ")
    assert mw.query("SYST:ERR:COUN?") == "2"
    assert mw.query("SYSTem:ERRor:NEXT?") == '-113,"Undefined header;BOGUS1"'
    assert mw.query("SYST:ERR?") == '-222,"Data out of range;1e+12"'
    assert mw.query("SYST:ERR:COUN?") == "0"


def test_queue_overflow_keeps_the_oldest_and_ends_with_350(mw):
    for i in range(40):
        mw.write(f"BOGUS{i}")
    assert mw.query("SYST:ERR:COUN?") == "32"
    queue = errors(mw)
    assert queue.startswith('-113,"Undefined header;BOGUS0"')
    assert queue.endswith('-350,"Queue overflow"')


def test_a_failed_query_gives_no_reply_and_no_stale_one_later(mw):
    no_reply(mw, "FREQ? BOGUS")
    assert float(mw.query("FREQ?")) == 3e9  # the next answer is to the next question
    assert errors(mw) == '-224,"Illegal parameter value;BOGUS"'


def test_rst_restores_the_settings_and_keeps_the_status(mw, sim):
    mw.write("FREQ 2GHZ;:OUTP ON;:PULM:STAT ON;:ROSC:SOUR EXT;:BOGUS")
    mw.write("*RST")
    state = sim.state(MW)
    assert (state["frequency_hz"], state["output"], state["pulse_modulation"]) == (
        3e9,
        False,
        False,
    )
    assert state["reference_source"] == "INT"
    assert mw.query("SYST:ERR:COUN?") == "1"  # *RST leaves the error queue alone


# dialects that are not IEEE 488.2 ---------------------------------------------------------------
class _AsciiDialect(Device):
    scpi_headers = False

    def setup(self) -> None:
        self.add("p?", lambda a: "0.5")


def test_ascii_dialects_have_no_common_commands_or_status():
    device = _AsciiDialect("ascii")
    assert [p.pattern for p, _ in device.command_table] == [r"p\?"]
    assert device.execute(Message("*ESR?")) is None
    assert device.execute(Message("SYST:ERR?")) is None
    assert device.execute(Message("p?")) == "0.5"


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("TRIG:LEV", True),
        ("TRIGGER:SEQUENCE:LEVEL", True),
        ("trig:seq:lev", True),
        ("TRIGLEV", False),
        ("TRIG:SEQLEV", False),
    ],
)
def test_an_optional_node_in_the_middle_keeps_its_colons(header, matches):
    pattern = scpi_pattern("TRIGger[:SEQuence]:LEVel")
    assert (pattern.fullmatch(header) is not None) is matches


def test_a_leading_optional_node_and_a_suffix():
    pattern = scpi_pattern("[SOURce#]:VOLTage[:LEVel][:IMMediate]:OFFSet")
    for header in ("VOLT:OFFS", "SOUR1:VOLT:OFFS", "SOUR2:VOLTAGE:LEVEL:IMM:OFFSET"):
        assert pattern.fullmatch(header) is not None, header
    assert pattern.fullmatch("SOUR1VOLT:OFFS") is None
