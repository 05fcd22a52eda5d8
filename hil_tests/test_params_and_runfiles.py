"""Parameter store and run files (pure: SQLite and HDF5 on a temporary folder)."""

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from controller.data.params import ParameterError, ParameterStore
from controller.data.runfile import EVENT_DTYPE, RunFile, read_run


def test_history_keeps_every_value_and_current_is_newest_accepted(tmp_path):
    with ParameterStore(tmp_path / "p.sqlite") as store:
        store.record(
            "A", "pi_amplitude_v", 0.41, source="routine", routine="rabi", fit_quality=0.99
        )
        store.record(
            "A", "pi_amplitude_v", 0.45, source="routine", routine="rabi", fit_quality=0.98
        )
        store.record(
            "A",
            "pi_amplitude_v",
            0.90,
            source="routine",
            routine="rabi",
            accepted=False,
            reason="fit rejected: contrast 0.1 below 0.3",
        )
        store.set_manual("A", "pi_amplitude_v", 0.44, "tweak after a drift check")
        store.record("B", "pi_amplitude_v", 0.30, source="routine")
        history = store.history("A", "pi_amplitude_v")
        assert [r.value for r in history] == [0.41, 0.45, 0.90, 0.44]
        assert [r.accepted for r in history] == [True, True, False, True]
        assert history[-1].source == "manual" and history[-1].reason == "tweak after a drift check"
        assert store.current("A")["pi_amplitude_v"].value == 0.44
        assert store.values("B")["pi_amplitude_v"] == 0.30
        assert store.values("A")["readout_threshold"] == 1.0  # a default
        assert store.snapshot("A")["readout_threshold"]["source"] == "default"


def test_store_is_append_only_even_through_raw_sql(tmp_path):
    path = tmp_path / "p.sqlite"
    with ParameterStore(path) as store:
        store.record("A", "mw_frequency_hz", 2.87e9, source="routine")
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE params SET value = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM params")
    db.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value": "fast", "source": "manual", "reason": "x"}, "is not a number"),
        ({"value": float("nan"), "source": "manual", "reason": "x"}, "not finite"),
        ({"value": 1.0, "source": "manual", "reason": " "}, "needs a reason"),
        ({"value": 1.0, "source": "guess"}, "source must be"),
    ],
)
def test_bad_parameter_values_are_refused(tmp_path, kwargs, message):
    with (
        ParameterStore(tmp_path / "p.sqlite") as store,
        pytest.raises(ParameterError, match=message),
    ):
        store.record("A", "pi_amplitude_v", **kwargs)


def _run_file(path, shots=4, readouts=("readout",)):
    return RunFile(
        path,
        run_id="r1",
        node="A",
        sequence_data={"name": "t"},
        axes=[("duration_ns", [0.0, 10.0, 20.0], "ns")],
        shots=shots,
        readouts=list(readouts),
        lab_text="[lab]",
        parameters={"x": {"value": 1.0}},
        software_version="test",
    )


def test_run_file_round_trip(tmp_path):
    f = _run_file(tmp_path / "r.h5")
    for k in range(2):
        events = np.zeros(3, dtype=EVENT_DTYPE)
        events["point"], events["code"] = k, [1, 1, 1000]
        f.add_point(k, np.full((4, 1), k + 1), np.ones(4, bool), np.full(4, 30), events)
    f.close("aborted", "operator")
    data = read_run(tmp_path / "r.h5")
    assert data["status"] == "aborted" and data["reason"] == "operator"
    assert data["completed_points"] == 2 and data["counts"].shape == (2, 4, 1)
    assert data["counts"][1, 0, 0] == 2 and len(data["events"]) == 6
    assert data["axes"]["duration_ns"][1] == "ns"


def test_run_file_is_readable_after_a_crash_up_to_the_last_flush(tmp_path):
    path = tmp_path / "crash.h5"
    script = textwrap.dedent(f"""
        import os, numpy as np
        from controller.data.runfile import RunFile, EVENT_DTYPE
        f = RunFile({str(path)!r}, run_id="c", node="A", sequence_data={{"name": "t"}},
                    axes=[("x", [1.0, 2.0, 3.0], "")], shots=5, readouts=["readout"],
                    lab_text="", parameters={{}}, software_version="test")
        for k in range(2):
            f.add_point(k, np.full((5, 1), 7), np.ones(5, bool), np.zeros(5),
                        np.zeros(0, dtype=EVENT_DTYPE))
        os._exit(9)  # no close, no flush beyond add_point's: a crash
    """)
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == 9
    data = read_run(path)
    assert data["status"] == "running"  # it never said otherwise
    assert data["completed_points"] == 2
    assert data["counts"].shape == (2, 5, 1) and (data["counts"] == 7).all()
