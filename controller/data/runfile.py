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
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np

EVENT_DTYPE = np.dtype([("point", "<i4"), ("time_ns", "<i8"), ("code", "<u2"), ("value", "<i8")])
STATUS_DTYPE = h5py.string_dtype("utf-8", 256)


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
    """A file written as it goes (SWMR): a `status` [state, reason], closed exactly once."""

    _file: h5py.File | None = None
    _status: h5py.Dataset

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, state: str, reason: str = "") -> None:
        if self._file is None:
            return
        try:
            self._status[:] = [state, reason[:250]]
            self._file.flush()
        finally:
            self._file.close()
            self._file = None

    @property
    def is_open(self) -> bool:
        return self._file is not None


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
        f = h5py.File(self.path, "w", libver="latest")
        self._file = f
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
        f.swmr_mode = True
        f.flush()
        self.points = 0

    def add_point(
        self,
        flat_index: int,
        counts: np.ndarray,
        valid: np.ndarray,
        check_counts: np.ndarray,
        events: np.ndarray,
    ) -> None:
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
