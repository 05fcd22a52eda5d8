"""The parameter history is tamper-evident: each row carries a hash chained to the row before
it, so a row rewritten (REPLACE INTO, or UPDATE after DROP TRIGGER), removed (DELETE after
DROP TRIGGER) or inserted behind the store's back is found by `qnode params verify`, by row id;
and the daemons refuse to start on a broken chain unless told to accept it."""

import os
import sqlite3
import subprocess

import pytest

from controller.data.params import GENESIS, ParameterStore, row_digest
from controller.messaging.serving import node_info_path
from controller.operator.client import NodeClient
from controller.operator.daemons import QNODE, daemon_args, spawn, terminate


def make_store(path, rows: int = 5) -> None:
    with ParameterStore(path) as store:
        for k in range(rows):
            store.set_manual("A" if k % 2 == 0 else "B", "mw_frequency_hz", 2.87e9 + k, f"r{k}")


def tamper(path, *sql: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for statement in sql:
        db.execute(statement)
    db.close()


def problems(path, node=None):
    with ParameterStore(path) as store:
        report = store.verify(node)
    return report, [(p.kind, p.row_id) for p in report.problems]


def test_an_untouched_store_verifies(tmp_path):
    make_store(tmp_path / "p.sqlite")
    report, found = problems(tmp_path / "p.sqlite")
    assert report.intact and found == []
    assert report.summary() == "chain intact, 5 rows"


def test_rows_of_every_shape_verify_as_stored(tmp_path):
    with ParameterStore(tmp_path / "p.sqlite") as store:
        store.record("A", "pi_amplitude_v", -0.0, source="routine", routine="rabi", run_id="r1")
        store.record("A", "pi_amplitude_v", 3, source="routine", fit_quality=1, accepted=False)
        store.record("A", "pi_amplitude_v", 0.1, source="routine", fit_quality=float("nan"))
        store.record("A", "pi_amplitude_v", 2.87e9, source="routine", fit_quality=float("inf"))
        store.record("B", "x", 1e300, source="manual", reason="é ünïcode", unit="Hz")
        assert store.verify().summary() == "chain intact, 5 rows"


def test_replace_into_is_found_as_a_rewritten_row(tmp_path):
    path = tmp_path / "p.sqlite"
    make_store(path)
    # the break: REPLACE deletes and inserts, so no trigger fires and the row is rewritten
    tamper(
        path,
        "REPLACE INTO params (id, node, name, value, unit, time, source, accepted, reason) "
        "VALUES (3, 'A', 'mw_frequency_hz', 1.0, 'Hz', 0, 'manual', 1, 'quiet')",
    )
    with ParameterStore(path) as store:
        assert store.history("A", "mw_frequency_hz")[1].value == 1.0  # it did rewrite it
    report, found = problems(path)
    assert found == [("rewritten", 3)]
    assert "1.0" in str(report.problems[0]) and "quiet" in str(report.problems[0])


def test_replace_into_keeping_the_old_hash_is_found_too(tmp_path):
    path = tmp_path / "p.sqlite"
    make_store(path)
    tamper(
        path,
        "REPLACE INTO params SELECT id, node, name, 5.0, unit, time, source, routine, run_id, "
        "fit_quality, accepted, reason, prev_hash, row_hash FROM params WHERE id = 2",
    )
    assert problems(path)[1] == [("rewritten", 2)]


def test_changed_value_after_drop_trigger_is_found(tmp_path):
    path = tmp_path / "p.sqlite"
    make_store(path)
    tamper(
        path,
        "DROP TRIGGER params_no_update",
        "UPDATE params SET value = 2.0 WHERE id = 4",
    )
    assert problems(path)[1] == [("rewritten", 4)]


def test_delete_after_drop_trigger_is_found_as_removed(tmp_path):
    path = tmp_path / "p.sqlite"
    make_store(path)
    tamper(path, "DROP TRIGGER params_no_delete", "DELETE FROM params WHERE id = 2")
    report, found = problems(path)
    assert found == [("removed", 2)]
    assert "id 2 missing" in str(report.problems[0])


def test_delete_of_the_last_rows_is_found(tmp_path):
    path = tmp_path / "p.sqlite"
    make_store(path)
    tamper(path, "DROP TRIGGER params_no_delete", "DELETE FROM params WHERE id >= 4")
    assert problems(path)[1] == [("removed", 4)]


def test_inserted_rows_are_found(tmp_path):
    path = tmp_path / "p.sqlite"
    make_store(path)
    insert = (
        "INSERT INTO params (id, node, name, value, unit, time, source, accepted, reason) "
        "VALUES ({}, 'A', 'mw_frequency_hz', 7.0, 'Hz', 0, 'manual', 1, 'sneaked')"
    )
    tamper(path, insert.format(10))
    assert problems(path)[1] == [("inserted", 10)]
    # one with a hash computed by the rules, after the store's last row: still found
    path2 = tmp_path / "q.sqlite"
    make_store(path2)
    db = sqlite3.connect(path2, isolation_level=None)
    last = db.execute("SELECT row_hash FROM params WHERE id = 5").fetchone()[0]
    fields = (6, "A", "mw_frequency_hz", 7.0, "Hz", 0.0, "manual", None, None, None, 1, "x")
    db.execute(
        "INSERT INTO params VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (*fields, last, row_digest(fields, last)),
    )
    db.close()
    assert problems(path2)[1] == [("inserted", 6)]


def test_rows_added_after_tampering_still_show_the_tampering(tmp_path):
    path = tmp_path / "p.sqlite"
    make_store(path)
    tamper(path, "DROP TRIGGER params_no_update", "UPDATE params SET value = 2.0 WHERE id = 2")
    make_store(path, rows=2)  # the store re-creates the trigger and appends
    report, found = problems(path)
    assert found == [("rewritten", 2)] and report.rows == 7
    assert problems(path, node="B")[1] == [("rewritten", 2)]  # row 2 is B's
    assert problems(path, node="A")[1] == []


def test_a_store_without_hashes_is_migrated_once_and_says_so(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """CREATE TABLE params (id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL,
        name TEXT NOT NULL, value REAL NOT NULL, unit TEXT NOT NULL, time REAL NOT NULL,
        source TEXT NOT NULL, routine TEXT, run_id TEXT, fit_quality REAL,
        accepted INTEGER NOT NULL, reason TEXT);
        CREATE TRIGGER params_no_update BEFORE UPDATE ON params
        BEGIN SELECT RAISE(ABORT, 'the parameter store is append-only'); END;
        INSERT INTO params (node, name, value, unit, time, source, routine, accepted)
        VALUES ('A', 'mw_frequency_hz', 2.87e9, 'Hz', 1.5, 'routine', 'esr', 1),
               ('A', 'pi_amplitude_v', 0.5, 'V', 2.5, 'routine', 'rabi', 1);"""
    )
    db.close()
    with ParameterStore(path) as store:
        report = store.verify()
        assert report.intact and report.rows == 2
        assert "2 rows (ids up to 2) hashed as found" in report.migrated
        store.set_manual("A", "pi_amplitude_v", 0.6, "after migration")
        assert store.verify().summary() == "chain intact, 3 rows"
        assert store.current("A")["pi_amplitude_v"].value == 0.6
    db = sqlite3.connect(path)
    first = db.execute("SELECT prev_hash FROM params WHERE id = 1").fetchone()[0]
    assert first == GENESIS
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE params SET value = 1 WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM params WHERE id = 1")  # the missing trigger was re-created
    db.close()


def qnode(*args, env_data=None, timeout=60) -> subprocess.CompletedProcess:
    env = {**os.environ, "QNODE_DATA_DIR": str(env_data)} if env_data else None
    return subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_params_verify_reports_the_row_and_exits_non_zero(lab, tmp_path):
    data = tmp_path / "data"
    make_store(data / "params.sqlite")
    ok = qnode("params", "verify", "--lab", lab.source, env_data=data)
    assert ok.returncode == 0, ok.stderr
    assert "chain intact, 5 rows" in ok.stdout
    tamper(
        data / "params.sqlite",
        "DROP TRIGGER params_no_delete",
        "DELETE FROM params WHERE id = 2",
        "REPLACE INTO params (id, node, name, value, unit, time, source, accepted, reason) "
        "VALUES (4, 'B', 'mw_frequency_hz', 1.0, 'Hz', 0, 'manual', 1, 'quiet')",
    )
    broken = qnode("params", "verify", "--lab", lab.source, env_data=data)
    assert broken.returncode == 1
    out = " ".join((broken.stdout + broken.stderr).split())
    assert "row 2: removed" in out and "row 4: rewritten" in out and "quiet" in out
    assert "chain broken: 2 problem(s) in 4 rows" in out
    only_a = qnode("params", "verify", "--lab", lab.source, "--node", "A", env_data=data)
    assert only_a.returncode == 1 and "row 4" not in only_a.stderr  # row 4 is B's
    assert "Traceback" not in broken.stderr + only_a.stderr


@pytest.mark.timeout(180)
def test_daemons_refuse_a_broken_history_unless_told_to_accept_it(
    lab, sim_process, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    make_store(data / "params.sqlite")
    tamper(
        data / "params.sqlite",
        "REPLACE INTO params (id, node, name, value, unit, time, source, accepted, reason) "
        "VALUES (3, 'A', 'mw_frequency_hz', 1.0, 'Hz', 0, 'manual', 1, 'quiet')",
    )
    monkeypatch.setenv("QNODE_DATA_DIR", str(data))
    for station in ("A", "M"):
        args = daemon_args(lab, station, resource_map=sim_process)
        refused = qnode(*args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        out = " ".join((refused.stdout + refused.stderr).split())
        assert "will not start" in out and "row 3: rewritten" in out
        assert "--accept-broken-history" in out and "Traceback" not in out
        assert not node_info_path(data, station).exists()
    log = tmp_path / "A.log"
    args = daemon_args(lab, "A", resource_map=sim_process)
    proc = spawn([*args, "--accept-broken-history"], node_info_path(data, "A"), log)
    try:
        assert "STARTS ON AN ALTERED PARAMETER HISTORY" in log.read_text()
        with NodeClient.for_lab(lab, "A", timeout_s=10) as client:
            assert client.status()["state"] in ("idle", "fault")
    finally:
        assert terminate(proc) == 0
