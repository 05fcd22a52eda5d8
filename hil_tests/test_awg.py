"""AWG (AWG5014 subset): waveform blocks, sequence table, limits, safe state."""

import zlib

import numpy as np
import pytest

from drivers.awg_5014 import decode_int_waveform, encode_int_waveform
from qnode.errors import LimitError


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
