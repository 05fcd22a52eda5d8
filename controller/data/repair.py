"""Files a crash left behind: closed and marked, so that plain h5py opens them.

A writer killed mid-file (kill -9, power loss) leaves its HDF5 file with the writer's flag set
in the superblock: `h5py.File(path, "r")` then refuses it ("file is already open for write"),
and HDF5 cannot reopen it for writing either. Repairing copies everything into a fresh file
(read in SWMR mode; if even that fails, from a copy whose superblock flag is cleared, what
h5clear does), sets `status` to ["crashed", reason] and replaces the file atomically.

Who repairs: a daemon that starts again, its own run and network session files (node) or
heralds files (midpoint); a node's session files are its reconciliation's
(controller/link/reconcile.py), which marks them crashed too; `qnode data repair` any file
left by a writer that is gone. A network session file is marked "interrupted", not crashed:
its session goes on (or ended) on the other nodes, whose files hold the fate of every
end-to-end pair this node had open; its reason says how many were open at its last flush.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py

from controller.data.runfile import STATUS_DTYPE, read_status

CRASHED = "crashed"
INTERRUPTED = "interrupted"
"""A network session file whose node was killed (or crashed) while in the session."""
NOT_RECONCILED = "not reconciled"
"""How a node's crash-left session file that its peer has not yet reconciled says so (the
start of its reason): its daemon still reconciles it when it next starts."""

_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 hashlittle, the checksum of HDF5's superblock (version 2 and 3)."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _M
    k = 0
    while length - k > 12:
        a = (a + int.from_bytes(data[k : k + 4], "little")) & _M
        b = (b + int.from_bytes(data[k + 4 : k + 8], "little")) & _M
        c = (c + int.from_bytes(data[k + 8 : k + 12], "little")) & _M
        a = (a - c) & _M
        a ^= _rot(c, 4)
        c = (c + b) & _M
        b = (b - a) & _M
        b ^= _rot(a, 6)
        a = (a + c) & _M
        c = (c - b) & _M
        c ^= _rot(b, 8)
        b = (b + a) & _M
        a = (a - c) & _M
        a ^= _rot(c, 16)
        c = (c + b) & _M
        b = (b - a) & _M
        b ^= _rot(a, 19)
        a = (a + c) & _M
        c = (c - b) & _M
        c ^= _rot(b, 4)
        b = (b + a) & _M
        k += 12
    rest = data[k:]
    if not rest:
        return c
    rest = rest + bytes(12 - len(rest))
    a = (a + int.from_bytes(rest[0:4], "little")) & _M
    b = (b + int.from_bytes(rest[4:8], "little")) & _M
    c = (c + int.from_bytes(rest[8:12], "little")) & _M
    c = ((c ^ b) - _rot(b, 14)) & _M
    a = ((a ^ c) - _rot(c, 11)) & _M
    b = ((b ^ a) - _rot(a, 25)) & _M
    c = ((c ^ b) - _rot(b, 16)) & _M
    a = ((a ^ c) - _rot(c, 4)) & _M
    b = ((b ^ a) - _rot(a, 14)) & _M
    c = ((c ^ b) - _rot(b, 24)) & _M
    return c


SIGNATURE = b"\x89HDF\r\n\x1a\n"


def writer_flag(path: Path) -> bool:
    """Whether the file's superblock says a writer has it open (set by a writer that never
    closed it). Only superblocks of version 2 and 3 (libver latest) carry the flag there."""
    with open(path, "rb") as f:
        head = f.read(12)
    return len(head) == 12 and head[:8] == SIGNATURE and head[8] >= 2 and head[11] != 0


def cleared_copy(path: Path, to: Path) -> None:
    """A copy of the file with the superblock's writer flags cleared and its checksum
    recomputed (as h5clear does)."""
    raw = bytearray(Path(path).read_bytes())
    if raw[:8] != SIGNATURE or raw[8] < 2:
        raise OSError(f"{path}: not an HDF5 file with a version 2/3 superblock")
    n = 12 + 4 * raw[9]  # flags, then base, extension, end-of-file and root addresses
    raw[11] = 0
    raw[n : n + 4] = lookup3(bytes(raw[:n])).to_bytes(4, "little")
    Path(to).write_bytes(bytes(raw))


def _open_any(path: Path, scratch: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError:
        cleared_copy(path, scratch)
        return h5py.File(scratch, "r")


def read_state(path: Path) -> tuple[str, str]:
    """The [state, reason] of a run, session or heralds file, crash-left or not (missing:
    the writer died before it wrote one)."""
    scratch = Path(path).with_name(Path(path).name + ".reading")
    try:
        with _open_any(Path(path), scratch) as f:
            return read_status(f) if "status" in f else ("running", "")
    finally:
        scratch.unlink(missing_ok=True)


def repair_file(path: Path, reason: str, state: str = CRASHED) -> None:
    """Copy everything into a fresh file, `status` = [state, reason], replace the file."""
    path = Path(path)
    fresh = path.with_name(path.name + ".repairing")
    scratch = path.with_name(path.name + ".cleared")
    try:
        with _open_any(path, scratch) as src, h5py.File(fresh, "w", libver="latest") as dst:
            dst.attrs.update(dict(src.attrs))
            for name in src:
                src.copy(src[name], dst, name)
            if "status" not in dst:
                dst.create_dataset("status", (2,), dtype=STATUS_DTYPE)
            dst["status"][:] = [state, reason[:250]]
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)
        scratch.unlink(missing_ok=True)


@dataclass(frozen=True)
class LeftFile:
    path: Path
    station: str
    kind: str  # run, entangle (a node's session file), heralds (the midpoint's), network
    completed_points: int | None = None
    open_pairs: int | None = None
    """A network session file's end-to-end attempts open at its last flush."""


def kind_of(path: Path) -> str:
    name = Path(path).name
    if name.endswith("_entangle.h5"):
        return "entangle"
    if name.endswith("_heralds.h5"):
        return "heralds"
    if name.endswith("_network.h5"):
        return "network"
    return "run"


def _describe(path: Path) -> LeftFile | None:
    """The file, if a writer left it open (its superblock flag set: HDF5 clears it when the
    writer closes the file, after the final status)."""
    if not writer_flag(path):
        return None
    scratch = path.with_name(path.name + ".reading")
    parts = path.name.split("_")  # <run or session id>_<station>_<sequence or kind>.h5
    station, points, open_pairs = (parts[1] if len(parts) > 2 else ""), None, None
    try:
        with _open_any(path, scratch) as f:
            station = f.attrs.get("node", station)  # missing if killed as it was created
            points = int(f["completed_points"][()]) if "completed_points" in f else None
            if "ledger" in f:  # a network session file: its counts, names in `names`
                names = json.loads(f["ledger"].attrs["names"])
                open_pairs = int(dict(zip(names, f["ledger"][:], strict=True))["open"])
    except (OSError, KeyError, ValueError):
        pass  # repair_file says what is wrong with it
    finally:
        scratch.unlink(missing_ok=True)
    station = station.decode() if isinstance(station, bytes) else str(station)
    return LeftFile(path, station, kind_of(path), points, open_pairs)


def crash_left(data_dir: Path, station: str | None = None) -> list[LeftFile]:
    """Files under runs/ that a writer left open, oldest first (one station's, or all)."""
    found = []
    for path in sorted((Path(data_dir) / "runs").glob("*/*.h5")):
        if station is not None and f"_{station}_" not in path.name:
            continue  # another station's (its name is in every file name): not even read
        left = _describe(path)
        if left is not None and (station is None or left.station == station):
            found.append(left)
    return found


def crash_reason(left: LeftFile, by: str) -> str:
    """What a repaired file's status says: why it stopped, who closed it, what it holds."""
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    held = f"; {left.completed_points} points kept" if left.completed_points is not None else ""
    if left.kind == "entangle":
        return (
            f"{NOT_RECONCILED}: {left.station} stopped without closing it (killed or crashed); "
            f"closed by {by} at {when}; its daemon reconciles it with the peer when it starts"
        )
    if left.kind == "network":
        held = f"; {left.open_pairs} end-to-end attempt(s) open" if left.open_pairs else ""
    return (
        f"{left.station} stopped without closing it (killed or crashed); "
        f"closed by {by} at {when}{held}"
    )


def repaired_state(left: LeftFile) -> str:
    """The state a repaired file is marked with: `interrupted` for a network session's,
    `crashed` for the others."""
    return INTERRUPTED if left.kind == "network" else CRASHED


def repair_own(data_dir: Path, station: str, kinds: tuple[str, ...], by: str) -> list[str]:
    """At a daemon's start (it owns the station, so no live writer has these files): close
    its crash-left files of these kinds. Returns a line per file, for the log."""
    files = [f for f in crash_left(data_dir, station) if f.kind in kinds]
    return [f"{left.path.name}: {done}" for left, done in repair_all(files, by)]


def repair_all(
    files: Iterable[LeftFile], by: str, skip: Callable[[LeftFile], str | None] = lambda _: None
) -> list[tuple[LeftFile, str]]:
    """Repair each file unless `skip` gives a reason not to; returns (file, what was done)."""
    done = []
    for left in files:
        why = skip(left)
        if why:
            done.append((left, f"left alone: {why}"))
            continue
        try:
            reason, state = crash_reason(left, by), repaired_state(left)
            repair_file(left.path, reason, state)
            done.append((left, f"closed as {state}: {reason}"))
        except (OSError, KeyError, ValueError) as e:
            done.append((left, f"could not repair: {e}"))
    return done
