"""The parameter store: SQLite, append-only, one history per (node, parameter).

Every update is a new row; the current value is the newest accepted row. Triggers refuse
UPDATE and DELETE; and since whoever holds the file can drop a trigger or `REPLACE INTO` a row,
each row also carries a hash chained to the row before it (`row_hash`), and `verify` finds
every row rewritten, removed or inserted since.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import math
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qnode.errors import QnodeError
from sequences.parameters import PARAMETERS, defaults, unit_of

if TYPE_CHECKING:
    from controller.labconfig import LabConfig

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
    reason TEXT,
    prev_hash TEXT,                -- the previous row's row_hash (GENESIS for the first)
    row_hash TEXT                  -- sha256 of this row's fields and prev_hash (row_digest)
);
CREATE INDEX IF NOT EXISTS params_node_name ON params (node, name, id);
CREATE TABLE IF NOT EXISTS params_chain (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS params_no_update BEFORE UPDATE ON params
BEGIN SELECT RAISE(ABORT, 'the parameter store is append-only'); END;
CREATE TRIGGER IF NOT EXISTS params_no_delete BEFORE DELETE ON params
BEGIN SELECT RAISE(ABORT, 'the parameter store is append-only'); END;
"""


log = logging.getLogger("qnode.params")

FIELDS = (
    "id",
    "node",
    "name",
    "value",
    "unit",
    "time",
    "source",
    "routine",
    "run_id",
    "fit_quality",
    "accepted",
    "reason",
)
GENESIS = "0" * 64
"""The prev_hash of the first row."""


class ParameterError(QnodeError):
    pass


class BrokenHistory(ParameterError):
    pass


def row_digest(fields: tuple, prev_hash: str) -> str:
    """sha256 (hex) of the canonical encoding of a row: the JSON array of FIELDS in order, then
    prev_hash; floats as float.hex() strings (exact), integers as integers, NULL as null;
    compact separators, ASCII only."""

    def canonical(v):
        if isinstance(v, float):
            return {"f": v.hex()}
        return v

    text = json.dumps(
        [*(canonical(v) for v in fields), prev_hash], separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    kind: str  # rewritten, removed, inserted
    row_id: int | None
    node: str | None
    detail: str

    def __str__(self) -> str:
        where = f"row {self.row_id}" if self.row_id is not None else "rows"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class ChainReport:
    rows: int
    problems: list[ChainProblem] = field(default_factory=list)
    migrated: str = ""  # rows hashed once when the store was migrated, and when

    @property
    def intact(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.intact:
            return f"chain intact, {self.rows} rows"
        return f"chain broken: {len(self.problems)} problem(s) in {self.rows} rows: " + "; ".join(
            str(p) for p in self.problems[:3]
        )


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
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            with self._lock:
                self._open_schema()
        except sqlite3.Error as e:
            self._db.close()
            raise self._store_error(e, "opening it") from None

    def _store_error(self, e: sqlite3.Error, doing: str) -> ParameterError:
        """SQLite's error as one clear line: a full disk said as such ("database or disk is
        full", or the "disk I/O error" SQLite reports when it cannot even grow its WAL
        files), and that nothing was recorded (the append is one transaction)."""
        free: int | None = None
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(self.path.parent).free
        if "full" in str(e) or (free is not None and free < 256 * 1024):
            why = f"the disk is full ({free if free is not None else '?'} bytes free)"
        else:
            why = str(e)
        return ParameterError(
            f"parameter store {self.path}: {doing} failed: {why} [sqlite: {e}]; nothing was "
            "recorded, the store is unchanged"
        )

    def _open_schema(self) -> None:
        db = self._db
        had_table = bool(
            db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='params'"
            ).fetchone()
        )
        triggers = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
        }
        db.executescript(SCHEMA)
        if not self._has_hashes():
            self._migrate()
        missing = {"params_no_update", "params_no_delete"} - triggers
        if had_table and missing:
            log.warning(
                "%s: trigger(s) %s had been dropped; re-created. `qnode params verify` shows "
                "whether rows were rewritten meanwhile",
                self.path,
                ", ".join(sorted(missing)),
            )
        db.executescript(TRIGGERS)

    def _has_hashes(self) -> bool:
        return "row_hash" in {r[1] for r in self._db.execute("PRAGMA table_info(params)")}

    def _migrate(self) -> None:
        """A store from before the hash chain: hash its rows once, as they are, and say so."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._has_hashes():  # another process migrated it meanwhile
                db.execute("COMMIT")
                return
            db.execute("ALTER TABLE params ADD COLUMN prev_hash TEXT")
            db.execute("ALTER TABLE params ADD COLUMN row_hash TEXT")
            db.execute("DROP TRIGGER IF EXISTS params_no_update")
            db.execute("DROP TRIGGER IF EXISTS params_no_delete")
            prev, last_id, n = GENESIS, 0, 0
            for row in db.execute(f"SELECT {', '.join(FIELDS)} FROM params ORDER BY id").fetchall():
                digest = row_digest(tuple(row), prev)
                db.execute(
                    "UPDATE params SET prev_hash = ?, row_hash = ? WHERE id = ?",
                    (prev, digest, row[0]),
                )
                prev, last_id, n = digest, row[0], n + 1
            note = (
                f"{n} rows (ids up to {last_id}) hashed as found when the store was migrated, "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
            )
            self._set_meta("migrated", note)
            self._set_meta("head", json.dumps({"id": last_id, "hash": prev}))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        log.warning("%s: parameter history migrated to a hash chain: %s", self.path, note)

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO params_chain (key, value) VALUES (?, ?)", (key, value)
        )

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM params_chain WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

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
        # as SQLite gives them back (the hash is of the stored row): -0.0 and NaN do not
        # survive the round trip (0.0 and NULL), text columns hold text
        fields = (
            str(node),
            name,
            value + 0.0,
            str(unit if unit is not None else unit_of(name)),
            time.time(),
            source,
            _text(routine),
            _text(run_id),
            None if fit_quality is None or fit_quality != fit_quality else float(fit_quality) + 0.0,
            int(bool(accepted)),
            _text(reason),
        )
        with self._lock:
            try:
                row_id = self._append(node, name, fields)
            except sqlite3.Error as e:
                raise self._store_error(e, f"recording {node}.{name}") from None
        return self._query("SELECT * FROM params WHERE id = ?", (row_id,))[0]

    def _append(self, node: str, name: str, fields: tuple) -> int:
        """One row at the chain's end, in one transaction (rolled back on any error); its id."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # read the chain's end and append, atomically
        try:
            last = db.execute("SELECT id, row_hash FROM params ORDER BY id DESC LIMIT 1")
            last_row = last.fetchone()
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'params'")
            seq_row = seq.fetchone()
            row_id = max(last_row[0] if last_row else 0, seq_row[0] if seq_row else 0) + 1
            prev = (last_row[1] or "") if last_row else GENESIS
            digest = row_digest((row_id, *fields), prev)
            db.execute(
                f"INSERT INTO params ({', '.join(FIELDS)}, prev_hash, row_hash) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (row_id, *fields, prev, digest),
            )
            stored = db.execute(
                f"SELECT {', '.join(FIELDS)} FROM params WHERE id = ?", (row_id,)
            ).fetchone()
            if row_digest(tuple(stored), prev) != digest:  # never a row that fails verify
                raise ParameterError(f"{node}.{name}: the row would not verify as stored")
            self._set_meta("head", json.dumps({"id": row_id, "hash": digest}))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        return row_id

    def verify(self, node: str | None = None) -> ChainReport:
        """Check the hash chain: every row rewritten (its fields no longer match its hash),
        removed (the next row links past it) or inserted (the chain links past it), by row
        id. `node`: report only that node's rows (and removals, whose node is unknown)."""
        with self._lock:
            self._db.execute("BEGIN")  # one snapshot of the rows and the recorded head
            try:
                rows = self._db.execute(
                    f"SELECT {', '.join(FIELDS)}, prev_hash, row_hash FROM params ORDER BY id"
                ).fetchall()
                head_text = self._meta("head")
                migrated = self._meta("migrated") or ""
            finally:
                self._db.execute("COMMIT")
        problems = _chain_problems(rows, json.loads(head_text) if head_text else None)
        if node is not None:
            problems = [p for p in problems if p.node in (None, node)]
        return ChainReport(len(rows), problems, migrated)

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

    def station_values(self, station: str, platform: str | None) -> dict[str, float]:
        """A station's values: a memory node's over its platform's defaults (what its
        compiler sees), a midpoint's (no platform) as stored."""
        if platform is None:
            return {name: row.value for name, row in self.current(station).items()}
        return self.values(station, platform)

    def names(self, node: str) -> set[str]:
        """Every parameter name the node has a row of (accepted or not)."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT name FROM params WHERE node = ?", (node,))
            return {name for (name,) in rows.fetchall()}

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


def _text(v: object) -> str | None:
    return None if v is None else str(v)


def _describe(r) -> str:
    node, name, value, unit, source = r[1], r[2], r[3], r[4], r[6]
    what = r[7] or r[11] or ""
    return f"now {node}.{name} = {value!r} {unit} ({source}{': ' + what if what else ''})"


def _chain_problems(rows: list, head: dict | None) -> list[ChainProblem]:
    """Walk the chain. `chain` is the hash the next row must name as its prev_hash: a good
    row's own hash; past a rewritten row, the hash its successor names (the row as it was);
    past an inserted row, unchanged."""
    problems: list[ChainProblem] = []
    chain, last_id = GENESIS, 0
    for i, r in enumerate(rows):
        row_id, node, prev_hash, row_hash = r[0], r[1], r[12], r[13]
        following = rows[i + 1] if i + 1 < len(rows) else None
        content_ok = row_hash is not None and row_hash == row_digest(tuple(r[:12]), prev_hash or "")
        if prev_hash != chain and content_ok:
            gap = list(range(last_id + 1, row_id))
            missing = f"ids {gap[0]}..{gap[-1]}" if len(gap) > 1 else f"id {gap[0]}" if gap else ""
            problems.append(
                ChainProblem(
                    "removed",
                    gap[0] if gap else row_id,
                    None,
                    f"row(s) before row {row_id} removed"
                    + (f" ({missing} missing)" if missing else " (the chain links past them)"),
                )
            )
        if not content_ok:
            if following is not None:
                inserted = following[12] == chain
            else:
                inserted = head is not None and head.get("hash") == chain
            if inserted:
                problems.append(
                    ChainProblem(
                        "inserted", row_id, node, f"the chain links past this row; {_describe(r)}"
                    )
                )
                last_id = row_id
                continue
            hashed = "no hash" if row_hash is None else "its fields do not match its hash"
            problems.append(ChainProblem("rewritten", row_id, node, f"{hashed}; {_describe(r)}"))
            chain = following[12] if following is not None else (head or {}).get("hash", "")
        else:
            chain = row_hash
        last_id = row_id
    if head is not None:
        head_id, head_hash = head.get("id", 0), head.get("hash")
        if head_id > last_id or (head_id == last_id and head_hash != chain):
            problems.append(
                ChainProblem(
                    "removed",
                    last_id + 1 if head_id > last_id else last_id,
                    None,
                    f"the last row written was {head_id}; the store ends at {last_id}",
                )
            )
        elif head_id < last_id:
            for r in rows:
                if r[0] > head_id and not any(p.row_id == r[0] for p in problems):
                    problems.append(
                        ChainProblem(
                            "inserted",
                            r[0],
                            r[1],
                            f"after row {head_id}, the last the store wrote; {_describe(r)}",
                        )
                    )
    return problems


def require_intact(store: ParameterStore, who: str, accept_broken: bool = False) -> ChainReport:
    """At a daemon's start: refuse a broken parameter history, unless told to accept it (then
    say so loudly)."""
    report = store.verify()
    if report.intact:
        return report
    if not accept_broken:
        raise BrokenHistory(
            f"{who} will not start: the parameter history in {store.path} has been altered "
            f"({report.summary()}). `qnode params verify` lists every row; "
            "--accept-broken-history starts anyway"
        )
    for line in (
        f"{who} STARTS ON AN ALTERED PARAMETER HISTORY (--accept-broken-history)",
        report.summary(),
        *(str(p) for p in report.problems),
    ):
        log.critical("%s", line)
    return report


def open_intact(path: Path, who: str, accept_broken: bool = False) -> ParameterStore:
    """A daemon's store, opened only if its history is intact (or accepted broken)."""
    store = ParameterStore(path)
    try:
        require_intact(store, who, accept_broken)
    except BaseException:
        store.close()
        raise
    return store


def _row(r) -> ParameterRow:
    return ParameterRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11]
    )


def known_parameter(name: str) -> bool:
    return name in PARAMETERS


# checks of a manual override (`qnode params set`), against the lab ---------------------------
AMPLITUDES = ("pi_amplitude_v", "pi2_amplitude_v", "rabi_amplitude_v", "alpha_amplitude_v")
LAB_LIMITS: dict[str, tuple[str, str]] = {
    "mw_frequency_hz": ("microwave_source", "frequency_hz"),
    "esr_start_hz": ("microwave_source", "frequency_hz"),
    "esr_stop_hz": ("microwave_source", "frequency_hz"),
    "mw_power_dbm": ("microwave_source", "power_dbm"),
    **{name: ("awg", "amplitude_vpp") for name in AMPLITUDES},
}
"""Parameter -> (instrument role, limit) it is bounded by: what the node sets on that
instrument from it. The AWG's amplitudes are pulse peaks within the channel's amplitude
(0 .. amplitude_vpp / 2, as the compiler scales them); `<laser>_power_w` and
`<optical path>_power_w` are bounded by that laser's power_w."""


def lab_limit(lab: LabConfig, node: str, name: str) -> tuple[float, float, str] | None:
    """(low, high, which limit of which instrument) bounding a parameter, if any."""
    cfg = lab.nodes.get(node)
    if cfg is None:
        return None
    if name.endswith("_power_w"):
        stem = name.removesuffix("_power_w")
        optical = next((o for path, o in cfg.optics.items() if path == stem), None)
        laser = optical.laser if optical is not None else stem
        inst = cfg.instruments.get(laser)
        if inst is None or inst.role != "laser" or "power_w" not in inst.limits:
            return None
        lo, hi = inst.limits["power_w"]
        return float(lo), float(hi), f"{node}.{laser} power_w"
    if name not in LAB_LIMITS:
        return None
    role, limit = LAB_LIMITS[name]
    for inst_name, inst in cfg.by_role(role).items():
        if limit in inst.limits:
            lo, hi = inst.limits[limit]
            if limit == "amplitude_vpp":  # a pulse's peak, within the channel's amplitude
                return 0.0, float(hi) / 2, f"the peak of {node}.{inst_name} at {hi:g} Vpp"
            return float(lo), float(hi), f"{node}.{inst_name} {limit}"
    return None


def check_manual(
    lab: LabConfig, store: ParameterStore, node: str, name: str, value: float, new: bool = False
) -> None:
    """What `qnode params set` refuses at once, before anything is recorded: a node the lab
    does not have, a name no sequence knows and the node has no history of (with the close
    names; `new` records a deliberate custom parameter), a value that is not finite, or one
    beyond the lab limit of the instrument the parameter is set on. ParameterError says
    which."""
    if node not in lab.nodes:
        raise ParameterError(
            f"no node {node!r} in lab {lab.lab.name} (its nodes: {', '.join(sorted(lab.nodes))})"
        )
    laser_power = name.endswith("_power_w") and lab_limit(lab, node, name) is not None
    if not new and not laser_power and name not in PARAMETERS and name not in store.names(node):
        known = sorted({*PARAMETERS, *store.names(node)})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ParameterError(
            f"unknown parameter {name!r} for node {node}: {hint}"
            "(`qnode params show` lists them; --new records a new, custom parameter)"
        )
    if not math.isfinite(value):
        raise ParameterError(f"{node}.{name}: value {value} is not finite")
    bound = lab_limit(lab, node, name)
    if bound is not None:
        lo, hi, what = bound
        if not lo <= value <= hi:
            unit = unit_of(name)
            raise ParameterError(
                f"{node}.{name} = {value:g} {unit} is beyond the lab limit "
                f"[{lo:g}, {hi:g}] {unit} ({what}, in {lab.source or 'the lab file'})"
            )
