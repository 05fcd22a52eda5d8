"""Entanglement sessions as the data folder holds them (every station's session file), for
`qnode session list`, and which node runs a session (its initiator) to attach or abort."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py

from controller.data.runfile import read_status
from controller.data.sessionfile import DELIVERED, DISCARDED, find_session_files
from qnode.errors import QnodeError


@dataclass(frozen=True)
class StationView:
    """One station's session file, in short."""

    station: str
    protocol: str
    role: str  # initiator, responder, midpoint
    state: str
    reason: str
    delivered: int
    discarded: int


@dataclass
class SessionRow:
    session: str
    protocol: str = ""
    initiator: str = ""
    views: list[StationView] = field(default_factory=list)


def read_view(path: Path) -> StationView:
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        state, reason = read_status(f)
        status = f["pairs"]["status"] if "pairs" in f else []
        return StationView(
            str(f.attrs["node"]),
            str(f.attrs["protocol"]),
            str(f.attrs["role"]),
            state,
            reason,
            int((status == DELIVERED).sum()) if len(status) else 0,
            int((status == DISCARDED).sum()) if len(status) else 0,
        )


def list_sessions(data_dir: Path, last: int = 20) -> list[SessionRow]:
    """The `last` sessions of this data folder, newest first, each with every station's view
    (a file that cannot be read, being created or left open by a crash, shows as such)."""
    rows: dict[str, SessionRow] = {}
    for path in find_session_files(data_dir):  # newest first
        session, station = path.stem.split("_")[:2]
        if session not in rows and len(rows) == last:
            continue
        row = rows.setdefault(session, SessionRow(session))
        try:
            view = read_view(path)
        except (OSError, KeyError) as e:
            view = StationView(station, "", "", f"unreadable: {e}", "", 0, 0)
        row.views.append(view)
        row.protocol = row.protocol or view.protocol
        if view.role == "initiator":
            row.initiator = view.station
    return list(rows.values())


def initiator_of(data_dir: Path, session: str) -> str:
    """The node that runs the session (the one the operator asked)."""
    for path in find_session_files(data_dir, session):
        try:
            view = read_view(path)
        except (OSError, KeyError):
            continue
        if view.role == "initiator":
            return view.station
    raise QnodeError(f"no session {session!r} in {data_dir} (see `qnode session list`)")
