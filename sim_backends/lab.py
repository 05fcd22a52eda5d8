"""The simulated lab: one process serving every instrument of every node, sharing physics.

It is built from the lab description (the validated lab file as a plain dict; the sim does not
import the controller), serves SCPI instruments on 127.0.0.1 ephemeral ports and serial
devices on ptys, and writes a resource map that the controllers read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from sim_backends.control import ControlServer
from sim_backends.control_keys import make_control_keys
from sim_backends.datalink import DataLinkTarget, DltServer
from sim_backends.device import Device
from sim_backends.instruments.awg import SimAwg
from sim_backends.instruments.herald_logic import SimHeraldLogic
from sim_backends.instruments.laser import SimLaser
from sim_backends.instruments.microwave import SimMicrowaveSource
from sim_backends.instruments.piezo import SimPiezoDriver
from sim_backends.instruments.sequencer import SimSequencer
from sim_backends.instruments.tagger import SimTimeController
from sim_backends.node import OpticalPath, SimLaserState, SimNode
from sim_backends.optics import TWO_PHOTON_DETECTORS
from sim_backends.photonics import Midpoint, draw_midpoint_truth
from sim_backends.physics import PLATFORMS, MicrowaveDrive, NodePhysics, draw_truth
from sim_backends.register import QubitRegister
from sim_backends.servers import PtyServer, TcpServer, ZmqServer

log = logging.getLogger("qnode.sim")

FIBRE_NS_PER_KM = 5000.0
FIBRE_DB_PER_KM_AT_1550 = 0.2
"""Standard single-mode fibre at 1550 nm (ITU-T G.652.D: at most 0.20 dB/km)."""
PHOTON_NM = {"nv": 637.2, "ion": 854.2}
"""Each platform's own photons: the NV's zero-phonon line; Ca+'s 854 nm cavity photon."""
CONVERSION_EFFICIENCY_RANGE = (0.15, 0.25)
"""A node's quantum frequency conversion, photon in to photon in the fibre: 17 % for NV
photons to 1588 nm (Dreau et al., Phys. Rev. Applied 9, 064031 (2018))."""


def fibre_db_per_km(wavelength_nm: float) -> float:
    """Silica fibre's loss: Rayleigh scattering, which falls as the fourth power of the
    wavelength, dominates below the telecom bands; the 1550 nm figure is the floor."""
    return FIBRE_DB_PER_KM_AT_1550 * max(1.0, (1550.0 / wavelength_nm) ** 4)


def fibre_transmission(
    platform: str, fibre_km: float, wavelength_nm: float | None, rng: np.random.Generator
) -> float:
    """The share of a node's photons that reach its midpoint through the link's fibre (and
    its frequency converter, when the link names a wavelength)."""
    own = PHOTON_NM[platform]
    converted = wavelength_nm is not None and abs(wavelength_nm - own) > 1.0
    efficiency = float(rng.uniform(*CONVERSION_EFFICIENCY_RANGE)) if converted else 1.0
    nm = wavelength_nm if wavelength_nm is not None else own
    return efficiency * 10 ** (-fibre_db_per_km(nm) * fibre_km / 10)


"""Light in fibre: about 5 us per km (group index ~1.47)."""


def lab_links(lab: dict) -> dict[str, dict]:
    """The lab's heralded links, name -> {midpoint, nodes, fibre_km}: the file's [links], or
    the one link of a lab with one midpoint and two memory nodes (named after the nodes)."""
    if lab.get("links"):
        return {name: dict(link) for name, link in lab["links"].items()}
    nodes = lab["nodes"]
    memory = [n for n, c in nodes.items() if c["kind"] == "memory"]
    midpoints = [n for n, c in nodes.items() if c["kind"] == "midpoint"]
    if len(memory) == 2 and len(midpoints) == 1:
        return {"".join(memory): {"midpoint": midpoints[0], "nodes": memory, "fibre_km": {}}}
    return {}


def link_port(node_cfg: dict, link: str) -> int:
    """The node's sync/herald input pair of this link (channels.links; a node with one link
    may leave it out: port 0)."""
    return int((node_cfg.get("channels", {}).get("links") or {}).get(link, 0))


def detector_inputs(channel_map: dict[str, int]) -> list[int]:
    """The midpoint's detector inputs in the order its physics numbers them: psi_plus,
    psi_minus (one per beam-splitter output), or the four polarisation-resolved detectors
    out1_h, out1_v, out2_h, out2_v (a polarising beam splitter on each output: the ion labs);
    any other map in input order."""
    for names in (("psi_plus", "psi_minus"), TWO_PHOTON_DETECTORS):
        if set(channel_map) == set(names):
            return [int(channel_map[n]) for n in names]
    return sorted(int(v) for v in channel_map.values()) or [1, 2]


class SimLab:
    def __init__(self, lab: dict, seed: int, state_dir: Path, resource_map: Path) -> None:
        self.description = lab
        self.name = lab["lab"]["name"]
        self.seed = seed
        self.state_dir = state_dir
        self.resource_map = resource_map
        self.devices: dict[str, Device] = {}
        self.nodes: dict[str, SimNode] = {}
        self.servers: list[TcpServer | PtyServer | ZmqServer] = []
        self.midpoints: dict[str, Midpoint] = {}
        """Every midpoint's physics, by station name (one per link)."""
        self.midpoint: Midpoint | None = None
        """The first midpoint (the only one of a two-node lab)."""
        self.midpoint_name = ""
        self.links = lab_links(lab)
        self.control: ControlServer | None = None
        self._stop = asyncio.Event()
        self._build()

    # construction ---------------------------------------------------------------------------
    def _build(self) -> None:
        seeds = np.random.SeedSequence(self.seed)
        names = sorted(self.description["nodes"])
        memories = [n for n in names if self.description["nodes"][n]["kind"] == "memory"]
        self.register = QubitRegister(memories)
        for node_name, child in zip(names, seeds.spawn(len(names)), strict=True):
            node_cfg = self.description["nodes"][node_name]
            rng = np.random.default_rng(child)
            physics = None
            if node_cfg["kind"] == "memory":
                truth = draw_truth(node_cfg["platform"], rng)
                pinned = (self.description.get("simulation") or {}).get("memories") or {}
                if pinned:  # a paper's figures: e.g. perfect initialisation
                    truth = replace(truth, **{k: float(v) for k, v in pinned.items()})
                # its memory qubits (`<node>.<memory>`) join the register
                memories = list(node_cfg.get("memories") or [])
                c13 = (self.description.get("simulation") or {}).get("c13") or {}
                physics = NodePhysics(
                    node_name,
                    truth,
                    rng,
                    self.register,
                    memories=memories,
                    memory_pins={k: float(v) for k, v in c13.items()},
                )
            node = SimNode(node_name, physics)
            self.nodes[node_name] = node
            lasers: dict[str, SimLaserState] = {}
            platform = PLATFORMS[node_cfg.get("platform") or "nv"]
            for k, (inst_name, inst) in enumerate(sorted(node_cfg["instruments"].items())):
                if inst["resource"] != "sim":
                    continue
                full = f"{node_name}.{inst_name}"
                role = inst["role"]
                if role == "herald_logic":  # its serial from a stream of its own: the node's
                    # draws (and so a seed's hidden truth) stay as they were without it
                    own = np.random.default_rng([self.seed, zlib.crc32(full.encode())])
                    serial = int(own.integers(100000, 999999))
                else:
                    serial = int(rng.integers(100000, 999999)) + k
                if role == "microwave_source":
                    drive = physics.drive if physics else MicrowaveDrive()
                    device: Device = SimMicrowaveSource(full, drive, serial)
                elif role == "awg":
                    device = SimAwg(full, serial)
                    node.awg = device
                elif role == "sequencer":
                    device = SimSequencer(full, node, serial)
                elif role == "time_tagger":
                    device = SimTimeController(full, rng, platform.dark_count_hz, serial)
                elif role == "herald_logic":
                    device = SimHeraldLogic(full, serial)
                elif role == "laser":
                    lasers[inst_name] = SimLaserState()
                    device = SimLaser(full, lasers[inst_name], serial, inst.get("model") or "06-01")
                elif role == "phase_stabiliser":  # the fibre stretcher's piezo driver
                    device = SimPiezoDriver(full, serial)
                else:
                    raise ValueError(
                        f"{full}: the simulated lab has no instrument for role {role!r}"
                    )
                self.devices[full] = device
            channels = node_cfg.get("channels", {})
            awg_ch = channels.get("awg", {})
            if "mw_i" in awg_ch and "mw_q" in awg_ch:
                node.iq_channels = (awg_ch["mw_i"], awg_ch["mw_q"])
            for path, spec in node_cfg.get("optics", {}).items():
                node.optics[path] = OpticalPath(
                    ttl_line=channels["ttl"][spec["ttl"]],
                    laser=lasers[spec["laser"]],
                    nominal_power_w=spec["nominal_power_w"],
                )
            if node_cfg["kind"] == "midpoint":
                self._build_midpoint(node_name, node_cfg, rng, lasers)
        self._wire_links()

    def _wire_links(self) -> None:
        """Each midpoint's sync and herald to its link's two nodes, on their ports of that
        link; each node's photons to its midpoint (through its fibre switch if it has two)."""
        sequencers = {d.node.name: d for d in self.devices.values() if isinstance(d, SimSequencer)}
        for name, link in self.links.items():
            midpoint = self.midpoints.get(link["midpoint"])
            if midpoint is None:
                continue
            ends = [sequencers[n] for n in link["nodes"] if n in sequencers]
            ports = {s: link_port(self.description["nodes"][s.node.name], name) for s in ends}
            midpoint.connect_sync(ends, ports)
            for seq, port in ports.items():
                node = seq.node
                node.links[port] = midpoint
                if port == 0 or node.midpoint is None:
                    node.midpoint = midpoint
        for node_name, node in self.nodes.items():
            ttl = self.description["nodes"][node_name].get("channels", {}).get("ttl", {})
            if len(node.links) > 1 and "fibre_switch" in ttl:
                node.fibre_switch_line = int(ttl["fibre_switch"])

    def _build_midpoint(
        self, name: str, cfg: dict, rng: np.random.Generator, lasers: dict[str, SimLaserState]
    ) -> None:
        """The midpoint's physics; its laser (the reference light through the interferometer,
        the first of role laser) gates the reference light at the detectors."""
        taggers = [n for n, i in cfg["instruments"].items() if i["role"] == "time_tagger"]
        if not taggers or f"{name}.{taggers[0]}" not in self.devices:
            return
        tagger = self.devices[f"{name}.{taggers[0]}"]
        assert isinstance(tagger, SimTimeController)
        heralds = [n for n, i in cfg["instruments"].items() if i["role"] == "herald_logic"]
        herald_logic = self.devices.get(f"{name}.{heralds[0]}") if heralds else None
        assert herald_logic is None or isinstance(herald_logic, SimHeraldLogic)
        detectors = detector_inputs(cfg.get("channels", {}).get("detectors", {}))
        link = next((k for k in self.links.values() if k["midpoint"] == name), None)
        if link is None:
            return  # a midpoint of no link: nothing reaches it
        fibre_km = link.get("fibre_km") or {}
        platforms = {  # the link's two nodes, in the lab file's order
            n: (c["platform"], c.get("collection", "free_space"))
            for n, c in self.description["nodes"].items()
            if c["kind"] == "memory" and n in link["nodes"]
        }
        fibre_ns = {n: float(fibre_km.get(n, 0.0)) * FIBRE_NS_PER_KM for n in platforms}
        simulation = self.description.get("simulation") or {}
        pins = {
            **(simulation.get("midpoint") or {}),
            **(simulation.get("midpoints") or {}).get(name, {}),
        }
        truth = draw_midpoint_truth(platforms, detectors, rng, pins)
        # the photons' delay after their sync: the electronics (drawn) and the fibre
        truth = replace(truth, delay_ns={n: d + fibre_ns[n] for n, d in truth.delay_ns.items()})
        # and the photons' loss in the fibre (and a converter): part of each node's efficiency
        transmission = {
            n: fibre_transmission(
                platforms[n][0], float(fibre_km.get(n, 0.0)), link.get("wavelength_nm"), rng
            )
            for n in platforms
        }
        truth = replace(truth, eta={n: e * transmission[n] for n, e in truth.eta.items()})
        tagger.detector_dark_hz = dict(truth.dark_count_hz)
        piezos = [n for n, i in cfg["instruments"].items() if i["role"] == "phase_stabiliser"]
        piezo = self.devices.get(f"{name}.{piezos[0]}") if piezos else None
        first_laser = next(iter(lasers), None)  # its device: the light it emits, turning on
        reference = self.devices.get(f"{name}.{first_laser}") if first_laser else None
        midpoint = Midpoint(
            truth,
            tagger,
            detectors,
            rng,
            piezo=piezo if isinstance(piezo, SimPiezoDriver) else None,
            register=self.register,
            reference_laser=reference if isinstance(reference, SimLaser) else None,
            herald_logic=herald_logic,
            fibre_ns=fibre_ns,
        )
        if herald_logic is not None:
            herald_logic.midpoint = midpoint
        self.midpoints[name] = midpoint
        if self.midpoint is None:
            self.midpoint, self.midpoint_name = midpoint, name

    def device(self, name: str) -> Device:
        if name not in self.devices:
            raise KeyError(
                f"no simulated instrument {name!r} (known: {', '.join(sorted(self.devices))})"
            )
        return self.devices[name]

    def truth(self, node: str | None = None) -> dict:
        truths = {n: s.physics.truth.as_dict() for n, s in self.nodes.items() if s.physics}
        for name, midpoint in self.midpoints.items():
            truths[name] = midpoint.truth.as_dict()
        if node is None:
            return truths
        if node not in truths:
            raise KeyError(f"no node {node!r} with hidden parameters")
        return truths[node]

    # running --------------------------------------------------------------------------------
    async def start(self) -> dict:
        for device in self.devices.values():
            serial_device = device.terminator != b"\n" or isinstance(device, SimSequencer)
            server: TcpServer | PtyServer | ZmqServer
            if isinstance(device, SimTimeController):  # SCPI over ZeroMQ, as the real one,
                # and its host's DataLinkTarget for the timestamps (one host per instrument)
                dlt = DataLinkTarget({"127.0.0.1": device}, self.state_dir / device.name)
                server = ZmqServer(device, dlt=DltServer(dlt))
            elif serial_device:
                server = PtyServer(device)
            else:
                server = TcpServer(device)
            await server.start()
            self.servers.append(server)
        key_dir = self.state_dir / "keys"
        make_control_keys(key_dir)
        self.control = ControlServer(self, key_dir)
        await self.control.start()
        info = {
            "lab": self.name,
            "seed": self.seed,
            "pid": os.getpid(),
            "resources": {s.device.name: s.resource for s in self.servers},
            "control": {
                "endpoint": self.control.endpoint,
                "server_public_key": str((key_dir / "server.key").resolve()),
                "client_secret_key": str((key_dir / "client.key_secret").resolve()),
            },
        }
        self.resource_map.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.resource_map.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.resource_map)  # atomic: readers never see half a map
        return info

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready=None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        info = await self.start()
        if on_ready is not None:
            on_ready(info)
        control_task = loop.create_task(self.control.serve())
        try:
            await self._stop.wait()
        finally:
            control_task.cancel()
            await self.stop()

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()
        if self.control is not None:
            await self.control.stop()
        with contextlib.suppress(FileNotFoundError):
            self.resource_map.unlink()
        log.info("simulated lab %s stopped", self.name)
