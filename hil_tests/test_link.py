"""Entanglement sessions through the whole stack: two node daemons and the midpoint daemon,
the link layer between them, heralds checked against the simulator's ground truth."""

import pytest
from lab_truth import calibrate_nodes_from_truth

from controller.sessionfile import DELIVERED

pytestmark = [pytest.mark.usefixtures("sim"), pytest.mark.timeout(300)]


@pytest.fixture
def stations(start_daemon, data_dir, sim):
    calibrate_nodes_from_truth(data_dir, sim)
    m = start_daemon("M", "--allow-faults")
    return {"M": m, "A": start_daemon("A"), "B": start_daemon("B")}


def test_single_click_session_delivers_pairs_both_nodes_agree(stations, sim):
    a, b = stations["A"].client, stations["B"].client
    before = len(sim.heralds())
    started = a.entangle(30, "single_click", fidelity_min=0.8, delivery="Z", deadline_s=120)
    summary = a.wait_session(started["session"], timeout_s=200)
    print(summary)
    assert summary["state"] == "completed", summary
    assert summary["stats"]["delivered"] >= 30
    data = {n: c.session_data(started["session"]) for n, c in (("A", a), ("B", b))}
    delivered = {
        n: {r["id"] for r in d["pairs"] if r["status"] == DELIVERED} for n, d in data.items()
    }
    assert delivered["A"] == delivered["B"]
    truth = sim.heralds()[before:]
    assert len(truth) == len(data["A"]["heralds"])
