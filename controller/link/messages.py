"""The link protocol's messages, declared once: what a node's peer, its operator and its
midpoint may send it, and what a node may send the midpoint. Every message is checked
against its schema on receipt (controller.messaging.wire.unpack), so handlers see only
well-formed fields; `check_request` then checks an entanglement request's ranges and the
node's calibration."""

from __future__ import annotations

from controller.labconfig import LabConfig
from controller.link.vocabulary import (
    BASES,
    DELIVERY,
    HERALDING,
    HOLD_ATTEMPTS_MAX,
    HOLD_ATTEMPTS_MIN,
    MEMORY_BASES,
    ONE_PAIR_DELIVERIES,
    ONE_ROUND,
    OUTCOMES,
    PROTOCOLS,
    SESSION_ENDS,
)
from controller.messaging.wire import REPLY, Kind, Schema, vocabulary
from qnode.errors import QnodeError
from sequences.network_ops import STATE_PREPARATIONS

NUMBER: Kind = (int, float)


class _Contents(type):
    """A Kind that looks inside its value too: the schema's check is isinstance, and
    isinstance asks the class's `accepts`; its name says what it takes."""

    def __instancecheck__(cls, value: object) -> bool:
        return bool(cls.accepts(value))

    def accepts(cls, value: object) -> bool:
        raise NotImplementedError


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Names(metaclass=_Contents):
    """A list of strings (node names)."""

    SAMPLE: list = []

    @classmethod
    def accepts(cls, value: object) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)


Names.__name__ = "list of str"


class ExpectationMap(metaclass=_Contents):
    """The initiator's expectation in a link request (controller.link.plan.Expectation):
    alpha (a number or None), p_success and fidelity (numbers), notes (strings); with a half
    delivered into memory fidelity_stored and fidelity_at_use (numbers)."""

    SAMPLE: dict = {}
    NUMBERS = ("p_success", "fidelity", "fidelity_stored", "fidelity_at_use")

    @classmethod
    def accepts(cls, value: object) -> bool:
        if not isinstance(value, dict):
            return False
        notes = value.get("notes", [])
        return (
            all(_number(value[k]) for k in cls.NUMBERS if k in value)
            and (value.get("alpha") is None or _number(value["alpha"]))
            and isinstance(notes, list)
            and all(isinstance(n, str) for n in notes)
        )


ExpectationMap.__name__ = "map of alpha, p_success, fidelity (numbers) and notes (str)"

SHORT_TEXT_CHARS = 200


class ShortText(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return isinstance(value, str) and len(value) <= SHORT_TEXT_CHARS


ShortText.__name__ = f"str of at most {SHORT_TEXT_CHARS} characters"

REQUEST_FIELDS: dict[str, Kind] = {
    "pairs": int,
    "protocol": str,
    "fidelity_min": NUMBER,
    "deadline_s": NUMBER,
}
REQUEST_OPTIONS: dict[str, Kind] = {
    "delivery": str,
    "peer_delivery": str,
    "alpha": NUMBER,
    "heralding": str,
    "memory_basis": str,
}
REQUEST_CHOICES = {
    "protocol": PROTOCOLS,
    "delivery": DELIVERY,
    "peer_delivery": DELIVERY,
    "heralding": HERALDING,
    "memory_basis": ("", *MEMORY_BASES),
}

# node -> node --------------------------------------------------------------------------------
PEER = vocabulary(
    Schema(
        "link_request",
        {"session": str, "nodes": Names, **REQUEST_FIELDS},
        {**REQUEST_OPTIONS, "expected": ExpectationMap, "echo": bool, "hold_attempts": int},
        REQUEST_CHOICES,
    ),
    Schema(
        "link_round",
        {"session": str, "round": int, "first_shot": int, "shots": int, "basis": str},
        choices={"basis": BASES},
    ),
    Schema("round_done", {"session": str, "round": int, "status": str}, notification=True),
    Schema(
        "pair_check",
        {"session": str, "shot": int, "attempt": int, "outcome": int, "ok": bool, "reason": str},
        notification=True,
    ),
    Schema(
        "pair_decision",
        {
            "session": str,
            "shot": int,
            "attempt": int,
            "outcome": int,
            "delivered": bool,
            "reason": str,
        },
        notification=True,
    ),
    Schema("pair_recorded", {"session": str, "shot": int}, notification=True),
    Schema(
        "link_end", {"session": str, "state": str, "reason": str}, choices={"state": SESSION_ENDS}
    ),
    Schema("peer_heartbeat", {"session": str}, notification=True),
    Schema("session_pairs", {"session": str}),
    # a stored pair's cut-off, to the node holding its other half (node_link.py)
    Schema("pair_cut_off", {"pair_id": ShortText, "reason": ShortText}, notification=True),
)

# operator -> node ----------------------------------------------------------------------------
OPERATOR = vocabulary(
    Schema(
        "entangle",
        {"pairs": int, "protocol": str},
        {"fidelity_min": NUMBER, "deadline_s": NUMBER, **REQUEST_OPTIONS, "peer": str},
        REQUEST_CHOICES,
    ),
    Schema("session", {"session": str}),
    Schema("session_data", {"session": str}),
    Schema("memory", {}),
    Schema("memory_measure", {"basis": str}, {"pair": str}, {"basis": MEMORY_BASES}),
    Schema("bell_measurement"),
    Schema("bsm_result", {"session": str}),
    Schema(
        "prepare_memory",
        {"state": str, "peer": str},
        {},
        {"state": tuple(STATE_PREPARATIONS)},
    ),
)

# midpoint -> node ----------------------------------------------------------------------------
FROM_MIDPOINT = vocabulary(
    REPLY,
    Schema(
        "herald",
        {"session": str, "seq": int, "shot": int, "sync": int, "attempt": int, "outcome": str},
        {"reason": str},
        {"outcome": OUTCOMES},
    ),
    Schema("heartbeat", {"session": str, "instance": str}),
    Schema("session_ended", {"session": str, "reason": str}),
)
FROM_PEER = vocabulary(REPLY)
"""On a node's DEALER to its peer only replies arrive (the peer's messages reach its ROUTER)."""

# node -> midpoint ----------------------------------------------------------------------------
TO_MIDPOINT = vocabulary(
    Schema("hello", {"node": str}),
    Schema("heartbeat", {"node": str}, {"session": str}, notification=True),
    Schema(
        "session_start",
        {"node": str, "session": str, "protocol": str, "nodes": Names},
        {"heralding": str},
        {"protocol": PROTOCOLS, "heralding": HERALDING},
    ),
    Schema("session_end", {"node": str, "session": str}),
)


# the entanglement request's ranges ---------------------------------------------------------
MAX_PAIRS = 10**7


REQUEST_DEFAULTS = {
    "fidelity_min": 0.0,
    "deadline_s": 600.0,
    "delivery": "verify",
    "alpha": None,
    "heralding": "hardware",
    "memory_basis": "",
}
"""`memory_basis`: with delivery ghz, the memory's half is read in that basis right after the
GHZ operation, in the same program ("": kept in the memory)."""
MEMORY_NEEDS = (
    "tau_ns",
    "n_pulses",
    "larmor_hz",
    "omega1_hz",
    "n_1e_at_alpha",
    "n_1e_alpha",
    "t2_s",
    "move_fidelity",
)
"""A memory delivery's calibration (`<memory>_<quantity>`): the gates the move is compiled
from, and the dephasing per attempt that a stored pair's fidelity is planned with."""


def request_from(msg: dict) -> dict:
    """The operator's `entangle` message as a request, with the defaults filled in."""
    request = {"pairs": msg["pairs"], "protocol": msg["protocol"]}
    for name, default in REQUEST_DEFAULTS.items():
        value = msg.get(name)
        request[name] = default if value is None else value
    peer_delivery = msg.get("peer_delivery")
    request["peer_delivery"] = request["delivery"] if peer_delivery is None else peer_delivery
    return request


def own_delivery(request: dict, initiator: bool) -> str:
    """This side's delivery: the initiator's `delivery`, the responder's `peer_delivery` (the
    same as `delivery` unless given)."""
    if initiator:
        return str(request["delivery"])
    return str(request.get("peer_delivery") or request["delivery"])


def check_memory_delivery(lab: LabConfig, node: str, values: dict[str, float]) -> str:
    """The memory qubit a pair's half on `node` goes into, or a QnodeError naming what is
    missing (before any attempt)."""
    config = lab.nodes[node]
    if config.memory_platform != "nv":
        raise QnodeError(
            f"delivery into memory needs an NV node with a 13C memory; {node} is "
            f"{config.memory_platform} (its platform has no memory operation in qnode yet)"
        )
    if not config.memories:
        raise QnodeError(
            f"delivery into memory: node {node} has no memory qubit (lab file `memories`)"
        )
    memory = config.memories[0]
    missing = [f"{memory}_{q}" for q in MEMORY_NEEDS if f"{memory}_{q}" not in values]
    if missing:
        raise QnodeError(
            f"delivery into memory: node {node}'s memory {memory} is not calibrated: "
            f"{', '.join(missing)} (qnode calibrate --node {node} runs its routines)"
        )
    return memory


def check_request(
    request: dict, lab: LabConfig, node: str, peer: str, values: dict[str, float]
) -> None:
    """Raises QnodeError naming what is wrong. The fields' types and choices were checked on
    receipt (the schemas above); this checks their ranges and the node's state of
    calibration (`values`: this node's calibrated parameters)."""
    if not 1 <= request["pairs"] <= MAX_PAIRS:
        raise QnodeError(f"pairs must be 1..1e7, got {request['pairs']}")
    if not 0.0 <= request["fidelity_min"] < 1.0:
        raise QnodeError(f"minimum fidelity must be in [0, 1), got {request['fidelity_min']}")
    if not request["deadline_s"] > 0:
        raise QnodeError("the deadline must be positive (seconds)")
    hold = request.get("hold_attempts")
    if hold is not None and not HOLD_ATTEMPTS_MIN <= hold <= HOLD_ATTEMPTS_MAX:
        raise QnodeError(
            f"hold_attempts must be {HOLD_ATTEMPTS_MIN}..{HOLD_ATTEMPTS_MAX:g}, got {hold}"
        )
    alpha = request.get("alpha")
    if alpha is not None and not 0 < alpha < 1:
        raise QnodeError(f"alpha must be in (0, 1), got {alpha!r}")
    if request.get("heralding") == "software" and request["protocol"] not in ONE_ROUND:
        raise QnodeError(
            "software heralding is for one-round protocols only "
            f"({', '.join(ONE_ROUND)}: one outcome per attempt)"
        )
    if alpha is not None and request["protocol"] == "two_photon":
        raise QnodeError("two_photon takes no alpha (its photons' polarisation is the qubit)")
    if peer == node or peer not in lab.nodes or lab.nodes[peer].kind != "memory":
        raise QnodeError(f"{peer!r} is not another memory node of {lab.lab.name}")
    needed = ["mw_frequency_hz", "pi_amplitude_v"]
    initiator = "nodes" not in request or list(request["nodes"])[:1] == [node]
    delivery = own_delivery(request, initiator)
    pulsed = ("X", "Y", "verify", "memory", "bsm", "ghz")  # deliveries with a pi/2 pulse
    if request["protocol"] == "barrett_kok" or delivery in pulsed:
        needed.append("pi2_amplitude_v")
    missing = [n for n in needed if n not in values]
    if missing:
        raise QnodeError(f"node {node} is not calibrated: {', '.join(missing)}")
    deliveries = (request["delivery"], request.get("peer_delivery") or request["delivery"])
    if "verify" in deliveries and deliveries[0] != deliveries[1]:
        raise QnodeError(
            f"verification measures both halves in the same bases: delivery {deliveries[0]} "
            f"and peer_delivery {deliveries[1]} cannot be mixed with it"
        )
    if request.get("memory_basis") and "ghz" not in deliveries:
        raise QnodeError(
            "memory_basis reads the memory right after a GHZ operation: it goes with delivery "
            f"ghz, not {deliveries[0]}/{deliveries[1]}"
        )
    for one_pair in ONE_PAIR_DELIVERIES:
        if one_pair not in (request["delivery"], request.get("peer_delivery")):
            continue
        what = "delivery into memory" if one_pair == "memory" else f"the {one_pair} delivery"
        if request["pairs"] != 1:
            raise QnodeError(
                f"{what} takes one pair per session (the memory holds one), not {request['pairs']}"
            )
        if request["protocol"] == "two_photon":
            raise QnodeError(f"{what}: two_photon is the ion labs' protocol")
    if delivery in ONE_PAIR_DELIVERIES:
        check_memory_delivery(lab, node, values)
