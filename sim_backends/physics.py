"""Physics of a memory node on a virtual clock, with hidden true parameters drawn from a seed.

The qubit is a density matrix in the {|0>, |1>} basis (NV: ms=0, ms=-1; ion: the two hyperfine
levels). Microwave pulses are rotations with the true Rabi frequency and the true detuning, so a
mis-calibrated pulse gives the wrong rotation.

Dephasing: the bath detuning (NV: the 13C / paramagnetic spin bath; ion: the magnetic field) is
an Ornstein-Uhlenbeck process (de Lange et al., Science 330, 60 (2010)) of stationary spread
sigma = sqrt(2)/T2* and correlation time tau_c. It is drawn afresh from its stationary law at
every optical (re)initialisation, so a Ramsey averaged over shots decays as exp(-(t/T2*)^2);
within a shot it wanders, so an echo refocuses only its slow part: in the slow-bath limit
(t << tau_c) a Hahn echo decays as exp(-(t/T2_hahn)^3) with T2_hahn^3 = 12 tau_c / sigma^2,
and N refocusing pulses at CPMG / XY-n timing as exp(-(t/T2(N))^3), T2(N) = T2_hahn N^(2/3).
tau_c is chosen from the platform's T2* and Hahn-echo T2. The process is sampled exactly over
every interval (the integrated phase and the end detuning are jointly Gaussian given the
start), so pulse sequences refocus exactly what the physics says. A Markovian T2 (a floor that
no decoupling removes) and T1 act on top. Readout is Poisson photon counts with the
platform's bright and dark means, and projects the state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from sim_backends import nuclear
from sim_backends.register import QubitRegister

SX = np.array([[0, 1], [1, 0]], dtype=complex)
SY = np.array([[0, -1j], [1j, 0]], dtype=complex)
SZ = np.array([[1, 0], [0, -1]], dtype=complex)
I2 = np.eye(2, dtype=complex)


@dataclass(frozen=True)
class PlatformParams:
    """Reference figures of a platform (see DESIGN.md), the ranges the truth is drawn from.

    "Ready" is the NV's negative charge state (lost by ionisation under red light, recovered by
    the green charge repump) or, for an ion, being cold (lost by heating, recovered by Doppler
    cooling). The CR / cooling check counts photons under pump + readout light: Poisson with
    `check_mean` when ready, dark counts only when not.
    """

    name: str
    qubit_hz_range: tuple[float, float]
    rabi_hz_per_v_range: tuple[float, float]
    mw_reference_dbm: float
    t2star_s_range: tuple[float, float]
    t2_hahn_s_range: tuple[float, float]  # Hahn-echo T2 (exp(-(t/T2)^3), slow bath)
    t2_s: float  # Markovian T2: the floor under any decoupling
    t1_s: float
    readout_window_ns: int
    bright_mean: float  # counts in the readout window for |0>, were it never to flip
    readout_flip_ns_range: tuple[float, float]  # |0> pumped dark under readout light
    dark_mean: float  # counts in the readout window for |1>
    init_fidelity_range: tuple[float, float]  # P(|0>) after a full spin pump
    pump_time_ns: float
    check_window_ns: int
    check_mean_range: tuple[float, float]  # CR / cooling check counts in its window, when ready
    loss_time_ns: float  # ionisation / heating time constant under nominal readout light
    recovery_time_ns: float  # charge repump / cooling time constant
    recovery_success: float  # probability that a recovery leaves the memory ready
    dark_count_hz: float


NV = PlatformParams(
    name="nv",
    qubit_hz_range=(2.82e9, 2.92e9),
    rabi_hz_per_v_range=(8e6, 14e6),
    mw_reference_dbm=10.0,
    t2star_s_range=(2.5e-6, 4e-6),
    # natural-abundance 13C at low temperature: Abobeih et al., Nat. Commun. 9, 2552 (2018)
    t2_hahn_s_range=(0.8e-3, 1.2e-3),
    t2_s=1.0,  # XY-n saturates near a second (Abobeih et al. 2018)
    t1_s=3600.0,
    readout_window_ns=10_000,
    bright_mean=9.0,  # with spin flips under readout, F0 ~ 0.95 at the best window
    readout_flip_ns_range=(15_000.0, 25_000.0),
    dark_mean=float(-np.log(0.995)),  # F1 = P(0 clicks | ms=-1) = 0.995
    # spin pumping into ms=0: above 99 % in Delft's NVs (Robledo et al., Nature 477, 574
    # (2011); Pompili et al., Science 372, 259 (2021))
    init_fidelity_range=(0.994, 0.998),
    pump_time_ns=300.0,
    check_window_ns=50_000,
    check_mean_range=(20.0, 40.0),
    loss_time_ns=2e6,
    recovery_time_ns=1_000.0,
    recovery_success=0.75,
    dark_count_hz=20.0,
)

ION = PlatformParams(
    name="ion",
    qubit_hz_range=(3.2256e9, 3.2264e9),  # a hyperfine clock qubit: known to < 1 MHz
    rabi_hz_per_v_range=(2e5, 4e5),
    mw_reference_dbm=10.0,
    t2star_s_range=(50e-3, 85e-3),
    # an assumption (Hahn/T2* of 10-30; 43Ca+ at a field-insensitive point: T2* 1.2 s and an
    # echo T2 >~ 45 s, Lucas et al. arXiv:0710.4421), see docs/simulation.md
    t2_hahn_s_range=(0.5, 1.5),
    t2_s=20.0,  # Drmota et al. PRL 130, 090803 (2023): 0.81(4) after 10 s with decoupling
    t1_s=3600.0,
    readout_window_ns=1_500_000,
    bright_mean=20.0,
    readout_flip_ns_range=(1e12, 1e12),  # the ion's detection cycle is closed
    dark_mean=0.05,
    init_fidelity_range=(0.999, 0.999),
    pump_time_ns=5_000.0,
    check_window_ns=1_000_000,
    check_mean_range=(30.0, 50.0),
    loss_time_ns=5e8,
    recovery_time_ns=200_000.0,
    recovery_success=0.98,
    dark_count_hz=20.0,
)

PLATFORMS = {"nv": NV, "ion": ION}


@dataclass(frozen=True)
class NodeTruth:
    """The hidden parameters of one node; tests read them, the controller never does."""

    platform: str
    qubit_hz: float
    rabi_hz_per_v: float
    t2star_s: float
    t2_hahn_s: float
    """Hahn-echo T2 of the bath alone (exp(-(t/T2_hahn)^3)); the Markovian t2_s acts on top."""
    bath_tau_c_s: float
    """Correlation time of the bath (Ornstein-Uhlenbeck), such that a Hahn echo decays to 1/e
    at t2_hahn_s: sigma^2 T2_hahn^3 / 12 in the slow-bath limit (bath_correlation_time)."""
    t2_s: float
    """Markovian T2 (exp(-t/T2)), the floor that no decoupling removes."""
    t1_s: float
    bright_mean: float
    dark_mean: float
    readout_window_ns: int
    init_fidelity: float
    check_mean: float
    check_window_ns: int
    readout_flip_ns: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MemoryNodeTruth(NodeTruth):
    """A node's truth with its memory qubits' (labs whose nodes list `memories`)."""

    memories: dict[str, dict] = field(default_factory=dict)


def side_stream(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator spawned from rng's seed, without drawing from rng: what the
    memory model added (its Hahn T2, its bath's wandering) leaves every other draw of a seeded
    lab as it was."""
    return np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])


def draw_truth(platform: str, rng: np.random.Generator) -> NodeTruth:
    p = PLATFORMS[platform]
    side = side_stream(rng)
    t2_hahn_s = float(side.uniform(*p.t2_hahn_s_range))
    init_fidelity = float(side.uniform(*p.init_fidelity_range))
    qubit_hz = float(rng.uniform(*p.qubit_hz_range))
    rabi_hz_per_v = float(rng.uniform(*p.rabi_hz_per_v_range))
    t2star_s = float(rng.uniform(*p.t2star_s_range))
    return NodeTruth(
        platform=platform,
        qubit_hz=qubit_hz,
        rabi_hz_per_v=rabi_hz_per_v,
        t2star_s=t2star_s,
        t2_hahn_s=t2_hahn_s,
        bath_tau_c_s=bath_correlation_time(t2star_s, t2_hahn_s),
        t2_s=p.t2_s,
        t1_s=p.t1_s,
        bright_mean=p.bright_mean,
        dark_mean=p.dark_mean,
        readout_window_ns=p.readout_window_ns,
        init_fidelity=init_fidelity,
        check_mean=float(rng.uniform(*p.check_mean_range)),
        check_window_ns=p.check_window_ns,
        readout_flip_ns=float(rng.uniform(*p.readout_flip_ns_range)),
    )


def hahn_decay_exponent(sigma: float, tau_c: float, t_s: float) -> float:
    """chi of a Hahn echo of total length t in an OU bath (coherence exp(-chi)), exact:
    chi = sigma^2 tau^2 (x - 3 + 4 e^{-x/2} - e^{-x}), x = t / tau; for x << 1 it is
    sigma^2 t^3 / (12 tau) (the slow-bath limit; the series is used there)."""
    x = t_s / tau_c
    if x < 1e-3:
        return sigma**2 * tau_c**2 * x**3 * (1 / 12 - x / 32)
    return sigma**2 * tau_c**2 * (x - 3 + 4 * math.exp(-x / 2) - math.exp(-x))


def bath_correlation_time(t2star_s: float, t2_hahn_s: float) -> float:
    """tau_c of an Ornstein-Uhlenbeck bath with Gaussian free decay exp(-(t/T2*)^2)
    (sigma^2 = 2 / T2*^2) whose Hahn echo decays to 1/e at T2_hahn. In the slow-bath limit
    tau_c = sigma^2 T2_hahn^3 / 12; solved exactly (slow branch, bisection in log tau_c) so
    that the 1/e time is T2_hahn where that limit is only approximate."""
    sigma = math.sqrt(2.0) / t2star_s
    slow = sigma**2 * t2_hahn_s**3 / 12.0
    lo, hi = t2_hahn_s, 10.0 * slow  # chi(lo) > 1 > chi(hi) on the slow branch
    if not (
        hahn_decay_exponent(sigma, lo, t2_hahn_s) > 1.0 > hahn_decay_exponent(sigma, hi, t2_hahn_s)
    ):
        return slow
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if hahn_decay_exponent(sigma, mid, t2_hahn_s) > 1.0:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def ou_step_coefficients(x: float) -> tuple[float, float, float, float]:
    """The exact conditional law of an Ornstein-Uhlenbeck step of length x = dt/tau_c, in units
    of sigma (detuning) and sigma * tau_c (phase): given the start d0,

        d1 = a d0 + s_d z1,   phi = (1 - a) d0 + c z1 + s_r z2

    with z1, z2 independent standard normals. Returns (a, s_d, c, s_r):
      a = exp(-x), Var(d1) = 1 - a^2, Cov(phi, d1) = (1 - a)^2,
      Var(phi) = 2x - 3 + 4a - a^2,  c = Cov / s_d,  s_r^2 = Var(phi) - c^2.
    For small x the differences cancel catastrophically; their Taylor series are used."""
    a = math.exp(-x)
    one_minus_a = -math.expm1(-x)
    var_d = one_minus_a * (1.0 + a)
    if x < 1e-2:
        # Var(phi) = sum_{n>=3} (-1)^n (4 - 2^n) x^n / n!;  (1-a)^3/(1+a) likewise
        var_phi = x**3 * (2 / 3 - x / 2 + 7 * x**2 / 30 - x**3 / 12)
        resid = x**3 * (1 / 6 - x**2 / 60 + 17 * x**4 / 10080)  # Var(phi) - (1-a)^3/(1+a)
    else:
        var_phi = 2 * x - one_minus_a * (3.0 - a)
        resid = var_phi - one_minus_a**3 / (1.0 + a)
    s_d = math.sqrt(var_d)
    c = one_minus_a**2 / s_d if s_d > 0 else 0.0
    return a, s_d, c, math.sqrt(max(resid, 0.0))


def rotation(omega: float, phase: float, detuning: float, duration_s: float) -> np.ndarray:
    """Propagator of H = (omega/2)(cos(phase) X + sin(phase) Y) + (detuning/2) Z (rad/s)."""
    n = np.array([omega * np.cos(phase), omega * np.sin(phase), detuning])
    norm = float(np.linalg.norm(n))
    if norm == 0.0:
        return I2.copy()
    n /= norm
    angle = norm * duration_s / 2
    return np.cos(angle) * I2 - 1j * np.sin(angle) * (n[0] * SX + n[1] * SY + n[2] * SZ)


class NuclearMemory:
    """A memory qubit's own state beside the register: its bath detuning (an OU process like the
    electron's, of spread sqrt(2)/T2* and the correlation time that gives its Hahn T2)."""

    def __init__(self, name: str, truth: nuclear.MemoryTruth, stream: np.random.Generator) -> None:
        self.name = name
        self.truth = truth
        self._sigma = math.sqrt(2.0) / truth.t2star_s
        self._tau = truth.bath_tau_c_s
        self._rng = side_stream(stream)
        self._cache: dict[float, tuple[float, float, float, float]] = {}
        self.detuning = 0.0
        self.redraw()

    def redraw(self) -> None:
        """A fresh detuning from the stationary law: the spread a Ramsey averaged over many runs
        sees (the NV's charge cycling under green light re-randomises the nucleus)."""
        self.detuning = self._sigma * float(self._rng.standard_normal())

    def step(self, dt: float) -> float:
        """Exact OU step of dt seconds; the integrated phase (rad) over it."""
        if dt <= 0:
            return 0.0
        coefficients = self._cache.get(dt)
        if coefficients is None:  # sequences repeat a few intervals: keep each one's
            if len(self._cache) > 256:
                self._cache.clear()
            coefficients = self._cache[dt] = ou_step_coefficients(dt / self._tau)
        a, s_d, c, s_r = coefficients
        z1, z2 = self._rng.standard_normal(2)
        d0 = self.detuning / self._sigma
        self.detuning = self._sigma * (a * d0 + s_d * z1)
        return self._sigma * self._tau * ((1.0 - a) * d0 + c * z1 + s_r * z2)


MAX_RECORDED_STEPS = 4096
"""A loop body longer than this many joint operations is not recorded (forwarded loops are
attempt bodies of a few dozen)."""


def z_phase(angle: float) -> np.ndarray:
    """The diagonal of exp(-i angle Z / 2)."""
    return np.array([np.exp(-0.5j * angle), np.exp(0.5j * angle)])


@dataclass
class MicrowaveDrive:
    """What the microwave chain delivers: carrier, power, on/off (set by the simulated source)."""

    frequency_hz: float = 3.0e9
    power_dbm: float = -30.0
    output: bool = False


class NodePhysics:
    """One node's memory qubit (a factor of the lab's register) on the node's clock (ns)."""

    def __init__(
        self,
        name: str,
        truth: NodeTruth,
        rng: np.random.Generator,
        register: QubitRegister,
        memories: list[str] | None = None,
        memory_pins: dict[str, float] | None = None,
    ) -> None:
        self.name = name
        self.truth = truth
        self._memory_pins = dict(memory_pins or {})
        """Hidden memory parameters pinned by the lab file (`[simulation.c13]`), after the draw."""
        self.platform = PLATFORMS[truth.platform]
        self.rng = rng
        self.register = register
        self.drive = MicrowaveDrive()
        self.now_ns = 0
        self.ready = bool(rng.random() < self.platform.recovery_success)
        self.bath_detuning = 0.0  # rad/s, drawn at each initialisation, wanders as an OU process
        self._bath_sigma = float(np.sqrt(2.0) / truth.t2star_s)  # Gaussian exp(-(t/T2*)^2)
        self._bath_tau = float(truth.bath_tau_c_s)
        self._ou_cache: dict[float, tuple[float, float, float, float]] = {}
        self._normals: list[float] = []  # standard normals drawn in batches (advance is hot)
        self._segment_cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._bath_rng = side_stream(rng)
        self.last_reset_ns = -1
        self.exposure_ns = 0.0
        """Red light received so far (ns at nominal power): what ionises (NV) / heats (ion)."""
        """When the memory was last fully re-initialised by optical pumping."""
        self.collection = 1.0
        """Fraction of the memory's photons that reach its detector (a knob for tests)."""
        self.light = {"pump": 0.0, "readout": 0.0, "repump": 0.0, "excitation": 0.0}
        """Light on the memory, each as a fraction of its nominal power (0 when gated off)."""
        self._draw_bath()
        self.memories: list[NuclearMemory] = []
        if memories:
            self._add_memories(memories)

    def _add_memories(self, kinds: list[str]) -> None:
        """The memory qubits beside the electron, each a qubit `<node>.<memory>` of the register,
        with its truth from a stream of its own (the electron's draws stay as they were)."""
        stream = side_stream(self.rng)
        for kind in kinds:
            memory_truth = nuclear.draw_memory_truth(kind, stream, bath_correlation_time)
            if self._memory_pins:  # drawn first, so every other draw stays the seed's
                memory_truth = replace(memory_truth, **self._memory_pins)
            self.memories.append(NuclearMemory(f"{self.name}.{kind}", memory_truth, stream))
            self.register.add_qubit(f"{self.name}.{kind}", 0.5 * I2)
        self.truth = MemoryNodeTruth(
            **asdict(self.truth), memories={m.truth.kind: m.truth.as_dict() for m in self.memories}
        )
        self._memory_truths = [m.truth for m in self.memories]
        self._operators = nuclear.JointOperators(self._memory_truths)
        self._joint = [self.name, *(m.name for m in self.memories)]
        self._pump_cache: dict[tuple[int, float], tuple[np.ndarray, list]] = {}
        self._decay_cache: dict[float, list[tuple[str, float, float]]] = {}
        self._forwarding = ""
        self._recording: list[tuple] | None = None
        self._decay_superops: dict[float, np.ndarray] = {}
        self._recording_since_ns = 0
        self.memory_factors: list[tuple[int, list[complex]]] = []
        """(time ns, per memory the complex factor) of every pump on the node: what a
        fast-forwarded attempt loop repeats."""

    def _draw_bath(self) -> None:
        self.bath_detuning = self._bath_sigma * float(self.rng.standard_normal())

    def _bath_step(self, dt: float) -> float:
        """Let the bath wander for dt seconds (exact OU step); returns its integrated phase
        (rad) over the interval, and leaves the end detuning in `bath_detuning`."""
        if dt <= 0:
            return 0.0
        coefficients = self._ou_cache.get(dt)
        if coefficients is None:  # sequences repeat a few intervals: reuse their coefficients
            if len(self._ou_cache) > 256:
                self._ou_cache.clear()
            coefficients = self._ou_cache[dt] = ou_step_coefficients(dt / self._bath_tau)
        a, s_d, c, s_r = coefficients
        sigma, tau = self._bath_sigma, self._bath_tau
        normals = self._normals
        if len(normals) < 2:
            normals.extend(self._bath_rng.standard_normal(512).tolist())
        z1, z2 = normals.pop(), normals.pop()
        d0 = self.bath_detuning / sigma
        self.bath_detuning = sigma * (a * d0 + s_d * z1)
        return sigma * tau * ((1.0 - a) * d0 + c * z1 + s_r * z2)

    def detuning(self) -> float:
        """Drive detuning from the true qubit frequency plus the bath, rad/s."""
        return 2 * np.pi * (self.drive.frequency_hz - self.truth.qubit_hz) + self.bath_detuning

    def _lose_readiness(self, dt_ns: float, gain: float) -> None:
        self.exposure_ns += dt_ns * gain
        if self.ready and gain > 0:
            p = 1.0 - np.exp(-dt_ns * gain / self.platform.loss_time_ns)
            if self.rng.random() < p:
                self.ready = False

    # time -----------------------------------------------------------------------------------
    def advance(self, dt_ns: int) -> None:
        """Let dt pass under whatever light is on: repump, pump, or free evolution."""
        if dt_ns <= 0:
            return
        self.now_ns += dt_ns
        if self.memories:
            self._advance_with_memories(dt_ns)
            return
        dt = dt_ns * 1e-9
        bath_phase = self._bath_step(dt)
        if self.light["repump"] >= 0.1:
            p = 1.0 - np.exp(-dt_ns * self.light["repump"] / self.platform.recovery_time_ns)
            if self.rng.random() < p:
                self.ready = bool(self.rng.random() < self.platform.recovery_success)
                self.register.replace(self.name, 0.5 * I2)
            return
        if self.light["pump"] >= 0.1:
            self._lose_readiness(dt_ns, self.light["pump"])
            if self.ready:
                p = 1.0 - np.exp(-dt_ns * self.light["pump"] / self.platform.pump_time_ns)
                self.register.replace(self.name, self._initial_state(), weight=p)
                if p > 0.99:
                    self._draw_bath()
                    self.last_reset_ns = self.now_ns
            return
        phase = (2 * np.pi * (self.drive.frequency_hz - self.truth.qubit_hz) * dt + bath_phase) / 2
        self.register.apply_diagonal(self.name, np.array([np.exp(-1j * phase), np.exp(1j * phase)]))
        self.register.dephase(self.name, float(np.exp(-dt / self.truth.t2_s)))
        self.register.replace(self.name, 0.5 * I2, weight=1.0 - np.exp(-dt / self.truth.t1_s))

    # memory qubits -------------------------------------------------------------------------
    def _advance_with_memories(self, dt_ns: int) -> None:
        """advance() of a node with memory qubits: the same light branches, with the electron
        and its memories evolving jointly (hyperfine) in every one of them."""
        dt = dt_ns * 1e-9
        bath_phase = self._bath_step(dt)
        nuclear_phases = [m.step(dt) for m in self.memories]
        if self._forwarding:  # the runs of a fast-forwarded loop (repeat_memory_channels)
            exact, self._forwarding = self._forwarding == "body", ""
            self._recording = None  # the stepped body it repeated is not the next one's start
            if exact:  # the body's channel had the precession and decay: the bath's phase
                for memory, phase in zip(self.memories, nuclear_phases, strict=True):
                    self.register.apply_diagonal(memory.name, z_phase(phase))
            else:
                self._advance_forwarded(dt, nuclear_phases)
            return
        if self.light["repump"] >= 0.1:
            self._free_joint(dt, 0.0, nuclear_phases)
            p = 1.0 - np.exp(-dt_ns * self.light["repump"] / self.platform.recovery_time_ns)
            self._note("free", dt, 0.0)
            if self.rng.random() < p:
                self._recording = None  # a random outcome: no channel to repeat
                self.ready = bool(self.rng.random() < self.platform.recovery_success)
                self.register.replace(self.name, 0.5 * I2)
                for memory in self.memories:  # NV0's hyperfine differs: the phase is lost
                    self.register.dephase(memory.name, 0.0)
                    memory.redraw()
            return
        if self.light["pump"] >= 0.1:
            self._lose_readiness(dt_ns, self.light["pump"])
            if self.ready:
                self._pump(dt_ns, self.light["pump"], nuclear_phases)
                if dt_ns * self.light["pump"] / self.platform.pump_time_ns > -math.log(0.01):
                    self._draw_bath()
                    self.last_reset_ns = self.now_ns
            else:
                self._free_joint(dt, 0.0, nuclear_phases)
                self._note("free", dt, 0.0)
            return
        electron_phase = 2 * np.pi * (self.drive.frequency_hz - self.truth.qubit_hz) * dt
        self._free_joint(dt, electron_phase + bath_phase, nuclear_phases)
        for name, coherence, weight in self._decays(dt):
            self.register.decay(name, coherence, weight)
        self._note("free", dt, electron_phase + bath_phase)
        self._note("decay", dt)

    def _decays(self, dt: float) -> list[tuple[str, float, float]]:
        """(qubit, T2 coherence factor, T1 weight) of the electron and each memory over dt:
        sequences repeat the same waits, so they are cached by dt."""
        cached = self._decay_cache.get(dt)
        if cached is None:
            qubits = [(self.name, self.truth)] + [(m.name, m.truth) for m in self.memories]
            cached = [
                (name, math.exp(-dt / truth.t2_s), -math.expm1(-dt / truth.t1_s))
                for name, truth in qubits
            ]
            if len(self._decay_cache) > 256:
                self._decay_cache.clear()
            self._decay_cache[dt] = cached
        return cached

    def _advance_forwarded(self, dt: float, nuclear_phases: list[float]) -> None:
        """The time of a fast-forwarded attempt loop: each run re-initialised the electron, so
        the memories precess at omega_L (what happens while the electron sat elsewhere is in
        the factors repeat_memory_channels applied), not with whatever |1> population the
        electron has at the end of the stepped run, held for the whole loop."""
        for memory, phase in zip(self.memories, nuclear_phases, strict=True):
            self.register.apply_diagonal(memory.name, z_phase(memory.truth.omega_l * dt + phase))
            self.register.dephase(memory.name, float(np.exp(-dt / memory.truth.t2_s)))
            weight = 1.0 - np.exp(-dt / memory.truth.t1_s)
            self.register.replace(memory.name, 0.5 * I2, weight=weight)

    def _free_joint(self, dt: float, electron_phase: float, nuclear_phases: list[float]) -> None:
        u = nuclear.free_propagator(self._memory_truths, nuclear_phases, electron_phase, dt)
        self.register.apply_joint(self._joint, u)

    def _pump(self, dt_ns: int, gain: float, nuclear_phases: list[float]) -> None:
        """The spin pump for dt_ns at `gain` times its nominal power: the exact channel
        (nuclear.pump_superoperator), and the memories' bath phases beside it. Logs the factor
        it multiplied each memory's coherence by (for fast-forwarded loops)."""
        key = (dt_ns, gain)
        cached = self._pump_cache.get(key)
        if cached is None:
            rate = gain / (self.platform.pump_time_ns * 1e-9)
            superop = nuclear.pump_superoperator(
                self._memory_truths, rate, self.truth.init_fidelity, dt_ns * 1e-9
            )
            factors = nuclear.pump_coherence_factors(self._memory_truths, superop, dt_ns * 1e-9)
            if len(self._pump_cache) > 64:
                self._pump_cache.clear()
            cached = self._pump_cache[key] = (superop, factors)
        superop, factors = cached
        p1 = float(self.register.reduced(self.name)[1, 1].real)
        self.register.apply_channel(self._joint, superop)
        self._note("channel", superop)
        for memory, phase in zip(self.memories, nuclear_phases, strict=True):
            if phase:
                self.register.apply_diagonal(memory.name, z_phase(phase))
        self.memory_factors.append((self.now_ns, [(1 - p1) * g0 + p1 * g1 for g0, g1 in factors]))
        del self.memory_factors[:-512]

    # the stepped body's channel (what a forwarded loop repeats) ------------------------------
    def _note(self, *entry) -> None:
        """Log one joint operation of the body being recorded (its deterministic part: the
        memories' bath phases are left out, the forwarded time draws them)."""
        if self._recording is not None:
            if len(self._recording) >= MAX_RECORDED_STEPS:
                self._recording = None
            else:
                self._recording.append(entry)

    def begin_record(self) -> None:
        """A loop body (or the first attempt after a sync) begins: record its operations."""
        if self.memories:
            self._recording = []
            self._recording_since_ns = self.now_ns

    def finish_record(self) -> tuple[list[tuple], int] | None:
        """(operations, duration ns) recorded since begin_record, or None if nothing was
        recorded or something random (a readout, a repump) happened meanwhile."""
        entries, self._recording = self._recording, None
        if entries is None:
            return None
        return entries, self.now_ns - self._recording_since_ns

    def _body_channel(self, entries: list[tuple]) -> np.ndarray:
        """The superoperator (row-major vec) on (electron, memories) of the recorded
        operations in order: unitaries composed as matrices, turned into U (x) U* only where a
        channel (the pump, T2 and T1) comes between them."""
        zeros = [0.0] * len(self.memories)
        dim = 2 ** len(self._joint)
        total = np.eye(dim * dim, dtype=complex)
        u = np.eye(dim, dtype=complex)
        for kind, *args in entries:
            if kind == "free":
                dt, electron_phase = args
                u = nuclear.free_propagator(self._memory_truths, zeros, electron_phase, dt) @ u
            elif kind == "pulse":
                u = self._operators.pulse(zeros, *args) @ u
            else:
                total = nuclear.kron2(u, u.conj()) @ total
                u = np.eye(dim, dtype=complex)
                total = (args[0] if kind == "channel" else self._decay_superop(args[0])) @ total
        return nuclear.kron2(u, u.conj()) @ total

    def _decay_superop(self, dt: float) -> np.ndarray:
        """register.decay of the electron and each memory over dt, as a superoperator."""
        cached = self._decay_superops.get(dt)
        if cached is not None:
            return cached
        scratch = QubitRegister(list(self._joint))
        dim = 2 ** len(self._joint)
        columns = []
        for index in range(dim * dim):  # the channel's image of each basis matrix
            basis = np.zeros(dim * dim, dtype=complex)
            basis[index] = 1.0
            scratch.rho = basis.reshape(dim, dim)
            for name, coherence, weight in self._decays(dt):
                scratch.decay(name, coherence, weight)
            columns.append(scratch.rho.reshape(-1))
        superop = np.array(columns).T
        if len(self._decay_superops) > 64:
            self._decay_superops.clear()
        self._decay_superops[dt] = superop
        return superop

    def _repeat_body(
        self, body: tuple[list[tuple], int] | None, iterations: int, period_ns: int
    ) -> bool:
        """Apply the recorded body's channel, completed to `period_ns` by free evolution
        before it (the herald wait of the attempt recorded up to it, and what follows that
        wait), `iterations` times."""
        if body is None:
            return False
        entries, recorded_ns = body
        rest_ns = period_ns - recorded_ns
        if rest_ns < 0:
            return False
        if rest_ns:
            rest = rest_ns * 1e-9
            drive = 2 * np.pi * (self.drive.frequency_hz - self.truth.qubit_hz)
            # the rest of the current period comes first: the herald wait (and what follows
            # it) of the attempt stepped up to its wait, then the next attempt's recorded part
            rest_entries = [("free", rest, (drive + self.bath_detuning) * rest), ("decay", rest)]
            entries = [*rest_entries, *entries]
        channel = np.linalg.matrix_power(self._body_channel(entries), iterations)
        self.register.apply_channel(self._joint, channel)
        return True

    def repeat_memory_channels(
        self,
        since_ns: int,
        iterations: int,
        runs_seen: int = 1,
        period_ns: int | None = None,
        body: tuple[list[tuple], int] | None = None,
    ) -> None:
        """`iterations` more runs of a loop body, each `period_ns` long: the channel of the
        stepped `body` on the electron and its memories (finish_record's) to that power, the
        memories' bath phase over their time applied by the advance that follows
        (docs/simulation.md "Forwarded attempts"). Without a recorded body (a readout or a
        repump in it), the older approximation: each memory's coherence gets the product of
        the pump factors logged since since_ns over `runs_seen` runs, to the power
        iterations / runs_seen, and the advance adds the precession at omega_L."""
        if not self.memories or iterations <= 0:
            return
        if period_ns is not None and self._repeat_body(body, iterations, period_ns):
            self._forwarding = "body"
            return
        factors_seen = [factors for t, factors in self.memory_factors if t >= since_ns]
        share = iterations / max(runs_seen, 1)
        for k, memory in enumerate(self.memories):
            c = complex(np.prod([f[k] for f in factors_seen])) if factors_seen else 1.0 + 0j
            magnitude = abs(c) ** share
            angle = float(np.angle(c)) * share
            self.register.apply_diagonal(memory.name, z_phase(-angle))
            self.register.dephase(memory.name, magnitude)
        self._forwarding = "factors"

    def _evolve_memories_measured(self, window_ns: int, flip_ns: float | None) -> None:
        """A readout window after the electron's projection: the memories precess with the
        electron in its measured state, which the readout light flips |0> -> |1> at flip_ns."""
        dt = window_ns * 1e-9
        phases = [m.step(dt) for m in self.memories]
        if flip_ns is None:
            self._free_joint(dt, 0.0, phases)
            return
        share = flip_ns / window_ns
        self._free_joint(flip_ns * 1e-9, 0.0, [p * share for p in phases])
        self.register.apply(self.name, np.array([[0, 1], [1, 0]], dtype=complex))
        rest = (window_ns - flip_ns) * 1e-9
        self._free_joint(rest, 0.0, [p * (1 - share) for p in phases])

    def _initial_state(self) -> np.ndarray:
        f = self.truth.init_fidelity
        return np.array([[f, 0], [0, 1 - f]], dtype=complex)

    # control --------------------------------------------------------------------------------
    def apply_iq(
        self, i: np.ndarray, q: np.ndarray, sample_rate_hz: float, amplitude_vpp: float
    ) -> None:
        """Play an IQ waveform (normalised samples) through the microwave chain."""
        if len(i) == 0:
            return
        dt = 1.0 / sample_rate_hz
        duration_ns = round(len(i) * dt * 1e9)
        if not self.drive.output:
            self.advance(duration_ns)
            return
        omegas, phases, durations = self._segments(i, q, sample_rate_hz, amplitude_vpp)
        delta = self.detuning()
        if self.memories:  # one joint propagator per segment: drive plus hyperfine
            detunings = [m.detuning for m in self.memories]
            u_joint = self._operators.pulse(detunings, delta, omegas, phases, durations)
            self.register.apply_joint(self._joint, u_joint)
            self._note("pulse", delta, omegas, phases, durations)
            self.now_ns += duration_ns
            self._bath_step(duration_ns * 1e-9)
            for memory in self.memories:
                memory.step(duration_ns * 1e-9)
            return
        u_total = I2.copy()
        for omega, phase, duration in zip(omegas, phases, durations, strict=True):
            u_total = rotation(float(omega), float(phase), delta, float(duration)) @ u_total
        self.register.apply(self.name, u_total)
        self.now_ns += duration_ns
        # the bath is constant over a pulse (ns against tau_c of seconds), and wanders on
        self._bath_step(duration_ns * 1e-9)

    def _segments(
        self, i: np.ndarray, q: np.ndarray, sample_rate_hz: float, amplitude_vpp: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Rabi frequency, phase, duration s) of each run of equal samples of a waveform at the
        drive's power: square pulses are one rotation. A sequence plays the same few pulses
        again and again, so each waveform's runs are kept (keyed by its samples and the
        settings they depend on)."""
        i, q = np.asarray(i, dtype=float), np.asarray(q, dtype=float)
        key = (
            i.tobytes(),
            q.tobytes(),
            sample_rate_hz,
            amplitude_vpp,
            self.drive.power_dbm,
            self.truth.rabi_hz_per_v,
            self.platform.mw_reference_dbm,
        )
        cached = self._segment_cache.get(key)
        if cached is not None:
            return cached
        volts = 0.5 * amplitude_vpp * (i + 1j * q)
        gain = 10 ** ((self.drive.power_dbm - self.platform.mw_reference_dbm) / 20)
        omega = 2 * np.pi * self.truth.rabi_hz_per_v * gain * np.abs(volts)
        phase = np.angle(volts)
        change = np.flatnonzero((np.diff(omega) != 0) | (np.diff(phase) != 0)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [len(i)]))
        cached = (omega[starts], phase[starts], (ends - starts) / sample_rate_hz)
        if len(self._segment_cache) > 256:
            self._segment_cache.clear()
        self._segment_cache[key] = cached
        return cached

    def count(self, window_ns: int) -> int:
        """Photon counts in a window under the light that is on now.

        Readout light alone: projects the qubit (bright |0>, dark |1>) and counts with the true
        means. Readout and pump light together: the CR / cooling check, counts that tell
        whether the memory is ready, whatever its spin. Not ready: dark counts only.
        """
        readout, pump = self.light["readout"], self.light["pump"]
        dark = self.platform.dark_count_hz * window_ns * 1e-9
        mean = 0.0
        truth = self.truth
        if self.memories:
            return self._count_with_memories(window_ns, readout, pump, dark)
        if self.ready and readout > 0:
            if pump > 0:
                mean = truth.check_mean * readout * window_ns / truth.check_window_ns
                self.register.replace(self.name, self._initial_state())
            elif self.register.measure(self.name, self.rng) == 0:
                # bright until the readout light pumps it dark
                flip_ns = self.rng.exponential(truth.readout_flip_ns / readout)
                lit_ns = min(window_ns, flip_ns)
                mean = truth.bright_mean * readout * lit_ns / truth.readout_window_ns
                if flip_ns < window_ns:
                    self.register.apply(self.name, np.array([[0, 1], [1, 0]], dtype=complex))
            else:
                mean = truth.dark_mean * readout * window_ns / truth.readout_window_ns
            mean *= self.collection
        self._lose_readiness(window_ns, readout)
        self.now_ns += window_ns
        self._bath_step(window_ns * 1e-9)
        return int(self.rng.poisson(mean + dark))

    def _count_with_memories(self, window_ns: int, readout: float, pump: float, dark: float) -> int:
        """count() of a node with memories: the CR check is the spin pump's channel over the
        window, a readout the projection, the memories precessing meanwhile."""
        truth = self.truth
        mean = 0.0
        if not (self.ready and readout > 0 and pump > 0):  # a projection: no channel to repeat
            self._recording = None
        if self.ready and readout > 0:
            if pump > 0:
                mean = truth.check_mean * readout * window_ns / truth.check_window_ns
                self._pump(window_ns, pump, [m.step(window_ns * 1e-9) for m in self.memories])
            elif self.register.measure(self.name, self.rng) == 0:
                flip_ns = self.rng.exponential(truth.readout_flip_ns / readout)
                lit_ns = min(window_ns, flip_ns)
                mean = truth.bright_mean * readout * lit_ns / truth.readout_window_ns
                self._evolve_memories_measured(window_ns, flip_ns if flip_ns < window_ns else None)
            else:
                mean = truth.dark_mean * readout * window_ns / truth.readout_window_ns
                self._evolve_memories_measured(window_ns, None)
            mean *= self.collection
        else:
            self._evolve_memories_measured(window_ns, None)
        self._lose_readiness(window_ns, readout)
        self.now_ns += window_ns
        self._bath_step(window_ns * 1e-9)
        return int(self.rng.poisson(mean + dark))

    def stays_ready(self, exposure_ns: float, runs: int) -> int:
        """Of `runs` repetitions receiving `exposure_ns` of light each, how many pass before
        the memory is lost (all of them if it is not); it is left not ready if lost."""
        if not self.ready:
            return 0
        p_loss = 1.0 - np.exp(-exposure_ns / self.platform.loss_time_ns)
        if p_loss <= 0:
            return runs
        kept = int(self.rng.geometric(p_loss)) - 1
        if kept < runs:
            self.ready = False
            return kept
        return runs
