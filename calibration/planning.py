"""The controller's planning model of heralded entanglement: what the calibrated values promise.

Host-side and independent of the simulator's physics (which has its own). From each node's
initialisation fidelity and detection probability, the midpoint's dark counts in the
configured detection windows, the two-photon visibility and the interferometer's phase noise
it gives, per attempt, the success probability and the heralded two-node state, and from them
the alpha that meets a target fidelity at the highest rate.

Single-click (Humphreys et al., Nature 558, 268 (2018), Methods and SI): each node in
sqrt(alpha)|0> + sqrt(1-alpha)|1> (0: bright, it emits one photon per optical pi pulse), the
photons meet on a beam splitter, one click heralds psi+ (one detector) or psi- (the other).
To leading order F = (1 - alpha)(1 + sqrt(V) e^(-sigma^2/2)) / 2 and p = 2 alpha eta: the
heralded coherence is the photons' *amplitude* overlap, sqrt(V) for a Hong-Ou-Mandel
visibility V, times the phase noise's e^(-sigma^2/2). Barrett-Kok (Barrett & Kok, PRA 71,
060310 (2005)): both nodes in (|0> + |1>)/sqrt 2, a click, both flipped, a click; the
coherence carries one amplitude overlap per round, V in all, and the phase cancels:
F = (1 + V)/2 and p = eta^2 / 2 before dark counts.

The model here is not leading order in eta: every photon number is kept (each node's photon
reaches the detectors with its detection probability or is lost, and a lost photon leaves
which-path information behind), the detectors do not resolve photon number (two photons on
one detector are one click), and each detector counts darks with its probability per
attempt's detection windows (rate x the length of the union of the nodes' windows, as the
midpoint counts clicks in any of them). A herald is exactly one click in the round (the other
detector silent). Initialisation error: with probability 1 - F_init a node's memory starts in
|1> instead of |0> and is rotated like a good one (a qubit error: the pessimistic case, its
rotated state is mostly bright at small alpha and heralds often; leakage out of the qubit
would herald less).

What heralds is a node's photon *in the window*: the detection-window routine measures the
detection probability per excitation over the whole wavepacket and the photons' onset; its
window opens when the optical pulse is over (onset + OPTICAL_PULSE_NS) and is lifetime x ln
10 long; from the stored lifetime and onset, a window from t1 to t2 after the onset holds
e^(-t1/tau) - e^(-t2/tau) of the photons (a window three times as long holds nearly all that
follow the pulse, and sees three times the dark counts). Double excitation (Pompili et al.,
Science 372, 259 (2021); Hermans et al., Nature 605, 663 (2022), supplementary): with
probability p_double a bright node's optical pi pulse excites it twice, an early photon
leaves during the ~2 ns pulse (OPTICAL_PULSE_NS) and the normal one after; the early photon
marks the node (its branch carries no coherence) and, if it falls in the window (one that
opens at the onset), clicks like any photon: the single-click coherence falls by about 1 - 2
p_double (sqrt(1 - p) per node from the emission's coherent part, 1/(1 + p) per node from
the early photons' heralds), ~0.03 of fidelity at p_double 0.04 and alpha 0.1, Barrett-Kok
twice that (two rounds); a window that opens after the pulse keeps the early photons out and
halves the cost.

States are 4x4 density matrices over (A, B) in the basis |00>, |01>, |10>, |11>
(0 = bright); psi_plus/psi_minus are (|01> +- |10>)/sqrt 2.

Margin (`alpha_for_fidelity`, `Expectation`): the calibrated values carry errors (stored
ones: visibility_sigma, init_fidelity_sigma, double_excitation_sigma; else the DEFAULT_*
uncertainties below) and the fidelity's sensitivity to them is large at small alpha (an
initialisation error of 1e-3 moves F by about (1 - alpha)/(2 alpha) x 1e-3 when both nodes
have it). The planner propagates them to the fidelity (sigma_F, linearised) and asks the
*conservative* fidelity F - MARGIN_SIGMAS x sigma_F to meet the target: one sigma, so that
with the operator's 0.01 tolerance the delivered fidelity holds unless the calibration is
off by more than about twice its error, while the rate given up is only the slope of
F(alpha) times one sigma."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from qnode.errors import QnodeError

NOMINAL_VISIBILITY = 0.9
"""Assumed (and said so) until the visibility routine has measured it."""
NOMINAL_INIT_FIDELITY = 0.99
"""Assumed (and said so) until the readout routine has measured a node's initialisation: an
NV's usual spin pumping (an ion's is better; the margin costs it rate, not fidelity)."""
NOMINAL_PHASE_NOISE_DEG = 5.0
"""Assumed (and said so) while the locked phase noise is not calibrated: a stabiliser's
usual residual; 5 deg costs 0.2 % of fidelity at alpha 0.1."""

DEFAULT_SIGMA_VISIBILITY = 0.03
"""The visibility routine's typical error (1200 Barrett-Kok pairs), when none is stored."""
DEFAULT_SIGMA_INIT = 0.003
"""An initialisation fidelity's error when none is stored (3000 readout shots: ~0.002)."""
DEFAULT_SIGMA_PHASE_DEG = 3.0
DEFAULT_REL_SIGMA_DARK = 0.25
"""The dark-count routine's tolerance (its rate from a few hundred counts)."""
DEFAULT_REL_SIGMA_ETA = 0.1
"""The detection-window routine's tolerance on the detection probability."""
NOMINAL_DOUBLE_EXCITATION = 0.04
"""Assumed (and said so) until the detection-window routine has measured a node's double
excitation: an NV's usual (3-5 %); an ion's is lower (0.5-1.5 %), the margin costs it rate."""
DEFAULT_SIGMA_DOUBLE = 0.02
"""A double excitation's error when none is stored (or when it was assumed): the
detection-window routine's on a free-space NV's photons."""
NOMINAL_WINDOW_SHARE = 0.76
"""The share of a node's photons in its window when the lifetime is not stored: the
detection-window routine's window opens when the 2 ns pulse is over and holds 90 % of the
photons after it, 0.9 e^(-2/tau): 0.76 for an NV (12 ns), 0.70 for an ion (8 ns)."""
MARGIN_SIGMAS = 1.0
"""The planned-for fidelity is the expected one less this many sigma_F."""

OPTICAL_PULSE_NS = 2.0
"""The optical pi pulse's length, as the labs drive it: a double excitation's early photon
leaves during it (the detection_window routine fits them over it, the planning model puts
them in the windows over it)."""

OUTCOMES = ("psi_plus", "psi_minus")
_KET = np.eye(4)
PSI_PLUS = (_KET[1] + _KET[2]) / np.sqrt(2)
PSI_MINUS = (_KET[1] - _KET[2]) / np.sqrt(2)
_XX = np.fliplr(np.eye(4))  # both memories flipped: |00> <-> |11>, |01> <-> |10>


def bell_state(outcome: str) -> np.ndarray:
    psi = PSI_PLUS if outcome == "psi_plus" else PSI_MINUS
    return np.outer(psi, psi).astype(complex)


def fidelity(rho: np.ndarray, outcome: str) -> float:
    """<psi|rho|psi> for the outcome's Bell state."""
    psi = PSI_PLUS if outcome == "psi_plus" else PSI_MINUS
    return float(np.real(psi @ rho @ psi))


@dataclass(frozen=True)
class Uncertainty:
    """One-sigma errors of the calibrated inputs (absolute, except the relative ones)."""

    visibility: float = 0.0
    init_a: float = 0.0
    init_b: float = 0.0
    phase_rad: float = 0.0
    dark_rel: float = 0.0
    eta_rel: float = 0.0
    double_a: float = 0.0
    double_b: float = 0.0


@dataclass(frozen=True)
class Link:
    """What the planning model needs of the two nodes and the midpoint (best estimates)."""

    eta_a: float
    eta_b: float
    visibility: float
    dark_prob: float
    """Per detector, per attempt's detection windows (rate x window union)."""
    phase_sigma_rad: float = 0.0
    init_a: float = 1.0
    """Node A's initialisation fidelity: P(|0> after spin initialisation)."""
    init_b: float = 1.0
    double_a: float = 0.0
    """Node A's double excitation: P(its optical pi pulse gave an early photon as well)."""
    double_b: float = 0.0
    early_share_a: float = 1.0
    """A's early photon's detection probability in the windows over its normal photon's
    (eta_a): the early photons' in-window share over the normal photons'."""
    early_share_b: float = 1.0
    uncertainty: Uncertainty = field(default_factory=Uncertainty)

    @property
    def eta(self) -> float:
        return float(np.sqrt(self.eta_a * self.eta_b))


@dataclass(frozen=True)
class Herald:
    p_success: float
    """Per attempt, both outcomes together."""
    states: dict[str, np.ndarray]
    """Outcome -> the state of (A, B) given that outcome (normalised)."""
    weights: dict[str, float]
    """Outcome -> its share of the successes."""

    @property
    def fidelity(self) -> float:
        """Of a delivered pair: each outcome's state to its Bell state, by their shares (the
        Pauli frame makes psi- a psi+)."""
        return float(sum(w * fidelity(self.states[k], k) for k, w in self.weights.items()))


# one round: exactly one detector clicks --------------------------------------------------------
def _one_click(other_silent: float, none_detected: float, early: list[float], d: float) -> float:
    """P(this detector clicks, the other does not) from the probabilities that no normal
    photon reaches the other detector and that none is detected at all, with independent
    early photons (each detected with its probability, on either detector) and a dark-count
    probability d per detector: P(other silent) - P(both silent)."""
    silent_other, silent_both = other_silent * (1 - d), none_detected * (1 - d) ** 2
    for e in early:
        silent_other *= 1 - e / 2
        silent_both *= 1 - e
    return silent_other - silent_both


def _click(rho: np.ndarray, link: Link, sign: float, coherence: float) -> np.ndarray:
    """The unnormalised state after one round whose herald is a click on one detector (sign
    +1: the psi+ detector) and none on the other; its trace is that herald's probability.

    Per memory basis state, the photons (one per bright memory) reach the beam splitter with
    eta_a, eta_b or are lost; d is a detector's dark-count probability in the windows:
      |11>: no photon: a dark count on this detector only, d (1 - d);
      |01>: A's photon here (eta_a / 2) or lost and a dark count here, the other silent;
      |00>: none, one or both photons detected; both bunch onto one detector with
            probability (1 + V)/2 (Hong-Ou-Mandel), onto this one half of that;
    and only the |01><10| coherence survives: the branches where A's photon or B's photon
    made the click differ only in which memory emitted; with coherence = amplitude overlap
    x phase noise. Every other coherence pairs different photon numbers (or a photon lost to
    the environment with one not emitted) and is gone.

    Double excitation (Pompili et al., Science 372, 259 (2021) and Hermans et al., Nature
    605, 663 (2022), supplementary): with probability p_X a bright node's pi pulse excites it
    twice, an early photon leaves during the pulse and the normal one after. The early photon
    marks the node: it is detected with eta_X x early_share_X (on either detector, it does
    not interfere) and so can herald, or click on the other detector and spoil a herald, or
    is lost to the environment; in every case the branch's coherence is gone. The coherent
    part of the emission has amplitude sqrt(1 - p_X): the |01><10| coherence carries
    sqrt((1 - p_A)(1 - p_B)) and the diagonal gains the early photons' heralds, so a
    single-click state's coherence falls by about 1 - 2p at p_A = p_B = p."""
    ea, eb, d = link.eta_a, link.eta_b, link.dark_prob
    pa, pb = link.double_a, link.double_b
    xa, xb = ea * link.early_share_a, eb * link.early_share_b
    silent = 1 - d

    def doubles(bright_a: bool, bright_b: bool, other_silent: float, none: float) -> float:
        total = 0.0
        for a_double in (False, True) if bright_a else (False,):
            for b_double in (False, True) if bright_b else (False,):
                weight = (pa if a_double else 1 - pa) if bright_a else 1.0
                weight *= (pb if b_double else 1 - pb) if bright_b else 1.0
                early = [xa] * a_double + [xb] * b_double
                total += weight * _one_click(other_silent, none, early, d)
        return total

    out = np.zeros((4, 4), dtype=complex)
    out[3, 3] = rho[3, 3] * d * silent
    out[1, 1] = rho[1, 1] * doubles(True, False, 1 - ea / 2, 1 - ea)
    out[2, 2] = rho[2, 2] * doubles(False, True, 1 - eb / 2, 1 - eb)
    one = ea * (1 - eb) + eb * (1 - ea)
    none = (1 - ea) * (1 - eb)
    here_or_none = none + one / 2 + ea * eb * (1 + link.visibility) / 4
    out[0, 0] = rho[0, 0] * doubles(True, True, here_or_none, none)
    keep = math.sqrt((1 - pa) * (1 - pb))
    out[1, 2] = sign * coherence * keep * silent * math.sqrt(ea * eb) / 2 * rho[1, 2]
    out[2, 1] = np.conj(out[1, 2])
    return out


def _herald(parts: dict[str, np.ndarray]) -> Herald:
    weights = {k: float(np.trace(v).real) for k, v in parts.items()}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("nothing can herald from these states")
    states = {k: v / weights[k] if weights[k] > 0 else v for k, v in parts.items()}
    return Herald(total, states, {k: w / total for k, w in weights.items()})


def memory_state(bright: float, init_fidelity: float) -> np.ndarray:
    """A memory's 2x2 state after initialisation (|0> with init_fidelity, else |1>) and the
    rotation that takes |0> to sqrt(bright)|0> + sqrt(1 - bright)|1> (which takes |1> to
    -sqrt(1 - bright)|0> + sqrt(bright)|1>)."""
    f = init_fidelity
    pop = f * bright + (1 - f) * (1 - bright)
    coh = (2 * f - 1) * math.sqrt(bright * (1 - bright))
    return np.array([[pop, coh], [coh, 1 - pop]], dtype=complex)


def single_click(alpha: float, link: Link, alpha_b: float | None = None) -> Herald:
    """Each node in sqrt(alpha)|0> + sqrt(1-alpha)|1> (node B's alpha may differ), one
    optical pi pulse, exactly one click."""
    alpha_a, alpha_b = alpha, alpha if alpha_b is None else alpha_b
    for a in (alpha_a, alpha_b):
        if not 0 <= a <= 1:
            raise ValueError(f"alpha {a} must lie in [0, 1]")
    if alpha_a + alpha_b == 0:
        raise ValueError("neither node is bright: nothing can herald")
    rho = np.kron(memory_state(alpha_a, link.init_a), memory_state(alpha_b, link.init_b))
    c = math.sqrt(link.visibility) * math.exp(-(link.phase_sigma_rad**2) / 2)
    return _herald({"psi_plus": _click(rho, link, 1.0, c), "psi_minus": _click(rho, link, -1.0, c)})


def barrett_kok(link: Link) -> Herald:
    """Both nodes in (|0> + |1>)/sqrt 2; a click in each of two rounds with both memories
    flipped between. Same detector twice: psi+; one each: psi-. Each round's coherence
    carries sqrt(V); the interferometer phase cancels between the rounds. The states are
    after the second round."""
    rho = np.kron(memory_state(0.5, link.init_a), memory_state(0.5, link.init_b))
    c = math.sqrt(link.visibility)
    parts = {k: np.zeros((4, 4), complex) for k in OUTCOMES}
    for first in (1.0, -1.0):
        flipped = _XX @ _click(rho, link, first, c) @ _XX
        for second in (1.0, -1.0):
            parts["psi_plus" if first == second else "psi_minus"] += _click(
                flipped, link, second, c
            )
    return _herald(parts)


def two_photon(link: Link) -> Herald:
    """The ions' photonic qubits (Moehring et al., Nature 449, 68 (2007); Stephenson et al.,
    PRL 124, 110501 (2020)): each ion, pumped to |0> (with its initialisation fidelity; an ion
    left unpumped gives no heralding photon), is excited and emits one photon whose
    polarisation is entangled with its qubit; the photons meet on the beam splitter, each
    output feeds two detectors through a polarising beam splitter, and one H and one V click
    herald psi+ (same output) or psi- (different outputs).

    Of two detected photons, half give such a coincidence whatever their distinguishability,
    and the heralded coherence carries their overlap squared, V: F = (1 + V)/2, whatever the
    interferometer's phase. A double excitation marks its ion (the early photon carries its
    polarisation away: the ion is mixed, F 1/4 of what it heralds), and its early photon,
    if the window holds it, clicks like another photon. A lone photon and a dark count on
    one of the two detectors of the other polarisation herald a product state (F 1/4)."""
    wa, wb = link.eta_a * link.init_a, link.eta_b * link.init_b
    qa, qb = link.double_a, link.double_b
    d = link.dark_prob
    both = wa * wb / 2
    clean = both * (1 - qa) * (1 - qb)
    marked = both * (1 - (1 - qa) * (1 - qb))
    marked += (qa * link.early_share_a * wa * wb + qb * link.early_share_b * wb * wa) / 2
    lone = (wa * (1 - wb) + wb * (1 - wa)) * 2 * d * (1 - d) ** 2
    total = clean + marked + lone
    if total <= 0:
        raise ValueError("nothing can herald on this link")
    v = link.visibility
    states = {}
    for outcome, other in (("psi_plus", "psi_minus"), ("psi_minus", "psi_plus")):
        entangled = (1 + v) / 2 * bell_state(outcome) + (1 - v) / 2 * bell_state(other)
        states[outcome] = (clean * entangled + (marked + lone) * np.eye(4) / 4) / total
    return Herald(float(total), states, {"psi_plus": 0.5, "psi_minus": 0.5})


def _no_alpha(protocol: str, link: Link, alpha: float | None) -> Herald:
    if protocol == "single_click":
        return single_click(alpha or 0.0, link)
    return two_photon(link) if protocol == "two_photon" else barrett_kok(link)


# the margin ------------------------------------------------------------------------------------
def _shifted(link: Link) -> list[Link]:
    """The link with each uncertain input moved by one sigma towards a lower fidelity."""
    u = link.uncertainty
    out = []
    if u.visibility:
        out.append(replace(link, visibility=max(link.visibility - u.visibility, 0.0)))
    if u.init_a:
        out.append(replace(link, init_a=max(link.init_a - u.init_a, 0.5)))
    if u.init_b:
        out.append(replace(link, init_b=max(link.init_b - u.init_b, 0.5)))
    if u.phase_rad:
        out.append(replace(link, phase_sigma_rad=link.phase_sigma_rad + u.phase_rad))
    if u.dark_rel:
        out.append(replace(link, dark_prob=link.dark_prob * (1 + u.dark_rel)))
    if u.eta_rel:
        lower = 1 - u.eta_rel
        out.append(replace(link, eta_a=link.eta_a * lower, eta_b=link.eta_b * lower))
    if u.double_a:
        out.append(replace(link, double_a=min(link.double_a + u.double_a, 1.0)))
    if u.double_b:
        out.append(replace(link, double_b=min(link.double_b + u.double_b, 1.0)))
    return out


def fidelity_sigma(protocol: str, link: Link, alpha: float | None = None) -> float:
    """sigma_F: the calibrated values' errors propagated to the expected fidelity (linear,
    each input's one-sigma shift in quadrature)."""

    def f(at: Link) -> float:
        return _no_alpha(protocol, at, alpha).fidelity

    base = f(link)
    return float(math.sqrt(sum((base - f(s)) ** 2 for s in _shifted(link))))


def conservative_fidelity(protocol: str, link: Link, alpha: float | None = None) -> float:
    """The fidelity planned for: expected less MARGIN_SIGMAS x sigma_F."""
    herald = _no_alpha(protocol, link, alpha)
    return herald.fidelity - MARGIN_SIGMAS * fidelity_sigma(protocol, link, alpha)


def alpha_for_fidelity(target: float, link: Link) -> float:
    """The largest alpha (the highest rate) whose conservative single-click fidelity meets
    `target`. The fidelity falls as 1 - alpha at large alpha and again at small alpha, where
    dark counts and initialisation errors herald as often as photons: find the best alpha,
    then search above it. ValueError if the target is out of reach."""
    try:
        return largest_alpha(lambda a: conservative_fidelity("single_click", link, a), target)
    except OutOfReach as e:
        expected = single_click(e.alpha, link).fidelity
        raise ValueError(
            f"fidelity {target} is out of reach with this link (best {e.best:.3f} planned, "
            f"{expected:.3f} expected, at alpha {e.alpha:.3g})"
        ) from None


class OutOfReach(ValueError):
    """No alpha meets the target: the best value planned and its alpha."""

    def __init__(self, best: float, alpha: float) -> None:
        super().__init__(f"best {best:.3f} at alpha {alpha:.3g}")
        self.best, self.alpha = best, alpha


def largest_alpha(planned: Callable[[float], float], target: float) -> float:
    """The largest alpha in (0, 0.5] whose planned fidelity `planned(alpha)` meets `target`
    (single-click's, heralded or stored: each rises from small alpha, where dark counts and
    initialisation errors herald as often as photons, to a best alpha and falls after it as
    1 - alpha): golden section on log alpha for the best, bisection above it. OutOfReach if
    even the best misses the target."""
    lo, hi = 1e-6, 0.5
    for _ in range(80):  # golden section on log alpha (the best alpha may be small)
        a = math.exp(math.log(hi) - (math.log(hi) - math.log(lo)) / 1.618034)
        b = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) / 1.618034)
        if planned(a) >= planned(b):
            hi = b
        else:
            lo = a
    best = math.sqrt(lo * hi)
    if planned(best) < target:
        raise OutOfReach(planned(best), best)
    lo, hi = best, 0.5
    if planned(hi) >= target:
        return hi
    for _ in range(50):
        mid = (lo + hi) / 2
        if planned(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo


# from the parameter store ----------------------------------------------------------------------
def in_window(lifetime_ns: float, start_ns: float, length_ns: float, onset_ns: float) -> float:
    """The share of a node's (normal) photons, exponential of the lifetime from the onset,
    that arrive in the window [start, start + length] (the detectors' jitter, ~50 ps, is
    neglected against the lifetime)."""
    lo, hi = max(start_ns - onset_ns, 0.0), max(start_ns + length_ns - onset_ns, 0.0)
    return float(math.exp(-lo / lifetime_ns) - math.exp(-hi / lifetime_ns))


def early_in_window(start_ns: float, length_ns: float, onset_ns: float) -> float:
    """The share of a double excitation's early photons, uniform over the optical pulse from
    the onset, that arrive in the window."""
    lo, hi = max(start_ns, onset_ns), min(start_ns + length_ns, onset_ns + OPTICAL_PULSE_NS)
    return float(max(hi - lo, 0.0) / OPTICAL_PULSE_NS)


def _union(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Windows (start, length) as disjoint sorted (start, end) spans."""
    merged: list[list[float]] = []
    for start, stop in sorted((a, a + n) for a, n in windows if n > 0):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


def window_union_ns(windows: list[tuple[float | None, float]]) -> float:
    """The length of the union of the detection windows (start, length); a window without a
    start counts in full (an upper bound)."""
    unplaced = sum(n for s, n in windows if s is None)
    spans = _union([(s, n) for s, n in windows if s is not None])
    return float(unplaced + sum(stop - start for start, stop in spans))


LINK_PARAMETERS = (
    "detection_window_start_ns",
    "detection_window_ns",
    "detection_probability",
    "photon_onset_ns",
    "photon_lifetime_ns",
    "double_excitation",
    "double_excitation_sigma",
)
"""A node's values that belong to its photons at one midpoint (routine 'detection_window'):
the fibre to that midpoint sets their delay and so the window, its losses the detection
probability. They are stored under the midpoint's name, one set per node of its link
(`link_parameter`), so that a node between two midpoints has one set per link."""


def link_parameter(node: str, name: str) -> str:
    """The name, under a midpoint, of a node's value on that midpoint's link:
    B_detection_window_start_ns under M2 is B's window at M2."""
    return f"{node}_{name}"


def on_link(
    node_values: dict[str, float],
    midpoint_values: dict[str, float],
    node: str,
    node_level: bool = True,
) -> dict[str, float]:
    """A node's values as its link through this midpoint sees them: its photons' values at
    the midpoint (LINK_PARAMETERS, stored under the midpoint) over its own. Node-level photon
    values (set by hand, or stored before values were kept per link) stand in only where
    `node_level`: a node with one link, whose photons reach one midpoint. A node between two
    midpoints has none: another link's values would be taken for this one's."""
    values = dict(node_values)
    for name in LINK_PARAMETERS:
        scoped = midpoint_values.get(link_parameter(node, name))
        if scoped is not None:
            values[name] = scoped
        elif not node_level:
            values.pop(name, None)
    return values


def link_from_calibration(
    values: dict[str, dict[str, float]],
    nodes: list[str],
    midpoint: str,
    node_level: Collection[str] | None = None,
) -> tuple[Link, tuple[str, ...]]:
    """The planning model's inputs from calibrated parameters (station -> name -> value), with
    notes on what was assumed. A node's photon values are those of this midpoint's link
    (`on_link`; `node_level`: the nodes whose node-level values may stand in, the nodes with
    one link; None: every node, as in a two-node lab). Refuses (QnodeError) without the
    detection probabilities, the detection windows and the dark counts."""
    notes: list[str] = []
    a, b = nodes
    m = values[midpoint]
    values = {
        **values,
        **{n: on_link(values[n], m, n, node_level is None or n in node_level) for n in nodes},
    }
    missing_names = {
        "detection_probability": lambda v: v.get("detection_probability") is None,
        "detection_window_ns": lambda v: not v.get("detection_window_ns"),
    }
    missing = [
        f"{midpoint}.{link_parameter(n, name)}"
        for name, absent in missing_names.items()
        for n in nodes
        if absent(values[n])
    ]
    darks = [v for k, v in m.items() if k.startswith("dark_count_hz_")]
    if not darks:
        missing.append(f"{midpoint}.dark_count_hz_*")
    if missing:
        raise QnodeError("not calibrated: " + ", ".join(missing) + " (`qnode calibrate`)")
    visibility = m.get("visibility")
    sigma_v = m.get("visibility_sigma") or DEFAULT_SIGMA_VISIBILITY
    if visibility is None:
        visibility = NOMINAL_VISIBILITY
        sigma_v = max(sigma_v, 0.05)
        notes.append(f"visibility not calibrated: nominal {NOMINAL_VISIBILITY} assumed")
    phase_deg = m.get("phase_noise_deg")
    if phase_deg is None:
        phase_deg = NOMINAL_PHASE_NOISE_DEG
        notes.append(f"phase noise not calibrated: {NOMINAL_PHASE_NOISE_DEG:g} deg assumed")
    init: dict[str, float] = {}
    sigma_init: dict[str, float] = {}
    for n in nodes:
        sigma_init[n] = values[n].get("init_fidelity_sigma") or DEFAULT_SIGMA_INIT
        stored = values[n].get("init_fidelity")
        init[n] = NOMINAL_INIT_FIDELITY if stored is None else stored
        if stored is None:
            notes.append(
                f"{n}.init_fidelity not calibrated (routine 'readout'): {init[n]:g} assumed"
            )
    windows = [
        (values[n].get("detection_window_start_ns"), float(values[n]["detection_window_ns"]))
        for n in nodes
    ]
    window_ns = window_union_ns(windows)
    # the detection probability is per excitation, the whole wavepacket: what heralds is the
    # share in the windows, measured from the photons' onset (calibrated with the window; a
    # store without it: the window start is taken as the onset). The herald logic counts a
    # click in any node's window, so a node's photons count in the union of the windows.
    eta: dict[str, float] = {}
    early_share: dict[str, float] = {}
    double: dict[str, float] = {}
    sigma_double: dict[str, float] = {}
    spans = _union(
        [
            (float(values[n]["detection_window_start_ns"]), float(values[n]["detection_window_ns"]))
            for n in nodes
            if values[n].get("detection_window_start_ns") is not None
        ]
    )
    for n in nodes:
        length = float(values[n]["detection_window_ns"])
        lifetime = values[n].get("photon_lifetime_ns")
        start = values[n].get("detection_window_start_ns")
        onset = values[n].get("photon_onset_ns")
        if start is None:
            own = [(0.0, length)]
        else:
            zero = float(start) if onset is None else float(onset)
            own = [(a - zero, b - a) for a, b in spans]  # the windows after this node's onset
        if lifetime:
            share = sum(in_window(float(lifetime), a, n_, 0.0) for a, n_ in own)
        else:
            share = NOMINAL_WINDOW_SHARE
            notes.append(
                f"{n}.photon_lifetime_ns not calibrated (routine 'detection_window'): "
                f"its window assumed to hold {NOMINAL_WINDOW_SHARE:.0%} of its photons"
            )
        eta[n] = float(values[n]["detection_probability"]) * share
        early_share[n] = sum(early_in_window(a, n_, 0.0) for a, n_ in own) / share
        stored = values[n].get("double_excitation")
        sigma_double[n] = values[n].get("double_excitation_sigma") or DEFAULT_SIGMA_DOUBLE
        if stored is None:
            double[n] = NOMINAL_DOUBLE_EXCITATION
            sigma_double[n] = max(sigma_double[n], DEFAULT_SIGMA_DOUBLE)
            notes.append(
                f"{n}.double_excitation not calibrated (routine 'detection_window'): "
                f"{NOMINAL_DOUBLE_EXCITATION:g} assumed"
            )
        else:
            double[n] = float(stored)
    link = Link(
        eta_a=eta[a],
        eta_b=eta[b],
        visibility=float(visibility),
        dark_prob=float(np.mean(darks)) * window_ns * 1e-9,
        phase_sigma_rad=math.radians(phase_deg),
        init_a=float(init[a]),
        init_b=float(init[b]),
        double_a=double[a],
        double_b=double[b],
        early_share_a=early_share[a],
        early_share_b=early_share[b],
        uncertainty=Uncertainty(
            visibility=float(sigma_v),
            init_a=float(sigma_init[a]),
            init_b=float(sigma_init[b]),
            phase_rad=math.radians(DEFAULT_SIGMA_PHASE_DEG),
            dark_rel=DEFAULT_REL_SIGMA_DARK,
            eta_rel=DEFAULT_REL_SIGMA_ETA,
            double_a=float(sigma_double[a]),
            double_b=float(sigma_double[b]),
        ),
    )
    return link, tuple(notes)


def assumed(notes: tuple[str, ...]) -> tuple[str, ...]:
    """The notes that say a required value was assumed (not a nominal phase noise, which no
    routine measures yet, nor the 90 % window share of a node whose lifetime is not stored:
    the routine's own window holds that)."""
    return tuple(n for n in notes if "phase noise" not in n and "photon_lifetime_ns" not in n)


# the memory: a stored pair's expected fidelity -------------------------------------------------
#
# A node that holds a pair while it makes another link keeps its half in a memory qubit (an NV's
# 13C nuclear spin), moved there from the electron (the communication qubit). Three things cost
# the stored pair fidelity, each a calibrated input (`Memory`):
#
# 1. The move (electron -> memory, a SWAP of electron-nuclear gates): modelled as a depolarising
#    channel on the moved half, rho -> lam rho + (1 - lam) (I/2 (x) Tr_this rho), whose Bell
#    fidelity for a perfect pair is the calibrated move fidelity F_m = lam + (1 - lam)/4, so
#    lam = (4 F_m - 1)/3. A pair of fidelity F0 leaves the move with lam F0 + (1 - lam)/4 (the
#    depolarised part overlaps the Bell state by 1/4 whatever the pair was).
# 2. Entanglement attempts on another link (Blok et al., Faraday Discuss. 184, 173 (2015);
#    Reiserer et al., PRX 6, 021040 (2016); Kalb et al., PRA 97, 062330 (2018)): each attempt
#    resets the electron, whose spin state at a random time (the optical reset's and the
#    excited state's decay times) sets the nuclear spin's precession through the hyperfine
#    coupling dw; an attempt that disturbs the electron multiplies the memory's coherence by
#    e^(-(dw tau)^2/2), one that does not leaves it. The disturbed share grows with the
#    bright-state population alpha (the excited branch), so per attempt the coherence keeps
#        c(alpha) = 1 - alpha k,   k = 1 - e^(-(dw tau)^2/2) in (0, 1],
#    and after n attempts c^n: the decay is exponential in n with N_1/e(alpha) = -1/ln c(alpha)
#    ~ 1/(alpha k), inversely proportional to alpha. The calibration measures N_1/e at one
#    reference alpha (`c13_n_1e_at_alpha` at `c13_n_1e_alpha`), which fixes k. Each attempt also
#    turns the stored state by a mean phase (`c13_phase_per_attempt_deg`, at the same alpha):
#    known, so undone at readout; `memory_phase_deg` gives it after n attempts.
# 3. Storage time under dynamical decoupling: the coherence falls as e^(-t/T2) (`c13_t2_s`;
#    the decay's shape under decoupling is taken as a simple exponential, the planning
#    assumption: a stretched exponent is not modelled).
#
# Both dephase the memory half only (no flip): the populations stay, the coherence between
# |01> and |10> (the heralded subspace) is multiplied by d = c(alpha)^n e^(-t/T2). With P the
# population of that subspace and F the Bell fidelity after the move,
#     F(n, t) = P/2 + (F - P/2) d.
# A pair mixed of psi+ and psi- only (P = 1) after a perfect move gives the familiar
#     F(n, t) = 1/2 + (F0 - 1/2) d:
# n = 0, t = 0: F0 (times nothing: the move costs F0 -> lam F0 + (1 - lam)/4); n -> infinity:
# 1/2 (P/2 in general: a fully dephased pair is a classical mixture of |01> and |10>). A single-
# click pair holds a share alpha of |00> (both nodes bright, P ~ 1 - alpha), which ends at
# P/2: `stored_state` applies the channels to the heralded 4x4 state exactly.


@dataclass(frozen=True)
class Memory:
    """What the planning model needs of a node's memory qubit (the names the calibration stores
    them under: `c13_n_1e_at_alpha`, `c13_n_1e_alpha`, `c13_t2_s`, `c13_move_fidelity`)."""

    n_1e_at_alpha: float
    """Entanglement attempts until the memory's coherence falls to 1/e, at `alpha_ref`."""
    alpha_ref: float
    """The bright-state population of the attempts that measured `n_1e_at_alpha`."""
    t2_s: float
    """The memory's coherence time under dynamical decoupling (1/e), seconds."""
    move_fidelity: float
    """Bell fidelity a perfect pair keeps through the move from the electron to the memory."""
    phase_per_attempt_deg: float | None = None
    """The mean turn of the stored state per attempt at `alpha_ref` (`c13_phase_per_attempt_deg`;
    None: not calibrated). A known phase: the fidelities below assume it undone at readout."""

    def __post_init__(self) -> None:
        if not self.n_1e_at_alpha > 0:
            raise ValueError(f"N_1/e {self.n_1e_at_alpha} must be positive")
        if not 0 < self.alpha_ref <= 1:
            raise ValueError(f"the reference alpha {self.alpha_ref} must lie in (0, 1]")
        if not self.t2_s > 0:
            raise ValueError(f"the memory's T2 {self.t2_s} s must be positive")
        if not 0.25 <= self.move_fidelity <= 1:
            raise ValueError(f"the move's fidelity {self.move_fidelity} must lie in [0.25, 1]")
        if self.attempt_dephasing > 1:
            raise ValueError(
                f"N_1/e {self.n_1e_at_alpha:g} at alpha {self.alpha_ref:g} would need more than "
                "full dephasing per disturbed attempt (k > 1): not this model's memory"
            )

    @property
    def attempt_dephasing(self) -> float:
        """k: the coherence an attempt with the electron fully bright (alpha 1) takes away."""
        return (1 - math.exp(-1 / self.n_1e_at_alpha)) / self.alpha_ref

    @property
    def move_depolarising(self) -> float:
        """lam of the move's depolarising channel, from its Bell fidelity F_m = lam + (1-lam)/4."""
        return (4 * self.move_fidelity - 1) / 3


MEMORY_PARAMETERS = ("c13_n_1e_at_alpha", "c13_n_1e_alpha", "c13_t2_s", "c13_move_fidelity")
"""The calibrated parameters (per memory node) the planning model reads, in `Memory`'s order."""
PHASE_PARAMETER = "c13_phase_per_attempt_deg"
"""Read when stored (c13_dephasing stores it with N_1/e); the fidelities do not need it."""


def memory_attempt_decay(alpha: float, memory: Memory) -> float:
    """c(alpha): the memory coherence one entanglement attempt at bright population alpha keeps."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha {alpha} must lie in [0, 1]")
    return 1 - alpha * memory.attempt_dephasing


def memory_n_1e(alpha: float, memory: Memory) -> float:
    """Attempts at alpha until the memory's coherence falls to 1/e (inf at alpha 0)."""
    c = memory_attempt_decay(alpha, memory)
    return math.inf if c >= 1 else (0.0 if c <= 0 else -1 / math.log(c))


def memory_coherence(attempts: list[tuple[int, float]], seconds: float, memory: Memory) -> float:
    """d: the share of the stored half's coherence left after blocks of (attempts, alpha) on
    any links and `seconds` in the memory."""
    if seconds < 0:
        raise ValueError(f"storage time {seconds} s must not be negative")
    d = math.exp(-seconds / memory.t2_s)
    for n, alpha in attempts:
        if n < 0:
            raise ValueError(f"{n} attempts: must not be negative")
        d *= memory_attempt_decay(alpha, memory) ** n
    return d


def memory_phase_deg(attempts: list[tuple[int, float]], memory: Memory) -> float:
    """The stored state's expected turn (degrees, unwrapped) after blocks of (attempts, alpha):
    n x the calibrated phase per attempt, for blocks at the calibrated alpha only. The turn is
    the electron's time in |1> per attempt times dw: the dark share (1 - alpha) until the echo
    plus the bright share alpha after it and through the reset, so it is linear in alpha with
    an offset (docs/calibration.md, c13_dephasing); one calibrated alpha does not fix both, so
    another alpha is refused rather than scaled."""
    if memory.phase_per_attempt_deg is None:
        raise ValueError("the phase per attempt is not calibrated (c13_dephasing)")
    total = 0.0
    for n, alpha in attempts:
        if n < 0:
            raise ValueError(f"{n} attempts: must not be negative")
        if n and not math.isclose(alpha, memory.alpha_ref, rel_tol=1e-9):
            raise ValueError(
                f"the phase per attempt is calibrated at alpha {memory.alpha_ref:g}, not "
                f"{alpha:g} (it is linear in alpha with an offset: calibrate at this alpha)"
            )
        total += n * memory.phase_per_attempt_deg
    return total


def _on_qubit(op2: np.ndarray, qubit: int) -> np.ndarray:
    return np.kron(op2, np.eye(2)) if qubit == 0 else np.kron(np.eye(2), op2)


def stored_state(
    rho: np.ndarray,
    memory: Memory,
    attempts: list[tuple[int, float]] | None = None,
    seconds: float = 0.0,
    qubit: int = 1,
) -> np.ndarray:
    """A heralded pair (4x4 over the two nodes) after this node's half (`qubit` 0 or 1) was
    moved into the memory and then held through the attempts and the time: the move's
    depolarising channel, then dephasing of that half by memory_coherence."""
    lam = memory.move_depolarising
    other = np.trace(rho.reshape(2, 2, 2, 2), axis1=qubit, axis2=qubit + 2)
    mixed = np.kron(np.eye(2) / 2, other) if qubit == 0 else np.kron(other, np.eye(2) / 2)
    moved = lam * rho + (1 - lam) * mixed
    d = memory_coherence(attempts or [], seconds, memory)
    z = _on_qubit(np.diag([1.0, -1.0]), qubit)
    return (1 + d) / 2 * moved + (1 - d) / 2 * z @ moved @ z


def stored_fidelity(
    fidelity0: float,
    memory: Memory,
    attempts: list[tuple[int, float]] | None = None,
    seconds: float = 0.0,
    parity: float = 1.0,
) -> float:
    """F(n, t) = P/2 + (F - P/2) d of a pair heralded with Bell fidelity `fidelity0` whose
    population in the heralded subspace (|01>, |10>) is `parity` (1: a mixture of psi+ and
    psi- only), moved into the memory (F = lam F0 + (1 - lam)/4, P = lam P0 + (1 - lam)/2)
    and held (d = memory_coherence)."""
    if not 0 <= fidelity0 <= 1 or not 0 <= parity <= 1:
        raise ValueError(f"fidelity {fidelity0} and parity {parity} must lie in [0, 1]")
    lam = memory.move_depolarising
    f = lam * fidelity0 + (1 - lam) / 4
    p = lam * parity + (1 - lam) / 2
    return p / 2 + (f - p / 2) * memory_coherence(attempts or [], seconds, memory)


def attempts_before(
    fidelity_min: float,
    fidelity0: float,
    memory: Memory,
    alpha: float,
    attempts: list[tuple[int, float]] | None = None,
    seconds: float = 0.0,
    attempt_s: float = 0.0,
    parity: float = 1.0,
) -> int:
    """How many more attempts at alpha (each taking `attempt_s` of storage time) a stored pair
    takes before its expected fidelity falls below `fidelity_min`: the largest m with
    F(n + m, t + m attempt_s) >= fidelity_min; 0 if it is below already (or would fall
    below at the first); a large number (2**62) if nothing decays."""
    done = attempts or []
    now = stored_fidelity(fidelity0, memory, done, seconds, parity)
    if now < fidelity_min:
        return 0
    lam = memory.move_depolarising
    p = lam * parity + (1 - lam) / 2
    f = lam * fidelity0 + (1 - lam) / 4
    # F(m) = p/2 + (f - p/2) d0 r^m with r = c(alpha) e^(-attempt_s/T2): solve for m
    per = memory_attempt_decay(alpha, memory) * math.exp(-attempt_s / memory.t2_s)
    unbounded = 2**62
    if per >= 1 or f <= p / 2:
        return unbounded
    if per <= 0:
        return 0
    d0 = memory_coherence(done, seconds, memory)
    need = (fidelity_min - p / 2) / ((f - p / 2) * d0)
    if need <= 0:
        return unbounded
    m = int(min(math.floor(math.log(need) / math.log(per)), unbounded))
    # the logarithms round: step to the exact crossing
    while (
        m > 0
        and stored_fidelity(fidelity0, memory, [*done, (m, alpha)], seconds + m * attempt_s, parity)
        < fidelity_min
    ):
        m -= 1
    while (
        stored_fidelity(
            fidelity0, memory, [*done, (m + 1, alpha)], seconds + (m + 1) * attempt_s, parity
        )
        >= fidelity_min
    ):
        m += 1
    return m


# a pair planned for the memory -------------------------------------------------------------------
#
# A pair delivered into a memory is worth what is left of it when it is used, not what was
# heralded: the move and the hold before its use cost it fidelity. The link's alpha is chosen
# for that (`alpha_for_held_fidelity`): the conservative fidelity of the heralded pair (less
# MARGIN_SIGMAS sigma_F) carried through the memory's channels (`stored_fidelity`, affine in the
# heralded fidelity with slope lam d, so the margin shrinks by the same factor).


@dataclass(frozen=True)
class Hold:
    """A pair's half in a memory until its use: the memory, and the attempts (blocks of
    (attempts, alpha) on any link) and seconds it is expected to wait there first (none: used,
    or judged, right after the move)."""

    memory: Memory
    attempts: tuple[tuple[int, float], ...] = ()
    seconds: float = 0.0

    def after_move(self) -> Hold:
        """The same memory, right after the move (no hold)."""
        return Hold(self.memory)


def herald_parity(herald: Herald) -> float:
    """The heralded pair's population in the heralded subspace (|01>, |10>), its outcomes by
    their shares: a single-click pair's is about 1 - alpha (both nodes bright otherwise), and a
    fully dephased stored pair keeps half of it as fidelity."""
    return float(
        sum(
            w * (herald.states[k][1, 1] + herald.states[k][2, 2]).real
            for k, w in herald.weights.items()
        )
    )


def held_fidelity(herald: Herald, hold: Hold) -> float:
    """The expected Bell fidelity of a heralded pair moved into the memory and held:
    `stored_fidelity` of its fidelity and parity (affine in both, so the same as each outcome's
    state through `stored_state`, by the outcomes' shares)."""
    return stored_fidelity(
        herald.fidelity, hold.memory, list(hold.attempts), hold.seconds, herald_parity(herald)
    )


def held_sigma(sigma: float, hold: Hold) -> float:
    """sigma_F of the heralded pair carried through the memory: times lam d (the slope of the
    stored fidelity in the heralded one)."""
    d = memory_coherence(list(hold.attempts), hold.seconds, hold.memory)
    return sigma * hold.memory.move_depolarising * d


def conservative_held_fidelity(
    protocol: str, link: Link, holds: Sequence[Hold], alpha: float | None = None
) -> float:
    """The fidelity planned for a pair held in each of `holds` (both halves may be stored,
    each in its node's memory): the lowest of the holds' expected fidelities less
    MARGIN_SIGMAS x their sigma_F."""
    herald = _no_alpha(protocol, link, alpha)
    sigma = fidelity_sigma(protocol, link, alpha)
    return min(held_fidelity(herald, h) - MARGIN_SIGMAS * held_sigma(sigma, h) for h in holds)


def alpha_for_held_fidelity(target: float, link: Link, holds: Sequence[Hold]) -> float:
    """The largest single-click alpha whose conservative fidelity after the move and the
    holds meets `target` (OutOfReach, with the best planned and its alpha, if none does)."""
    if not holds:
        raise ValueError("no hold: use alpha_for_fidelity")
    return largest_alpha(
        lambda a: conservative_held_fidelity("single_click", link, holds, a), target
    )


def memory_from_calibration(values: dict[str, float], node: str) -> Memory:
    """The planning model's memory of `node` from its calibrated parameters (name -> value);
    refuses (QnodeError) naming what is not calibrated."""
    missing = [f"{node}.{name}" for name in MEMORY_PARAMETERS if values.get(name) is None]
    if missing:
        raise QnodeError("memory not calibrated: " + ", ".join(missing) + " (`qnode calibrate`)")
    phase = values.get(PHASE_PARAMETER)
    try:
        n_1e, alpha_ref, t2_s, move_fidelity = (float(values[name]) for name in MEMORY_PARAMETERS)
        return Memory(
            n_1e,
            alpha_ref,
            t2_s,
            move_fidelity,
            phase_per_attempt_deg=None if phase is None else float(phase),
        )
    except ValueError as e:
        raise QnodeError(f"{node}: calibrated memory out of range: {e}") from None
