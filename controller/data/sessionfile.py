"""Entanglement session files: one HDF5 file per session and station, written as it goes.

Each node writes every herald message it received and every pair it decided on (delivered or
discarded, and why); the midpoint writes every herald it sent. SWMR, flushed after every
batch, so a crash loses at most the last batch and a reader sees a consistent file.

Layout:
  attrs: session, node, role, protocol, created, software_version, request (JSON)
  config/lab_toml             the lab file as text
  parameters/<name>           the node's parameter snapshot at the start
  heralds                     HERALD_ROW per herald message (received, or sent by M)
  pairs                       PAIR_ROW per heralded shot: the decision and, if measured, the bit
                              (files before `counts_memory` are read with it at -1)
  runs                        the node's run ids, one per round of the session
  status                      [state, reason]

Outcome and basis codes are the link protocol's (controller.link.vocabulary: OUTCOMES, BASES).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from controller.data.names import check_name
from controller.data.repair import CRASHED, NOT_RECONCILED
from controller.data.runfile import STATUS_DTYPE, SwmrFile, read_status, write_parameters

DELIVERED, DISCARDED = 1, 2

HERALD_ROW = np.dtype(
    [
        ("seq", "<i8"),
        ("shot", "<i8"),
        ("sync", "<i8"),
        ("attempt", "<i8"),
        ("outcome", "u1"),
        ("t_sent", "<f8"),
        ("t_received", "<f8"),
    ]
)
PAIR_ROW = np.dtype(
    [
        ("id", "S40"),
        ("shot", "<i8"),
        ("attempt", "<i8"),
        ("outcome", "u1"),  # as heralded (before the Pauli-frame correction)
        ("bell_state", "u1"),  # delivered state after the correction (psi_plus)
        ("basis", "u1"),
        ("counts", "<i4"),  # readout photon counts (-1: kept, not measured)
        ("bit", "i1"),  # +1 bright (|0>), -1 dark, corrected for the frame; 0: not measured
        ("status", "u1"),  # DELIVERED, DISCARDED
        ("reason", "S80"),
        ("t", "<f8"),
        ("fidelity_estimate", "<f8"),
        # a bsm row's second readout (the memory's; `counts` is the electron's); -1: none
        ("counts_memory", "<i4"),
    ]
)


class SessionFile(SwmrFile):
    def __init__(
        self,
        path: Path,
        *,
        session: str,
        node: str,
        role: str,
        protocol: str,
        request: dict,
        lab_text: str,
        parameters: dict[str, dict],
        software_version: str,
    ) -> None:
        f = self._create(
            path,
            session=session,
            node=node,
            role=role,
            protocol=protocol,
            request=json.dumps(request),
            software_version=software_version,
        )
        f.create_group("config")["lab_toml"] = lab_text
        write_parameters(f, parameters)
        self._heralds = f.create_dataset(
            "heralds", (0,), maxshape=(None,), dtype=HERALD_ROW, chunks=(1024,)
        )
        self._pairs = f.create_dataset(
            "pairs", (0,), maxshape=(None,), dtype=PAIR_ROW, chunks=(1024,)
        )
        self._runs = f.create_dataset(
            "runs", (0,), maxshape=(None,), dtype=STATUS_DTYPE, chunks=(64,)
        )
        self._start_swmr(f)

    @staticmethod
    def _append(ds: h5py.Dataset, rows) -> None:
        if len(rows) == 0:
            return
        start = ds.shape[0]
        ds.resize(start + len(rows), axis=0)
        ds[start:] = rows

    def add_heralds(self, rows: np.ndarray) -> None:
        self._append(self._heralds, rows)

    def add_pairs(self, rows: np.ndarray) -> None:
        self._append(self._pairs, rows)

    def mark_discarded(self, index: int, reason: str) -> None:
        """A pair recorded as delivered turns out not to be (its peer never recorded it)."""
        row = self._pairs[index]
        row["status"], row["bell_state"], row["bit"] = DISCARDED, 0, 0
        row["reason"] = reason.encode()[:80]
        self._pairs[index] = row

    def add_run(self, run_id: str) -> None:
        self._append(self._runs, np.array([run_id], dtype=object))


def pair_rows(rows: np.ndarray) -> np.ndarray:
    """Rows as PAIR_ROW: a file written before a field was added gets it at its 'none'
    value (counts_memory -1), so old session files stay readable."""
    if rows.dtype == PAIR_ROW:
        return rows
    upgraded = np.zeros(len(rows), dtype=PAIR_ROW)
    upgraded["counts_memory"] = -1
    for name in rows.dtype.names or ():
        if name in (PAIR_ROW.names or ()):
            upgraded[name] = rows[name]
    return upgraded


def read_session(path: Path) -> dict:
    """The session's records as numpy arrays (works on a file still being written)."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        state, reason = read_status(f)
        return {
            "session": f.attrs["session"],
            "node": f.attrs["node"],
            "role": f.attrs["role"],
            "protocol": f.attrs["protocol"],
            "request": json.loads(f.attrs["request"]),
            "status": state,
            "reason": reason,
            "heralds": f["heralds"][:],
            "pairs": pair_rows(f["pairs"][:]),
            "runs": [r.decode() if isinstance(r, bytes) else r for r in f["runs"][:]],
            "parameters": {name: float(ds[()]) for name, ds in f["parameters"].items()},
        }


def find_session_files(data_dir: Path, session: str | None = None, node: str = "*"):
    """Session files of this lab's data folder (all, or one session's), newest first."""
    if session is not None:
        check_name("session id", session)
    pattern = f"{session or '*'}_{node}_entangle.h5"
    return sorted((Path(data_dir) / "runs").glob(f"*/{pattern}"), reverse=True)


def delivered_ids(path: Path) -> list[str]:
    pairs = read_session(path)["pairs"]
    return [r["id"].decode() for r in pairs if r["status"] == DELIVERED]


def awaiting_reconciliation(state: str, reason: str) -> bool:
    """A file a crash left `running`, or closed as crashed before its peer answered."""
    return state == "running" or (state == CRASHED and reason.startswith(NOT_RECONCILED))


def reconcile(path: Path, keep: set[str], reason: str) -> int:
    """A file left by a crash: every delivered pair its peer does not also hold as
    delivered becomes a discard, and the file is closed as crashed. Returns how many changed.

    HDF5 keeps a crashed SWMR writer's file marked open, so the file is copied whole into a
    fresh one that replaces it (atomically)."""
    path = Path(path)
    fresh = path.with_suffix(".reconciling")
    changed = 0
    with (
        h5py.File(path, "r", libver="latest", swmr=True) as src,
        h5py.File(fresh, "w", libver="latest") as dst,
    ):
        dst.attrs.update(dict(src.attrs))
        for name in src:
            src.copy(src[name], dst, name)
        pairs = dst["pairs"][:]
        for row in pairs:
            if row["status"] == DELIVERED and row["id"].decode() not in keep:
                row["status"], row["bell_state"], row["bit"] = DISCARDED, 0, 0
                row["reason"] = b"peer did not keep it (reconciled after a crash)"
                changed += 1
        dst["pairs"][:] = pairs
        dst["status"][:] = [CRASHED, reason[:250]]
    os.replace(fresh, path)
    return changed


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
