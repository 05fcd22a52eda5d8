"""The parameter store: SQLite, append-only, one history per (node, parameter).

Every update is a new row; the current value is the newest accepted row. Triggers refuse
UPDATE and DELETE, so nothing is ever overwritten, whoever holds the file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from qnode.errors import QnodeError
from sequences.parameters import PARAMETERS, defaults, unit_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS params (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    time REAL NOT NULL,
    source TEXT NOT NULL,          -- 'routine' or 'manual'
    routine TEXT,
    run_id TEXT,
    fit_quality REAL,
    accepted INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS params_node_name ON params (node, name, id);
CREATE TRIGGER IF NOT EXISTS params_no_update BEFORE UPDATE ON params
BEGIN SELECT RAISE(ABORT, 'the parameter store is append-only'); END;
CREATE TRIGGER IF NOT EXISTS params_no_delete BEFORE DELETE ON params
BEGIN SELECT RAISE(ABORT, 'the parameter store is append-only'); END;
"""


class ParameterError(QnodeError):
    pass


@dataclass(frozen=True)
class ParameterRow:
    id: int
    node: str
    name: str
    value: float
    unit: str
    time: float
    source: str
    routine: str | None
    run_id: str | None
    fit_quality: float | None
    accepted: bool
    reason: str | None


class ParameterStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection shared by the daemon's threads, serialised by a lock
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ParameterStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def record(
        self,
        node: str,
        name: str,
        value: float,
        *,
        source: str,
        routine: str | None = None,
        run_id: str | None = None,
        fit_quality: float | None = None,
        accepted: bool = True,
        reason: str | None = None,
        unit: str | None = None,
    ) -> ParameterRow:
        if not name or not name.replace("_", "").isalnum():
            raise ParameterError(f"parameter name {name!r} must be letters, digits and '_'")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"{node}.{name}: value {value!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ParameterError(f"{node}.{name}: value {value} is not finite")
        if source not in ("routine", "manual"):
            raise ParameterError(f"source must be 'routine' or 'manual', got {source!r}")
        if source == "manual" and not (reason and reason.strip()):
            raise ParameterError(f"{node}.{name}: a manual override needs a reason")
        row = (
            node,
            name,
            value,
            unit if unit is not None else unit_of(name),
            time.time(),
            source,
            routine,
            run_id,
            fit_quality,
            int(accepted),
            reason,
        )
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO params (node, name, value, unit, time, source, routine, run_id, "
                "fit_quality, accepted, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            row_id = cur.lastrowid
        return self._query("SELECT * FROM params WHERE id = ?", (row_id,))[0]

    def set_manual(self, node: str, name: str, value: float, reason: str) -> ParameterRow:
        return self.record(node, name, value, source="manual", reason=reason)

    def _query(self, sql: str, args: tuple) -> list[ParameterRow]:
        with self._lock:
            return [_row(r) for r in self._db.execute(sql, args).fetchall()]

    def current(self, node: str) -> dict[str, ParameterRow]:
        """Newest accepted row of every parameter of the node."""
        rows = self._query(
            "SELECT * FROM params WHERE id IN (SELECT MAX(id) FROM params WHERE node = ? AND "
            "accepted = 1 GROUP BY name) ORDER BY name",
            (node,),
        )
        return {r.name: r for r in rows}

    def values(self, node: str, platform: str = "nv") -> dict[str, float]:
        """What a compiler sees: the platform's defaults, overridden by current values."""
        current = {name: row.value for name, row in self.current(node).items()}
        return {**defaults(platform), **current}

    def history(self, node: str, name: str) -> list[ParameterRow]:
        return self._query(
            "SELECT * FROM params WHERE node = ? AND name = ? ORDER BY id", (node, name)
        )

    def snapshot(self, node: str, platform: str = "nv") -> dict[str, dict]:
        """For run files: current values with where they came from."""
        out = {
            name: {"value": v, "unit": unit_of(name), "source": "default"}
            for name, v in defaults(platform).items()
        }
        for name, row in self.current(node).items():
            out[name] = {
                "value": row.value,
                "unit": row.unit,
                "source": row.source,
                "time": row.time,
                "row_id": row.id,
            }
        return out


def _row(r) -> ParameterRow:
    return ParameterRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11]
    )


def known_parameter(name: str) -> bool:
    return name in PARAMETERS
