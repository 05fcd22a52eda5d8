"""Photons from two memory nodes to the midpoint's clicks, per entanglement attempt.

Pure numpy (no I/O), written from the papers, independent of the controller's planning model:
given the two memories' states at the optical pi pulse, their optics, the interferometer, the
detectors and the herald logic's windows, it returns the probability that one attempt
heralds, the probability of each heralded outcome with the normalised joint state of (A, B)
it leaves, and a sampler of the heralding clicks.

Model (Humphreys et al., Nature 558, 268 (2018) + SI; Barrett & Kok, PRA 71, 060310 (2005);
double excitation: Hermans et al., Nature 605, 663 (2022), Pompili et al., Science 372, 259
(2021)):

* Memory basis |0> = bright (the optical pi pulse excites it and it emits), |1> = dark. Joint
  basis |00>, |01>, |10>, |11>, node A first.
* Emission is controlled by the memory basis state only, so a round is a Schur (Hadamard)
  multiplier on the joint state: rho -> rho o C, where C[j, k] = <E_k|Pi|E_j> is the overlap
  of the light+environment states E_j, E_k that the memory basis states j, k leave behind,
  projected on the click outcome Pi. The diagonal C[j, j] is the probability of the outcome
  given j; the off-diagonals are the coherence that survives. The herald's probability is
  sum_j rho[j, j] C[j, j] and its state rho o C normalised. That is the Kraus/branch
  calculation on kron(rho_A, rho_B), exact in eta.
* A bright node leaves orthogonal branches:
  - clean: sqrt(e)|vac> + sqrt((1-e)(1-p2) w)|1 photon in the windows>, e = pi_pulse_error
    (the pulse is a unitary with an area error, so the not-excited amplitude stays coherent
    with the dark state), w = eta * (fraction of the arrival distribution in the windows);
  - lost: probability (1-e)(1-p2)(1-w): a photon lost or outside the windows is a photon in
    the environment (ignoring a click outside the windows equals tracing it out), orthogonal
    to vacuum: it marks the branch (which-path), so it keeps no coherence with any state in
    which this node is dark. |00> with one photon lost and one detected heralds |00>;
  - double excitation, probability (1-e) p2: an early photon emitted during the pulse
    (uniform over pulse_ns) and a normal one; each reaches the windows independently
    (w_early, w). The branch is marked (two photons from one node carry which-path
    information), so it never adds coherence; its photons still click: the early one
    distinguishable from everything, the normal one with the usual overlap.
  A dark node leaves vacuum.
* Loss (collection x fibre x detector efficiency, equal detector efficiencies) and the time
  windows act identically on both beam-splitter outputs, so they commute with the beam
  splitter and are applied per photon before it: exact, not leading order.
* Beam splitter 50/50, phase phi of A's arm relative to B's, mode overlap <phi_A|phi_B> =
  sqrt(V) (V the two-photon HOM visibility). One photon on detector d: the heralded
  rho[|01>, |10>] carries +-sqrt(V) e^{+i phi} / 2 (detector 0 +, detector 1 -). Two normal
  photons: same detector with probability (1+V)/2. Threshold detectors: several photons on
  one detector are one click. The not-excited amplitude of a bright node interferes with the
  other node's photon too (|00> emits a superposition), so with pi_pulse_error > 0 the
  click probabilities of |00> depend on phi (they do not at phi = pi/2).
* Dark counts: Poisson over the configured union of the windows, P_d = 1 - exp(-R_d L),
  independent of the light; a round heralds when exactly one detector clicks.
* Barrett-Kok: round 1, ideal X on both memories, round 2 (same phase: it cancels). The
  state returned is after round 2, i.e. including the flip between the rounds.
* Two-photon (trapped ions: Moehring et al., Nature 449, 68 (2007); Stephenson et al., PRL
  124, 110501 (2020)): see `two_photon`. The ion's photon carries a polarisation qubit, the
  midpoint has four detectors (a polarising beam splitter on each beam-splitter output) and
  a coincidence of two orthogonal polarisations heralds. Its own branch calculation, below.

The detailed list of choices and simplifications is in docs/simulation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_ndtr, ndtr

PSI_PLUS = "psi_plus"
PSI_MINUS = "psi_minus"
BASIS = ("00", "01", "10", "11")

# Who fired the clicking detector: a bit mask over these components.
A_PHOTON, A_EARLY, B_PHOTON, B_EARLY, DARK = 1, 2, 4, 8, 16
COMPONENTS = {A_PHOTON: "A", A_EARLY: "A_early", B_PHOTON: "B", B_EARLY: "B_early", DARK: "dark"}
_N_SETS = 32

Window = tuple[float, float]  # (start_ns, length_ns) after the sync


@dataclass(frozen=True)
class NodeOptics:
    """One node's photons as they reach the midpoint."""

    eta: float  # P(an emitted photon is detected at a midpoint detector)
    lifetime_ns: float
    delay_ns: float  # sync to the start of the emission, at the detectors
    p_double: float = 0.0  # double excitation per pulse (NV ~0.04, ion ~0.01)
    pi_pulse_error: float = 0.0  # P(the bright state is not excited)
    pulse_ns: float = 2.0  # optical pi pulse length: the early photon's emission span


@dataclass(frozen=True)
class Detectors:
    """The midpoint's detectors. Single-click, Barrett-Kok: two, 0 heralds psi_plus at phase
    0, 1 psi_minus. Two-photon: four, in the order of TWO_PHOTON_DETECTORS."""

    dark_hz: tuple[float, ...]
    jitter_ns: float


@dataclass(frozen=True, eq=False)
class Heralding:
    """One attempt's herald distribution (attempts are identical: memories re-initialised)."""

    protocol: str
    p_success: float
    outcomes: dict[str, float]  # outcome -> probability per attempt (sums to p_success)
    states: dict[str, np.ndarray]  # outcome -> normalised 4x4 state of (A, B)
    a: NodeOptics
    b: NodeOptics
    detectors: Detectors
    windows: tuple[Window, ...]
    # probability per attempt of (detector, fired components) per click, flattened:
    # index = sum over clicks k of (detector * 32 + component mask) * (32 n)**(clicks - 1 - k),
    # n detectors (single-click one click, Barrett-Kok one per round, two-photon two clicks
    # in detector order)
    origins: np.ndarray = field(repr=False)

    @property
    def rounds(self) -> int:
        """Detection windows per attempt."""
        return 2 if self.protocol == "barrett_kok" else 1

    @property
    def clicks(self) -> int:
        """Clicks per herald (Barrett-Kok one per round, two-photon two in its one round)."""
        return 1 if self.protocol == "single_click" else 2

    @property
    def n_detectors(self) -> int:
        return 4 if self.protocol == "two_photon" else 2

    @property
    def weights(self) -> dict[str, float]:
        """Outcome probabilities given a herald."""
        if self.p_success <= 0:
            return {}
        return {k: v / self.p_success for k, v in self.outcomes.items()}

    def origin_shares(self, outcome: str) -> dict[tuple[tuple[int, str], ...], float]:
        """Given this outcome: per round (detector, what fired it, e.g. 'A+dark') -> share."""
        probs = self.origins * _outcome_mask(self.protocol, outcome)
        total = probs.sum()
        shares: dict[tuple[tuple[int, str], ...], float] = {}
        for index in np.flatnonzero(probs):
            per_click = _unflatten(int(index), self.clicks, self.n_detectors)
            key = tuple((d, _label(s)) for d, s in per_click)
            shares[key] = float(probs[index] / total)
        return shares


# ---- the photon's arrival distribution --------------------------------------------------


def union_of_windows(windows: list[Window] | tuple[Window, ...]) -> np.ndarray:
    """The windows as disjoint sorted [start, end] intervals (a click counts in any)."""
    spans = sorted((float(s), float(s) + float(n)) for s, n in windows if n > 0)
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.array(merged, dtype=float).reshape(-1, 2)


def _exp_gauss_cdf(x: np.ndarray, tau: float, sigma: float) -> np.ndarray:
    """CDF of Exponential(tau) + Normal(0, sigma) (exponentially modified Gaussian)."""
    if sigma <= 0:
        return -np.expm1(-np.maximum(x, 0.0) / tau)
    z = x / sigma
    r = sigma / tau
    cdf = ndtr(z) - np.exp(-x / tau + 0.5 * r * r + log_ndtr(z - r))
    return np.clip(cdf, 0.0, 1.0)


def _uniform_gauss_cdf(x: np.ndarray, span: float, sigma: float) -> np.ndarray:
    """CDF of Uniform(0, span) + Normal(0, sigma)."""
    if span <= 0:
        return ndtr(x / sigma) if sigma > 0 else (x >= 0).astype(float)
    if sigma <= 0:
        return np.clip(x / span, 0.0, 1.0)

    def integral(z: np.ndarray) -> np.ndarray:  # antiderivative of the normal CDF
        return z * ndtr(z) + np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)

    return np.clip(sigma / span * (integral(x / sigma) - integral((x - span) / sigma)), 0, 1)


def _cdf(node: NodeOptics, early: bool, jitter: float, t: np.ndarray) -> np.ndarray:
    x = t - node.delay_ns
    if early:
        return _uniform_gauss_cdf(x, node.pulse_ns, jitter)
    return _exp_gauss_cdf(x, node.lifetime_ns, jitter)


def _interval_masses(node: NodeOptics, early: bool, jitter: float, union: np.ndarray) -> np.ndarray:
    cdf = _cdf(node, early, jitter, union)
    return np.maximum(cdf[:, 1] - cdf[:, 0], 0.0)


def window_fraction(
    node: NodeOptics, jitter_ns: float, windows: list[Window], early: bool = False
) -> float:
    """P(a photon of this node arrives inside the union of the windows): exact, with jitter."""
    union = union_of_windows(windows)
    return float(_interval_masses(node, early, jitter_ns, union).sum()) if len(union) else 0.0


# ---- one round: the Schur multiplier per detector -------------------------------------------

# Light contents per node: 0 vacuum, 1 normal photon, 2 early photon, 3 both.
_HAS_N = np.array([0, 1, 0, 1])
_HAS_E = np.array([0, 0, 1, 1])
_CA = np.repeat(np.arange(4), 4)  # index A * 4 + B
_CB = np.tile(np.arange(4), 4)
_MASK = _HAS_N[_CA] * A_PHOTON + _HAS_E[_CA] * A_EARLY + _HAS_N[_CB] * B_PHOTON
_MASK = _MASK + _HAS_E[_CB] * B_EARLY
_PAIR = (_HAS_N[_CA] & _HAS_N[_CB]).astype(bool)  # both normal photons: HOM
_N_INDEP = _HAS_E[_CA] + _HAS_E[_CB] + np.where(_PAIR, 0, _HAS_N[_CA] + _HAS_N[_CB])
_LIT = _MASK > 0
_ROWS = np.arange(16)


def _click_table(visibility: float, dark: np.ndarray) -> np.ndarray:
    """T[contents A*4+B, detector d, fired mask]: P(only d clicks, fired by exactly these)."""
    # P(every photon lands on d), the same for both d (50/50 beam splitter)
    all_on_d = np.where(_PAIR, (1 + visibility) / 4, 1.0) * 0.5**_N_INDEP
    table = np.zeros((16, 2, _N_SETS))
    for d in (0, 1):
        quiet_other = 1.0 - dark[1 - d]
        lit = all_on_d * quiet_other * _LIT
        table[_ROWS, d, _MASK] = lit * (1 - dark[d])
        table[_ROWS, d, _MASK | DARK] = lit * dark[d]
        table[0, d, DARK] = dark[d] * quiet_other
    return table


def _node_light(
    node: NodeOptics, jitter: float, union: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """A bright node's clean amplitudes (vacuum, photon) and its light-content distribution."""
    if len(union):
        w = node.eta * _interval_masses(node, False, jitter, union).sum()
        w_early = node.eta * _interval_masses(node, True, jitter, union).sum()
    else:
        w = w_early = 0.0
    e = node.pi_pulse_error
    single = (1 - e) * (1 - node.p_double)
    double = (1 - e) * node.p_double
    contents = np.array(
        [
            e + single * (1 - w) + double * (1 - w_early) * (1 - w),
            single * w + double * (1 - w_early) * w,
            double * w_early * (1 - w),
            double * w_early * w,
        ]
    )
    return np.sqrt(e), np.sqrt(single * w), contents


_DARK_CONTENTS = np.array([1.0, 0.0, 0.0, 0.0])
_BRIGHT_A = np.array([True, True, False, False])  # per joint basis state |00>,|01>,|10>,|11>
_BRIGHT_B = np.array([True, False, True, False])


def _round(
    a: NodeOptics,
    b: NodeOptics,
    detectors: Detectors,
    visibility: float,
    phase_rad: float,
    union: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One round: C[d] (2, 4, 4) Schur multipliers and O[j, d, mask] click origins."""
    length = float((union[:, 1] - union[:, 0]).sum()) if len(union) else 0.0
    dark = -np.expm1(-np.asarray(detectors.dark_hz, dtype=float) * length * 1e-9)
    table = _click_table(visibility, dark)
    a0, a1, light_a = _node_light(a, detectors.jitter_ns, union)
    b0, b1, light_b = _node_light(b, detectors.jitter_ns, union)
    per_a = np.where(_BRIGHT_A[:, None], light_a, _DARK_CONTENTS)  # (4 j, 4 contents)
    per_b = np.where(_BRIGHT_B[:, None], light_b, _DARK_CONTENTS)
    weights = (per_a[:, :, None] * per_b[:, None, :]).reshape(4, 16)
    origins = (weights @ table.reshape(16, 2 * _N_SETS)).reshape(4, 2, _N_SETS)

    # one photon on d from A or from B: amplitude overlap, phase, sign of the detector
    sign = np.array([1.0, -1.0])
    quiet_other = 1.0 - dark[::-1]
    overlap = sign * 0.5 * np.sqrt(visibility) * np.exp(1j * phase_rad) * quiet_other
    # |00>: A not excited + B's photon interferes with A's photon + B not excited
    interference = 2 * a0 * a1 * b0 * b1 * overlap.real
    if np.any(interference != 0):
        for d in (0, 1):
            for masks, part in (((1, 4), 1 - dark[d]), ((17, 20), dark[d])):
                held = origins[0, d, list(masks)]
                if held.sum() > 0:
                    origins[0, d, list(masks)] = held * (1 + interference[d] * part / held.sum())

    clicks = table.sum(axis=2)  # (16, 2): P(only d | contents)
    vacuum = clicks[0]
    a_alone = light_a @ clicks.reshape(4, 4, 2)[:, 0, :]  # A bright's light, B vacuum
    b_alone = light_b @ clicks.reshape(4, 4, 2)[0, :, :]
    c = np.zeros((2, 4, 4), dtype=complex)
    c[:, [0, 1, 2, 3], [0, 1, 2, 3]] = origins.sum(axis=2).T
    c[:, 0, 1] = b0 * a_alone + a0 * a1 * b1 * np.conj(overlap)
    c[:, 0, 2] = a0 * b_alone + a1 * b1 * b0 * overlap
    c[:, 0, 3] = a0 * b0 * vacuum
    c[:, 1, 2] = a0 * b0 * vacuum + a1 * b1 * overlap
    c[:, 1, 3] = a0 * vacuum
    c[:, 2, 3] = b0 * vacuum
    upper = np.triu_indices(4, 1)
    c[:, upper[1], upper[0]] = np.conj(c[:, upper[0], upper[1]])
    return c, origins


def _joint(rho_a: np.ndarray, rho_b: np.ndarray) -> np.ndarray:
    rho_a = np.asarray(rho_a, dtype=complex)
    rho_b = np.asarray(rho_b, dtype=complex)
    if rho_a.shape != (2, 2) or rho_b.shape != (2, 2):
        raise ValueError("memory states must be 2x2 density matrices")
    return (rho_a[:, None, :, None] * rho_b[None, :, None, :]).reshape(4, 4)


def _result(
    protocol: str,
    unnormalised: dict[str, np.ndarray],
    origins: np.ndarray,
    a: NodeOptics,
    b: NodeOptics,
    detectors: Detectors,
    windows: list[Window],
) -> Heralding:
    outcomes: dict[str, float] = {}
    states: dict[str, np.ndarray] = {}
    for name, sigma in unnormalised.items():
        p = float(np.trace(sigma).real)
        if p > 0:
            outcomes[name] = p
            state = sigma / p
            states[name] = 0.5 * (state + state.conj().T)
    return Heralding(
        protocol=protocol,
        p_success=float(sum(outcomes.values())),
        outcomes=outcomes,
        states=states,
        a=a,
        b=b,
        detectors=detectors,
        windows=tuple((float(s), float(n)) for s, n in windows),
        origins=origins,
    )


def single_click(
    rho_a: np.ndarray,
    rho_b: np.ndarray,
    a: NodeOptics,
    b: NodeOptics,
    detectors: Detectors,
    visibility: float,
    phase_rad: float,
    windows: list[Window],
) -> Heralding:
    """Single-click (Humphreys 2018): one round; detector 0 psi_plus, detector 1 psi_minus.
    phase_rad is the interferometer's actual phase at this attempt."""
    rho = _joint(rho_a, rho_b)
    union = union_of_windows(windows)
    c, origins = _round(a, b, detectors, visibility, phase_rad, union)
    unnormalised = {PSI_PLUS: rho * c[0], PSI_MINUS: rho * c[1]}
    diag = rho.diagonal().real
    flat = diag @ origins.reshape(4, 2 * _N_SETS)
    return _result("single_click", unnormalised, flat, a, b, detectors, windows)


def barrett_kok(
    rho_a: np.ndarray,
    rho_b: np.ndarray,
    a: NodeOptics,
    b: NodeOptics,
    detectors: Detectors,
    visibility: float,
    phase_rad: float,
    windows: list[Window],
) -> Heralding:
    """Barrett-Kok: two single-click rounds with X on both memories between them; the same
    detector twice heralds psi_plus, different detectors psi_minus. The state returned is
    after round 2 (the flip included); the phase cancels between the rounds."""
    rho = _joint(rho_a, rho_b)
    union = union_of_windows(windows)
    c, origins = _round(a, b, detectors, visibility, phase_rad, union)
    # (P (rho o C1) P) o C2 = (P rho P) o (P C1 P) o C2, P = X on both memories: it
    # reverses the basis order (|00> <-> |11>, |01> <-> |10>)
    flipped = rho[::-1, ::-1]
    first = c[:, ::-1, ::-1]
    both = flipped[None, None] * first[:, None] * c[None, :]  # [d1, d2]
    unnormalised = {PSI_PLUS: both[0, 0] + both[1, 1], PSI_MINUS: both[0, 1] + both[1, 0]}
    diag = flipped.diagonal().real
    o1 = origins[::-1].reshape(4, 2 * _N_SETS)
    o2 = origins.reshape(4, 2 * _N_SETS)
    flat = ((o1 * diag[:, None]).T @ o2).ravel()
    return _result("barrett_kok", unnormalised, flat, a, b, detectors, windows)


# ---- two-photon: the ions' photonic qubits ----------------------------------------------------

TWO_PHOTON_DETECTORS = ("out1_h", "out1_v", "out2_h", "out2_v")
"""The two-photon midpoint's detectors: (beam-splitter output, polarisation), in this order."""
_POLARISATION = (0, 1, 0, 1)  # detector -> 0 H, 1 V
_BS_OUTPUT = (0, 0, 1, 1)
TWO_PHOTON_HERALDS = {0b0011: PSI_PLUS, 0b1100: PSI_PLUS, 0b1001: PSI_MINUS, 0b0110: PSI_MINUS}
"""Click sets (bit k: detector k) that herald: orthogonal polarisations on the same output
psi_plus, on different outputs psi_minus; every other set of clicks fails."""
_KET = {0: np.diag([1.0, 0.0]).astype(complex), 1: np.diag([0.0, 1.0]).astype(complex)}
_MIXED = np.eye(2, dtype=complex) / 2


def _ion_options(
    rho: np.ndarray, node: NodeOptics, jitter: float, union: np.ndarray, photon: int, early: int
) -> tuple[list[tuple[np.ndarray, tuple[tuple[int, int], ...]]], float]:
    """One ion's light, as classical options: (unnormalised 2x2 ion state, ((source bit,
    detector), ...) of its photons in the windows), and the weight of the coherent branch
    (one photon in the windows, still entangled with the ion; it is expanded per detector
    here for use with the other node's incoherent options)."""
    if len(union):
        w = node.eta * _interval_masses(node, False, jitter, union).sum()
        w_early = node.eta * _interval_masses(node, True, jitter, union).sum()
    else:
        w = w_early = 0.0
    pumped = float(np.clip(rho[0, 0].real, 0.0, 1.0))
    e, p2 = node.pi_pulse_error, node.p_double
    single = (1 - e) * (1 - p2) * pumped
    double = (1 - e) * p2 * pumped
    # not excited: the unpumped population and the pulse's missed amplitude, coherently
    kraus = np.diag([np.sqrt(e), 1.0])
    none = kraus @ rho @ kraus.conj().T
    none = none + (single * (1 - w) + double * (1 - w_early) * (1 - w)) * _MIXED
    options: list[tuple[np.ndarray, tuple[tuple[int, int], ...]]] = [(none, ())]
    coherent = single * w
    for d in range(4):  # the coherent photon, seen alone: its polarisation projects the ion
        options.append((coherent / 4 * _KET[_POLARISATION[d]], ((photon, d),)))
    for weight, bits in (
        (double * w_early * (1 - w), (early,)),
        (double * (1 - w_early) * w, (photon,)),
        (double * w_early * w, (early, photon)),
    ):
        if weight <= 0:
            continue
        share = 0.25 ** len(bits)
        for dets in np.ndindex(*(4,) * len(bits)):
            photons = tuple(zip(bits, (int(x) for x in dets), strict=True))
            options.append((weight * share * _MIXED, photons))
    return options, coherent


def _two_photon_kraus(
    rho: np.ndarray, node: NodeOptics, jitter: float, union: np.ndarray
) -> tuple[np.ndarray, float]:
    """The ion's no-light Kraus operator diag(sqrt e, 1) and the amplitude of its clean
    photon in the windows, sqrt((1-e)(1-p_double) w) (times the emission's and the beam
    splitter's amplitudes, |pol><0|: the excitation acts on the pumped |0>)."""
    w = node.eta * _interval_masses(node, False, jitter, union).sum() if len(union) else 0.0
    e = node.pi_pulse_error
    return np.diag([np.sqrt(e), 1.0]).astype(complex), float(
        np.sqrt((1 - e) * (1 - node.p_double) * w)
    )


def _both_photons(
    visibility: float, phase_rad: float
) -> list[tuple[np.ndarray, tuple[tuple[int, int], ...]]]:
    """Both ions' coherent photons in the windows, per unit weight: (unnormalised 4x4 joint
    state, photons) with the Hong-Ou-Mandel interference of modes overlapping by
    |<A|B>|^2 = V. Each ion: (|0>|H> + |1>|V>)/sqrt2; beam splitter a -> (o1 + o2)/sqrt2,
    b -> (o1 - o2)/sqrt2. Same polarisation (|00>, |11>): the photons bunch with (1+V)/2. One
    of each (|01>, |10>): every (output of H, output of V) with 1/4, and the coherence
    between |01> and |10> is +-V/16 (+ same output): the only coherence any herald keeps.
    A's arm's phase multiplies each of A's photons: both branches hold one, so it cancels."""
    a, b = A_PHOTON, B_PHOTON
    out: list[tuple[np.ndarray, tuple[tuple[int, int], ...]]] = []
    for ion, pol in ((0, 0), (3, 1)):  # |00>: both H, |11>: both V
        ket = np.zeros((4, 4), dtype=complex)
        ket[ion, ion] = 0.25
        h1, h2 = 2 * 0 + pol, 2 * 1 + pol  # this polarisation's detector on output 1, 2
        for da, db, p in (
            (h1, h1, (1 + visibility) / 4),
            (h2, h2, (1 + visibility) / 4),
            (h1, h2, (1 - visibility) / 4),
            (h2, h1, (1 - visibility) / 4),
        ):
            out.append((ket * p, ((a, da), (b, db))))
    for o_h in (0, 1):
        for o_v in (0, 1):
            dh, dv = 2 * o_h, 2 * o_v + 1
            sign = 1.0 if o_h == o_v else -1.0
            for which, photons in ((1, ((a, dh), (b, dv))), (2, ((b, dh), (a, dv)))):
                block = np.zeros((4, 4), dtype=complex)
                block[which, which] = 1 / 16
                # the coherence, carried once with the |01> branch (its photons stand for
                # both branches' in the click-origin bookkeeping)
                if which == 1:
                    arm = np.exp(1j * phase_rad)  # A's photon in |01>, and in |10>
                    block[1, 2] = sign * visibility / 16 * arm * np.conj(arm)
                    block[2, 1] = np.conj(block[1, 2])
                out.append((block, photons))
    return out


def two_photon(
    rho_a: np.ndarray,
    rho_b: np.ndarray,
    a: NodeOptics,
    b: NodeOptics,
    detectors: Detectors,
    visibility: float,
    phase_rad: float,
    windows: list[Window],
) -> Heralding:
    """Two-photon heralding of two ions' photonic qubits (Moehring 2007, Stephenson 2020).

    Each ion is excited from its pumped state |0> and decays emitting one photon whose
    polarisation is entangled with the qubit: (|0>|H> + |1>|V>)/sqrt2 (the known phase taken
    as 0). The ion's prior state enters only through the pumped population rho[0, 0] (an
    imperfect pump leaves the rest in |1>, which the pulse does not excite) and the
    pi-pulse's missed amplitude sqrt(e) on |0>, kept coherently with |1> (no photon: the
    Kraus operator diag(sqrt e, 1)). The emission replaces the rest. A photon lost or outside
    the windows leaves its ion mixed (its polarisation traced out). A double excitation
    (probability p_double): an early photon during the pulse and a second one, the ion left
    mixed, each photon random in polarisation and output and distinguishable from all others
    (its which-path mark): incoherent. The beam splitter and two polarising beam splitters
    feed four threshold detectors (TWO_PHOTON_DETECTORS); loss, windows and jitter act per
    photon before them (exact in eta, as in `single_click`). Dark counts per detector, Poisson
    over the windows' union, can fake either click. A herald is exactly two clicking
    detectors of orthogonal polarisation (TWO_PHOTON_HERALDS). Phase-insensitive: phase_rad
    (A's arm relative to B's, as for the others) multiplies every one of A's photons, and
    every two-photon herald holds exactly one of them (polarisation drift in the fibres is
    taken as compensated). The one exception: one ion's photon and a dark count, where the
    other ion's missed (or unpumped) amplitude interferes with that photon, as in
    single-click; it is ~ e * P_dark, kept for exactness. Ideal: p = eta_A eta_B / 2,
    F = (1 + V)/2.
    """
    rho_a = np.asarray(rho_a, dtype=complex)
    rho_b = np.asarray(rho_b, dtype=complex)
    if rho_a.shape != (2, 2) or rho_b.shape != (2, 2):
        raise ValueError("memory states must be 2x2 density matrices")
    if len(detectors.dark_hz) != 4:
        raise ValueError("two-photon heralding needs four detectors (out1_h, out1_v, ...)")
    union = union_of_windows(windows)
    length = float((union[:, 1] - union[:, 0]).sum()) if len(union) else 0.0
    dark = -np.expm1(-np.asarray(detectors.dark_hz, dtype=float) * length * 1e-9)
    jitter = detectors.jitter_ns
    opts_a, coh_a = _ion_options(rho_a, a, jitter, union, A_PHOTON, A_EARLY)
    opts_b, coh_b = _ion_options(rho_b, b, jitter, union, B_PHOTON, B_EARLY)

    # one ion's photon alone on detector d, the other ion without light: their interference
    # (the missed amplitude, or an unpumped ion, and the other's photon leave ion states
    # that overlap, and the photons' modes overlap by sqrt(V)); it completes a herald only
    # with a dark count, and carries A's arm's phase (the one phase-sensitive term)
    scale, crossed = np.ones(4), []
    kraus_a, emit_a = _two_photon_kraus(rho_a, a, jitter, union)
    kraus_b, emit_b = _two_photon_kraus(rho_b, b, jitter, union)
    for d in range(4):
        ket = np.zeros((2, 1), complex)
        ket[_POLARISATION[d], 0] = 1.0
        to_pol = ket @ np.array([[1.0, 0.0]])  # |pol><0|
        m_a = emit_a * np.exp(1j * phase_rad) / 2 * to_pol  # 1/sqrt2 emission, 1/sqrt2 BS
        m_b = emit_b * (1.0 if _BS_OUTPUT[d] == 0 else -1.0) / 2 * to_pol
        left = kraus_a @ rho_a @ m_a.conj().T
        right = m_b @ rho_b @ kraus_b.conj().T
        cross = np.sqrt(visibility) * (left[:, None, :, None] * right[None, :, None, :])
        cross = cross.reshape(4, 4)
        term = cross + cross.conj().T
        alone = float(np.trace(opts_a[1 + d][0]).real * np.trace(opts_b[0][0]).real)
        alone += float(np.trace(opts_a[0][0]).real * np.trace(opts_b[1 + d][0]).real)
        if alone > 0:
            scale[d] = 1 + float(np.trace(term).real) / alone
        crossed.append((term, ((0, d),), 0.0))  # its share of the origins: `scale`

    terms: list[tuple[np.ndarray, tuple[tuple[int, int], ...], float]] = []
    for k, (state_a, photons_a) in enumerate(opts_a):
        for m, (state_b, photons_b) in enumerate(opts_b):
            if 1 <= k <= 4 and 1 <= m <= 4:
                continue  # both coherent photons: below, with their interference
            joint = (state_a[:, None, :, None] * state_b[None, :, None, :]).reshape(4, 4)
            weight = float(np.trace(joint).real)
            if 1 <= k <= 4 and m == 0:
                weight *= scale[k - 1]
            elif k == 0 and 1 <= m <= 4:
                weight *= scale[m - 1]
            terms.append((joint, photons_a + photons_b, weight))
    terms += crossed
    if coh_a * coh_b > 0:
        both = _both_photons(visibility, phase_rad)
        terms += [
            (state * coh_a * coh_b, photons, float(np.trace(state).real) * coh_a * coh_b)
            for state, photons in both
        ]

    unnormalised = {PSI_PLUS: np.zeros((4, 4), complex), PSI_MINUS: np.zeros((4, 4), complex)}
    per_click = 4 * _N_SETS
    origins = np.zeros(per_click * per_click)
    for state, photons, weight in terms:
        fired, lit = [0, 0, 0, 0], 0
        for bit, d in photons:
            fired[d] |= bit
            lit |= 1 << d
        if bin(lit).count("1") > 2:
            continue  # more than two detectors: darks only add clicks
        for pattern, outcome in TWO_PHOTON_HERALDS.items():
            if lit & ~pattern:
                continue
            # the dark counts: on the pattern's unlit detectors, and none off the pattern
            p = 1.0
            for d in range(4):
                if pattern >> d & 1:
                    p *= 1.0 if lit >> d & 1 else dark[d]
                else:
                    p *= 1 - dark[d]
            if p <= 0:
                continue
            unnormalised[outcome] += state * p
            if weight <= 0:
                continue
            d1, d2 = (d for d in range(4) if pattern >> d & 1)
            for extra1 in (0, DARK) if fired[d1] else (DARK,):
                for extra2 in (0, DARK) if fired[d2] else (DARK,):
                    q = p
                    for d, extra in ((d1, extra1), (d2, extra2)):
                        if fired[d]:
                            q *= dark[d] if extra else 1 - dark[d]
                    index = (d1 * _N_SETS + (fired[d1] | extra1)) * per_click
                    origins[index + d2 * _N_SETS + (fired[d2] | extra2)] += weight * q
    return _result("two_photon", unnormalised, origins, a, b, detectors, windows)


def _two_photon_outcome_masks() -> dict[str, np.ndarray]:
    per_click = 4 * _N_SETS
    detector = np.arange(per_click) // _N_SETS
    pattern = (1 << detector)[:, None] | (1 << detector)[None, :]
    ordered = detector[:, None] < detector[None, :]
    masks = {}
    for outcome in (PSI_PLUS, PSI_MINUS):
        heralds = [m for m, o in TWO_PHOTON_HERALDS.items() if o == outcome]
        masks[outcome] = (np.isin(pattern, heralds) & ordered).ravel()
    return masks


_TWO_PHOTON_OUTCOME = _two_photon_outcome_masks()


# ---- the clicks the herald logic sees ----------------------------------------------------------


def _unflatten(index: int, clicks: int, n_detectors: int = 2) -> list[tuple[int, int]]:
    """(detector, fired mask) per click of a flattened origins index."""
    per_click = []
    for _ in range(clicks):
        index, rest = divmod(index, n_detectors * _N_SETS)
        per_click.append(divmod(rest, _N_SETS))
    return per_click[::-1]


def _label(mask: int) -> str:
    return "+".join(name for bit, name in COMPONENTS.items() if mask & bit)


_DETECTOR_OF_INDEX = np.arange(2 * _N_SETS) // _N_SETS


def _outcome_mask(protocol: str, outcome: str) -> np.ndarray:
    if protocol == "two_photon":
        return _TWO_PHOTON_OUTCOME[outcome]
    if protocol == "barrett_kok":
        same = _DETECTOR_OF_INDEX[:, None] == _DETECTOR_OF_INDEX[None, :]
        return (same if outcome == PSI_PLUS else ~same).ravel()
    return np.equal(_DETECTOR_OF_INDEX, 0 if outcome == PSI_PLUS else 1)


def _draw_in_interval(
    rng: np.random.Generator, node: NodeOptics, early: bool, jitter: float, lo: float, hi: float
) -> float:
    """A delay from the node's wavepacket conditioned on [lo, hi]: the emission time drawn
    from its law restricted to [lo - 8 jitter, hi + 8 jitter] (exact inverse CDF), the
    jitter added, kept if inside (the mass beyond 8 sigma, < 1e-15, is neglected)."""
    x0 = max(lo - node.delay_ns - 8 * jitter, 0.0)
    span = node.pulse_ns if early else np.inf
    x1 = min(hi - node.delay_ns + 8 * jitter, span)
    for _ in range(10_000):
        u = rng.random()
        if early:
            x = x0 + u * (x1 - x0) if x1 > x0 else x0
        else:
            tau = node.lifetime_ns
            s0, s1 = np.exp(-x0 / tau), np.exp(-x1 / tau)
            x = -tau * np.log(s0 - u * (s0 - s1))
        t = node.delay_ns + x + (rng.normal(0.0, jitter) if jitter > 0 else 0.0)
        if lo <= t <= hi:
            return float(t)
    raise RuntimeError("no photon of this node arrives in this window")


def _draw_delay(
    rng: np.random.Generator, heralding: Heralding, bit: int, union: np.ndarray
) -> float:
    if bit == DARK:
        lengths = union[:, 1] - union[:, 0]
        i = int(rng.choice(len(union), p=lengths / lengths.sum()))
        return float(rng.uniform(union[i, 0], union[i, 1]))
    node = heralding.a if bit in (A_PHOTON, A_EARLY) else heralding.b
    early = bit in (A_EARLY, B_EARLY)
    jitter = heralding.detectors.jitter_ns
    masses = _interval_masses(node, early, jitter, union)
    i = int(rng.choice(len(union), p=masses / masses.sum()))
    return _draw_in_interval(rng, node, early, jitter, union[i, 0], union[i, 1])


def sample_clicks(
    rng: np.random.Generator, heralding: Heralding, outcome: str
) -> list[tuple[int, int, float]]:
    """The herald's clicks: (round, detector index, delay ns after the sync): one per round
    (single-click, Barrett-Kok), two in round 0 (two-photon, in detector order).
    What fired the click (A's or B's photon, an early photon, a dark count, several) is drawn
    from the exact branch weights; each of those arrives inside the windows (a photon from
    its truncated wavepacket, a dark count uniformly) and the click is the first of them."""
    if outcome not in heralding.outcomes:
        raise ValueError(f"{outcome} does not herald here")
    probs = heralding.origins * _outcome_mask(heralding.protocol, outcome)
    index = int(rng.choice(len(probs), p=probs / probs.sum()))
    union = union_of_windows(heralding.windows)
    clicks = []
    per_click = _unflatten(index, heralding.clicks, heralding.n_detectors)
    for k, (detector, mask) in enumerate(per_click):
        delays = [_draw_delay(rng, heralding, bit, union) for bit in COMPONENTS if mask & bit]
        round_ = k if heralding.protocol == "barrett_kok" else 0
        clicks.append((round_, detector, min(delays)))
    return clicks


def bell_fidelity(state: np.ndarray, outcome: str) -> float:
    """<psi|state|psi> for psi_plus / psi_minus = (|01> +- |10>)/sqrt(2)."""
    sign = 1.0 if outcome == PSI_PLUS else -1.0
    return float(0.5 * (state[1, 1] + state[2, 2]).real + sign * state[1, 2].real)
