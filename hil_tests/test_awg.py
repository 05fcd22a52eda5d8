"""AWG (AWG5014 subset): waveform blocks, sequence table, limits, safe state."""

import zlib

import numpy as np
import pytest

from drivers.awg_5014 import decode_int_waveform, encode_int_waveform
from qnode.errors import InstrumentReportedError, LimitError


def test_int_format_round_trip_is_exact_to_one_code():
    samples = np.linspace(-1, 1, 1001)
    m1 = (np.arange(1001) % 3 == 0).astype(int)
    back, b1, b2 = decode_int_waveform(encode_int_waveform(samples, m1, None))
    assert np.max(np.abs(back - samples)) <= 0.5 / 8191 + 1e-12
    assert np.array_equal(b1, m1) and not b2.any()


def test_million_sample_waveform_uploads_intact(open_driver, sim):
    awg = open_driver("awg")
    rng = np.random.default_rng(7)
    samples = np.sin(np.linspace(0, 400 * np.pi, 1_000_000)) * rng.uniform(0.5, 1.0)
    marker = (np.arange(samples.size) // 1000) % 2
    awg.upload_waveform("big", samples, marker1=marker)
    state = sim.state(awg.name)["waveforms"]["big"]
    assert state["points"] == 1_000_000
    assert state["crc32"] == awg.last_upload_crc32
    assert state["crc32"] == zlib.crc32(encode_int_waveform(samples, marker))
    back, m1, _ = awg.download_waveform("big")
    assert np.allclose(back, samples, atol=1 / 8191)
    assert np.array_equal(m1, marker)


def test_waveform_limits_refused_before_any_byte(open_driver, nothing_reaches):
    awg = open_driver("awg")
    too_long = int(awg.limits["waveform_points"][1]) + 1
    with nothing_reaches(awg):
        with pytest.raises(LimitError, match="sample"):
            awg.upload_waveform("hot", np.array([0.0, 1.2, 0.0]))
        with pytest.raises(LimitError, match="waveform_points"):
            awg.upload_waveform("long", np.zeros(too_long))
        with pytest.raises(LimitError, match="amplitude_vpp"):
            awg.set_amplitude(1, awg.limits["amplitude_vpp"][1] + 0.5)


def test_sequence_outputs_and_safe_state(open_driver, maybe_sim):
    awg = open_driver("awg")
    awg.upload_waveform("pi_i", np.full(100, 0.5))
    awg.upload_waveform("pi_q", np.zeros(100))
    awg.set_sequence([{1: "pi_i", 2: "pi_q"}])
    awg.set_amplitude(1, 1.5)
    awg.set_output(1, True)
    awg.run()
    assert awg.amplitude(1) == pytest.approx(1.5)
    assert awg.run_state() == 1
    assert awg.output(1) is True
    if maybe_sim:
        assert maybe_sim.state(awg.name)["sequence"] == [{"1": "pi_i", "2": "pi_q"}]
    awg.safe_state()
    assert awg.run_state() == 0
    assert not any(awg.output(channel) for channel in (1, 2, 3, 4))
    if maybe_sim:
        state = maybe_sim.state(awg.name)
        assert not any(state["outputs"].values()) and state["running"] is False


def test_upload_again_overwrites_and_survives_a_delete_behind_its_back(
    open_driver, sim, lab, resources
):
    awg = open_driver("awg")
    first, second = np.full(5000, 0.25), np.linspace(-0.5, 0.5, 5000)
    awg.upload_waveform("again", first)
    mark = sim.log_size(awg.name)
    awg.upload_waveform("again", second)  # same name and length: the data only
    sent = sim.log(awg.name, since=mark)[1]
    assert not any("DEL" in c or "NEW" in c for c in sent), sent
    assert sim.state(awg.name)["waveforms"]["again"]["crc32"] == awg.last_upload_crc32
    # another client deletes it (as the front panel could): the next upload makes it again
    other = lab.make_driver(*awg.name.split(".", 1), resources)
    with other:
        other.scpi.write('WLIS:WAV:DEL "again"')
    awg.upload_waveform("again", first)
    assert sim.state(awg.name)["waveforms"]["again"]["crc32"] == zlib.crc32(
        encode_int_waveform(first)
    )
    assert awg.scpi.errors() == []  # the refused data write left nothing in the queue


def test_a_real_waveform_another_program_made_reads_back(open_driver, sim):
    """A REAL waveform (5-byte points: float32, then markers in bits 6 and 7) made with the
    manual's commands comes back through the driver in its own format."""
    awg = open_driver("awg")
    points = np.zeros(4, dtype=[("value", "<f4"), ("markers", "u1")])
    points["value"] = [0.5, -0.25, 1.0, 0.0]
    points["markers"] = [0x40, 0x80, 0xC0, 0]
    awg.scpi.write('WLIS:WAV:DEL "made_elsewhere"', check=False)
    awg.scpi.errors()
    awg.scpi.write('WLIS:WAV:NEW "made_elsewhere",4,REAL')
    awg.scpi.write_block('WLIS:WAV:DATA "made_elsewhere",', points.tobytes())
    assert awg.waveform_type("made_elsewhere") == "REAL"
    assert sim.state(awg.name)["waveforms"]["made_elsewhere"]["type"] == "REAL"
    samples, marker1, marker2 = awg.download_waveform("made_elsewhere")
    assert samples.tolist() == [0.5, -0.25, 1.0, 0.0]
    assert marker1.tolist() == [1, 0, 1, 0] and marker2.tolist() == [0, 1, 1, 0]
    samples, _, _ = awg.download_waveform("made_elsewhere", start=1, size=2)
    assert samples.tolist() == [-0.25, 1.0]


def test_a_span_of_points_reads_and_writes_back(open_driver):
    awg = open_driver("awg")
    samples = np.linspace(-1, 1, 1000)
    awg.upload_waveform("span", samples)
    back, _, _ = awg.download_waveform("span", start=10, size=4)
    assert np.allclose(back, samples[10:14], atol=1 / 8191)
    # a write of points 5..6 only, as the manual's <StartIndex>,<Size> allow
    awg.scpi.write_block('WLIS:WAV:DATA "span",5,2,', encode_int_waveform(np.array([1.0, -1.0])))
    back, _, _ = awg.download_waveform("span", start=4, size=4)
    assert np.allclose(back, [samples[4], 1.0, -1.0, samples[7]], atol=1 / 8191)
    assert awg.scpi.query('WLIS:WAV:LENG? "span"') == "1000"
    # past the end is refused, and says so in the error queue
    awg.scpi.write('WLIS:WAV:DATA? "span",998,4', check=False)
    assert [code for code, _ in awg.scpi.errors()] == [-222]


def test_sequence_table_reads_back_with_loops_waits_and_jumps(open_driver, sim):
    awg = open_driver("awg")
    awg.upload_waveform("seq_a", np.full(64, 0.5))
    awg.upload_waveform("seq_b", np.zeros(64))
    awg.set_sequence([{1: "seq_a", 2: "seq_b"}, {1: "seq_b"}])
    scpi = awg.scpi
    assert scpi.query("SEQuence:ELEMent1:WAVeform1?") == '"seq_a"'
    assert scpi.query("SEQ:ELEM2:WAV2?") == '""'
    assert scpi.query("SEQ:ELEM1:TWA?") == "1"
    scpi.write("SEQuence:ELEMent2:LOOP:COUNt 12")
    scpi.write("SEQ:ELEM2:GOTO:STAT ON")
    scpi.write("SEQ:ELEM2:GOTO:IND 1")
    scpi.write("SEQ:ELEM1:JTAR:TYPE NEXT")
    assert scpi.query("SEQ:ELEM2:LOOP:COUN?") == "12"
    assert scpi.query("SEQ:ELEM2:GOTO:IND?") == "1"
    assert scpi.query("SEQ:ELEM1:JTAR:TYPE?") == "NEXT"
    assert scpi.query("AWGControl:SEQuencer:TYPE?") == "HARD"
    assert sim.state(awg.name)["loop_counts"] == [1, 12]
    # an element beyond the table, and a loop count beyond 65536, are refused
    with pytest.raises(InstrumentReportedError, match="-222"):
        scpi.write('SEQ:ELEM3:WAV1 "seq_a"')
    with pytest.raises(InstrumentReportedError, match="-222"):
        scpi.write("SEQ:ELEM1:LOOP:COUN 65537")
    assert scpi.query("SEQ:ELEM1:LOOP:COUN?") == "1"


def test_deleting_a_waveform_in_use_stops_the_run_and_empties_its_elements(open_driver, sim):
    """The manual: a deleted waveform leaves waveform memory and the run state goes off."""
    awg = open_driver("awg")
    awg.upload_waveform("doomed", np.full(32, 0.25))
    awg.set_sequence([{1: "doomed"}])
    awg.run()
    assert awg.run_state() == 1
    awg.scpi.write('WLIS:WAV:DEL "doomed"')
    assert awg.run_state() == 0
    assert awg.scpi.query("SEQ:ELEM1:WAV1?") == '""'
    assert sim.state(awg.name)["sequence"] == [{}]


def test_a_new_sequence_keeps_nothing_of_the_last(open_driver, sim):
    awg = open_driver("awg")
    awg.upload_waveform("old", np.zeros(16))
    awg.upload_waveform("new", np.zeros(16))
    awg.set_sequence([{1: "old", 2: "old"}, {1: "old"}])
    awg.set_sequence([{1: "new"}])
    assert sim.state(awg.name)["sequence"] == [{"1": "new"}]


@pytest.mark.parametrize(
    ("command", "query", "expected"),
    [
        ("TRIGger:IMPedance 50", "TRIG:IMP?", "50"),
        ("TRIGger:SEQuence:LEVel -0.5", "TRIG:LEV?", "-0.5"),
        ("TRIG:SOUR INTernal", "TRIGger:SOURce?", "INT"),
        ("EVENt:JTIMing SYNChronous", "EVEN:JTIM?", "SYNC"),
        ("SOURce3:VOLTage:LEVel:IMMediate:OFFSet 0.25", "SOUR3:VOLT:OFFS?", "0.25"),
        ("SOUR2:MARK1:VOLT:HIGH 2.5", "SOURce2:MARKer1:VOLTage:LEVel:IMMediate:HIGH?", "2.5"),
        ("SOUR2:MARK2:DEL 5E-10", "SOUR2:MARK2:DEL?", "5E-10"),
        ("OUTPut4:FILTer:LPASs:FREQuency 20E6", "OUTP4:FILT:FREQ?", "20000000"),
        ("OUTP4:FILT:FREQ INFinity", "OUTP4:FILT:FREQ?", "9.9E+37"),
        ("SOUR1:COMB:FEED 'ESIGnal'", "SOUR1:COMB:FEED?", '"ESIG"'),
        ("AWGControl:DC2:VOLTage:OFFSet -1.5", "AWGC:DC2:VOLT:OFFS?", "-1.5"),
        ("AWGC:RMOD ENHanced", "AWGC:RMOD?", "SEQ"),
        # units and multipliers (IEEE 488.2 suffixes), never a dropped unit
        ("SOUR1:VOLT:AMPL 500 mV", "SOUR1:VOLT:AMPL?", "0.5"),
        ("SOUR1:FREQ 100 MHz", "SOUR1:FREQ?", "100000000"),
        ("SOUR1:FREQ 1.2GHZ", "SOUR1:FREQ?", "1200000000"),
        ("SOUR1:MARK1:DEL 250ps", "SOUR1:MARK1:DEL?", "2.5E-10"),
        ("TRIG:IMP 1kOhm", "TRIG:IMP?", "1000"),
        ("TRIG:TIM 10 ms", "TRIG:TIM?", "0.01"),
        ("TRIG:LEV MAX", "TRIG:LEV?", "5"),
    ],
)
def test_settings_read_back_in_the_manuals_forms(open_driver, command, query, expected):
    awg = open_driver("awg")
    awg.scpi.write("*RST")
    awg.scpi.write(command)
    assert awg.scpi.query(query) == expected


@pytest.mark.parametrize(
    "command",
    [
        "TRIGger:IMPedance 75",  # 50 or 1000 Ohm only
        "TRIG:LEV 5.5",
        "SOUR1:VOLT:OFFS 2.5",
        "SOUR1:MARK1:VOLT:HIGH 2.8",
        "SOUR1:MARK1:DEL 2E-9",
        "OUTP1:FILT:FREQ 50E6",  # 20 MHz, 100 MHz or through
        "SOUR1:FREQ 5E6",  # 10 MS/s..1.2 GS/s
        "AWGC:RMOD BURST",
        'WLIS:WAV:NEW "bad",10,FLOAT',
        "SOUR5:VOLT:AMPL 1",  # four channels
        "SOUR1:VOLT:AMPL 1 mV",  # 1 mV is below 20 mV, not 1 V
        "SOUR1:VOLT:AMPL 1 Hz",
        "AWGC:RUN 1",
    ],
)
def test_what_the_instrument_refuses_it_refuses(open_driver, command):
    awg = open_driver("awg")
    awg.scpi.write("*RST")
    with pytest.raises(InstrumentReportedError):
        awg.scpi.write(command)
