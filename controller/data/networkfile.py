"""Network session files: one HDF5 file per network session and node, written as it goes.

A network session (an operator's `network_entangle`, `network_ghz` or `network_teleport` at
the repeater) is recorded by each of its three nodes: every end-to-end pair (or GHZ shot) it
knew of, with its two link pairs' ids, the Pauli frame this node applied, the bases and
corrected results, the goodness, the time stamps, and its fate (delivered, discarded with its
cause and reason, or a message refused after a discard). Rows are written, and the file
flushed, before the node announces a decision (the service writes a record before it sends
the message that follows from it), so a crash loses no decision anyone else heard of.

Layout (attrs `kind` = "network"):
  attrs: kind, session, node, role, application, created, software_version, request (JSON),
         and every code of the rows named: status_codes, cause_codes, pauli_codes,
         basis_codes, state_codes (JSON maps code -> name)
  pairs     PAIR_ROW per end-to-end pair or GHZ shot; a refused message gets a row of its own
  ledger    int64 counts, names in its attr `names`: attempted, delivered, discarded,
            refused, duplicates, foreign, open, then discarded_<cause> per cause
  status    [state, reason]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np

from controller.data.names import session_path
from controller.data.runfile import SwmrFile, read_status

KIND = "network"
"""The file's `kind` attribute, and the last part of its name (names.session_path)."""

STATUS_CODES = {1: "delivered", 2: "discarded", 3: "refused"}
DELIVERED, DISCARDED, REFUSED = 1, 2, 3
CAUSES = ("cutoff", "timeout", "node_down", "conflict", "shutdown", "operation_failed")
"""Discard causes by code (1-based; 0: none): the swap's (controller.network.messages.REASONS,
the same order; a test keeps them equal)."""
PAULI_NAMES = ("I", "X", "Y", "Z")
BASIS_NAMES = ("X", "Y", "Z")
"""Measurement bases by code (1-based; 0: not measured)."""
STATE_NAMES = ("+Z", "-Z", "+X", "-X", "+Y", "-Y")
"""Teleported cardinal states by code (1-based; 0: none)."""

ID_BYTES = 401
LINK_ID_BYTES = 200
REASON_BYTES = 200

PAIR_ROW = np.dtype(
    [
        ("id", f"S{ID_BYTES}"),  # the end-to-end pair's (or GHZ shot's) id
        ("link_first", f"S{LINK_ID_BYTES}"),  # the first end's link pair
        ("link_second", f"S{LINK_ID_BYTES}"),  # the second end's link pair
        ("status", "u1"),  # STATUS_CODES
        ("cause", "u1"),  # CAUSES, 1-based; 0 when not discarded
        ("reason", f"S{REASON_BYTES}"),
        ("pauli", "u1"),  # the frame this node applied (PAULI_NAMES index); 0 (I) at B
        ("goodness", "<f8"),  # expected fidelity at the BSM (planning model)
        ("made_first", "<f8"),  # the link pairs' heralds (their nodes' clocks); NaN unknown
        ("made_second", "<f8"),
        ("t_bsm", "<f8"),  # B's Bell-state (or GHZ) measurement; NaN before it
        ("t_applied_first", "<f8"),  # each end's frame applied (its clock)
        ("t_applied_second", "<f8"),
        ("basis_first", "u1"),  # BASIS_NAMES, 1-based; 0 not measured
        ("basis_repeater", "u1"),
        ("basis_second", "u1"),
        ("bit_first", "i1"),  # +1 / -1 corrected for the frame; 0 not measured / unknown
        ("bit_repeater", "i1"),
        ("bit_second", "i1"),
        ("state", "u1"),  # teleportation: STATE_NAMES, 1-based; 0 none
        ("t", "<f8"),  # when this node wrote the row (its clock)
    ]
)

LEDGER_NAMES = (
    "attempted",
    "delivered",
    "discarded",
    "refused",
    "duplicates",
    "foreign",
    "open",
    *(f"discarded_{c}" for c in CAUSES),
)


def _code(names: tuple[str, ...], value: str) -> int:
    """1-based code of `value` in `names`, 0 for ""."""
    return names.index(value) + 1 if value else 0


def _codes(names: tuple[str, ...]) -> str:
    return json.dumps({str(i + 1): n for i, n in enumerate(names)})


def network_file_path(data_dir: Path, session: str, node: str) -> Path:
    return session_path(data_dir, session, node, KIND)


class NetworkSessionFile(SwmrFile):
    def __init__(
        self,
        path: Path,
        *,
        session: str,
        node: str,
        role: str,
        application: str,
        request: dict,
        software_version: str,
    ) -> None:
        f = self._create(
            path,
            kind=KIND,
            session=session,
            node=node,
            role=role,
            application=application,
            request=json.dumps(request),
            software_version=software_version,
            status_codes=json.dumps({str(k): v for k, v in STATUS_CODES.items()}),
            cause_codes=_codes(CAUSES),
            pauli_codes=json.dumps({str(i): n for i, n in enumerate(PAULI_NAMES)}),
            basis_codes=_codes(BASIS_NAMES),
            state_codes=_codes(STATE_NAMES),
        )
        self._pairs = f.create_dataset(
            "pairs", (0,), maxshape=(None,), dtype=PAIR_ROW, chunks=(256,)
        )
        self._ledger = f.create_dataset("ledger", (len(LEDGER_NAMES),), dtype="<i8")
        self._ledger.attrs["names"] = json.dumps(LEDGER_NAMES)
        self._rows: dict[str, int] = {}
        self._counts: dict[str, int] | None = None
        self._start_swmr(f)

    def record(
        self,
        pair: str,
        status: str,
        *,
        link_pairs: tuple[str, ...] = (),
        cause: str = "",
        reason: str = "",
        pauli: str = "I",
        goodness: float = float("nan"),
        made: tuple[float, ...] = (),
        t_bsm: float | None = None,
        applied: tuple[float | None, float | None] = (None, None),
        state: str = "",
    ) -> None:
        """Write (or, for a pair already written, overwrite) a pair's row and flush; a refused
        message always gets a row of its own."""
        row = np.zeros((), dtype=PAIR_ROW)
        index = self._rows.get(pair) if status != "refused" else None
        if index is not None:
            row = self._pairs[index]  # keep what was measured
        links = [*link_pairs, "", ""]
        made_list = [*made, float("nan"), float("nan")]
        row["id"] = pair.encode()[:ID_BYTES]
        row["link_first"] = links[0].encode()[:LINK_ID_BYTES]
        row["link_second"] = links[1].encode()[:LINK_ID_BYTES]
        row["status"] = {v: k for k, v in STATUS_CODES.items()}[status]
        row["cause"] = _code(CAUSES, cause)
        row["reason"] = reason.encode()[:REASON_BYTES]
        row["pauli"] = PAULI_NAMES.index(pauli or "I")
        row["goodness"] = goodness
        row["made_first"], row["made_second"] = made_list[0], made_list[1]
        row["t_bsm"] = np.nan if t_bsm is None else t_bsm
        row["t_applied_first"] = np.nan if applied[0] is None else applied[0]
        row["t_applied_second"] = np.nan if applied[1] is None else applied[1]
        row["state"] = _code(STATE_NAMES, state)
        row["t"] = time.time()
        self._write(pair, row, index)

    def has_row(self, pair: str) -> bool:
        return pair in self._rows

    def measured(self, pair: str, state: str = "", **bits: tuple[str, int]) -> None:
        """Results of a pair already recorded: `first=(basis, bit)`, `repeater=`, `second=`
        (bit +1/-1, corrected for the frame), and the teleported `state`. Flushed."""
        index = self._rows.get(pair)
        if index is None:
            raise KeyError(f"{pair} has no row in {self.path}")
        row = self._pairs[index]
        if state:
            row["state"] = _code(STATE_NAMES, state)
        for where, (basis, bit) in bits.items():
            if bit not in (-1, 1):
                raise ValueError(f"a result is +1 or -1, got {bit!r}")
            row[f"basis_{where}"] = _code(BASIS_NAMES, basis)
            row[f"bit_{where}"] = bit
        self._write(pair, row, index)

    def _write(self, pair: str, row: np.ndarray, index: int | None) -> None:
        if index is None:
            index = self._pairs.shape[0]
            self._pairs.resize(index + 1, axis=0)
            if row["status"] != REFUSED:
                self._rows[pair] = index
        self._pairs[index] = row
        self.flush()

    def ledger(self, counts: dict[str, int]) -> None:
        """The node's counts (LEDGER_NAMES; a missing one is 0), flushed when they changed.
        The service writes them whenever they change, open attempts included, so the file's
        attempted == delivered + discarded + open while the session runs, as at its end."""
        unknown = set(counts) - set(LEDGER_NAMES)
        if unknown:
            raise ValueError(f"not ledger counts: {sorted(unknown)}")
        values = {n: int(counts.get(n, 0)) for n in LEDGER_NAMES}
        if values == self._counts:
            return
        self._ledger[:] = list(values.values())
        self._counts = values
        self.flush()


def read_network_session(path: Path) -> dict:
    """A network session file's attributes, rows (numpy records) and counts (works on a file
    still being written)."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        if f.attrs.get("kind") != KIND:
            raise ValueError(f"{path} is not a network session file (kind {f.attrs.get('kind')!r})")
        state, reason = read_status(f)
        names = json.loads(f["ledger"].attrs["names"])
        return {
            "session": f.attrs["session"],
            "node": f.attrs["node"],
            "role": f.attrs["role"],
            "application": f.attrs["application"],
            "request": json.loads(f.attrs["request"]),
            "status": state,
            "reason": reason,
            "pairs": f["pairs"][:],
            "ledger": dict(zip(names, (int(v) for v in f["ledger"][:]), strict=True)),
        }
