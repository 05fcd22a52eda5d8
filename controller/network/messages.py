"""The network layer's messages between the repeater and the ends, declared once.

Every message is checked against its schema on receipt (controller.messaging.wire.unpack)
and bounded in size: ids, lists and texts have maximum lengths. Node names travel as data
only; who sent a message is the station its CurveZMQ key names (the daemon shell's job), and
the state machines take that sender as an argument beside the message.
"""

from __future__ import annotations

from controller.messaging.wire import Kind, Schema, vocabulary
from controller.network.estimators import CARDINAL_STATES, GHZ_SETTINGS
from controller.network.pauli import BELL_STATES, PAULIS

MAX_ID_CHARS = 200
"""A link pair's id (session:shot:attempt) is far shorter; an end-to-end id is two of them."""
MAX_TEXT_CHARS = 200
MAX_PAULIS = 8
"""Paulis a node applied to one qubit since its herald (each is a name in PAULIS)."""

REASONS = ("cutoff", "timeout", "node_down", "conflict", "shutdown", "operation_failed")
"""Why an end-to-end pair was discarded (records count by these; a discard passed on keeps its
cause): a link pair's cut-off, a deadline passed, a node known down, a discard that reached a
node after it had delivered the pair, the layer closed with the pair open, a node's operation
on its qubits (the BSM, a Pauli) failed."""


class _Contents(type):
    """A Kind that looks inside its value: the schema's isinstance asks `accepts`."""

    def __instancecheck__(cls, value: object) -> bool:
        return bool(cls.accepts(value))

    def accepts(cls, value: object) -> bool:
        raise NotImplementedError


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: object, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit


class PairId(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return _short(value, 2 * MAX_ID_CHARS + 1)


class Text(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return _short(value, MAX_TEXT_CHARS)


class LinkPairIds(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return (
            isinstance(value, list)
            and 1 <= len(value) <= 2
            and all(_short(v, MAX_ID_CHARS) and v for v in value)
        )


class TwoNames(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return isinstance(value, list) and len(value) == 2 and all(_short(v, 64) for v in value)


class TwoStates(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return isinstance(value, list) and len(value) == 2 and all(v in BELL_STATES for v in value)


class TwoNumbers(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)


class PauliNames(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return (
            isinstance(value, list) and len(value) <= MAX_PAULIS and all(v in PAULIS for v in value)
        )


PairId.__name__ = f"str of at most {2 * MAX_ID_CHARS + 1} characters"
Text.__name__ = f"str of at most {MAX_TEXT_CHARS} characters"
LinkPairIds.__name__ = f"list of 1 or 2 link pair ids (at most {MAX_ID_CHARS} characters)"
TwoNames.__name__ = "list of two node names"
TwoStates.__name__ = f"list of two of {', '.join(BELL_STATES)}"
TwoNumbers.__name__ = "list of two numbers"
PauliNames.__name__ = f"list of at most {MAX_PAULIS} of {', '.join(PAULIS)}"

NUMBER: Kind = (int, float)
BIT = (0, 1)
CARDINAL = tuple(CARDINAL_STATES)
GHZ_SETTING_NAMES = tuple(GHZ_SETTINGS)

NETWORK = vocabulary(
    Schema(
        "swap_outcome",
        {
            "swap": PairId,
            "ends": TwoNames,
            "link_pairs": LinkPairIds,
            "link_states": TwoStates,
            "repeater_applied": PauliNames,
            "zz": int,
            "xx": int,
            "made": TwoNumbers,
            "t_bsm": NUMBER,
            "goodness": NUMBER,
        },
        choices={"zz": BIT, "xx": BIT},
        notification=True,
    ),
    Schema(
        "swap_applied",
        {"swap": PairId, "t_applied": NUMBER, "pauli": str},
        choices={"pauli": PAULIS},
        notification=True,
    ),
    Schema("swap_delivered", {"swap": PairId, "applied": TwoNumbers}, notification=True),
    Schema(
        "swap_discard",
        {"swap": PairId, "link_pairs": LinkPairIds, "cause": str, "reason": Text},
        choices={"cause": REASONS},
        notification=True,
    ),
)
"""Repeater -> ends: swap_outcome, swap_delivered, swap_discard; end -> repeater:
swap_applied, swap_discard (docs/network.md has the sequence)."""

APPLICATIONS = vocabulary(
    Schema(
        "teleport_outcome",
        {"swap": PairId, "zz": int, "xx": int, "t_bsm": NUMBER},
        {"state": str},
        {"zz": BIT, "xx": BIT, "state": CARDINAL},
        notification=True,
    ),
    Schema(
        "ghz_outcome",
        {
            "ghz": PairId,
            "ends": TwoNames,
            "link_pairs": LinkPairIds,
            "link_states": TwoStates,
            "memory_applied": PauliNames,
            "electron_applied": PauliNames,
            "electron_bright": int,
            "setting": str,
        },
        choices={"electron_bright": BIT, "setting": GHZ_SETTING_NAMES},
        notification=True,
    ),
)
"""Sender -> receiver: teleport_outcome (`state` names the cardinal state in a verification
run); B -> the ends and the operator: ghz_outcome (B's electron's outcome, 1 bright; the
links' states and the Paulis B applied to each qubit, the setting all three measure in)."""

# the network service's own messages (controller/network/service.py) ----------------------------
MAX_PAIRS = 100_000
"""End-to-end pairs (or GHZ shots, or teleported states per cardinal state) one request asks."""
MAX_DEADLINE_S = 7 * 24 * 3600.0
APPLICATION_NAMES = ("entangle", "ghz", "teleport")
SESSION_STATES = ("completed", "failed", "aborted", "deadline")
MEASURE_BASES = ("X", "Y", "Z")
LINK_PROTOCOLS = ("single_click", "barrett_kok")
"""The heralded protocols between NV nodes (the network is an NV network: docs/network.md)."""
STATE_SETS = ("cardinal",)


class SessionName(metaclass=_Contents):
    """A network session id: it becomes part of a file name (controller.data.names)."""

    @classmethod
    def accepts(cls, value: object) -> bool:
        return _short(value, 64) and bool(value)


class NodeName(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return _short(value, 64) and bool(value)


class Count(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PAIRS


class Fraction(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return _number(value) and 0.0 <= float(value) < 1.0  # type: ignore[arg-type]


class Seconds(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return _number(value) and 0.0 < float(value) <= MAX_DEADLINE_S  # type: ignore[arg-type]


class Result(metaclass=_Contents):
    @classmethod
    def accepts(cls, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value in (-1, 1)


SessionName.__name__ = "session id (1 to 64 characters)"
NodeName.__name__ = "node name (1 to 64 characters)"
Count.__name__ = f"int from 1 to {MAX_PAIRS}"
Fraction.__name__ = "number in [0, 1)"
Seconds.__name__ = f"number of seconds in (0, {MAX_DEADLINE_S:g}]"
Result.__name__ = "+1 or -1"

_LINK_OPTIONS = {"protocol": str, "fidelity_min": Fraction, "deadline_s": Seconds}
_LINK_CHOICES = {"protocol": LINK_PROTOCOLS}

NETWORK_OPERATOR = vocabulary(
    Schema(
        "network_entangle",
        {"ends": TwoNames, "pairs": Count},
        {**_LINK_OPTIONS, "verify": bool},
        _LINK_CHOICES,
    ),
    Schema("network_ghz", {"shots": Count}, {**_LINK_OPTIONS, "verify": bool}, _LINK_CHOICES),
    Schema(
        "network_teleport",
        {"from": NodeName, "to": NodeName, "shots": Count},
        {**_LINK_OPTIONS, "states": str},
        {**_LINK_CHOICES, "states": STATE_SETS},
    ),
    Schema("network_session", {"session": SessionName}),
    Schema("network_session_data", {"session": SessionName}),
    Schema("network_abort", {"session": SessionName}),
)
"""An operator (a client key) at the repeater: start a network session (its id in the
answer), read its progress and summary (`network_session`), its file's rows
(`network_session_data`, any node of the session), stop it (`network_abort`). `shots` of a
teleportation: per cardinal state."""

NETWORK_STATION = vocabulary(
    NETWORK,
    APPLICATIONS,
    Schema(
        "network_open",
        {
            "session": SessionName,
            "application": str,
            "ends": TwoNames,
            "repeater": NodeName,
            "outcome_s": Seconds,
            "decision_s": Seconds,
        },
        {"sender": NodeName, "receiver": NodeName},
        {"application": APPLICATION_NAMES},
    ),
    Schema(
        "network_measure",
        {"session": SessionName, "pair": PairId, "link_pair": PairId, "basis": str},
        choices={"basis": MEASURE_BASES},
    ),
    Schema(
        "teleport_prepare",
        {"session": SessionName, "state": str},
        choices={"state": CARDINAL},
    ),
    Schema(
        "teleport_send",
        {"session": SessionName, "swap": PairId, "state": str},
        choices={"state": CARDINAL},
    ),
    Schema("teleport_receive", {"session": SessionName, "swap": PairId}),
    Schema(
        "network_close",
        {"session": SessionName, "state": str, "reason": Text},
        choices={"state": SESSION_STATES},
    ),
    Schema("network_heartbeat", {"session": SessionName}, notification=True),
)
"""Between the nodes of a network session (a station key, and one of the session's nodes):
the swap's and the applications' notifications, and the repeater's requests to the ends
(open the session, measure a qubit, prepare the state to teleport, teleport, close); the
sender's `teleport_outcome` goes to the receiver directly. `network_heartbeat`: while a
session runs, the repeater beats to both ends and each end to the repeater (service.py
`Timing.heartbeat_s`); a node silent for `Timing.silence_s` is known down."""
