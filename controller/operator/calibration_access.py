"""The controller's side of calibration: a NodeAccess over the node daemon's client, the
parameter store and the run files; the midpoint's instruments through the midpoint daemon, their
one owner; sessions with the peer node through the running daemons (the link routines)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py

from calibration.planning import LINK_PARAMETERS, link_parameter
from controller.data.params import ParameterStore
from controller.labconfig import LabConfig, LinkConfig
from controller.node.runtime import hardware_of
from controller.operator.client import NodeClient, NodeRequestError
from qnode.errors import QnodeError


def describe_links(lab: LabConfig, links: dict[str, LinkConfig]) -> str:
    """'AB (A-B through M1), BC (B-C through M2)': for the errors that list a node's links."""
    return ", ".join(
        f"{name} ({'-'.join(link.nodes)} through {link.midpoint})" for name, link in links.items()
    )


def resolve_link(lab: LabConfig, node: str, link: str | None) -> tuple[str, LinkConfig]:
    """The link a node calibrates or entangles on: the one named (one of the node's), or its
    only one. QnodeError listing the node's links if it has several and none is named, or the
    name is not one of them."""
    mine = lab.links_of(node)
    if link is not None:
        if link not in mine:
            raise QnodeError(
                f"node {node} has no link {link!r} in {lab.lab.name} "
                f"(its links: {describe_links(lab, mine) or 'none'})"
            )
        return link, mine[link]
    if len(mine) == 1:
        return next(iter(mine.items()))
    if not mine:
        raise QnodeError(f"node {node} has no link in {lab.lab.name}: no midpoint heralds it")
    raise QnodeError(
        f"node {node} has {len(mine)} links: {describe_links(lab, mine)}; name one with --link"
    )


def several_links(lab: LabConfig, node: str) -> bool:
    """A node between midpoints keeps its photon values per link (under each midpoint); a
    node with one link keeps them as its own (docs/calibration.md, 'Per-link values')."""
    return len(lab.links_of(node)) > 1


class StoredParameters:
    """Reading and writing one node's parameters in the store (needs .store and .node)."""

    store: ParameterStore
    node: str

    def _where(self, name: str) -> tuple[str, str]:
        """(station, name) a value of this node is kept under: its own, by default."""
        return self.node, name

    def stored(self, name: str) -> float | None:
        station, key = self._where(name)
        row = self.store.current(station).get(key)
        return row.value if row else None

    def record(
        self,
        name: str,
        value: float,
        *,
        routine: str,
        run_id: str | None,
        fit_quality: float | None,
    ) -> None:
        station, key = self._where(name)
        self.store.record(
            station,
            key,
            value,
            source="routine",
            routine=routine,
            run_id=run_id,
            fit_quality=fit_quality,
            accepted=True,
        )


@dataclass
class ClientNodeAccess(StoredParameters):
    client: NodeClient
    store: ParameterStore
    node: str
    platform: str
    awg_peak_v: float
    midpoint: DaemonMidpointAccess | None = None
    plot_dir: Path | None = None
    link: ClientLinkAccess | None = None
    link_midpoint: str | None = None
    """Set for a node with several links: its photon values (LINK_PARAMETERS) are read and
    written under this midpoint, as <node>_<name> (the link being calibrated)."""
    memories: tuple[str, ...] = ()

    @classmethod
    def for_lab(
        cls,
        lab: LabConfig,
        node: str,
        client: NodeClient,
        store: ParameterStore,
        midpoint: DaemonMidpointAccess | None = None,
        link: ClientLinkAccess | None = None,
    ):
        peak = hardware_of(lab, node).awg_peak_v
        plot_dir = lab.data_dir / "calibration"
        platform = lab.nodes[node].platform
        scoped = midpoint.node if midpoint is not None and several_links(lab, node) else None
        memories = tuple(lab.nodes[node].memories)
        return cls(client, store, node, platform, peak, midpoint, plot_dir, link, scoped, memories)

    def _where(self, name: str) -> tuple[str, str]:
        """(station, name) a value of this node is kept under on the link being calibrated."""
        if self.link_midpoint is not None and name in LINK_PARAMETERS:
            return self.link_midpoint, link_parameter(self.node, name)
        return self.node, name

    def values(self) -> dict[str, float]:
        return self.store.values(self.node, self.platform)

    def run(self, sequence, sweep):
        data = self.client.run(sequence, sweep)
        if data.status != "completed":
            raise NodeRequestError(f"run {data.run_id} ended {data.status}: {data.reason}")
        return data

    def annotate(self, acquisition, routine: str, info: dict) -> None:
        Path(acquisition.file).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(acquisition.file, "a") as f:
            group = f.require_group("calibration").require_group(routine)
            group.attrs["result_json"] = json.dumps(info, default=float)
            for key in ("verdict", "reason"):
                group.attrs[key] = str(info.get(key, ""))


class DaemonMidpointAccess(StoredParameters):
    """The midpoint's instruments through its daemon (`qnode midpoint serve`), their one
    owner. A tagger armed for another calibration is waited for."""

    WAIT_S = 300.0

    def __init__(
        self, lab: LabConfig, store: ParameterStore, holder: str = "", name: str | None = None
    ) -> None:
        self.node = name if name is not None else only_midpoint(lab)
        self.detectors = dict(lab.nodes[self.node].channels.detectors)
        self.store = store
        self.holder = holder
        self.client = NodeClient.for_lab(lab, self.node, timeout_s=120)

    def open(self) -> None:
        self.client.status()  # it answers, or this fails now rather than mid-routine

    def close(self) -> None:
        self.client.close()

    def _when_free(self, kind: str, **fields) -> dict:
        deadline = time.monotonic() + self.WAIT_S
        while True:
            try:
                return self.client.request(kind, **fields)
            except NodeRequestError as e:
                if "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def start_tags(self) -> None:
        self._when_free("tags_start", holder=self.holder)

    def stop_tags(self):
        return self.client.request("tags_stop")["tags"]

    def dark_tags(self, seconds: float):
        return self._when_free("dark_tags", seconds=seconds)["tags"]

    def fringe_sweep(self, points: int, seconds: float) -> tuple[list[float], list[dict]]:
        reply = self._when_free("fringe_sweep", points=points, seconds=seconds)
        return reply["voltages"], reply["counts"]

    def lock_samples(self, offset_deg: float, seconds: float, samples: int) -> list[dict]:
        reply = self._when_free(
            "lock_samples", offset_deg=offset_deg, seconds=seconds, samples=samples
        )
        return reply["counts"]


def only_midpoint(lab: LabConfig) -> str:
    """The lab's one midpoint station; QnodeError naming them if it has several (a station
    of a link is then named by the link)."""
    names = [n for n, cfg in lab.nodes.items() if cfg.kind == "midpoint"]
    if len(names) != 1:
        raise QnodeError(
            f"the lab {lab.lab.name} has {len(names)} midpoints"
            + (f" ({', '.join(names)}): name the link" if names else "")
        )
    return names[0]


class ClientLinkAccess:
    """Sessions with the peer node of one link through the running daemons (for the link
    routines): the node's only link, or the one named."""

    def __init__(
        self, lab: LabConfig, node: str, store: ParameterStore, link: str | None = None
    ) -> None:
        self.lab = lab
        self.node = node
        self.store = store
        self.link_name, config = resolve_link(lab, node, link)
        self.peer = config.peer(node)
        self.midpoint = config.midpoint

    def parameters(self, station: str) -> dict[str, float]:
        """A station's values; a node with several links without node-level photon values
        (its link's are under the midpoint: planning.on_link finds them there)."""
        values = self.store.station_values(station, self.lab.nodes[station].memory_platform)
        if self.lab.nodes[station].kind == "memory" and several_links(self.lab, station):
            values = {k: v for k, v in values.items() if k not in LINK_PARAMETERS}
        return values

    def pairs(
        self, protocol: str, pairs: int, delivery: str = "verify", alpha: float | None = None
    ) -> dict:
        from controller.operator.entangle import run_session

        report = run_session(
            self.lab,
            pairs=pairs,
            protocol=protocol,
            delivery=delivery,
            alpha=alpha,
            deadline_s=600.0,
            node=self.node,
            peer=self.peer,
        )
        s = report.summary
        if s["state"] != "completed":
            raise QnodeError(f"session {s['session']} {s['state']}: {s['reason']}")
        if not report.agree:
            raise QnodeError(f"session {s['session']}: the nodes disagree on the pairs")
        out = {
            "session": s["session"],
            "delivered": report.delivered,
            "heralded": s["stats"]["heralded"],
            "attempts": s["stats"]["attempts"],
            "p_success": s["p_success"],
        }
        v = report.verification
        if v is not None:
            out["fidelity"] = v.fidelity
            out["sigma"] = v.sigma
            out["correlators"] = {
                b: {"n": c.n, "value": c.value, "sigma": c.sigma} for b, c in v.correlators.items()
            }
        return out


def link_access(
    lab: LabConfig, node: str, store: ParameterStore, link: str | None = None
) -> ClientLinkAccess | None:
    """Sessions on the link (the node's only one, or the one named) are possible when the
    peer's and the link's midpoint's daemons run."""
    from controller.messaging.serving import running_daemon_pid

    access = ClientLinkAccess(lab, node, store, link)
    running = [running_daemon_pid(lab.data_dir, s) for s in (access.peer, access.midpoint)]
    return access if all(pid is not None for pid in running) else None
