"""The words of the link protocol, each defined once: heralding modes, deliveries, bases (as
the session files number them) and the link layer's clocks; the protocols and the outcome
codes are the sequencer's (sequences.operations.PROTOCOLS, sequences.program.HERALD_OUTCOMES).

docs/protocols.md describes the protocol; controller/link/messages.py declares its messages.
"""

from __future__ import annotations

from sequences.operations import PROTOCOLS as PROTOCOLS
from sequences.program import HERALD_OUTCOMES

OUTCOMES = HERALD_OUTCOMES
"""Outcome codes: the herald input's, which the session files and herald messages use too."""

HERALDING = ("hardware", "software")
ONE_ROUND = ("single_click", "two_photon")
"""Protocols with one detection window per attempt: software heralding can forward each."""

DELIVERY = ("keep", "X", "Y", "Z", "verify", "memory", "bsm", "ghz")
"""keep: the pair stays in the memories; X/Y/Z: measured in that basis; verify: a third each;
memory: this node's half is moved into its memory qubit right after the herald (NV nodes with
`memories` and the memory's calibration; one pair per session: the memory holds one); bsm:
right after the herald, in the same program, this node's half and the pair its memory stores
are measured in the Bell basis (the entanglement swap; one pair per session, own side only);
ghz: right after the herald, in the same program, the GHZ operation on this node's half and
the stored pair (the DD gate, the electron read out sparing the memory, which keeps its half
of the GHZ state; one pair per session)."""
BASES = ("keep", "X", "Y", "Z", "memory", "bsm", "ghz")
"""Basis codes of the session files' pair rows ("memory": the half is in the memory qubit
MEMORY_QUBIT names, not measured; "bsm": measured with the stored pair's half in the Bell
basis, both readouts' counts in the row; "ghz": the GHZ operation's electron readout, its
bit in the row)."""
ONE_PAIR_DELIVERIES = ("memory", "bsm", "ghz")
"""Deliveries that take one pair per session: the memory holds one (stored, or consumed)."""
STORED_PAIR_DELIVERIES = ("bsm", "ghz")
"""Deliveries that operate on the new pair and the one the memory stores, in the link's
program right after the herald."""
MEMORY_BASES = ("X", "Y", "Z")
"""The bases a stored half is read in (`memory_measure`)."""
SESSION_ENDS = ("completed", "failed", "aborted", "deadline", "cut-off")
"""How a session ends (its file says `running` until then); cut-off: a stored pair's attempt
budget ran out before a herald (the pair is discarded on the node that held it)."""

HEARTBEAT_S = 0.5
"""Every station beats this often: the nodes to each other and to the midpoint, and back."""
SILENCE_S = 3.0
"""No heartbeat (or any message) from the peer or the midpoint for this long: it is gone."""
MIDPOINT_SILENCE_S = 10.0
"""The midpoint closes a session whose nodes sent nothing for this long (its initiator is gone)."""
HERALD_TIMEOUT_S = 3.0
"""A shot the sequencer heralded waits this long for the midpoint's herald message."""
PEER_TIMEOUT_S = 5.0
"""The initiator waits this long for its peer's check of a shot, then discards it."""
ROUND_DONE_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 15.0
RECONCILE_WAIT_S = 120.0

ROUND_SHOTS_MAX = 200
MAX_ATTEMPTS = 2**31
MIN_ATTEMPTS = 1000
HOLD_ATTEMPTS_MIN = 100
HOLD_ATTEMPTS_MAX = 10_000_000
HOLD_ATTEMPTS_DEFAULT = 1000
"""Attempts a round delivering into memory makes before the memory is initialised again
(controller.link.memory.hold_attempts): bounds, and the value without the memory's calibration."""
HOLD_ROUNDS_MAX = 1000
"""A delivery into memory expected to need more rounds (memory initialisations) is refused."""
SYNC_TIMEOUT_NS = 5_000_000_000
SOFTWARE_HERALD_WAIT_NS = 200_000_000
"""Software heralding: how long an attempt waits for its outcome to come through ZeroMQ."""
HERALD_BATCH = 256
"""Herald records are written to the session file in batches of at most this many."""
