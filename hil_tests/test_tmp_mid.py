import pytest

pytestmark = pytest.mark.usefixtures("sim")


def test_midpoint_status(start_daemon):
    m = start_daemon("M")
    s = m.client.status()
    print(s)
    assert s["state"] == "idle"
