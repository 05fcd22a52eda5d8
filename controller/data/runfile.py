"""Run files: one HDF5 file per run, written as the run goes.

The file is opened in SWMR mode once its layout exists, and flushed after every sweep point,
so a reader (or a crash) sees a consistent file holding every point flushed so far. Its
`status` dataset says running / completed / aborted / failed and why.

Layout:
  attrs: run_id, node, sequence, software_version, created (ISO time), shots, sweep_shape
  config/lab_toml            the lab file as text
  config/sequence_json       the sequence and sweep in data form
  config/program_listing     the compiled program of the first point
  parameters/<name>          value (attrs: unit, source)
  axes/<name>                sweep values (attrs: unit)
  data/counts                (points, shots, readouts) photon counts
  data/valid                 (points, shots) the shot's CR / cooling check passed
  data/check_counts          (points, shots) counts of the last check of the shot
  data/point_index           (points,) flat index of each point into the sweep grid
  events                     every sequencer event: point, time_ns, code, value
  status                     [state, reason], completed_points

A full disk is refused before HDF5 sees it: each point (and the file itself) first checks the
free space where the file lives and raises "No space left on device" while the file is still
consistent, so it closes `failed` with that reason. A close that fails all the same (the disk
filled meanwhile, an I/O error) never leaves the writer holding the file: the handle is put
aside (`parked`) and `retry_parked` closes it once the cause is gone (the node tries before
every run and when its daemon stops).
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import h5py
import numpy as np

log = logging.getLogger("qnode.data")

EVENT_DTYPE = np.dtype([("point", "<i4"), ("time_ns", "<i8"), ("code", "<u2"), ("value", "<i8")])
STATUS_DTYPE = h5py.string_dtype("utf-8", 256)
SPACE_MARGIN_BYTES = 256 * 1024
"""Free space kept beyond a write's own bytes (HDF5's chunk index and metadata)."""
CLOSE_MARGIN_BYTES = 64 * 1024
"""Free space a close needs (the status and what metadata is not flushed yet)."""


def check_space(path: Path, needed_bytes: int, margin: int = SPACE_MARGIN_BYTES) -> None:
    """Raise OSError ENOSPC, before anything is written, if the file system holding `path`
    has less than needed_bytes + margin free."""
    folder = path if path.is_dir() else path.parent
    free = shutil.disk_usage(folder).free
    if free < needed_bytes + margin:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device (disk full): {free} bytes free in {folder}, "
            f"writing needs about {needed_bytes + margin}",
        )


def write_parameters(f: h5py.File, parameters: dict[str, dict]) -> None:
    """The parameter snapshot: one scalar per name, with its unit (and source)."""
    group = f.create_group("parameters")
    for name, info in sorted(parameters.items()):
        group[name] = float(info["value"])
        group[name].attrs["unit"] = info.get("unit", "")
        group[name].attrs["source"] = info.get("source", "")


def read_status(f: h5py.File) -> tuple[str, str]:
    return tuple(s.decode() if isinstance(s, bytes) else s for s in f["status"][:])


class SwmrFile:
    """A file written as it goes (SWMR): a `status` [state, reason], closed exactly once.

    `close` never leaves the file with its writer: if it fails, the file is parked (see
    `retry_parked`) and the error raised."""

    _file: h5py.File | None = None
    _status: h5py.Dataset
    path: Path

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, state: str, reason: str = "") -> None:
        if self._file is None:
            return
        try:
            # a full disk is refused before HDF5 tries to write (a close that HDF5 fails
            # leaves its library in a state that can crash the process later)
            check_space(self.path, 0, CLOSE_MARGIN_BYTES)
            self._status[:] = [state, reason[:250]]
            self._file.flush()
            self._file.close()
        except Exception as e:
            self.park(state, reason, f"{type(e).__name__}: {e}")
            raise
        self._file = None

    def park(self, state: str, reason: str, why: str = "") -> None:
        """Give the file up without touching it: it is closed with this status by
        `retry_parked` once it can be (never raises)."""
        if self._file is None:
            return
        with _PARKED_LOCK:
            _PARKED.append(_Parked(self.path, self._file, self._status, state, reason))
        self._file = None
        log.error("%s: not closed (%s); kept aside until it can be", self.path, why or "given up")

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def _create(self, path: Path, **attrs: object) -> h5py.File:
        """A new file at `path` (its folder made), HDF5's latest format (SWMR needs it), with
        `attrs` and the time it was created: the session and network files' opening."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.path, "w", libver="latest")
        self._file = f
        f.attrs.update(**attrs, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return f

    def _start_swmr(self, f: h5py.File) -> None:
        """Once the layout exists: `status` ["running", ""], SWMR mode, flushed (a reader,
        or a crash, sees the file from here on)."""
        self._status = f.create_dataset("status", (2,), dtype=STATUS_DTYPE)
        self._status[:] = ["running", ""]
        f.swmr_mode = True
        f.flush()


class _Parked:
    """A file whose close failed, with the status it is to be closed with (none if the file
    did not get that far). Kept referenced: dropping a half-closed h5py file can crash."""

    def __init__(
        self, path: Path, file: h5py.File, status: h5py.Dataset | None, state: str, reason: str
    ) -> None:
        self.path, self.file, self.status = path, file, status
        self.state, self.reason = state, reason


_PARKED: list[_Parked] = []
_PARKED_LOCK = threading.Lock()


def parked_files() -> list[Path]:
    """Files whose close failed and that are not closed yet."""
    with _PARKED_LOCK:
        return [p.path for p in _PARKED]


def retry_parked() -> list[str]:
    """Close every parked file that can be now (with the status it was to be closed with);
    returns the problems of those still parked. Never raises."""
    problems = []
    with _PARKED_LOCK:
        for parked in list(_PARKED):
            try:
                check_space(parked.path, 0, CLOSE_MARGIN_BYTES)
                if parked.status is not None:
                    parked.status[:] = [parked.state, parked.reason[:250]]
                parked.file.flush()
                parked.file.close()
            except Exception as e:
                problems.append(f"{parked.path}: {type(e).__name__}: {e}")
                continue
            _PARKED.remove(parked)
            log.info("%s: closed %s after all", parked.path, parked.state)
    return problems


class RunFile(SwmrFile):
    def __init__(
        self,
        path: Path,
        *,
        run_id: str,
        node: str,
        sequence_data: dict,
        axes: list[tuple[str, list[float], str]],
        shots: int,
        readouts: list[str],
        lab_text: str,
        parameters: dict[str, dict],
        software_version: str,
        listing: str = "",
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.shots = shots
        self.n_readouts = max(len(readouts), 1)
        check_space(self.path.parent, len(lab_text) + len(listing) + 64 * 1024)
        f = h5py.File(self.path, "w", libver="latest")
        self._file = f
        try:
            f.attrs.update(
                run_id=run_id,
                node=node,
                sequence=sequence_data.get("name", ""),
                software_version=software_version,
                shots=shots,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                sweep_shape=[len(values) for _, values, _ in axes] or [1],
                readouts=readouts,
            )
            config = f.create_group("config")
            config["lab_toml"] = lab_text
            config["sequence_json"] = json.dumps(sequence_data)
            config["program_listing"] = listing
            write_parameters(f, parameters)
            axes_group = f.create_group("axes")
            for name, values, unit in axes:
                axes_group[name] = np.asarray(values, dtype=float)
                axes_group[name].attrs["unit"] = unit
            self._create_data(f, shots)
            f.swmr_mode = True
            f.flush()
        except Exception as e:
            # a file that could not be laid out is not left open: closed, or parked
            if "status" not in f:
                self._file = None
                with _PARKED_LOCK:
                    _PARKED.append(_Parked(self.path, f, None, "failed", ""))
            else:
                self.park("failed", f"could not be created: {e}", str(e))
            raise
        self.points = 0

    def _create_data(self, f: h5py.File, shots: int) -> None:
        data = f.create_group("data")
        n = self.n_readouts
        self._counts = data.create_dataset(
            "counts", (0, shots, n), maxshape=(None, shots, n), dtype="<i4", chunks=(1, shots, n)
        )
        self._valid = data.create_dataset(
            "valid", (0, shots), maxshape=(None, shots), dtype="u1", chunks=(1, shots)
        )
        self._checks = data.create_dataset(
            "check_counts", (0, shots), maxshape=(None, shots), dtype="<i4", chunks=(1, shots)
        )
        self._index = data.create_dataset(
            "point_index", (0,), maxshape=(None,), dtype="<i4", chunks=(256,)
        )
        self._events = f.create_dataset(
            "events", (0,), maxshape=(None,), dtype=EVENT_DTYPE, chunks=(4096,)
        )
        self._status = f.create_dataset("status", (2,), dtype=STATUS_DTYPE)
        self._status[:] = ["running", ""]
        self._completed = f.create_dataset("completed_points", (), dtype="<i4")
        self._completed[()] = 0

    def add_point(
        self,
        flat_index: int,
        counts: np.ndarray,
        valid: np.ndarray,
        check_counts: np.ndarray,
        events: np.ndarray,
    ) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the run file is closed")
        # a full disk is refused here, while the file is consistent (see the module's doc)
        check_space(self.path, counts.nbytes + valid.nbytes + check_counts.nbytes + events.nbytes)
        k = self.points
        for ds in (self._counts, self._valid, self._checks, self._index):
            ds.resize(k + 1, axis=0)
        self._counts[k] = counts.reshape(self.shots, self.n_readouts)
        self._valid[k] = valid
        self._checks[k] = check_counts
        self._index[k] = flat_index
        if len(events):
            start = self._events.shape[0]
            self._events.resize(start + len(events), axis=0)
            self._events[start:] = events
        self.points = k + 1
        self._completed[()] = self.points
        self._file.flush()


def read_run(path: Path) -> dict:
    """Everything a user looks at, as numpy arrays (works on a file still being written)."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        state, reason = read_status(f)
        return {
            "run_id": f.attrs["run_id"],
            "node": f.attrs["node"],
            "sequence": f.attrs["sequence"],
            "status": state,
            "reason": reason,
            "completed_points": int(f["completed_points"][()]),
            "axes": {name: (ds[:], ds.attrs["unit"]) for name, ds in f["axes"].items()},
            "counts": f["data/counts"][:],
            "valid": f["data/valid"][:].astype(bool),
            "check_counts": f["data/check_counts"][:],
            "point_index": f["data/point_index"][:],
            "events": f["events"][:],
            "parameters": {name: float(ds[()]) for name, ds in f["parameters"].items()},
            "readouts": list(f.attrs["readouts"]),
        }
