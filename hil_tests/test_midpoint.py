"""The midpoint: its click classification (pure), and its daemon as the one owner of the
midpoint's instruments for calibration and sessions."""

import numpy as np
import pytest

from calibration.graph import ROUTINES, run_routine
from calibration.routine import UPDATED
from controller.data.params import ParameterStore
from controller.midpoint.herald_logic import classify
from controller.operator.calibration_access import ClientNodeAccess, DaemonMidpointAccess
from controller.operator.client import NodeRequestError
from qnode.records import CLICK_DTYPE

DETECTORS = {"psi_plus": 1, "psi_minus": 2}
WINDOWS = [(60.0, 27.0), (75.0, 27.0)]  # A's and B's photons: start, length (ns)


def clicks(*rows) -> np.ndarray:
    """rows of (sync, attempt, round, input, delay ns)."""
    out = np.zeros(len(rows), dtype=CLICK_DTYPE)
    for k, (sync, attempt, rnd, channel, delay_ns) in enumerate(rows):
        out[k] = (sync, attempt, rnd, channel, round(delay_ns * 1e3))
    return out


def outcomes(data, protocol="single_click"):
    return [(c.sync, c.attempt, c.outcome) for c in classify(data, protocol, WINDOWS, DETECTORS)]


def test_single_click_one_click_in_a_window_says_which_bell_state():
    data = clicks((5, 100, 0, 1, 65.0), (6, 7, 0, 2, 80.0))
    assert outcomes(data) == [(5, 100, "psi_plus"), (6, 7, "psi_minus")]


def test_clicks_outside_every_window_or_on_both_detectors_fail():
    outside = clicks((5, 1, 0, 1, 20.0))
    both = clicks((6, 3, 0, 1, 65.0), (6, 3, 0, 2, 66.0))
    (verdict,) = classify(outside, "single_click", WINDOWS, DETECTORS)
    assert verdict.outcome == "fail" and "no click in a detection window" in verdict.reason
    (verdict,) = classify(both, "single_click", WINDOWS, DETECTORS)
    assert verdict.outcome == "fail" and "clicks per round 2" in verdict.reason


def test_a_dark_count_outside_the_window_does_not_spoil_a_herald():
    data = clicks((5, 9, 0, 2, 250.0), (5, 9, 0, 1, 66.0))
    assert outcomes(data) == [(5, 9, "psi_plus")]


def test_barrett_kok_same_detector_twice_is_psi_plus_one_each_psi_minus():
    data = clicks(
        (1, 4, 0, 1, 65.0),
        (1, 4, 1, 1, 78.0),
        (2, 8, 0, 2, 65.0),
        (2, 8, 1, 1, 66.0),
        (3, 2, 0, 1, 65.0),  # the second round never clicked
    )
    assert outcomes(data, "barrett_kok") == [
        (1, 4, "psi_plus"),
        (2, 8, "psi_minus"),
        (3, 2, "fail"),
    ]


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown protocol 'hom'"):
        classify(clicks((1, 1, 0, 1, 65.0)), "hom", WINDOWS, DETECTORS)


@pytest.mark.usefixtures("sim")
def test_calibration_goes_through_the_midpoint_daemon(start_daemon, data_dir, sim, lab):
    m = start_daemon("M")
    a = start_daemon("A")
    truth = sim.truth("M")
    with ParameterStore(data_dir / "params.sqlite") as store:
        midpoint = DaemonMidpointAccess(lab, store, "test")
        access = ClientNodeAccess.for_lab(lab, "A", a.client, store, midpoint)
        outcome = run_routine(access, ROUTINES["dark_counts"], True, None)
        assert outcome.verdict == UPDATED, outcome.reason
        for name, channel in DETECTORS.items():
            rate = store.current("M")[f"dark_count_hz_{name}"].value
            assert rate == pytest.approx(truth["dark_count_hz"][str(channel)], rel=0.25)
        # one armed acquisition at a time, and no session while it is armed
        midpoint.start_tags()
        with pytest.raises(NodeRequestError, match="busy: the tagger is armed for test"):
            m.client.request("tags_start", holder="someone else")
        with pytest.raises(NodeRequestError, match="busy: the tagger is armed"):
            m.client.request("dark_tags", seconds=0.1)
        tags = midpoint.stop_tags()
        assert tags.dtype.names == ("time_ps", "delay_ps", "channel")
        midpoint.close()
    status = m.client.status()
    assert status["state"] == "idle" and status["session"] is None


def test_herald_windows_reach_the_herald_logic(open_driver, maybe_sim, nothing_reaches):
    """The herald logic is its own instrument (the CPLD behind the detectors), not the
    tagger: its windows, click mode and sync output."""
    herald = open_driver("herald_logic", "M")
    herald.set_herald_windows([(52.5, 27.6), (71.0, 27.6)])
    if maybe_sim:
        assert maybe_sim.state(herald.name)["herald_windows"] == [[52.5, 27.6], [71.0, 27.6]]
    assert herald.error_list() == []
    with nothing_reaches(herald), pytest.raises(ValueError, match=r"length 0\.0 ns"):
        herald.set_herald_windows([(50.0, 0.0)])
    with nothing_reaches(herald), pytest.raises(ValueError, match="5 herald windows"):
        herald.set_herald_windows([(50.0, 10.0)] * 5)
    herald.set_herald_windows([])
    if maybe_sim:  # every slot off: the open gate
        assert maybe_sim.state(herald.name)["herald_windows"] == [[0.0, 1000.0]]


def test_herald_logic_arms_and_drives_the_sync_output(open_driver, maybe_sim):
    herald = open_driver("herald_logic", "M")
    herald.arm_clicks(True)
    herald.set_click_mode(True)
    assert herald.scpi.query("CLIC:MODE?") == "SOFT"
    before = herald.sync_count()
    herald.fire_sync()
    assert herald.sync_count() == before + 1
    assert herald.read_clicks().size == 0  # no attempt ran: nothing recorded
    if maybe_sim:
        assert maybe_sim.state(herald.name)["clicks_armed"] is True
    herald.safe_state()
    assert herald.scpi.query("SYNC:MODE?") == "OFF"
    assert herald.scpi.query("CLIC:MODE?") == "HARD"
    if maybe_sim:
        assert maybe_sim.state(herald.name)["clicks_armed"] is False
