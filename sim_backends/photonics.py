"""Photons from the nodes to the midpoint: emission, fibre delay and loss, detector
efficiency, timing jitter, dark counts, and the sync that the midpoint's time tagger uses as
its start signal (every excitation pulse of a node is a sync).

The midpoint's truth (per-node delay and detection efficiency, detector dark count rates,
jitter, the emitter lifetime) is drawn from the seed and hidden from the controller, as the
nodes' truth is.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from sim_backends import optics
from sim_backends.instruments.herald_logic import OPEN_GATE_NS
from sim_backends.optics import Detectors, NodeOptics

LIFETIME_NS = {"nv": 12.0, "ion": 8.0}
P_DOUBLE_RANGE = {"nv": (0.03, 0.05), "ion": (0.005, 0.015)}  # double excitation per pi pulse
PI_PULSE_ERROR_RANGE = {"nv": (0.005, 0.02), "ion": (0.002, 0.01)}  # bright state not excited
OPTICAL_PULSE_NS = 2.0  # the optical pi pulse: the span of a double excitation's early photon
TWO_PHOTON_CACHE = 64  # herald distributions kept (per memory states, windows, dark counts)
ETA_RANGE = {  # detected photons per excitation, by platform and collection
    ("nv", "free_space"): (2.8e-4, 4.2e-4),
    ("nv", "cavity"): (0.02, 0.05),
    ("ion", "free_space"): (0.015, 0.025),  # Stephenson 2020: p ~ 2e-4 = eta^2 / 2
    ("ion", "cavity"): (0.07, 0.13),
}
DELAY_NS_RANGE = (40.0, 90.0)  # fibre and electronics, sync to photon arrival
DARK_HZ_RANGE = (15.0, 25.0)
JITTER_NS = 0.05
PARTNER_WAIT_S = 2.0  # how long a node's attempt loop waits for the other's, in wall time
PHASE_NOISE_DEG_RANGE = (8.0, 15.0)
"""Spread of the interferometer's fast phase noise, the part no stabilisation between
heralding periods can follow: Humphreys et al., Nature 558, 268 (2018), SI, stabilise in
bursts between entanglement attempts and give the phase uncertainty the heralded states see
as about 15 deg; the range reaches below it for a quieter set-up."""
PHASE_DRIFT_DEG_PER_SQRT_S = 15.0
"""The fibres' slow drift: a random walk of this many degrees in a second (one standard
deviation), tens of degrees over seconds as in a lab's kilometre-scale fibre links."""
FAST_NOISE_CORRELATION_S = 0.0005
"""Correlation time of the fast phase noise (acoustic pick-up of the fibres, a kHz band): a
count of the reference light long against it averages it away, a burst's correction cannot
follow it."""
REFERENCE_NOMINAL_W = 0.0005
"""The reference laser's emitted power that gives `reference_rate_hz` at the detectors (the
lab's attenuators set for it): the light scales with the power, none at 0 W. qnode's midpoint
parameter `reference_power_w` defaults to it."""
PIEZO_DEG_PER_VOLT_RANGE = (10.0, 20.0)
"""The fibre stretcher's phase per volt of the piezo driver (a few metres of fibre wound on a
piezo cylinder): one fringe in 18-36 V, so a 75 V output holds two fringes or more."""


@dataclass(frozen=True)
class MidpointTruth:
    delay_ns: dict[str, float]
    eta: dict[str, float]
    lifetime_ns: dict[str, float]
    dark_count_hz: dict[int, float]  # detector input -> rate
    jitter_ns: float
    phase_offset_deg: float  # interferometer phase at 0 V on the piezo, when the lab starts
    phase_noise_deg: float  # spread of the interferometer's fast phase noise
    piezo_deg_per_volt: float  # the fibre stretcher: phase per volt of the piezo driver
    reference_rate_hz: float  # reference light at the detectors, both together, at nominal
    reference_visibility: float
    visibility: float  # two-photon (HOM) visibility of A's and B's photons: |overlap|^2
    p_double: dict[str, float]  # double excitation per optical pi pulse, per node
    pi_pulse_error: dict[str, float]  # P(the bright state is not excited), per node

    def as_dict(self) -> dict:
        d = asdict(self)
        d["dark_count_hz"] = {str(k): v for k, v in self.dark_count_hz.items()}
        return d


def draw_midpoint_truth(
    platforms: dict[str, tuple[str, str]],
    detectors: list[int],
    rng: np.random.Generator,
    pins: dict[str, float] | None = None,
) -> MidpointTruth:
    """platforms: node -> (platform, collection). `pins` replace drawn values (the lab file's
    [simulation.midpoint]: eta, delay_ns, p_double, pi_pulse_error for every node;
    dark_count_hz for every detector; visibility, phase_noise_deg), to reproduce a paper's
    figures."""
    truth = MidpointTruth(
        delay_ns={n: float(rng.uniform(*DELAY_NS_RANGE)) for n in platforms},
        eta={n: float(rng.uniform(*ETA_RANGE[p])) for n, p in platforms.items()},
        lifetime_ns={n: LIFETIME_NS[p] for n, (p, _) in platforms.items()},
        dark_count_hz={d: float(rng.uniform(*DARK_HZ_RANGE)) for d in detectors},
        jitter_ns=JITTER_NS,
        phase_offset_deg=float(rng.uniform(-180.0, 180.0)),
        phase_noise_deg=float(rng.uniform(*PHASE_NOISE_DEG_RANGE)),
        reference_rate_hz=float(rng.uniform(1.5e5, 2.5e5)),
        reference_visibility=float(rng.uniform(0.95, 0.99)),
        visibility=float(rng.uniform(0.85, 0.95)),
        p_double={n: float(rng.uniform(*P_DOUBLE_RANGE[p])) for n, (p, _) in platforms.items()},
        pi_pulse_error={
            n: float(rng.uniform(*PI_PULSE_ERROR_RANGE[p])) for n, (p, _) in platforms.items()
        },
        piezo_deg_per_volt=float(rng.uniform(*PIEZO_DEG_PER_VOLT_RANGE)),  # drawn last: the
        # draws before it stay those of a seed
    )
    pinned: dict[str, object] = {}
    for name, value in (pins or {}).items():
        if name in ("eta", "delay_ns", "p_double", "pi_pulse_error"):
            pinned[name] = dict.fromkeys(platforms, float(value))
        elif name == "dark_count_hz":
            pinned[name] = dict.fromkeys(detectors, float(value))
        elif name in ("visibility", "phase_noise_deg"):
            pinned[name] = float(value)
        else:
            raise ValueError(f"cannot pin {name!r} of the midpoint's truth")
    return replace(truth, **pinned)


def wrap_deg(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


class Interferometer:
    """The phase of A's arm relative to B's (degrees), as the reference light and the photons
    both see it (0: the reference fringe's top on psi_plus): the fibres' slow random walk, a
    fast Ornstein-Uhlenbeck noise (spread `phase_noise_deg` of the truth, correlation time
    FAST_NOISE_CORRELATION_S), and the fibre stretcher, `piezo_deg_per_volt` times the piezo
    driver's output. It moves on in wall time; nothing in the lab holds it: qnode's midpoint
    does, by reading the reference light and setting the piezo's voltage."""

    def __init__(
        self,
        truth: MidpointTruth,
        rng: np.random.Generator,
        piezo=None,
        drift_deg_per_sqrt_s: float = PHASE_DRIFT_DEG_PER_SQRT_S,
    ) -> None:
        self.truth = truth
        self.rng = rng
        self.piezo = piezo
        self.drift = drift_deg_per_sqrt_s
        self.walk_deg = truth.phase_offset_deg
        self.fast_deg = float(rng.normal(0.0, truth.phase_noise_deg))
        self._last = time.monotonic()

    def _piezo_deg(self) -> float:
        volts = float(getattr(self.piezo, "voltage", 0.0)) if self.piezo is not None else 0.0
        return self.truth.piezo_deg_per_volt * volts

    def _advance(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.walk_deg += float(self.rng.normal(0.0, self.drift * np.sqrt(seconds)))
        keep = float(np.exp(-seconds / FAST_NOISE_CORRELATION_S))
        sigma = self.truth.phase_noise_deg
        self.fast_deg = keep * self.fast_deg + float(
            self.rng.normal(0.0, sigma * np.sqrt(1.0 - keep**2))
        )

    def phase_deg(self) -> float:
        """The phase now (wrapped to [-180, 180))."""
        now = time.monotonic()
        self._advance(now - self._last)
        self._last = max(now, self._last)
        return wrap_deg(self.walk_deg + self.fast_deg + self._piezo_deg())

    def path_deg(self, seconds: float, points: int = 64) -> np.ndarray:
        """The phase (degrees, unwrapped) at `points` times over the next `seconds` (a count
        that long, the piezo's voltage held); the state and its clock move on with it."""
        now = self.phase_deg()
        if seconds <= 0 or points < 2:
            return np.array([now])
        dt = seconds / (points - 1)
        walk = np.cumsum(self.rng.normal(0.0, self.drift * np.sqrt(dt), points - 1))
        keep = float(np.exp(-dt / FAST_NOISE_CORRELATION_S))
        kicks = self.rng.normal(0.0, self.truth.phase_noise_deg * np.sqrt(1 - keep**2), points)
        fast = np.empty(points)
        fast[0] = self.fast_deg
        for k in range(1, points):
            fast[k] = keep * fast[k - 1] + kicks[k]
        path = now + np.concatenate(([0.0], walk)) + (fast - fast[0])
        self.walk_deg += float(walk[-1])
        self.fast_deg = float(fast[-1])
        self._last += seconds
        return path


class Midpoint:
    """The beam splitter, its detectors and the tagger they feed. Two detectors (inputs in
    the order psi_plus, psi_minus): one per beam-splitter output, the NV labs' single-click
    and Barrett-Kok. Four (inputs in the order of optics.TWO_PHOTON_DETECTORS): a polarising
    beam splitter on each output, the ion labs' apparatus (Stephenson et al. 2020), whose
    photons carry the ions' polarisation qubits: every one-window attempt loop is then a
    two-photon attempt (optics.two_photon), whatever the nodes played before their pulse."""

    def __init__(
        self,
        truth: MidpointTruth,
        tagger,
        detectors: list[int],
        rng,
        piezo=None,
        register=None,
        reference_laser=None,
        herald_logic=None,
        fibre_ns: dict[str, float] | None = None,
    ) -> None:
        self.truth = truth
        self.fibre_ns = dict(fibre_ns or {})
        """Each node's fibre to this midpoint, one way (ns): its photons arrive that much later
        after their sync (in the truth's delay_ns), and the herald reaches it that much after
        the midpoint decided."""
        self.tagger = tagger
        self.herald_logic = herald_logic
        """The herald logic (its own instrument, as the CPLD behind a real station's
        detectors): it sees the detector pulses as the tagger does; None: no clicks recorded."""
        self.detectors = detectors
        self.polarisation = len(detectors) == 4
        self.rng = rng
        self.interferometer = Interferometer(truth, rng, piezo) if piezo is not None else None
        """No piezo driver: no fibre stretcher either (the ion labs' polarisation qubits)."""
        self.reference_laser = reference_laser
        """The midpoint's reference laser (its SimLaserState): on, its light goes through the
        interferometer to the detectors."""
        self.register = register
        self.heralds: list[dict] = []
        """Ground truth: every herald the physics produced, and the state it left."""
        self._attempting: dict[int, dict] = {}
        self._settling: dict[int, tuple] = {}
        self._stepping: dict[tuple[int, int], dict] = {}
        self._two_photon_cache: dict = {}
        self.software = False
        """Software heralding: attempts are stepped, each one's outcome drawn when both
        nodes' windows meet, and the herald logic marks every window's end (input 0)."""
        tagger.light_rates = self.reference_rates

    # the shared sync ---------------------------------------------------------------------------
    def connect_sync(self, sequencers: list, ports: dict | None = None) -> None:
        """The sync output is wired to these sequencers' sync inputs, each on its port of
        this link (`ports`: sequencer -> port, 0 if not named); the herald goes to the herald
        input of the same port."""
        self.sequencers = list(sequencers)
        self.ports = {seq: (ports or {}).get(seq, 0) for seq in self.sequencers}
        self.sync_auto = False
        self.generation = 0
        self._waiting: set = set()
        self._arrival_ns: dict = {}
        """Each waiting sequencer's clock at its WAIT_SYNC, counted from its RUN."""
        self._sync_wait_ns: dict = {}
        """What the last sync kept each sequencer waiting, in virtual time (sync_wait_ns)."""
        for seq in self.sequencers:
            seq.sync_sources[self.ports[seq]] = self

    def round_trip_ns(self, node: str) -> float:
        """From a node's excitation to its herald input learning the attempt's fate: the
        photon's way to the midpoint and the herald's way back, both through its fibre."""
        return 2.0 * self.fibre_ns.get(node, 0.0)

    def fire_sync(self) -> None:
        """One sync pulse to every sequencer (a waiting one goes on; another keeps it)."""
        self.generation += 1
        # the lab this models armed both sequencers together (RUN), so the sync comes when
        # the latest of them reaches its WAIT_SYNC: each waits for the others' virtual
        # lateness, not for the wall time the simulator took (docs/simulation.md, "Virtual
        # time")
        arrivals = {seq: self._arrival_ns[seq] for seq in self._waiting if seq in self._arrival_ns}
        latest = max(arrivals.values(), default=0)
        self._sync_wait_ns = {seq: latest - at for seq, at in arrivals.items()}
        self._waiting.clear()
        self._arrival_ns.clear()
        for seq in self.sequencers:
            seq._wake("sync", self.generation, self.ports[seq])

    def set_sync_auto(self, on: bool) -> None:
        """AUTO fires once every sequencer waits; switched on while they all already wait
        (a paused session resuming), it fires at once: the logic is level-triggered."""
        self.sync_auto = on
        if on and self.sequencers and all(s in self._waiting for s in self.sequencers):
            self.fire_sync()

    def arrived(self, seq) -> None:
        """A sequencer waits at WAIT_SYNC; in AUTO mode the sync fires once all of them do,
        so the nodes' attempt loops start together."""
        self._waiting.add(seq)
        self._arrival_ns[seq] = seq.node.now_ns - seq.t0_ns
        if self.sync_auto and all(s in self._waiting for s in self.sequencers):
            self.fire_sync()

    def left(self, seq) -> None:
        """A sequencer stopped waiting (synced, timed out, stopped, reset)."""
        self._waiting.discard(seq)
        self._arrival_ns.pop(seq, None)

    def sync_wait_ns(self, seq) -> int:
        """How long, in virtual time, the last sync kept `seq` waiting at its WAIT_SYNC: the
        time from its arrival to the latest participant's, each counted from its own RUN (0
        if it was not waiting when the sync fired: it finds the sync already there)."""
        return int(self._sync_wait_ns.pop(seq, 0))

    # attempt loops drawn at once ----------------------------------------------------------------
    async def attempts(
        self, seq, state, available: int, window_ns: int, protocol: str = "single_click"
    ):
        """A node's attempt loop reached its herald wait; once both nodes of this sync are
        there, draw the attempt of the first herald. (attempts, herald) or None if the
        partner never came (then the node steps on its own)."""
        node = seq.node
        generation = node.sync_generation
        waiting = self._attempting.setdefault(generation, {})
        future = asyncio.get_running_loop().create_future()
        waiting[node.name] = (state, available, future, protocol)
        memories = [name for name in self.truth.eta]
        if all(name in waiting for name in memories):
            self._attempting.pop(generation, None)
            self._draw(generation, memories, waiting)
        try:
            return await asyncio.wait_for(asyncio.shield(future), PARTNER_WAIT_S)
        except TimeoutError:
            waiting.pop(node.name, None)
            return None

    async def settle(self, generation: int, node: str) -> None:
        """A node's clock reached the heralding attempt. Once both have, the heralded state
        goes into the register: the memories hold it from that attempt on (it must not
        dephase over the attempts skipped to get there)."""
        entry = self._settling.get(generation)
        if entry is None:
            return
        names, state, arrived, future = entry
        arrived.add(node)
        if all(n in arrived for n in names):
            self._settling.pop(generation, None)
            self.register.set_pair(names[0], names[1], state)
            if not future.done():
                future.set_result(None)
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), PARTNER_WAIT_S)
        except TimeoutError:
            self._settling.pop(generation, None)  # the partner stopped: no pair

    async def software_attempt(self, seq) -> None:
        """One stepped attempt's detection window (single-click). Once both nodes are in it,
        draw whether it heralds; the clicks and the window's end go to the herald logic."""
        node = seq.node
        node.attempt_index += 1
        key = (node.sync_generation, node.attempt_index)
        waiting = self._stepping.setdefault(key, {})
        future = asyncio.get_running_loop().create_future()
        dark = np.diag([0.0, 1.0]).astype(complex)
        state = node.state_seen_by(self) if node.excitations else dark
        waiting[node.name] = (state, future)
        names = list(self.truth.eta)
        if all(n in waiting for n in names):
            self._stepping.pop(key, None)
            self._draw_one(key, names, waiting)
        try:
            await asyncio.wait_for(asyncio.shield(future), PARTNER_WAIT_S)
        except TimeoutError:
            waiting.pop(node.name, None)

    def _draw_one(self, key: tuple[int, int], names: list[str], waiting: dict) -> None:
        generation, attempt = key
        rho_a, rho_b = (waiting[n][0] for n in names[:2])
        windows = self._herald_windows()
        clicks: list = []
        protocol = self._physics("single_click")
        heralding, phase_rad, reference = self._heralding(protocol, rho_a, rho_b, windows)
        if heralding.p_success > 0 and self.rng.random() < heralding.p_success:
            outcome = self._outcome(heralding)
            state = heralding.states[outcome]
            if self.register is not None:
                self.register.set_pair(names[0], names[1], state)
            clicks = self._clicks(heralding, outcome)
            self._log(
                generation,
                attempt,
                outcome,
                heralding,
                rho_a,
                rho_b,
                names,
                phase_rad,
                reference,
                software=True,
            )
        end_of_window = max(start + length for start, length in windows)
        self._record_clicks(generation, attempt, [*clicks, (0, 0, end_of_window)])
        for name in names:
            future = waiting[name][1]
            if not future.done():
                future.set_result(None)

    def _optics(self, node: str) -> NodeOptics:
        t = self.truth
        return NodeOptics(
            eta=t.eta[node],
            lifetime_ns=t.lifetime_ns[node],
            delay_ns=t.delay_ns[node],
            p_double=t.p_double[node],
            pi_pulse_error=t.pi_pulse_error[node],
            pulse_ns=OPTICAL_PULSE_NS,
        )

    def interferometer_phase(self) -> tuple[float, bool]:
        """The phase of A's arm relative to B's now (rad), the one the reference light sees
        (its fringe's top on psi_plus at 0), and whether the reference light is on. No piezo:
        the interferometer is free, its phase anyone's guess."""
        if self.interferometer is None:
            return float(self.rng.uniform(-np.pi, np.pi)), self.reference_on()
        return float(np.radians(self.interferometer.phase_deg())), self.reference_on()

    def reference_on(self) -> bool:
        return self.reference_power_w() > 0.0

    def reference_power_w(self, at: float | None = None) -> float:
        """What the reference laser emits at monotonic time `at` (now): 0 while off, rising
        after it turns on, its power set point once on."""
        laser = self.reference_laser
        return float(laser.output_power_w(at)) if laser is not None else 0.0

    def _physics(self, loop: str) -> str | None:
        """What an attempt loop does here: the sequencer tells a one-window loop
        (single_click) from a two-round one (barrett_kok). Behind polarising beam splitters
        the ions' photons herald two-photon in a one-window loop; a two-round loop there is
        not modelled (None: it never heralds; the midpoint refuses Barrett-Kok there)."""
        if self.polarisation:
            return "two_photon" if loop == "single_click" else None
        return loop

    def _heralding(self, protocol: str, rho_a, rho_b, windows) -> tuple:
        """One attempt's herald distribution from the memories' actual states, the actual
        phase, and the windows the controller set on the herald logic."""
        a, b = list(self.truth.eta)[:2]
        rates = self.tagger.detector_dark_hz
        phase_rad, reference = self.interferometer_phase()
        # reference light left on: its photons click in the herald windows as a background
        # of reference_rate_hz (split by the fringe), far above the detectors' dark counts
        light = (
            self._reference_split(
                np.array([np.degrees(phase_rad)]), self.reference_power_w() / REFERENCE_NOMINAL_W
            )
            if reference
            else {}
        )
        detectors = Detectors(
            dark_hz=tuple(rates[d] + light.get(d, 0.0) for d in self.detectors),
            jitter_ns=self.truth.jitter_ns,
        )

        key = None
        if protocol == "two_photon":
            # phase-insensitive up to terms of pi-pulse error x dark-count probability (below
            # 1e-7 here), and ~5 ms to compute: once per memory states, windows, dark counts
            # (software heralding asks every attempt)
            states = np.round(np.concatenate([rho_a.ravel(), rho_b.ravel()]), 9).tobytes()
            key = (states, tuple(map(tuple, windows)), detectors.dark_hz)
            if key in self._two_photon_cache:
                return self._two_photon_cache[key], phase_rad, reference
        draw = {
            "two_photon": optics.two_photon,
            "barrett_kok": optics.barrett_kok,
        }.get(protocol, optics.single_click)
        heralding = draw(
            rho_a,
            rho_b,
            self._optics(a),
            self._optics(b),
            detectors,
            self.truth.visibility,
            phase_rad,
            windows,
        )
        if key is not None:
            if len(self._two_photon_cache) >= TWO_PHOTON_CACHE:
                self._two_photon_cache.pop(next(iter(self._two_photon_cache)))
            self._two_photon_cache[key] = heralding
        return heralding, phase_rad, reference

    def _outcome(self, heralding) -> str:
        weights = heralding.weights
        names = sorted(weights)
        k = int(np.searchsorted(np.cumsum([weights[n] for n in names]), self.rng.random()))
        return names[min(k, len(names) - 1)]

    def _log(
        self,
        generation,
        attempts,
        outcome,
        heralding,
        rho_a,
        rho_b,
        names,
        phase_rad,
        reference,
        software: bool = False,
    ) -> None:
        alpha_a, alpha_b = (float(np.clip(r[0, 0].real, 0.0, 1.0)) for r in (rho_a, rho_b))
        entry = {
            "generation": generation,
            "attempts": attempts,
            "outcome": outcome,
            "fidelity": optics.bell_fidelity(heralding.states[outcome], outcome),
            "alpha": (alpha_a + alpha_b) / 2,
            "alphas": {names[0]: alpha_a, names[1]: alpha_b},
            "p_success": heralding.p_success,
            "protocol": heralding.protocol,
            "phase_deg": float(np.degrees(phase_rad)),
            "reference_light": reference,
        }
        if software:
            entry["heralding"] = "software"
        self.heralds.append(entry)

    def _draw(self, generation: int, names: list[str], waiting: dict) -> None:
        rho_a, rho_b = (waiting[n][0] for n in names[:2])
        limit = min(waiting[n][1] for n in names)
        loop = "barrett_kok" if waiting[names[0]][3] == "barrett_kok" else "single_click"
        protocol = self._physics(loop)
        heralding = phase_rad = reference = None
        if protocol is not None:
            heralding, phase_rad, reference = self._heralding(
                protocol, rho_a, rho_b, self._herald_windows()
            )
        if heralding is None or heralding.p_success <= 0:
            for name in names:
                if not waiting[name][2].done():
                    waiting[name][2].set_result((limit, 0))
            return
        attempts = int(self.rng.geometric(heralding.p_success))
        if attempts > limit:
            result = (limit, 0)
        else:
            outcome = self._outcome(heralding)
            state = heralding.states[outcome]
            if self.register is not None:
                # Barrett-Kok: the state is set at the first round, before the pi pulse
                # between the rounds (which the sequencer plays): Bell states keep, |00> and
                # |11> swap
                before_pi = state[::-1, ::-1] if protocol == "barrett_kok" else state
                future = asyncio.get_running_loop().create_future()
                self._settling[generation] = (names, before_pi, set(), future)
            clicks = self._clicks(heralding, outcome)
            self._record_clicks(generation, attempts, clicks)
            self._log(
                generation,
                attempts,
                outcome,
                heralding,
                rho_a,
                rho_b,
                names,
                phase_rad,
                reference,
            )
            result = (attempts, 1 if outcome == "psi_plus" else 2)
        for name in names:
            future = waiting[name][2]
            if not future.done():
                future.set_result(result)

    def _herald_windows(self) -> list[tuple[float, float]]:
        if self.herald_logic is None:
            return [OPEN_GATE_NS]
        return self.herald_logic.herald_windows()

    def _record_clicks(self, sync: int, attempt: int, clicks: list) -> None:
        if self.herald_logic is not None:
            self.herald_logic.record_clicks(sync, attempt, clicks)

    def _clicks(self, heralding, outcome: str) -> list:
        """The heralding clicks the tagger sees: (round, input, ns after the sync), from what
        fired them (a node's photon with its delay and wavepacket, or a dark count), inside
        the herald logic's windows."""
        return [
            (round_, self.detectors[index], float(delay))
            for round_, index, delay in optics.sample_clicks(self.rng, heralding, outcome)
        ]

    def scale_dark_counts(self, factor: float) -> None:
        """A light leak into the detectors' fibres (tests): every detector's rate x factor."""
        self.tagger.detector_dark_hz = {
            d: rate * factor for d, rate in self.truth.dark_count_hz.items()
        }

    def reference_rates(self, seconds: float, started: float | None = None) -> dict[int, float]:
        """Reference light through the interferometer, per detector input, averaged over a
        count of `seconds` that started at monotonic time `started` (now): the two outputs
        share it by the phase (behind polarising beam splitters, an output's two detectors
        share it equally), and the phase moves during the count (a count much longer than the
        fast noise's correlation time sees the fringe's contrast reduced by it, a short one a
        phase). The light scales with the power the laser emits during the count (rising
        after it turned on; REFERENCE_NOMINAL_W gives reference_rate_hz), and the phase with
        the piezo's output during the count: a count that began before the piezo moved sees
        some of the old phase."""
        begin = time.monotonic() if started is None else started
        points = 64
        times = begin + np.linspace(0.0, max(seconds, 0.0), points)
        power = np.array([self.reference_power_w(float(t)) for t in times])
        if not np.any(power > 0):
            return {}
        if self.interferometer is None:
            path = np.full(points, float(self.rng.uniform(-180.0, 180.0)))
        else:
            path = self.interferometer.path_deg(seconds, points)
            if len(path) != points:
                path = np.full(points, path[0])
            piezo = self.interferometer.piezo
            if piezo is not None and hasattr(piezo, "voltage_at"):
                now_v = float(piezo.voltage)
                then_v = np.array([piezo.voltage_at(float(t)) for t in times])
                path = path + self.truth.piezo_deg_per_volt * (then_v - now_v)
        return self._reference_split(path, power / REFERENCE_NOMINAL_W)

    def _reference_split(
        self, path_deg: np.ndarray, scale: np.ndarray | float = 1.0
    ) -> dict[int, float]:
        """Rates per detector of the reference light along a phase path, each point's light
        `scale` times the nominal (reference_rate_hz)."""
        t = self.truth
        weights = np.broadcast_to(np.asarray(scale, dtype=float), np.shape(path_deg))
        cosine = np.cos(np.radians(path_deg))
        total = float(np.mean(weights))
        fringe = float(np.mean(weights * cosine))
        per_output = len(self.detectors) // 2
        rates = {}
        for k, channel in enumerate(self.detectors):
            sign = 1.0 if k < per_output else -1.0
            rate = t.reference_rate_hz * (total + sign * t.reference_visibility * fringe) / 2
            rates[channel] = rate / per_output
        return rates

    def excitations(self, node: str, times_ns: np.ndarray, p_emit: np.ndarray) -> None:
        """Excitation pulses of a node at these times, each finding the bright state with
        probability p_emit. A bright memory emits its photon, and with the node's p_double
        the pulse excited it twice: an early photon, emitted during the pulse, as well
        (Pompili et al., Science 372, 259 (2021); Hermans et al., Nature 605, 663 (2022),
        supplementary). Each photon reaches the detectors with the node's eta."""
        if not self.tagger.armed or len(times_ns) == 0:
            return
        times = np.asarray(times_ns, dtype=float)
        self.tagger.record_syncs(times)
        eta, n = self.truth.eta[node], len(times)
        bright = self.rng.random(n) < np.asarray(p_emit)
        normal = bright & (self.rng.random(n) < eta)
        early = bright & (self.rng.random(n) < self.truth.p_double[node])
        early &= self.rng.random(n) < eta
        self._photons(node, times[normal], times[early])

    def excitation_train(
        self, node: str, t0_ns: float, period_ns: float, n: int, p_emit: float, lit: int
    ) -> None:
        """n periodic excitations (a loop the sequencer fast-forwarded), drawn at once; only
        the first `lit` find the memory ready to emit. Per ready excitation, as `excitations`
        draws them one by one: the normal photon detected with p_emit eta, a double
        excitation's early photon with p_emit p_double eta, both with p_emit p_double eta^2."""
        if not self.tagger.armed or n <= 0:
            return
        self.tagger.record_sync_train(t0_ns, period_ns, n)
        if not lit:
            return
        eta, p = self.truth.eta[node], min(1.0, max(p_emit, 0.0))
        both = p * self.truth.p_double[node] * eta * eta
        only_normal = p * eta - both
        only_early = p * self.truth.p_double[node] * eta - both
        counts = self.rng.multinomial(
            lit, [only_normal, only_early, both, max(0.0, 1 - only_normal - only_early - both)]
        )
        k = int(counts[:3].sum())
        if not k:
            return
        which = t0_ns + period_ns * np.sort(self.rng.choice(lit, size=k, replace=False))
        kind = self.rng.permutation(np.repeat([0, 1, 2], counts[:3]))
        self._photons(node, which[kind != 1], which[kind != 0])

    def _photons(
        self, node: str, sync_ns: np.ndarray, early_sync_ns: np.ndarray | None = None
    ) -> None:
        """Detected photons of these syncs: the normal ones after the fibre delay and an
        exponential of the emitter's lifetime; a double excitation's early ones uniformly
        over the optical pulse (OPTICAL_PULSE_NS) after the fibre delay; both blurred by the
        detectors' jitter, each on a detector at random."""
        early = np.zeros(0) if early_sync_ns is None else np.asarray(early_sync_ns, float)
        if len(sync_ns) + len(early) == 0:
            return
        t = self.truth
        syncs = np.concatenate([np.asarray(sync_ns, dtype=float), early])
        emitted = np.concatenate(
            [
                self.rng.exponential(t.lifetime_ns[node], len(sync_ns)),
                self.rng.uniform(0.0, OPTICAL_PULSE_NS, len(early)),
            ]
        )
        delay = t.delay_ns[node] + emitted + self.rng.normal(0.0, t.jitter_ns, len(syncs))
        order = np.argsort(syncs + delay, kind="stable")
        channels = self.rng.choice(self.detectors, size=len(syncs))
        self.tagger.record_photons((syncs + delay)[order], delay[order], channels)
