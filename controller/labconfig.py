"""Lab configuration: load a TOML file, validate everything, or say in ONE error what is wrong.

Every error names the file, the key path (e.g. `nodes.A.instruments.mw.limits.power_dbm`) and
the problem. Paths inside the file (data_dir) are relative to the file itself.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from drivers.base import Driver, LimitsError, Range, check_limits
from drivers.protocols import Instrument
from drivers.registry import DRIVERS, ROLES
from drivers.transport import split_zmq_resource
from qnode.errors import LabConfigError, QnodeError

DEFAULT_LAB = Path(__file__).resolve().parent.parent / "labs" / "sim_two_node.toml"
SIM_RESOURCE = "sim"

MEMORY_ROLES = ("microwave_source", "awg", "sequencer", "time_tagger", "laser")
MIDPOINT_ROLES = ("time_tagger", "herald_logic", "phase_stabiliser")
"""A midpoint also has a laser (the reference light of its phase lock) with its piezo driver."""
DEFAULT_MAX_SWEEP_POINTS = 5000
"""Points per run a node accepts when the lab file's [lab] section sets no `max_sweep_points`."""
FIBRE_SWITCH_LINE = "fibre_switch"
"""The TTL line (channels.ttl) of the fibre switch of a node with two links."""
N_LINK_PORTS = 4
"""A sequencer's sync/herald input pairs (sequences.program.N_LINK_PORTS)."""
DEFAULT_WATCHDOG_S = 3.0
"""The sequencer's host watchdog when its lab entry sets none (`watchdog_s`)."""

C = TypeVar("C", bound=Instrument)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Limit = Annotated[list[float], Field(min_length=2, max_length=2)]
"""[low, high] in the unit the key names (frequency_hz, power_dbm...)."""


class InstrumentConfig(_Strict):
    role: str
    driver: str
    resource: str
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    limits: dict[str, Limit] = Field(default_factory=dict)
    watchdog_s: float | None = Field(default=None, ge=0.5, le=60)
    """Sequencers only: the host watchdog's timeout (default DEFAULT_WATCHDOG_S); a running
    program halts with every line safe when the host sends no heartbeat for this long."""
    model: Literal["04-01", "06-01"] | None = None
    """Lasers only: the Cobolt series the simulated lab models (default 06-01); the driver
    asks a real laser which series it is."""
    notes: str = ""

    @property
    def simulated(self) -> bool:
        return self.resource == SIM_RESOURCE

    @property
    def watchdog(self) -> float:
        """The sequencer's watchdog timeout in seconds (the default if the file sets none)."""
        return DEFAULT_WATCHDOG_S if self.watchdog_s is None else self.watchdog_s


class ChannelMap(_Strict):
    """Which line does what: sequencer TTL lines (0-31), AWG channels (1-4), AWG markers
    ("channel.marker", e.g. "1.2"), sequencer counter inputs (0-3), time-tagger inputs (1-4)."""

    ttl: dict[str, int] = Field(default_factory=dict)
    awg: dict[str, int] = Field(default_factory=dict)
    markers: dict[str, str] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)
    detectors: dict[str, int] = Field(default_factory=dict)
    links: dict[str, int] = Field(default_factory=dict)
    """Memory nodes: link name -> the sequencer's sync/herald input pair (port 0-3) that
    link's midpoint drives; a node with one link may leave it out (port 0). A node with two
    links also needs the TTL line `fibre_switch` (low: its photons go to the midpoint on
    port 0, high: port 1)."""

    def port(self, link: str) -> int:
        """The sync/herald port of a link (0 when not named: a node with one link)."""
        return self.links.get(link, 0)


class OpticalPathConfig(_Strict):
    """A laser gated by a sequencer TTL line (through an AOM), at a nominal power.

    Paths: pump (spin initialisation), readout, repump (NV charge repump / ion Doppler
    cooling), excitation (the optical pi pulse of an entanglement attempt)."""

    ttl: str
    laser: str
    nominal_power_w: float = Field(gt=0)


class NodeConfig(_Strict):
    kind: Literal["memory", "midpoint"]
    platform: Literal["nv", "ion"] | None = None
    collection: Literal["free_space", "cavity"] = "free_space"
    """How the memory's photons are collected (the simulator draws the efficiency from it)."""
    instruments: dict[str, InstrumentConfig]
    channels: ChannelMap = Field(default_factory=ChannelMap)
    optics: dict[Literal["pump", "readout", "repump", "excitation"], OpticalPathConfig] = Field(
        default_factory=dict
    )
    memories: list[str] = Field(default_factory=list, max_length=4)
    """Memory qubits beside the communication qubit (an NV's 13C nuclear spins, e.g.
    ["c13"]): where the link layer can store a pair while the node makes another link."""

    @property
    def memory_platform(self) -> str | None:
        """The platform of a memory node (its compiler's defaults); None for a midpoint."""
        return self.platform if self.kind == "memory" else None

    def by_role(self, role: str) -> dict[str, InstrumentConfig]:
        return {name: inst for name, inst in self.instruments.items() if inst.role == role}


class LabSection(_Strict):
    name: str
    data_dir: str = "../data"
    description: str = ""
    max_sweep_points: int = Field(default=DEFAULT_MAX_SWEEP_POINTS, ge=1, le=1_000_000)
    """The most points a run's sweep may have: a node refuses a larger one before compiling."""


PINNABLE = (
    "eta",
    "visibility",
    "phase_noise_deg",
    "dark_count_hz",
    "delay_ns",
    "p_double",
    "pi_pulse_error",
)


class SimulationSection(_Strict):
    """For the simulated lab only (the controller never reads it): hidden truths pinned to
    given values instead of drawn from the seed, to reproduce a paper's figures."""

    midpoint: dict[Literal[PINNABLE], float] = Field(default_factory=dict)  # type: ignore[valid-type]
    """Pinned at every midpoint."""
    midpoints: dict[str, dict[Literal[PINNABLE], float]] = Field(default_factory=dict)  # type: ignore[valid-type]
    """Per midpoint (`[simulation.midpoints.M1]`), over `midpoint`: two links of a paper with
    different figures."""
    memories: dict[Literal["init_fidelity"], float] = Field(default_factory=dict)
    """Pinned for every memory node."""
    c13: dict[Literal["a_par_hz", "a_perp_hz"], Annotated[float, Field(ge=-1e6, le=1e6)]] = Field(
        default_factory=dict
    )
    """Pinned for every node's 13C memory: its hyperfine coupling to the electron (Hz)."""


FIBRE_DELAY_S_PER_KM = 5e-6
"""Light in fibre: about 5 us per km (group index ~1.47)."""


class LinkConfig(_Strict):
    """A heralded link: two memory nodes, the midpoint between them, each one's fibre to it."""

    midpoint: str
    nodes: Annotated[list[str], Field(min_length=2, max_length=2)]
    fibre_km: dict[str, Annotated[float, Field(ge=0.0, le=1000.0)]] = Field(default_factory=dict)
    """Per node, the fibre to the midpoint (km); a node not named has 0 (a lab's metres)."""
    wavelength_nm: Annotated[float, Field(ge=350.0, le=1700.0)] | None = None
    """The photons' wavelength in the fibre when each node converts them (quantum frequency
    conversion, e.g. 1588 nm for NV photons as in Dreau et al. 2018); None: the platform's
    own photons travel the fibre. What the photons lose in the fibre and the converters is
    part of the detection efficiency the link calibration measures."""

    def peer(self, node: str) -> str:
        """The other end of this link."""
        a, b = self.nodes
        return b if node == a else a

    def delay_s(self, node: str) -> float:
        """One-way light (and message) time from `node` to the midpoint through its fibre."""
        return self.fibre_km.get(node, 0.0) * FIBRE_DELAY_S_PER_KM


class LabConfig(_Strict):
    lab: LabSection
    nodes: dict[str, NodeConfig]
    links: dict[str, LinkConfig] = Field(default_factory=dict)
    """Named links (`[links.AB]`); a lab with one midpoint and two memory nodes that names
    none has the one link between them (see `all_links`)."""
    simulation: SimulationSection = Field(default_factory=SimulationSection)

    # set by the loader, not by the file
    source: str = ""

    @property
    def data_dir(self) -> Path:
        override = os.environ.get("QNODE_DATA_DIR")
        if override:
            return Path(override)
        return (Path(self.source).parent / self.lab.data_dir).resolve()

    @property
    def resource_map_path(self) -> Path:
        return self.data_dir / "sim" / f"{self.lab.name}.resources.json"

    def instrument(self, node: str, name: str) -> InstrumentConfig:
        return self.nodes[node].instruments[name]

    @property
    def all_links(self) -> dict[str, LinkConfig]:
        """The lab's links: as named in the file, or the one implicit link of a lab with one
        midpoint and two memory nodes (named after the nodes, "AB")."""
        if self.links:
            return dict(self.links)
        memory = [n for n, cfg in self.nodes.items() if cfg.kind == "memory"]
        midpoints = [n for n, cfg in self.nodes.items() if cfg.kind == "midpoint"]
        if len(memory) == 2 and len(midpoints) == 1:
            return {"".join(memory): LinkConfig(midpoint=midpoints[0], nodes=memory)}
        return {}

    def links_of(self, node: str) -> dict[str, LinkConfig]:
        """The links a memory node or a midpoint takes part in."""
        return {
            name: link
            for name, link in self.all_links.items()
            if node in link.nodes or node == link.midpoint
        }

    def link_between(self, a: str, b: str) -> tuple[str, LinkConfig]:
        """The link joining memory nodes a and b; QnodeError naming the lab's links if none."""
        for name, link in self.all_links.items():
            if set(link.nodes) == {a, b}:
                return name, link
        known = ", ".join(f"{n} ({'-'.join(link.nodes)})" for n, link in self.all_links.items())
        raise QnodeError(
            f"the lab {self.lab.name} has no link between {a} and {b} "
            f"(its links: {known or 'none'})"
        )

    def all_instruments(self) -> Iterator[tuple[str, str, InstrumentConfig]]:
        for node_name, node in self.nodes.items():
            for name, inst in node.instruments.items():
                yield node_name, name, inst

    def make_driver(self, node: str, name: str, resources: dict[str, str] | None = None) -> Driver:
        """The driver of one instrument (not opened). `sim` resources need the sim's map."""
        inst = self.instrument(node, name)
        resource = inst.resource
        if inst.simulated:
            key = f"{node}.{name}"
            if resources is None or key not in resources:
                raise LabConfigError(
                    self.source,
                    f"nodes.{node}.instruments.{name}.resource",
                    "is 'sim' but the simulated lab's resource map has no entry for it: "
                    "is `qnode sim up` running for this lab?",
                )
            resource = resources[key]
        return DRIVERS[inst.driver](
            f"{node}.{name}", resource, _limits(inst), timeout_s=inst.timeout_s
        )

    def make_instrument(
        self,
        node: str,
        name: str,
        capability: type[C],
        resources: dict[str, str] | None = None,
    ) -> C:
        """The driver of one instrument (not opened), typed as a capability of
        drivers.protocols: `lab.make_instrument("M", "tagger", TimeTagger, resources)`."""
        driver = self.make_driver(node, name, resources)
        if not isinstance(driver, capability):
            raise LabConfigError(
                self.source,
                f"nodes.{node}.instruments.{name}.driver",
                f"{self.instrument(node, name).driver!r} is not a {capability.__name__}",
            )
        return driver


def _limits(inst: InstrumentConfig) -> dict[str, Range]:
    return {key: (lo, hi) for key, (lo, hi) in inst.limits.items()}


def _key_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def _explain(error: ErrorDetails) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing key"
    given = error.get("input")
    return f"{message} (got {given!r})" if not isinstance(given, dict) else message


def load_lab(path: str | os.PathLike) -> LabConfig:
    """Read and validate a lab file; raises LabConfigError (one, clear) on any problem."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LabConfigError(shown, "", f"cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise LabConfigError(
            shown, "", f"not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r})"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabConfigError(shown, "", f"not valid TOML: {e}") from None
    return parse_lab(raw, shown)


def parse_lab(raw: dict[str, Any], source: str) -> LabConfig:
    if "source" in raw:
        raise LabConfigError(source, "source", "unknown key")
    try:
        lab = LabConfig.model_validate({**raw, "source": source})
    except ValidationError as e:
        first = e.errors()[0]
        raise LabConfigError(source, _key_path(first["loc"]), _explain(first)) from None
    _check_semantics(lab)
    return lab


def _check_semantics(lab: LabConfig) -> None:
    src = lab.source

    def fail(key: str, problem: str) -> NoReturn:
        raise LabConfigError(src, key, problem)

    if not any(node.kind == "memory" for node in lab.nodes.values()):
        fail("nodes", 'the lab has no memory node (kind = "memory")')
    if lab.data_dir.exists() and not lab.data_dir.is_dir():
        fail("lab.data_dir", f"{lab.data_dir} is a file, not a folder")
    for node_name, node in lab.nodes.items():
        base = f"nodes.{node_name}"
        if node.kind == "memory" and node.platform is None:
            fail(f"{base}.platform", 'missing key (a memory node needs "nv" or "ion")')
        for name, inst in node.instruments.items():
            key = f"{base}.instruments.{name}"
            if inst.role not in ROLES:
                fail(f"{key}.role", f"unknown role {inst.role!r} (known: {', '.join(ROLES)})")
            if inst.driver not in DRIVERS:
                fail(
                    f"{key}.driver", f"unknown driver {inst.driver!r} (known: {', '.join(DRIVERS)})"
                )
            cls = DRIVERS[inst.driver]
            if inst.role != cls.ROLE:
                fail(f"{key}.driver", f"driver {inst.driver!r} is a {cls.ROLE}, not a {inst.role}")
            try:
                check_limits(cls, _limits(inst))
            except LimitsError as e:
                fail(f"{key}.limits.{e.key}", e.problem)
            if inst.watchdog_s is not None and inst.role != "sequencer":
                fail(f"{key}.watchdog_s", f"only a sequencer has a watchdog, not a {inst.role}")
            if inst.model is not None and inst.role != "laser":
                fail(f"{key}.model", f"only a laser has a model (Cobolt series), not a {inst.role}")
            if inst.role == "sequencer" and inst.watchdog <= inst.timeout_s:
                fail(
                    f"{key}.watchdog_s",
                    f"{inst.watchdog:g} s must exceed timeout_s ({inst.timeout_s:g} s): one slow "
                    "reply must not let the watchdog halt a healthy run",
                )
            if (
                not inst.simulated
                and inst.driver
                and cls.TRANSPORT == "tcp"
                and not (
                    inst.resource.upper().startswith("TCPIP")
                    and inst.resource.upper().endswith("SOCKET")
                )
            ):
                fail(
                    f"{key}.resource",
                    f"{inst.resource!r} is neither 'sim' nor a TCPIP::host::port::SOCKET resource",
                )
            if not inst.simulated and inst.driver and cls.TRANSPORT == "zmq":
                try:
                    split_zmq_resource(inst.resource)
                except ValueError:
                    fail(
                        f"{key}.resource",
                        f"{inst.resource!r} is neither 'sim' nor a ZeroMQ endpoint "
                        "'tcp://host:port[,dlt=tcp://host:port]'",
                    )
        needed = MEMORY_ROLES if node.kind == "memory" else MIDPOINT_ROLES
        for role in needed:
            if not node.by_role(role):
                fail(
                    f"{base}.instruments",
                    f"no instrument with role '{role}' (a {node.kind} node needs one)",
                )
        if node.kind == "memory" and node.by_role("herald_logic"):
            fail(f"{base}.instruments", "a herald logic belongs to a midpoint, not a memory node")
        if (
            node.kind == "midpoint"
            and node.by_role("phase_stabiliser")
            and not node.by_role("laser")
        ):
            fail(
                f"{base}.instruments",
                "the interferometer's piezo driver (role 'phase_stabiliser') needs the "
                "reference laser whose light the midpoint's phase lock reads (role 'laser')",
            )
        _check_channels(lab, node_name, node, fail)
        for path, optical in node.optics.items():
            key = f"{base}.optics.{path}"
            if optical.ttl not in node.channels.ttl:
                fail(f"{key}.ttl", f"{optical.ttl!r} is not a TTL line of channels.ttl")
            laser = node.instruments.get(optical.laser)
            if laser is None or laser.role != "laser":
                fail(f"{key}.laser", f"{optical.laser!r} is not a laser of this node")
            lo, hi = laser.limits["power_w"]
            if not lo < optical.nominal_power_w <= hi:
                fail(
                    f"{key}.nominal_power_w",
                    f"{optical.nominal_power_w:g} W is outside the laser's limit "
                    f"[{lo:g}, {hi:g}] W",
                )
        if node.kind == "memory":
            for path in ("pump", "readout", "repump"):
                if path not in node.optics:
                    fail(f"{base}.optics.{path}", "missing: a memory node needs this optical path")
        if node.memories and (node.kind != "memory" or node.platform != "nv"):
            fail(f"{base}.memories", "only an NV memory node has memory qubits (13C spins) here")
        if len(set(node.memories)) != len(node.memories):
            fail(f"{base}.memories", "a memory qubit is named twice")
    _check_links(lab, fail)


Fail = Callable[[str, str], NoReturn]
"""fail(key path, problem): raises the one LabConfigError."""


def _check_links(lab: LabConfig, fail: Fail) -> None:
    served: dict[str, str] = {}
    for name, link in lab.links.items():
        key = f"links.{name}"
        mid = lab.nodes.get(link.midpoint)
        if mid is None or mid.kind != "midpoint":
            fail(f"{key}.midpoint", f"{link.midpoint!r} is not a midpoint node of this lab")
        if link.midpoint in served:
            fail(
                f"{key}.midpoint",
                f"{link.midpoint} already heralds link {served[link.midpoint]} "
                "(one interferometer, one link)",
            )
        served[link.midpoint] = name
        for node in link.nodes:
            cfg = lab.nodes.get(node)
            if cfg is None or cfg.kind != "memory":
                fail(f"{key}.nodes", f"{node!r} is not a memory node of this lab")
        if link.nodes[0] == link.nodes[1]:
            fail(f"{key}.nodes", "a link joins two different nodes")
        for node in link.fibre_km:
            if node not in link.nodes:
                fail(f"{key}.fibre_km.{node}", f"{node} is not an end of this link")
    for station, config in lab.nodes.items():
        _check_link_ports(lab, station, config, fail)
    for station in lab.simulation.midpoints:
        if station not in served:
            fail(f"simulation.midpoints.{station}", f"{station!r} is not a midpoint of a link")
    pairs = [frozenset(link.nodes) for link in lab.links.values()]
    if len(set(pairs)) != len(pairs):
        fail("links", "two links join the same pair of nodes")
    if lab.links:
        unused = [n for n, cfg in lab.nodes.items() if cfg.kind == "midpoint" and n not in served]
        if unused:
            fail("links", f"the midpoint {unused[0]} heralds no link")


def _check_link_ports(lab: LabConfig, node_name: str, node: NodeConfig, fail: Fail) -> None:
    """channels.links names the node's links, each on its own port; a node in two links has
    both ports and a fibre switch line."""
    base = f"nodes.{node_name}.channels"
    ports = node.channels.links
    if ports and node.kind != "memory":
        fail(f"{base}.links", "only a memory node has sync/herald ports")
    mine = lab.links_of(node_name) if node.kind == "memory" else {}
    seen: dict[int, str] = {}
    for link, port in ports.items():
        if link not in mine:
            fail(
                f"{base}.links.{link}",
                f"{node_name} is not an end of a link {link!r} "
                f"(its links: {', '.join(mine) or 'none'})",
            )
        if not 0 <= port < N_LINK_PORTS:
            fail(f"{base}.links.{link}", f"port {port} is outside 0..{N_LINK_PORTS - 1}")
        if port in seen:
            fail(f"{base}.links.{link}", f"port {port} is already the port of link {seen[port]}")
        seen[port] = link
    if len(mine) > 2:
        fail(f"{base}.links", f"{node_name} is in {len(mine)} links: a fibre switch serves two")
    if len(mine) == 2:
        missing = [link for link in mine if link not in ports]
        if missing:
            fail(
                f"{base}.links",
                f"{node_name} is in links {' and '.join(mine)}: name the sync/herald port of "
                f"each (e.g. {{ {', '.join(f'{k} = {i}' for i, k in enumerate(mine))} }}); "
                f"{missing[0]} has none",
            )
        if sorted(ports[link] for link in mine) != [0, 1]:
            fail(
                f"{base}.links",
                "a node in two links uses ports 0 and 1 (its fibre switch: low sends the "
                "photons to the midpoint on port 0, high to port 1)",
            )
        if FIBRE_SWITCH_LINE not in node.channels.ttl:
            fail(
                f"{base}.ttl",
                f"{node_name} is in two links: it needs a TTL line '{FIBRE_SWITCH_LINE}' for "
                "the fibre switch that sends its photons to one midpoint at a time",
            )


def _check_channels(lab: LabConfig, node_name: str, node: NodeConfig, fail: Fail) -> None:
    base = f"nodes.{node_name}.channels"
    ch = node.channels
    for group, lo, hi in (("ttl", 0, 31), ("awg", 1, 4), ("counters", 0, 3), ("detectors", 1, 4)):
        seen: dict[int, str] = {}
        for name, line in getattr(ch, group).items():
            if not lo <= line <= hi:
                fail(f"{base}.{group}.{name}", f"{line} is outside {lo}..{hi}")
            if line in seen:
                fail(f"{base}.{group}.{name}", f"line {line} is already used by '{seen[line]}'")
            seen[line] = name
    for name, spec in ch.markers.items():
        channel, _, marker = spec.partition(".")
        if not (channel.isdigit() and marker in ("1", "2") and 1 <= int(channel) <= 4):
            fail(f"{base}.markers.{name}", f"{spec!r} is not 'channel.marker' (e.g. \"1.2\")")
    if node.kind == "memory":
        for group in ("ttl", "awg", "counters"):
            if not getattr(ch, group):
                fail(f"{base}.{group}", "missing: a memory node needs this part of the channel map")
    if node.kind == "midpoint" and len(ch.detectors) < 2:
        fail(f"{base}.detectors", "the midpoint needs two detectors (one per beam-splitter output)")


def read_resource_map(lab: LabConfig, path: str | os.PathLike | None = None) -> dict[str, str]:
    """The map `qnode sim up` writes: "node.instrument" -> VISA resource or serial device."""
    path = Path(path) if path else lab.resource_map_path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabConfigError(
            str(path), "", "no resource map: start the simulated lab with `qnode sim up` first"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise LabConfigError(str(path), "", f"unreadable resource map: {e}") from None
    resources = data.get("resources") if isinstance(data, dict) else None
    if not isinstance(resources, dict):
        raise LabConfigError(str(path), "resources", "missing or not a table")
    return resources


def midpoint_name(lab: LabConfig) -> str:
    """The lab's first midpoint station: a shortcut for a two-node lab's one midpoint, kept
    for the tests of such labs. The controller names a midpoint by its link (`link_between`,
    `links_of`): a lab may have several."""
    names = [n for n, cfg in lab.nodes.items() if cfg.kind == "midpoint"]
    if not names:
        raise QnodeError(f"the lab {lab.lab.name} has no midpoint station")
    return names[0]


STATION_HOSTS_ENV = "QNODE_STATION_HOSTS"
"""`A=127.0.0.1,B=10.201.0.6`: the host this process dials for a station, in place of the one
in the station's info file. For stations in separate network namespaces (hil_tests/netns.py),
where a station is reached through the link it shares with this one, not at the address it
bound. Unset (the normal case): every station is dialled where it says it listens."""
MAX_STATION_HOSTS = 64


def station_hosts(text: str | None = None) -> dict[str, str]:
    """QNODE_STATION_HOSTS (or `text`) as station -> host; LabConfigError on a malformed one."""
    text = os.environ.get(STATION_HOSTS_ENV, "") if text is None else text
    hosts: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        station, sep, host = item.partition("=")
        station, host = station.strip(), host.strip()
        if not sep or not station or not host or any(c in host for c in "/: \t"):
            raise LabConfigError(
                STATION_HOSTS_ENV, station or item, f"{item!r} is not STATION=HOST (an address)"
            )
        hosts[station] = host
    if len(hosts) > MAX_STATION_HOSTS:
        raise LabConfigError(STATION_HOSTS_ENV, "", f"more than {MAX_STATION_HOSTS} stations")
    return hosts


def dial_endpoint(station: str, endpoint: str) -> str:
    """Where this process reaches `station`, which serves at `endpoint` (its info file's,
    tcp://host:port): the same port at the host QNODE_STATION_HOSTS names for it, if any."""
    host = station_hosts().get(station)
    if host is None or not endpoint.startswith("tcp://"):
        return endpoint
    return f"tcp://{host}:{endpoint.rsplit(':', 1)[1]}"
