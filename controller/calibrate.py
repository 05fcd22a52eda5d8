"""The controller's side of calibration: a NodeAccess over the node daemon's client, the
parameter store and the run files."""

from __future__ import annotations

import json
from dataclasses import dataclass

import h5py

from controller.client import NodeClient, NodeRequestError
from controller.labconfig import LabConfig
from controller.node_runtime import hardware_of
from controller.params import ParameterStore


@dataclass
class ClientNodeAccess:
    client: NodeClient
    store: ParameterStore
    node: str
    platform: str
    awg_peak_v: float

    @classmethod
    def for_lab(cls, lab: LabConfig, node: str, client: NodeClient, store: ParameterStore):
        return cls(client, store, node, lab.nodes[node].platform, hardware_of(lab, node).awg_peak_v)

    def values(self) -> dict[str, float]:
        return self.store.values(self.node)

    def stored(self, name: str) -> float | None:
        row = self.store.current(self.node).get(name)
        return row.value if row else None

    def run(self, sequence, sweep):
        data = self.client.run(sequence, sweep)
        if data.status != "completed":
            raise NodeRequestError(f"run {data.run_id} ended {data.status}: {data.reason}")
        return data

    def record(
        self,
        name: str,
        value: float,
        *,
        routine: str,
        run_id: str | None,
        fit_quality: float | None,
    ) -> None:
        self.store.record(
            self.node,
            name,
            value,
            source="routine",
            routine=routine,
            run_id=run_id,
            fit_quality=fit_quality,
            accepted=True,
        )

    def annotate(self, acquisition, routine: str, info: dict) -> None:
        with h5py.File(acquisition.file, "a") as f:
            group = f.require_group("calibration").require_group(routine)
            group.attrs["result_json"] = json.dumps(info, default=float)
            for key in ("verdict", "reason"):
                group.attrs[key] = str(info.get(key, ""))
