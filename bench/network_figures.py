"""The network figures beside the papers: entanglement swapping and GHZ (Pompili et al.,
Science 372, 259 (2021)) and teleportation (Hermans et al., Nature 605, 663 (2022)) in three
columns, paper, simulator and planning model, with what explains each difference; then what
qnode's cut-off policy reaches on the same hardware (docs/network.md, "Figures").

The planning-model column is computed, not simulated: the links' heralded states from
`calibration.planning.single_click`, the move and the memory's decay from its memory model
(`stored_state`, `memory_attempt_decay`, `attempts_before`), the Pauli frames of the swap,
the GHZ state and teleportation from `controller.network.pauli`, and the figures' formulas
from `controller.network.estimators`. B's Bell-state measurement, the GHZ operation and the
teleportation are done exactly on density matrices (4 qubits: A, B's memory, B's electron,
C). Where the papers name a mechanism the planning model lacks, it is added here as a
correction term (it does not change the planning model):

  ends      the ends' electrons dephase while they wait for the second link and the feed-
            forward: e^(-t/T2) under decoupling (T2 of Abobeih et al., Nat. Commun. 9, 2552
            (2018));
  gate      B's (and the sender's) two-qubit gate of the Bell-state / GHZ measurement: a
            two-qubit depolarising channel of the published gate fidelity (Pompili 2021 name
            the gates' errors among the GHZ state's);
  readout   each readout's error: a Bell-state measurement's reported parity flipped with
            the readout's error (a wrong frame), each measured stabiliser or teleported
            state's expectation scaled by the readouts' contrast F0 + F1 - 1 (Pompili 2021
            and Hermans 2022 report the figures uncorrected for readout; Hermans 2022
            improve the memory's readout for that reason).

`python -m bench.network_figures [--plot PATH]` prints the tables; `make bench` runs it too
(bench/run.py). The simulator's column is filled from network session files
(controller/data/networkfile.py) once the daemons' end-to-end swap writes them
(`measured_figures`); until then it says "not yet".
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.published import LINK_HARDWARE, SETS, Value
from calibration.planning import (
    Link,
    Memory,
    attempts_before,
    memory_attempt_decay,
    memory_n_1e,
    single_click,
    stored_state,
)
from controller.network import estimators
from controller.network.pauli import (
    Pauli,
    cnot_ghz_frame,
    pair_pauli,
    swap_frame,
    teleport_correction,
    werner_swap_fidelity,
)

RESULTS = Path(__file__).resolve().parent / "results"

_I2 = np.eye(2, dtype=complex)
_X = np.array([[0, 1], [1, 0]], dtype=complex)
_Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
_Z = np.diag([1.0, -1.0]).astype(complex)
_PAULI = {"I": _I2, "X": _X, "Y": _Y, "Z": _Z}
PSI_PLUS = np.array([0, 1, 1, 0], dtype=complex) / math.sqrt(2)
GHZ = np.zeros(8, dtype=complex)
GHZ[0] = GHZ[7] = 1 / math.sqrt(2)


# n-qubit helpers ---------------------------------------------------------------------------
def _on(op: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """`op` (on `qubits`, adjacent and in order) as an operator on n qubits."""
    first = qubits[0]
    if qubits != tuple(range(first, first + len(qubits))):
        raise ValueError(f"qubits {qubits} must be adjacent and in order")
    return np.kron(np.kron(np.eye(2**first), op), np.eye(2 ** (n - first - len(qubits))))


def _pauli_matrix(p: Pauli) -> np.ndarray:
    return np.linalg.matrix_power(_X, p.x) @ np.linalg.matrix_power(_Z, p.z)


def _partial_trace(rho: np.ndarray, keep: tuple[int, ...], n: int) -> np.ndarray:
    tensor = rho.reshape([2] * 2 * n)
    gone = [q for q in range(n) if q not in keep]
    for count, q in enumerate(sorted(gone, reverse=True)):
        width = n - count
        tensor = np.trace(tensor, axis1=q, axis2=q + width)
    dim = 2 ** len(keep)
    return tensor.reshape(dim, dim)


def dephase(rho: np.ndarray, qubit: int, coherence: float, n: int) -> np.ndarray:
    """Z dephasing of one qubit that keeps `coherence` of its off-diagonal elements."""
    z = _on(_Z, (qubit,), n)
    return (1 + coherence) / 2 * rho + (1 - coherence) / 2 * z @ rho @ z


def depolarise_pair(rho: np.ndarray, first: int, n: int, gate_fidelity: float) -> np.ndarray:
    """A two-qubit gate's error on qubits (first, first + 1): rho -> (1 - p) rho + p Tr_pair
    rho (x) I/4 with p = 4 (1 - F)/3, so that the gate's average fidelity is F (for d = 4,
    F_avg = (d F_e + 1)/(d + 1) and F_e = 1 - 15 p/16)."""
    p = 4 * (1 - gate_fidelity) / 3
    if p == 0:
        return rho
    keep = tuple(q for q in range(n) if q not in (first, first + 1))
    rest = _partial_trace(rho, keep, n)
    # the rest's qubits are before and after the pair: rebuild in order
    before = first
    after = n - first - 2
    mixed = rest.reshape([2**before, 2**after, 2**before, 2**after])
    full = np.einsum("abcd,ij->aibcjd", mixed, np.eye(4) / 4).reshape(2**n, 2**n)
    return (1 - p) * rho + p * full


def _bell_vector(zz: int, xx: int) -> np.ndarray:
    """(I x X^zz Z^xx)|phi+>: the Bell state a measurement reporting (zz, xx) projects on
    (controller.network.pauli.bsm_pauli)."""
    phi = np.array([1, 0, 0, 1], dtype=complex) / math.sqrt(2)
    return np.kron(_I2, _pauli_matrix(Pauli(zz, xx))) @ phi


def _flips(error_zz: float, error_xx: float) -> Iterable[tuple[int, int, float]]:
    """Each (zz flip, xx flip) and its probability: a parity is reported wrong with its
    readout's error."""
    for fz in (0, 1):
        for fx in (0, 1):
            yield fz, fx, (error_zz if fz else 1 - error_zz) * (error_xx if fx else 1 - error_xx)


# the links ---------------------------------------------------------------------------------
def hardware_link(phase_noise_deg: float) -> Link:
    """The links' hardware (Humphreys 2018's optics, LINK_HARDWARE) with a phase noise."""
    h = {k: v.value for k, v in LINK_HARDWARE.items()}
    return Link(
        eta_a=h["eta"],
        eta_b=h["eta"],
        visibility=h["visibility"],
        dark_prob=h["dark_hz"] * h["window_ns"] * 1e-9,
        phase_sigma_rad=math.radians(phase_noise_deg),
        init_a=h["init_fidelity"],
        init_b=h["init_fidelity"],
        double_a=h["double_excitation"],
        double_b=h["double_excitation"],
    )


MAX_PHASE_DEG = 90.0


def fit_phase_noise(alpha_a: float, alpha_b: float, fidelity: float) -> float:
    """The phase noise (deg) at which the planning model's single-click link at these alphas
    has the published link fidelity: the links are inputs of the swap, so their fidelity is
    fitted and the rest predicted; the phase noise is the link figure least known for these
    papers (the other optics are Humphreys 2018's). 0 when even no phase noise falls short,
    MAX_PHASE_DEG when even that is above the fidelity."""

    def f(deg: float) -> float:
        return single_click(alpha_a, hardware_link(deg), alpha_b).fidelity

    if f(0.0) <= fidelity:
        return 0.0
    if f(MAX_PHASE_DEG) >= fidelity:
        return MAX_PHASE_DEG
    low, high = 0.0, MAX_PHASE_DEG
    for _ in range(50):
        mid = (low + high) / 2
        if f(mid) > fidelity:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def link_pair(alpha_a: float, alpha_b: float, phase_noise_deg: float) -> tuple[np.ndarray, float]:
    """The heralded pair with its frame applied (psi- made psi+ by Z on the first node), and
    the success probability per attempt."""
    herald = single_click(alpha_a, hardware_link(phase_noise_deg), alpha_b)
    z = np.kron(_Z, _I2)
    rho = herald.weights["psi_plus"] * herald.states["psi_plus"]
    rho = rho + herald.weights["psi_minus"] * z @ herald.states["psi_minus"] @ z
    return rho, herald.p_success


def mean_power(p: float, r: float, cutoff: float) -> float:
    """E[r^n] over the attempts n of a link with success p per attempt, given that it
    succeeded by the cut-off (n geometric, 1 <= n <= cutoff; cutoff may be inf)."""
    q = 1 - p
    if math.isinf(cutoff):
        return p * r / (1 - q * r)
    c = int(cutoff)
    return p * r * (1 - (q * r) ** c) / (1 - q * r) / (1 - q**c)


def mean_attempts(p: float, cutoff: float) -> float:
    """E[min(n, cutoff)]: the attempts a round on the second link takes, success or not."""
    return 1 / p if math.isinf(cutoff) else (1 - (1 - p) ** int(cutoff)) / p


# one parameter set ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Terms:
    """Which mechanisms are in: the planning model's (move, memory) and the corrections."""

    move: bool = True
    memory: bool = True
    ends: bool = True
    gate: bool = True
    readout: bool = True


ALL = Terms()
STEPS = (
    (
        "the links as heralded, perfect memory and operations",
        Terms(False, False, False, False, False),
    ),
    ("+ the move into the memory (planning model)", Terms(True, False, False, False, False)),
    (
        "+ the memory's decay over the B-C attempts (planning model)",
        Terms(True, True, False, False, False),
    ),
    ("+ the ends' electrons waiting (correction)", Terms(True, True, True, False, False)),
    ("+ the gates' errors (correction)", Terms(True, True, True, True, False)),
    ("+ the readouts' errors (correction)", ALL),
)


@dataclass(frozen=True)
class Setup:
    """What the computation needs of a published set (numbers only)."""

    alpha_ab: float
    alpha_bc: float
    phase_ab_deg: float
    phase_bc_deg: float
    attempt_s: float
    cutoff: float
    memory: Memory
    gate_fidelity: float
    readout_f0: float
    readout_f1: float
    memory_readout_f: float
    electron_t2_s: float
    feed_forward_s: float

    @classmethod
    def of(cls, parameters: dict[str, Value]) -> Setup:
        v = {k: p.value for k, p in parameters.items()}
        return cls(
            alpha_ab=v["alpha_ab"],
            alpha_bc=v["alpha_bc"],
            phase_ab_deg=fit_phase_noise(v["alpha_ab"], v["alpha_ab"], v["link_fidelity_ab"]),
            phase_bc_deg=fit_phase_noise(v["alpha_bc"], v["alpha_bc"], v["link_fidelity_bc"]),
            attempt_s=v["attempt_s"],
            cutoff=v["cutoff_attempts"],
            memory=Memory(
                v["memory_n_1e"], v["memory_n_1e_alpha"], v["memory_t2_s"], v["move_fidelity"]
            ),
            gate_fidelity=v["gate_fidelity"],
            readout_f0=v["readout_f0"],
            readout_f1=v["readout_f1"],
            memory_readout_f=v["memory_readout_f"],
            electron_t2_s=v["electron_t2_s"],
            feed_forward_s=v["feed_forward_s"],
        )

    @property
    def electron_error(self) -> float:
        return 1 - (self.readout_f0 + self.readout_f1) / 2

    @property
    def electron_contrast(self) -> float:
        return self.readout_f0 + self.readout_f1 - 1


@dataclass(frozen=True)
class Pairs:
    """The two link pairs at B's measurement (4x4 each, psi+ targets): A-B with B's half in
    the memory after the B-C attempts, and B-C; with the rates."""

    ab: np.ndarray
    bc: np.ndarray
    p_ab: float
    p_bc: float
    fidelity_ab_heralded: float
    fidelity_ab_stored: float
    fidelity_bc: float


def link_pairs(s: Setup, terms: Terms = ALL) -> Pairs:
    """A-B heralded, B's half moved into the memory, held through the B-C attempts (their
    number averaged over the geometric distribution up to the cut-off; every coherence of a
    single-click pair is its |01><10| one, so the mean state is the state at the mean
    coherence), A's electron waiting as long; B-C heralded (alpha_bc on both nodes)."""
    ab, p_ab = link_pair(s.alpha_ab, s.alpha_ab, s.phase_ab_deg)
    bc, p_bc = link_pair(s.alpha_bc, s.alpha_bc, s.phase_bc_deg)
    heralded = float(np.real(PSI_PLUS @ ab @ PSI_PLUS))
    stored = ab
    if terms.move:
        stored = stored_state(ab, s.memory, qubit=1)
    per_attempt = 1.0
    if terms.memory:
        per_attempt *= memory_attempt_decay(s.alpha_bc, s.memory)
        per_attempt *= math.exp(-s.attempt_s / s.memory.t2_s)
    if terms.ends:
        per_attempt *= math.exp(-s.attempt_s / s.electron_t2_s)
    coherence = mean_power(p_bc, per_attempt, s.cutoff)
    stored = dephase(stored, 1, coherence, 2)
    if terms.ends:  # both ends wait for the outcome: A's and C's electrons, as one factor
        wait = math.exp(-2 * s.feed_forward_s / s.electron_t2_s)
        stored = dephase(stored, 0, wait, 2)
    return Pairs(
        ab=stored,
        bc=bc,
        p_ab=p_ab,
        p_bc=p_bc,
        fidelity_ab_heralded=heralded,
        fidelity_ab_stored=float(np.real(PSI_PLUS @ stored @ PSI_PLUS)),
        fidelity_bc=float(np.real(PSI_PLUS @ bc @ PSI_PLUS)),
    )


def swap(pairs: Pairs, s: Setup, terms: Terms = ALL) -> np.ndarray:
    """The A-C state after B's Bell-state measurement on (its memory, its electron) and the
    ends' frames (`pauli.swap_frame`), averaged over the outcomes; with the gate's error and
    each parity's readout error (zz from the electron, xx from the memory) when on."""
    n = 4
    rho = np.kron(pairs.ab, pairs.bc)  # (A, B memory, B electron, C)
    if terms.gate:
        rho = depolarise_pair(rho, 1, n, s.gate_fidelity)
    error_zz = s.electron_error if terms.readout else 0.0
    error_xx = 1 - s.memory_readout_f if terms.readout else 0.0
    out = np.zeros((4, 4), dtype=complex)
    for zz in (0, 1):
        for xx in (0, 1):
            bell = _bell_vector(zz, xx)
            projector = _on(np.outer(bell, bell.conj()), (1, 2), n)
            ac = _partial_trace(projector @ rho @ projector, (0, 3), n)
            for fz, fx, weight in _flips(error_zz, error_xx):
                frame = swap_frame("psi_plus", "psi_plus", zz ^ fz, xx ^ fx)
                u = np.kron(_pauli_matrix(frame.first), _pauli_matrix(frame.second))
                out += weight * u @ ac @ u.conj().T
    return out


def swap_fidelity(pairs: Pairs, s: Setup, terms: Terms = ALL) -> float:
    return float(np.real(PSI_PLUS @ swap(pairs, s, terms) @ PSI_PLUS))


def _expectation(rho: np.ndarray, stabiliser: str) -> float:
    op = np.array([[1.0]], dtype=complex)
    for b in stabiliser:
        op = np.kron(op, _PAULI[b])
    return float(np.real(np.trace(op @ rho)))


def ghz_state(pairs: Pairs, s: Setup, terms: Terms = ALL) -> np.ndarray:
    """(A, B's memory, C) after B's CNOT (memory control, electron target), the electron's Z
    readout (reported wrong with its error when readout is on) and the frame of
    `pauli.cnot_ghz_frame` applied to the qubits (the same as to the outcomes)."""
    n = 4
    rho = np.kron(pairs.ab, pairs.bc)
    cnot = np.eye(4, dtype=complex)[[0, 1, 3, 2]]
    u = _on(cnot, (1, 2), n)
    rho = u @ rho @ u.conj().T
    if terms.gate:
        rho = depolarise_pair(rho, 1, n, s.gate_fidelity)
    error = s.electron_error if terms.readout else 0.0
    first, second = pair_pauli("psi_plus"), pair_pauli("psi_plus")
    out = np.zeros((8, 8), dtype=complex)
    for m in (0, 1):
        ket = np.eye(2)[m]
        projector = _on(np.outer(ket, ket).astype(complex), (2,), n)
        state = _partial_trace(projector @ rho @ projector, (0, 1, 3), n)
        for flip, weight in ((0, 1 - error), (1, error)):
            frame = cnot_ghz_frame(first, second, m ^ flip)
            f = np.kron(
                np.kron(_pauli_matrix(frame[0]), _pauli_matrix(frame[1])), _pauli_matrix(frame[2])
            )
            out += weight * f @ state @ f.conj().T
    return out


def ghz_fidelity(pairs: Pairs, s: Setup, terms: Terms = ALL) -> float:
    """The stabiliser estimate of `estimators.ghz_fidelity`, (1 + the seven signed stabilisers
    of its five settings)/8, each expectation scaled by its qubits' readout contrasts when
    readout is on (A and C: the electron's; B: the memory's); without readout errors it is
    the state's GHZ fidelity."""
    rho = ghz_state(pairs, s, terms)
    contrast = (
        (s.electron_contrast, 2 * s.memory_readout_f - 1, s.electron_contrast)
        if terms.readout
        else (1.0, 1.0, 1.0)
    )
    total = 1.0
    for terms_of_setting in estimators.GHZ_SETTINGS.values():
        for stabiliser, sign in terms_of_setting:
            scale = math.prod(c for c, b in zip(contrast, stabiliser, strict=True) if b != "I")
            total += sign * scale * _expectation(rho, stabiliser)
    return total / 8


CARDINAL = {
    "+Z": np.array([1, 0], dtype=complex),
    "-Z": np.array([0, 1], dtype=complex),
    "+X": np.array([1, 1], dtype=complex) / math.sqrt(2),
    "-X": np.array([1, -1], dtype=complex) / math.sqrt(2),
    "+Y": np.array([1, 1j], dtype=complex) / math.sqrt(2),
    "-Y": np.array([1, -1j], dtype=complex) / math.sqrt(2),
}


def teleport_fidelity(resource: np.ndarray, s: Setup, terms: Terms = ALL) -> float:
    """The average over the six cardinal states (`estimators.CARDINAL_STATES`) of the success
    fraction of teleporting through `resource` (sender, receiver; psi+ target): the sender's
    Bell-state measurement on (state, its half) with its gate's error and its parities'
    readout errors, the receiver's `pauli.teleport_correction`, and the receiver's readout
    contrast on the success fraction. A perfect measurement gives (2F + 1)/3."""
    n = 3
    error_zz = s.electron_error if terms.readout else 0.0
    error_xx = 1 - s.memory_readout_f if terms.readout else 0.0
    contrast = s.electron_contrast if terms.readout else 1.0
    fractions = []
    for name, (basis, sign) in estimators.CARDINAL_STATES.items():
        psi = CARDINAL[name]
        rho = np.kron(np.outer(psi, psi.conj()), resource)
        if terms.gate:
            rho = depolarise_pair(rho, 0, n, s.gate_fidelity)
        received = np.zeros((2, 2), dtype=complex)
        for zz in (0, 1):
            for xx in (0, 1):
                bell = _bell_vector(zz, xx)
                projector = _on(np.outer(bell, bell.conj()), (0, 1), n)
                part = _partial_trace(projector @ rho @ projector, (2,), n)
                for fz, fx, weight in _flips(error_zz, error_xx):
                    k = _pauli_matrix(teleport_correction(pair_pauli("psi_plus"), zz ^ fz, xx ^ fx))
                    received += weight * k @ part @ k.conj().T
        expectation = sign * float(np.real(np.trace(_PAULI[basis] @ received)))
        fractions.append((1 + contrast * expectation) / 2)
    return float(np.mean(fractions))


# the figures -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    swap: float
    ghz: float
    teleport: float
    goodness: float
    """The network layer's goodness of the swapped pair: estimators' Werner formula on the
    two link pairs' fidelities at the measurement (docs/network.md, "Goodness")."""
    link_ab: float
    link_ab_stored: float
    link_bc: float
    p_ab: float
    p_bc: float


def figures(s: Setup, terms: Terms = ALL) -> Figures:
    pairs = link_pairs(s, terms)
    resource = swap(pairs, s, terms)
    return Figures(
        swap=float(np.real(PSI_PLUS @ resource @ PSI_PLUS)),
        ghz=ghz_fidelity(pairs, s, terms),
        teleport=teleport_fidelity(resource, s, terms),
        goodness=werner_swap_fidelity(pairs.fidelity_ab_stored, pairs.fidelity_bc),
        link_ab=pairs.fidelity_ab_heralded,
        link_ab_stored=pairs.fidelity_ab_stored,
        link_bc=pairs.fidelity_bc,
        p_ab=pairs.p_ab,
        p_bc=pairs.p_bc,
    )


PAPER_FIGURE = {
    "Pompili 2021": ("swap_fidelity", "swap_fidelity_any_outcome", "ghz_fidelity"),
    "Hermans 2022": ("teleport_fidelity",),
}
FIGURE_FIELD = {
    "swap_fidelity": "swap",
    "swap_fidelity_any_outcome": "swap",
    "ghz_fidelity": "ghz",
    "teleport_fidelity": "teleport",
}
"""The model's figure each paper figure is set beside: its swap averages over B's four BSM
outcomes (the frames applied in software, exactly), so it is like for like with the
any-outcome figure; the outcome-00 figure needs no correction at the ends in the experiment."""


def compare(name: str, measured: dict[str, float] | None = None) -> dict:
    """One published set: per figure the paper's value (with its status), the simulator's
    (`measured`, or None: not yet), the planning model's, their difference, and the
    planning model's value step by step as each mechanism is added (STEPS)."""
    parameters = SETS[name]
    s = Setup.of(parameters)
    steps = [(label, figures(s, terms)) for label, terms in STEPS]
    full = steps[-1][1]
    rows = []
    for key in PAPER_FIGURE[name]:
        paper = parameters[key]
        field = FIGURE_FIELD[key]
        model = getattr(full, field)
        rows.append(
            {
                "figure": key,
                "paper": paper.value,
                "paper_sigma": paper.sigma,
                "paper_status": paper.status,
                "simulator": None if measured is None else measured.get(key),
                "model": model,
                "difference": model - paper.value,
                "steps": [(label, getattr(f, field)) for label, f in steps],
            }
        )
    return {
        "set": name,
        "phase_ab_deg": s.phase_ab_deg,
        "phase_bc_deg": s.phase_bc_deg,
        "memory_sensitivity": memory_sensitivity(s),
        "link_ab": full.link_ab,
        "link_ab_stored": full.link_ab_stored,
        "link_bc": full.link_bc,
        "p_ab": full.p_ab,
        "p_bc": full.p_bc,
        "goodness": full.goodness,
        "swap": full.swap,
        "rows": rows,
    }


# beyond the papers: qnode's cut-offs ---------------------------------------------------------
CUTOFFS = (25, 50, 100, 200, 450, 1000, 2000, 5000, 20000)
ALPHAS = (0.03, 0.05, 0.1)
FIDELITY_MINIMA = (0.6, 0.65, 0.7, 0.75)
MAX_CUTOFF = 10**7
"""A cut-off beyond which the geometric sums are taken as unbounded (p_bc x 1e7 >> 1)."""
MEMORY_N_1E = (500.0, 1000.0, 2000.0, 5000.0)


def memory_sensitivity(s: Setup) -> list[tuple[float, float]]:
    """The swap fidelity if the memory's N_1/e at the B-C alpha were each of MEMORY_N_1E
    (the published sets' memory figure is a stand-in: this says how much it could move)."""
    out = []
    for n_1e in MEMORY_N_1E:
        memory = replace(s.memory, n_1e_at_alpha=n_1e, alpha_ref=s.alpha_bc)
        out.append((n_1e, figures(replace(s, memory=memory)).swap))
    return out


def end_to_end(s: Setup) -> tuple[float, float]:
    """Swap fidelity and end-to-end pairs per second of attempt time (no overheads: Delft's
    charge-resonance checks and calibrations between rounds are not in it): a round makes A-B
    (1/p_ab attempts on average), then tries B-C up to the cut-off; it succeeds with
    1 - (1 - p_bc)^cutoff."""
    f = figures(s)
    attempts = 1 / f.p_ab + mean_attempts(f.p_bc, s.cutoff)
    success = 1 - (1 - f.p_bc) ** s.cutoff if not math.isinf(s.cutoff) else 1.0
    seconds = attempts * s.attempt_s + s.feed_forward_s
    return f.swap, success / seconds


SHORT_MEMORY_N_1E = 1000.0
"""A memory much worse than the set's stand-in (N_1/e at the B-C alpha): the policy's gain
depends on it, so the benchmark shows both."""


def beyond(name: str = "Pompili 2021", n_1e_at_bc: float | None = None) -> dict:
    """On the set's hardware: (1) swap fidelity against rate for fixed cut-offs at a few
    B-C alphas (the B-C phase noise as fitted, so a smaller alpha gives a better link);
    (2) qnode's policy: the cut-off `attempts_before` sets for a stored pair's minimum
    fidelity (the link layer discards it there), at the paper's alpha. `n_1e_at_bc`: the
    memory's N_1/e at the B-C alpha instead of the set's."""
    s = Setup.of(SETS[name])
    if n_1e_at_bc is not None:
        s = replace(s, memory=replace(s.memory, n_1e_at_alpha=n_1e_at_bc, alpha_ref=s.alpha_bc))
    curves = {}
    for alpha in ALPHAS:
        points = []
        for cutoff in CUTOFFS:
            f, rate = end_to_end(replace(s, alpha_bc=alpha, cutoff=float(cutoff)))
            points.append({"cutoff": cutoff, "fidelity": f, "rate_hz": rate})
        curves[alpha] = points
    heralded, _ = link_pair(s.alpha_ab, s.alpha_ab, s.phase_ab_deg)
    fidelity0 = float(np.real(PSI_PLUS @ heralded @ PSI_PLUS))
    parity = float(np.real(heralded[1, 1] + heralded[2, 2]))  # the heralded subspace's share
    policy = []
    for minimum in FIDELITY_MINIMA:
        cutoff = attempts_before(
            minimum, fidelity0, s.memory, s.alpha_bc, attempt_s=s.attempt_s, parity=parity
        )
        if cutoff == 0:  # the move alone takes the pair under the minimum: nothing is made
            policy.append({"minimum": minimum, "cutoff": 0, "fidelity": None, "rate_hz": 0.0})
            continue
        f, rate = end_to_end(replace(s, cutoff=float(min(cutoff, MAX_CUTOFF))))
        policy.append({"minimum": minimum, "cutoff": cutoff, "fidelity": f, "rate_hz": rate})
    paper_cutoff = end_to_end(s)
    return {
        "set": name,
        "n_1e_at_bc": memory_n_1e(s.alpha_bc, s.memory),
        "curves": curves,
        "policy": policy,
        "paper_point": {
            "cutoff": s.cutoff,
            "fidelity": paper_cutoff[0],
            "rate_hz": paper_cutoff[1],
        },
    }


def plot(result: dict, path: Path, paper_fidelity: float | None = None) -> Path:
    """Fidelity against rate, a line per alpha, a point per cut-off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for alpha, points in result["curves"].items():
        rates = [p["rate_hz"] for p in points]
        fids = [p["fidelity"] for p in points]
        ax.plot(rates, fids, "o-", label=f"B-C alpha {alpha:g}")
        for p in points:
            ax.annotate(
                str(p["cutoff"]),
                (p["rate_hz"], p["fidelity"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(2, 3),
            )
    policy = [p for p in result["policy"] if p["fidelity"] is not None]
    ax.plot(
        [p["rate_hz"] for p in policy],
        [p["fidelity"] for p in policy],
        "k*",
        ms=10,
        label="qnode cut-off at a stored minimum (alpha as the paper)",
    )
    if paper_fidelity is not None:
        ax.axhline(paper_fidelity, color="grey", ls="--", label="Pompili 2021 swap (paper)")
    ax.axhline(0.5, color="red", lw=0.8, ls=":", label="0.5 (entanglement)")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end A-C pairs per second of attempt time")
    ax.set_ylabel("A-C fidelity (planning model + corrections)")
    ax.set_title("Swap fidelity against rate: cut-off (labels: B-C attempts) and alpha")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# the simulator's column ----------------------------------------------------------------------
def measured_figures(paths: Iterable[Path]) -> dict[str, float]:
    """The figures measured end to end through the daemons, from their network session files
    (controller/data/networkfile.py): each delivered pair's or shot's frame-corrected bits,
    merged over the nodes' files by id. entangle with verification: the Bell fidelity of the
    pairs measured in X, Y or Z at both ends (`estimators.bell_fidelity`); ghz: the five
    settings (`estimators.ghz_fidelity`); teleport: the success fraction per cardinal state
    (`estimators.teleport_fidelity`). Keys as the published sets name them."""
    from controller.data.networkfile import (
        BASIS_NAMES,
        DELIVERED,
        STATE_NAMES,
        read_network_session,
    )

    merged: dict[tuple[str, bytes], dict] = {}
    for path in paths:
        data = read_network_session(Path(path))
        for row in data["pairs"]:
            if row["status"] != DELIVERED:
                continue
            entry = merged.setdefault((data["application"], bytes(row["id"])), {})
            for where in ("first", "repeater", "second"):
                if row[f"bit_{where}"] != 0:
                    entry[where] = (
                        BASIS_NAMES[row[f"basis_{where}"] - 1],
                        int(row[f"bit_{where}"]),
                    )
            if row["state"]:
                entry["state"] = STATE_NAMES[row["state"] - 1]
    out: dict[str, float] = {}
    products: dict[str, list[int]] = {}
    settings: dict[str, list[list[int]]] = {}
    successes: dict[str, list[int]] = {}
    for (application, _), e in merged.items():
        if application == "entangle" and "first" in e and "second" in e:
            (b1, r1), (b2, r2) = e["first"], e["second"]
            if b1 == b2:
                products.setdefault(b1, []).append(r1 * r2 * estimators.PSI_PLUS_CORRELATORS[b1])
        elif application == "ghz" and all(k in e for k in ("first", "repeater", "second")):
            setting = e["first"][0] + e["repeater"][0] + e["second"][0]
            settings.setdefault(setting, []).append(
                [e["first"][1], e["repeater"][1], e["second"][1]]
            )
        elif application == "teleport" and "state" in e and "second" in e:
            basis, sign = estimators.CARDINAL_STATES[e["state"]]
            if e["second"][0] == basis:
                successes.setdefault(e["state"], []).append(int(e["second"][1] == sign))
    if set(products) >= set(estimators.PSI_PLUS_CORRELATORS) and all(
        len(v) >= 2 for v in products.values()
    ):
        out["swap_fidelity"] = estimators.bell_fidelity(
            {b: np.array(v) for b, v in products.items()}
        ).value
    if set(settings) >= set(estimators.GHZ_SETTINGS) and all(
        len(v) >= 2 for v in settings.values()
    ):
        values = {
            k: estimators.stabiliser_values(k, np.array(settings[k]))
            for k in estimators.GHZ_SETTINGS
        }
        out["ghz_fidelity"] = estimators.ghz_fidelity(values).value
    if set(successes) >= set(estimators.CARDINAL_STATES) and all(
        len(v) >= 2 for v in successes.values()
    ):
        out["teleport_fidelity"] = estimators.teleport_fidelity(
            {k: (sum(v), len(v)) for k, v in successes.items()}
        ).value
    return out


# the benchmark -----------------------------------------------------------------------------
def run(
    session_files: Iterable[Path] = (),
    plot_path: Path | None = None,
    simulated: dict | None = None,
) -> dict:
    """Every published set's comparison and the cut-off figures (bench/run.py's entry). The
    simulator's column from `simulated` (controller.harness.published_network's summary:
    the simulator's truth on labs/sim_pompili_2021.toml) or from network session files."""
    files = list(session_files)
    measured = measured_figures(files) if files else None
    if simulated is not None:
        measured = {
            key: simulated[key]
            for key in ("swap_fidelity", "swap_fidelity_any_outcome", "ghz_fidelity")
            if simulated.get(key) is not None
        }
    out: dict = {"sets": [compare(name, measured) for name in SETS]}
    out["beyond"] = beyond()
    out["beyond_short_memory"] = beyond(n_1e_at_bc=SHORT_MEMORY_N_1E)
    paper = SETS["Pompili 2021"]["swap_fidelity"].value
    try:
        out["plot"] = str(plot(out["beyond"], plot_path or RESULTS / "network_figures.png", paper))
    except ImportError:  # matplotlib is a dev extra
        out["plot"] = None
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "not yet" if value is None else f"{value:.{digits}f}"


def render(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Network figures beside the papers (paper, simulator, planning model)")
    for column in ("set", "figure", "paper", "simulator", "planning model", "model - paper"):
        table.add_column(column)
    for s in result["sets"]:
        for row in s["rows"]:
            sigma = f" +- {row['paper_sigma']:.3f}" if row["paper_sigma"] else ""
            table.add_row(
                s["set"],
                row["figure"],
                f"{row['paper']:.3f}{sigma} ({row['paper_status']})",
                _fmt(row["simulator"]),
                f"{row['model']:.3f}",
                f"{row['difference']:+.3f}",
            )
    console.print(table)
    for s in result["sets"]:
        steps = Table(title=f"{s['set']}: the planning model as each mechanism is added")
        steps.add_column("mechanism")
        names = [row["figure"] for row in s["rows"]]
        for name in names:
            steps.add_column(name)
            steps.add_column("change")
        count = len(s["rows"][0]["steps"])
        for i in range(count):
            cells = [s["rows"][0]["steps"][i][0]]
            for row in s["rows"]:
                value = row["steps"][i][1]
                change = value - row["steps"][i - 1][1] if i else 0.0
                cells += [f"{value:.3f}", f"{change:+.3f}" if i else "-"]
            steps.add_row(*cells)
        console.print(steps)
        console.print(
            f"  links: A-B {s['link_ab']:.3f} heralded (phase noise {s['phase_ab_deg']:.1f} deg "
            "fitted), "
            f"{s['link_ab_stored']:.3f} at the measurement; B-C {s['link_bc']:.3f} "
            f"({s['phase_bc_deg']:.1f} deg); p {s['p_ab']:.2e} / {s['p_bc']:.2e} per attempt; "
            f"the network layer's goodness (Werner) {s['goodness']:.3f} against the exact "
            f"swap {s['swap']:.3f}"
        )
        console.print(
            "  the memory's N_1/e at the B-C alpha, if it were: "
            + ", ".join(f"{n:.0f}: swap {f:.3f}" for n, f in s["memory_sensitivity"])
        )
    for key in ("beyond", "beyond_short_memory"):
        b = result[key]
        table = Table(
            title=f"Beyond the papers ({b['set']} hardware, memory N_1/e {b['n_1e_at_bc']:.0f} "
            "at the B-C alpha): qnode's cut-off policy"
        )
        for column in (
            "stored minimum",
            "cut-off (attempts)",
            "A-C fidelity",
            "pairs/s (attempt time)",
        ):
            table.add_column(column)
        p = b["paper_point"]
        table.add_row(
            "paper's cut-off", f"{p['cutoff']:.0f}", f"{p['fidelity']:.3f}", f"{p['rate_hz']:.3g}"
        )
        for row in b["policy"]:
            table.add_row(
                f"{row['minimum']:.2f}",
                str(row["cutoff"]),
                _fmt(row["fidelity"]),
                f"{row['rate_hz']:.3g}",
            )
        console.print(table)
    if result.get("plot"):
        console.print(f"fidelity against rate: {result['plot']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="where to save the plot (default bench/results)")
    parser.add_argument(
        "files", nargs="*", type=Path, help="network session files of a measured run (optional)"
    )
    args = parser.parse_args(argv)
    render(run(args.files, args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
