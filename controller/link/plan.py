"""What a session plans: what the calibrated values promise (alpha chosen for the minimum
fidelity unless given, the success probability per attempt, the fidelity; from the
controller's planning model, calibration.planning), and what the nodes run for it (a round of
shots: check, shared sync, attempts until the herald, then measure or keep; the attempt
budget; alpha as a pulse amplitude; the plan of rounds).

A half delivered into a memory is planned for what is left of it when it is used: after the
move, and on a node with another link (a repeater) after the attempts that link is expected to
need (`storage_for`); docs/network.md, "Delivery into memory"."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from calibration.planning import (
    MARGIN_SIGMAS,
    Herald,
    Hold,
    Link,
    OutOfReach,
    alpha_for_fidelity,
    alpha_for_held_fidelity,
    barrett_kok,
    conservative_held_fidelity,
    fidelity_sigma,
    held_fidelity,
    held_sigma,
    link_from_calibration,
    memory_coherence,
    memory_from_calibration,
    single_click,
    two_photon,
)
from controller.labconfig import LabConfig, LinkConfig
from controller.link.messages import own_delivery
from controller.link.vocabulary import (
    MAX_ATTEMPTS,
    MIN_ATTEMPTS,
    ROUND_SHOTS_MAX,
    SOFTWARE_HERALD_WAIT_NS,
    SYNC_TIMEOUT_NS,
)
from qnode.errors import QnodeError
from sequences.library import bell_measurement
from sequences.memory import MemoryInit, MemoryReadout, SwapToMemory
from sequences.network_ops import ghz_operation
from sequences.operations import (
    CRCheck,
    EntanglementAttempt,
    Readout,
    Sequence,
    WaitSync,
    memory_check,
    pi_half_pulse,
)


# what the calibrated values promise ------------------------------------------------------------
@dataclass(frozen=True)
class Expectation:
    alpha: float | None
    p_success: float
    fidelity: float
    """Of the pair as heralded."""
    notes: tuple[str, ...] = ()
    fidelity_stored: float | None = None
    """A half delivered into memory: the pair's expected fidelity right after the move (the
    lowest of the stored halves'); None when no half is stored."""
    fidelity_at_use: float | None = None
    """... and at its expected time of use (after the other link's expected attempts, on a
    repeater; else the same as `fidelity_stored`)."""

    def as_dict(self) -> dict:
        out = {
            "alpha": self.alpha,
            "p_success": self.p_success,
            "fidelity": self.fidelity,
            "notes": list(self.notes),
        }
        if self.fidelity_stored is not None:
            out["fidelity_stored"] = self.fidelity_stored
            out["fidelity_at_use"] = self.fidelity_at_use
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Expectation:
        """As the initiator sent it in its link request."""
        stored, at_use = data.get("fidelity_stored"), data.get("fidelity_at_use")
        return cls(
            data.get("alpha"),
            float(data.get("p_success", 0.0)),
            float(data.get("fidelity", 0.0)),
            tuple(data.get("notes", ())),
            None if stored is None else float(stored),
            None if at_use is None else float(at_use),
        )


@dataclass(frozen=True)
class Storage:
    """A half of the pair to be delivered into a node's memory: where (`qubit`), and the hold
    planned before its use (`hold`: the memory's planning model, the attempts and seconds),
    said in words (`use`)."""

    qubit: str
    hold: Hold
    use: str

    @property
    def node(self) -> str:
        return self.qubit.split(".", 1)[0]


_PROTOCOL_NAMES = {"barrett_kok": "Barrett-Kok", "two_photon": "two-photon heralding"}


def _what(protocol: str, alpha: float | None) -> str:
    """What the fidelity is planned with, for a refusal."""
    if alpha is None:
        return f"{_PROTOCOL_NAMES.get(protocol, protocol)} on this link"
    return f"alpha {alpha:g}"


def _herald(protocol: str, link: Link, alpha: float | None) -> tuple[Herald, float | None]:
    if protocol == "two_photon":
        return two_photon(link), None
    if protocol == "barrett_kok" or alpha is None:
        return barrett_kok(link), None
    return single_click(alpha, link), alpha


def expectation(
    protocol: str,
    link: Link,
    fidelity_min: float,
    alpha: float | None,
    notes: tuple[str, ...] = (),
    storage: Collection[Storage] = (),
) -> Expectation:
    """The expected success per attempt and fidelity. The minimum fidelity is held against
    the conservative fidelity (expected less MARGIN_SIGMAS sigma_F from the calibrated values'
    errors, calibration.planning); alpha, unless given, is the largest that meets it. With
    `storage` (a half delivered into memory) the minimum is held against the fidelity after
    the move (refused if out of reach there) and alpha, unless given, is the largest that
    meets it at the expected time of use; where none does, the largest that meets it after
    the move, with a note that the pair is expected to be cut off before its use."""
    if storage:
        return _stored_expectation(protocol, link, fidelity_min, alpha, notes, storage)
    if protocol == "single_click" and alpha is None:
        try:
            alpha = alpha_for_fidelity(fidelity_min, link)
        except ValueError as e:
            raise QnodeError(f"minimum fidelity {fidelity_min}: {e}") from None
    herald, alpha = _herald(protocol, link, alpha)
    f = herald.fidelity
    sigma = fidelity_sigma(protocol, link, alpha)
    planned = f - MARGIN_SIGMAS * sigma
    if planned < fidelity_min:
        what = _what(protocol, alpha)
        raise QnodeError(
            f"minimum fidelity {fidelity_min} is out of reach with {what} (expected {f:.3f} "
            f"+- {sigma:.3f} from the calibrated values' errors)"
        )
    notes = (*notes, f"fidelity {f:.3f} +- {sigma:.3f} (calibrated values' errors)")
    return Expectation(alpha, herald.p_success, f, tuple(notes))


def _stored_expectation(
    protocol: str,
    link: Link,
    fidelity_min: float,
    alpha: float | None,
    notes: tuple[str, ...],
    storage: Collection[Storage],
) -> Expectation:
    """`expectation` of a pair with halves delivered into memory (see there)."""
    at_use = [s.hold for s in storage]
    moved = [h.after_move() for h in at_use]
    where = " and ".join(s.qubit for s in storage)
    move = " and ".join(
        f"{s.hold.memory.move_fidelity:g} ({s.node}.c13_move_fidelity)" for s in storage
    )
    if protocol == "single_click" and alpha is None:
        try:
            alpha = alpha_for_held_fidelity(fidelity_min, link, at_use)
        except OutOfReach:
            try:
                alpha = alpha_for_held_fidelity(fidelity_min, link, moved)
            except OutOfReach as e:
                raise QnodeError(
                    f"minimum fidelity {fidelity_min} is out of reach for a pair stored in "
                    f"{where}: the move into memory keeps {move} of a perfect pair, so even the "
                    f"best alpha ({e.alpha:.3g}, heralded "
                    f"{single_click(e.alpha, link).fidelity:.3f}) leaves {e.best:.3f} planned "
                    "after the move (expected less one sigma of the calibrated values' errors)"
                ) from None
    herald, alpha = _herald(protocol, link, alpha)
    f, sigma = herald.fidelity, fidelity_sigma(protocol, link, alpha)
    after_move = min(held_fidelity(herald, h) for h in moved)
    move_sigma = max(held_sigma(sigma, h) for h in moved)
    if conservative_held_fidelity(protocol, link, moved, alpha) < fidelity_min:
        what = _what(protocol, alpha)
        raise QnodeError(
            f"minimum fidelity {fidelity_min} is out of reach for a pair stored in {where}: "
            f"the move into memory keeps {move} of a perfect pair, so {what} (heralded "
            f"{f:.3f}) leaves {after_move:.3f} +- {move_sigma:.3f} after the move"
        )
    used = min(held_fidelity(herald, h) for h in at_use)
    notes = (
        *notes,
        f"fidelity {f:.3f} +- {sigma:.3f} (calibrated values' errors) as heralded, "
        f"{after_move:.3f} after the move into {where}",
    )
    for s in storage:
        if s.hold.attempts or s.hold.seconds:
            notes = (*notes, f"{s.qubit}: {s.use}: expected {held_fidelity(herald, s.hold):.3f}")
    if conservative_held_fidelity(protocol, link, at_use, alpha) < fidelity_min:
        notes = (
            *notes,
            f"the stored pair is expected to be cut off before its use (expected {used:.3f} "
            f"+- {max(held_sigma(sigma, h) for h in at_use):.3f} then, minimum "
            f"{fidelity_min:g}): it is used only if the other link heralds early",
        )
    return Expectation(alpha, herald.p_success, f, tuple(notes), after_move, used)


def stored_pair_alpha(alpha: float | None, protocol: str) -> tuple[float, int]:
    """(alpha, stored-pair attempts per attempt) of a link's attempts, as the memory's planning
    model takes them: single-click its alpha once; Barrett-Kok two excitations at half the
    population bright (as controller.link.node_link.memory_alpha_of)."""
    if protocol == "single_click" and alpha is not None:
        return float(alpha), 1
    return 0.5, 2


Parameters = Callable[[str], dict[str, float]]
"""A station's calibrated parameters (name -> value) by its name."""


def link_plan(
    lab: LabConfig,
    parameters: Parameters,
    node: str,
    peer: str,
    protocol: str,
    fidelity_min: float,
    alpha: float | None = None,
    deliveries: tuple[str, str] = ("keep", "keep"),
) -> Expectation:
    """What a session of `node` with `peer` would expect from the calibrated values (alpha,
    success per attempt, fidelity), `deliveries` being (node's, peer's): a half delivered into
    memory is planned with its `storage_for`."""
    nodes = [node, peer]
    midpoint = lab.link_between(node, peer)[1].midpoint
    values = {n: parameters(n) for n in (*nodes, midpoint)}
    # a node between midpoints has its photon values per link, under each midpoint
    one_link = [n for n in nodes if len(lab.links_of(n)) == 1]
    link, notes = link_from_calibration(values, nodes, midpoint, one_link)
    calibrated = values[midpoint].get("single_click_alpha")
    single = protocol == "single_click"  # the one protocol with an alpha
    if alpha is None and not fidelity_min and calibrated and single:
        alpha = calibrated  # the alpha routine's choice for its target fidelity
        notes = (*notes, f"alpha {calibrated:.4f} from calibration (routine 'alpha')")
    storage = [
        storage_for(lab, parameters, storing, other, protocol, fidelity_min)
        for storing, other, delivery in ((node, peer, deliveries[0]), (peer, node, deliveries[1]))
        if delivery == "memory"
    ]
    return expectation(protocol, link, fidelity_min, alpha, notes, storage)


def storage_for(
    lab: LabConfig,
    parameters: Parameters,
    storing: str,
    peer: str,
    protocol: str,
    fidelity_min: float,
) -> Storage:
    """The hold planned for a half `storing` keeps in its memory from a link with `peer`: on
    a node with no other link, none (the pair is judged right after the move); on a repeater,
    the attempts its other link is expected to need before it heralds (1 / p at the alpha that
    link would plan for the same minimum, the worst of its other links), each an attempt
    window long (docs/network.md, "Delivery into memory"). The time a session takes through
    the daemons beyond its attempts is not planned (the cut-off charges it as it passes)."""
    memory = memory_from_calibration(parameters(storing), storing)
    qubit = f"{storing}.{lab.nodes[storing].memories[0]}"
    hold, use = Hold(memory), "used right after the move"
    for name, other in lab.links_of(storing).items():
        if other.peer(storing) == peer:
            continue
        try:
            then = link_plan(lab, parameters, storing, other.peer(storing), protocol, fidelity_min)
        except QnodeError as e:
            use = f"{use} (link {name} cannot be planned: {e})"
            continue
        stored_alpha, per_attempt = stored_pair_alpha(then.alpha, protocol)
        attempts = math.ceil(1 / then.p_success) if then.p_success > 0 else MAX_ATTEMPTS
        window_ns = parameters(storing).get("herald_window_ns", 0.0)
        attempt_s = attempt_window_ns(float(window_ns), other) * 1e-9
        candidate = Hold(memory, ((attempts * per_attempt, stored_alpha),), attempts * attempt_s)
        if memory_coherence(list(candidate.attempts), candidate.seconds, memory) < memory_coherence(
            list(hold.attempts), hold.seconds, memory
        ):
            alpha_said = "" if then.alpha is None else f" at alpha {then.alpha:.3g}"
            hold = candidate
            use = f"used after link {name}'s expected {attempts} attempts{alpha_said}"
    return Storage(qubit, hold, use)


# what the nodes run ----------------------------------------------------------------------------

POST_CHECK_THRESHOLD = 2
"""A memory that lost its charge state (cooling) gives next to no counts in a check; a ready
one gives the calibrated mean (tens). Two counts tell them apart without discarding the
ready ones that a full check's threshold would (one in ten)."""


def alpha_amplitude(pi_amplitude_v: float, alpha: float) -> float:
    """From the bright |0>, a rotation by theta leaves cos^2(theta/2) = alpha bright."""
    if not 0 < alpha < 1:
        raise QnodeError(f"alpha {alpha} must lie in (0, 1)")
    return pi_amplitude_v * 2 * math.acos(math.sqrt(alpha)) / math.pi


def max_attempts(p_success: float) -> int:
    """Attempts per shot before it gives up and checks the memory again: ten expected
    waits (a memory that went dark must not hold the loop forever; a good one exhausts
    once in e^10 shots)."""
    if p_success <= 0:
        return MAX_ATTEMPTS
    return int(min(MAX_ATTEMPTS, max(MIN_ATTEMPTS, math.ceil(10 / p_success))))


def round_trip_ns(link: LinkConfig) -> float:
    """From an excitation to its herald back at the node further from the midpoint: its
    photon's way to the midpoint and the herald's way back (2 x the longer fibre delay). No
    node can learn an attempt's fate sooner, so no attempt can be shorter."""
    return 2e9 * max(link.delay_s(node) for node in link.nodes)


def attempt_window_ns(herald_window_ns: float, link: LinkConfig) -> float:
    """The herald wait of an attempt on this link: the calibrated wait after the excitation
    (a lab's metres of fibre) plus the link's round trip."""
    return herald_window_ns + round_trip_ns(link)


def memory_still_there(check: CRCheck) -> CRCheck:
    """One check after the readout: fails (and flags the shot) if the memory is gone."""
    return replace(check, threshold=POST_CHECK_THRESHOLD, max_tries=1)


def round_sequence(
    platform: str,
    protocol: str,
    shots: int,
    basis: str,
    alpha_amplitude_v: float | None,
    attempts: int = MAX_ATTEMPTS,
    heralding: str = "hardware",
    window_ns: float | None = None,
    port: int = 0,
    memory: str = "c13",
    protect_memory: bool = False,
    echo: bool = False,
    frame_deg: float = 0.0,
    attempt_phase_deg: float = 0.0,
    memory_basis: str = "",
    last_shot_on_herald: bool = False,
) -> Sequence:
    """Per shot: check, wait for the shared sync, attempt until the herald, then measure in
        the basis (X: pi/2 about y, Y: pi/2 about x, Z: none) or keep. With software heralding
        each attempt waits (up to SOFTWARE_HERALD_WAIT_NS) for the node to forward its outcome;
        else `window_ns` (attempt_window_ns: the link's round trip included) or the calibrated
        herald_window_ns. `port`: the link's sync/herald input pair on this node. Basis
    "memory": right after the herald, in the same program (no time lost), the half moves into
    the memory qubit `memory` (SwapToMemory; the electron is then free); the memory is reset
    after the charge check (MemoryInit: a state along z keeps no frame through the sync wait),
    so the round's attempts (hold_attempts at most) start from a fresh |0>. Basis "bsm": right after
    the herald, in the same program (no program boundary: the electron's half keeps its phase;
    no charge check: its light would destroy it), the Bell-state measurement of the electron's
    half and the pair `memory` stores (sequences.library.bell_measurement, on the stored
    pair's epoch frame): `frame_deg` undoes the stored state's known turn before this program
    (its earlier attempts), `attempt_phase_deg` per attempt of this program's loop is fed
    forward in real time (ALIGN's register term); the attempts protect the stored pair (the
    echo, whole Larmor periods). Both readouts, then the charge check that flags the shot.
    Basis "ghz": likewise, the GHZ operation (sequences.network_ops.ghz_operation) of the
    electron's half and the stored pair, which the memory keeps: the electron's readout, and
    no charge check after (its light would dephase the memory's half); or, with
    `memory_basis`, the memory's half read in that basis at once after it (MemoryReadout in
    the frame the program keeps: no program boundary between the gate and the readout), then
    the charge check that flags the shot. `last_shot_on_herald`: the program ends after the
    shot that heralded (one_pair_round)."""
    check = memory_check(platform)
    extra: dict = {
        "port": port,
        "protect_memory": protect_memory,
        "echo": echo,
        "last_shot_on_herald": last_shot_on_herald,
    }
    if heralding == "software":
        extra["window_ns"] = max(SOFTWARE_HERALD_WAIT_NS, window_ns or 0.0)
    elif window_ns is not None:
        extra["window_ns"] = window_ns
    if protocol == "single_click":
        if alpha_amplitude_v is None:
            raise QnodeError("single-click needs the amplitude of its alpha rotation")
        attempt = EntanglementAttempt(
            protocol, alpha_amplitude_v=alpha_amplitude_v, max_attempts=attempts, **extra
        )
    else:
        attempt = EntanglementAttempt(protocol, max_attempts=attempts, **extra)
    if basis in ("bsm", "ghz") and not (protect_memory and echo):
        raise QnodeError(
            f"a {basis} round's attempts protect the stored pair: protect_memory, echo"
        )
    ops = [check, WaitSync(SYNC_TIMEOUT_NS, port), attempt]
    if basis == "bsm":
        bsm = bell_measurement(
            memory, frame_deg=frame_deg, epoch=True, attempt_phase_deg=attempt_phase_deg
        )
        ops += [*bsm.operations, memory_still_there(check)]
    elif basis == "ghz":
        ghz = ghz_operation(
            memory, frame_deg=frame_deg, epoch=True, attempt_phase_deg=attempt_phase_deg
        )
        ops += list(ghz.operations)
        if memory_basis:
            ops += [MemoryReadout(memory, basis=memory_basis.lower()), memory_still_there(check)]
    elif basis == "memory":
        # the memory initialised after the charge check, in the round's own program: a state
        # along z needs no frame through the sync wait; each round (at most hold_attempts
        # attempts) starts from a fresh |0>
        ops.insert(1, MemoryInit(memory, epoch=True))
        ops.append(SwapToMemory(memory, epoch=True))  # its frame: for a later program
    elif basis == "X":
        ops.append(pi_half_pulse(90.0))
    elif basis == "Y":
        ops.append(pi_half_pulse(0.0))
    if basis not in ("keep", "memory", "bsm", "ghz"):
        # the memory checked again after its readout: a memory that lost its charge state
        # (or its cooling) reads dark whatever its spin; that shot is no measurement
        ops += [Readout(), memory_still_there(check)]
    return Sequence(f"entangle_{protocol}_{basis}", tuple(ops), shots)


def one_pair_round(request: dict) -> bool:
    """A round wants one pair: a side stores or keeps its half (a later shot's attempts would
    overwrite it), so the round's program ends at its first herald (last_shot_on_herald)."""
    return bool({"memory", "keep"} & {request["delivery"], request.get("peer_delivery")})


ONE_PAIR_ROUND_ODDS = 3.0
"""A round that wants one pair runs enough shots that it heralds with probability 1 - e^-3
(95 %): one program where a memory waiting in |0> (hold_attempts a shot) needs many shots."""


def one_pair_round_shots(request: dict, p_success: float, attempts_per_shot: int) -> int:
    """Shots of a round that wants one pair (one_pair_round), the program ending at its herald:
    one while a stored pair is on either node (`echo`: its budget is checked between shots,
    a round at a time); else ONE_PAIR_ROUND_ODDS expected heralds' worth of attempts, at most
    ROUND_SHOTS_MAX shots."""
    if request.get("echo") or p_success <= 0:
        return 1
    shots = math.ceil(ONE_PAIR_ROUND_ODDS / (p_success * max(1, attempts_per_shot)))
    return int(min(ROUND_SHOTS_MAX, max(1, shots)))


def announced_delivery(request: dict) -> str:
    """The delivery the initiator plans its rounds on (the basis it announces): a side that
    verifies follows it, any other side does its own delivery (round_basis). Verification
    is both sides' or neither's (check_request)."""
    deliveries = (request["delivery"], request.get("peer_delivery") or request["delivery"])
    for delivery in deliveries:
        if delivery not in ("memory", "keep", "bsm", "ghz"):
            return str(delivery)
    return "keep"


def round_basis(request: dict, initiator: bool, announced: str) -> str:
    """What this side does with its half in a round: its own delivery (memory: stores it;
    keep; X, Y, Z: measures), or, verifying, the basis the initiator announced."""
    own = own_delivery(request, initiator)
    return announced if own == "verify" else own


def shares(delivery: str, pairs: int) -> dict[str, int]:
    """The pairs each basis delivers: verification a third each of X, Y and Z (the first
    bases take the remainder, so that they add up to `pairs`: 34/33/33 for 100), else all
    in the one basis (or kept)."""
    if delivery == "verify":
        third, rest = divmod(pairs, 3)
        return {b: third + (1 if k < rest else 0) for k, b in enumerate(("X", "Y", "Z"))}
    return {delivery: pairs}


def plan_round(delivery: str, pairs: int, delivered: dict[str, int]) -> tuple[str, int]:
    """The basis and shots of the next round. Verification measures its share of the pairs
    in each of X, Y and Z: the round goes to the basis furthest from its share. A couple of
    shots more than needed, as some heralds are discarded (those beyond the share are
    discarded too: the session delivers exactly `pairs`). A kept pair stays in the memory
    only until the next shot: a keep round is one shot, its pair the one the memory holds; a
    memory, bsm or ghz round is one shot (the memory holds one pair, or its BSM or GHZ
    operation uses it)."""
    share = shares(delivery, pairs)
    basis = max(share, key=lambda b: share[b] - delivered.get(b, 0))
    if basis in ("keep", "memory", "bsm", "ghz"):
        return basis, 1
    shots = max(share[basis] - delivered.get(basis, 0), 1)
    return basis, int(min(ROUND_SHOTS_MAX, shots + 2))
