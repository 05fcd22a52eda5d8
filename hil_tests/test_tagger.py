"""Time controller: inputs, limits, and time tags as binary blocks."""

import zlib

import numpy as np
import pytest

from qnode.errors import LimitError


def test_threshold_and_enable_round_trip(open_driver):
    tagger = open_driver("time_tagger")
    tagger.set_threshold(2, -0.25)
    tagger.set_enabled(2, True)
    assert tagger.threshold(2) == pytest.approx(-0.25)
    assert tagger.enabled(2) is True


def test_threshold_limit(open_driver, nothing_reaches):
    tagger = open_driver("time_tagger")
    with nothing_reaches(tagger), pytest.raises(LimitError, match="threshold_v"):
        tagger.set_threshold(1, 1.9)


def test_time_tags_arrive_as_an_intact_block(open_driver, maybe_sim):
    tagger = open_driver("time_tagger")
    for channel in (1, 2):
        tagger.set_enabled(channel, True)
    seconds = tagger.limits["acquisition_s"][1]
    tags = tagger.acquire_tags(seconds)
    assert tags.size > 0
    assert np.all(np.diff(tags["time_ps"]) >= 0)
    assert set(np.unique(tags["channel"])) <= {1, 2}
    assert tags["time_ps"].max() < seconds * 1e12
    if maybe_sim:
        assert maybe_sim.state(tagger.name)["last_block_crc32"] == zlib.crc32(tags.tobytes())


def test_herald_windows_reach_the_herald_logic(open_driver, maybe_sim, nothing_reaches):
    tagger = open_driver("time_tagger", "M")
    tagger.set_herald_windows([(52.5, 27.6), (71.0, 27.6)])
    if maybe_sim:
        assert maybe_sim.state(tagger.name)["herald_windows"] == [[52.5, 27.6], [71.0, 27.6]]
    assert tagger.error_list() == []
    with nothing_reaches(tagger), pytest.raises(ValueError, match=r"length 0\.0 ns"):
        tagger.set_herald_windows([(50.0, 0.0)])
    with nothing_reaches(tagger), pytest.raises(ValueError, match="5 herald windows"):
        tagger.set_herald_windows([(50.0, 10.0)] * 5)
    tagger.set_herald_windows([])
    if maybe_sim:  # every slot off: the open gate
        assert maybe_sim.state(tagger.name)["herald_windows"] == [[0.0, 1000.0]]
