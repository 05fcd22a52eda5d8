"""Item 9: the first session after a station restarts. A restarted daemon serves on a new port;
its peers must reach it there from the first message of the next session on, not only after
a heartbeat has noticed the new info file."""

import pytest

pytestmark = [pytest.mark.usefixtures("sim"), pytest.mark.timeout(300)]


def entangle_from_a(stations, pairs: int = 20) -> dict:
    a = stations["A"].client
    started = a.entangle(pairs, "single_click", delivery="Z", deadline_s=60)
    return a.wait_session(started["session"], timeout_s=90)


def restart(stations, start_daemon, name: str) -> None:
    stations[name].stop()
    stations[name] = start_daemon(name)


@pytest.mark.parametrize("restarted", ["A", "B", "M"])
def test_the_first_session_after_a_restart_completes(stations, start_daemon, restarted):
    first = entangle_from_a(stations)  # every station has its links to the others now
    assert first["state"] == "completed", first
    restart(stations, start_daemon, restarted)
    summary = entangle_from_a(stations)
    assert summary["state"] == "completed", (restarted, summary["reason"])
    assert summary["stats"]["delivered"] >= 20
    peer = stations["B"].client.session(summary["session"])
    assert peer["state"] == "completed", peer


def test_back_to_back_restarts_of_both_nodes(stations, start_daemon):
    """Both nodes restarted (B, then A): the session that follows still completes."""
    assert entangle_from_a(stations)["state"] == "completed"
    restart(stations, start_daemon, "B")
    restart(stations, start_daemon, "A")
    summary = entangle_from_a(stations)
    assert summary["state"] == "completed", summary
