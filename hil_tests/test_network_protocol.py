"""The network layer as pure code: entanglement swapping's state machines (controller.network
.swap) fed events by hand, its Pauli frame against a small state-vector calculation written
here from scratch, the counting invariant under random event orders (hypothesis), and the
GHZ and teleportation estimators against exact states. No sockets, no daemons."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.messaging.wire import MessageError, pack, unpack
from controller.network.applications import (
    GhzTally,
    TeleportReceiver,
    TeleportSender,
    ghz_frame_of,
)
from controller.network.estimators import (
    CARDINAL_STATES,
    CLASSICAL_BOUND,
    GHZ_GENERATORS,
    GHZ_SETTINGS,
    corrected_outcome,
    ghz_fidelity,
    ghz_fidelity_bound,
    stabiliser_values,
    teleport_fidelity,
)
from controller.network.messages import APPLICATIONS, NETWORK
from controller.network.pauli import (
    Pauli,
    frame_sign,
    ghz_frame,
    pair_pauli,
    swap_frame,
    teleport_correction,
    werner_swap_fidelity,
)
from controller.network.swap import (
    ACK_S,
    DECISION_S,
    DELIVERED,
    DISCARDED,
    OPEN,
    OUTCOME_S,
    REFUSED,
    SECOND_LINK_S,
    ApplyPauli,
    End,
    LinkPair,
    MeasureBell,
    Record,
    Release,
    Repeater,
    Send,
    swap_id,
)
from sequences.network_ops import GHZ_BASES

# a tiny state-vector calculation, independent of controller.network.pauli ----------------------
I2 = np.eye(2, dtype=complex)
SX = np.array([[0, 1], [1, 0]], dtype=complex)
SY = np.array([[0, -1j], [1j, 0]], dtype=complex)
SZ = np.array([[1, 0], [0, -1]], dtype=complex)
MATRIX = {"I": I2, "X": SX, "Y": SY, "Z": SZ}
KET0, KET1 = np.array([1, 0], dtype=complex), np.array([0, 1], dtype=complex)
BELL = {
    "phi_plus": (np.kron(KET0, KET0) + np.kron(KET1, KET1)) / np.sqrt(2),
    "phi_minus": (np.kron(KET0, KET0) - np.kron(KET1, KET1)) / np.sqrt(2),
    "psi_plus": (np.kron(KET0, KET1) + np.kron(KET1, KET0)) / np.sqrt(2),
    "psi_minus": (np.kron(KET0, KET1) - np.kron(KET1, KET0)) / np.sqrt(2),
}
PARITIES = {(0, 0): "phi_plus", (0, 1): "phi_minus", (1, 0): "psi_plus", (1, 1): "psi_minus"}
"""(zz, xx) -> the Bell state with Z x Z = (-1)^zz and X x X = (-1)^xx."""


def test_the_parities_name_the_bell_states():
    for (zz, xx), name in PARITIES.items():
        v = BELL[name]
        assert np.isclose(v.conj() @ np.kron(SZ, SZ) @ v, (-1) ** zz)
        assert np.isclose(v.conj() @ np.kron(SX, SX) @ v, (-1) ** xx)


def on_qubit(op: np.ndarray, k: int, n: int) -> np.ndarray:
    mats = [op if i == k else I2 for i in range(n)]
    out = mats[0]
    for m in mats[1:]:
        out = np.kron(out, m)
    return out


def project_pair(
    state: np.ndarray, first: int, n: int, onto: np.ndarray
) -> tuple[np.ndarray, float]:
    """Project qubits (first, first+1) of an n-qubit state onto `onto`; the rest, normalised,
    and the probability."""
    tensor = state.reshape([2] * n)
    tensor = np.moveaxis(tensor, [first, first + 1], [0, 1]).reshape(4, -1)
    rest = onto.conj() @ tensor
    prob = float(np.vdot(rest, rest).real)
    return rest / np.sqrt(prob), prob


def fidelity(state: np.ndarray, target: np.ndarray) -> float:
    return float(abs(np.vdot(target, state)) ** 2)


# the state machines' driver ----------------------------------------------------------------------
ENDS = ("A", "C")


def as_received(send: Send) -> dict:
    """What the receiver's shell hands the machine: the message packed and checked."""
    return unpack(pack(send.kind, 1, **send.fields), NETWORK)


def sends(actions: list, kind: str | None = None) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and (kind is None or a.kind == kind)]


def records(actions: list) -> list:
    return [a.entry for a in actions if isinstance(a, Record)]


def pair_ab(state="psi_plus", applied_b=(), applied_a=(), ident="ab:1:7", made=10.0, goodness=0.9):
    at_b = LinkPair(ident, ("A", "B"), state, goodness, made, tuple(applied_b))
    at_a = LinkPair(ident, ("A", "B"), state, goodness, made, tuple(applied_a))
    return at_a, at_b


def pair_bc(state="psi_plus", applied_b=(), applied_c=(), ident="bc:1:3", made=10.01, goodness=0.8):
    at_b = LinkPair(ident, ("B", "C"), state, goodness, made, tuple(applied_b))
    at_c = LinkPair(ident, ("B", "C"), state, goodness, made, tuple(applied_c))
    return at_c, at_b


def machines():
    return Repeater("B", ENDS), End("A", ENDS, "B"), End("C", ENDS, "B")


def run_swap(s1, s2, zz, xx, rb1=(), rb2=(), oa=(), oc=()):
    """The happy path through the three machines; the Paulis A and C were told to apply."""
    b, a, c = machines()
    at_a, at_b1 = pair_ab(s1, rb1, oa)
    at_c, at_b2 = pair_bc(s2, rb2, oc)
    assert a.on_link_pair(at_a, 10.0) == []
    assert b.on_link_pair(at_b1, 10.0) == []
    assert c.on_link_pair(at_c, 10.01) == []
    (measure,) = b.on_link_pair(at_b2, 10.01)
    outcome = b.on_bsm(measure.swap, zz, xx, 10.012)
    to_a, to_c = sends(outcome, "swap_outcome")
    applied_a = a.on_message("B", as_received(to_a), 10.013)
    applied_c = c.on_message("B", as_received(to_c), 10.014)
    (pauli_a,) = [x.pauli for x in applied_a if isinstance(x, ApplyPauli)]
    (pauli_c,) = [x.pauli for x in applied_c if isinstance(x, ApplyPauli)]
    return pauli_a, pauli_c


def swapped_state(s1, s2, zz, xx, rb1=(), rb2=(), oa=(), oc=()):
    """A, B1 (B's memory, pair A-B), B2 (B's electron, pair B-C), C: both pairs with the
    Paulis applied since their heralds, then B2..B1 projected on the measured Bell state."""
    state = np.kron(BELL[s1], BELL[s2])
    for p in oa:
        state = on_qubit(MATRIX[p], 0, 4) @ state
    for p in rb1:
        state = on_qubit(MATRIX[p], 1, 4) @ state
    for p in rb2:
        state = on_qubit(MATRIX[p], 2, 4) @ state
    for p in oc:
        state = on_qubit(MATRIX[p], 3, 4) @ state
    rest, prob = project_pair(state, 1, 4, BELL[PARITIES[(zz, xx)]])
    assert np.isclose(prob, 0.25)  # every outcome equally likely: the BSM learns nothing
    return rest  # qubits (A, C)


@pytest.mark.parametrize("s1,s2", list(itertools.product(["psi_plus", "psi_minus"], repeat=2)))
@pytest.mark.parametrize("zz,xx", list(PARITIES))
def test_the_frame_the_machines_return_makes_psi_plus(s1, s2, zz, xx):
    """All 2 x 2 x 4: the ends' Paulis, applied to the true state, give psi+ exactly."""
    pauli_a, pauli_c = run_swap(s1, s2, zz, xx)
    state = swapped_state(s1, s2, zz, xx)
    assert fidelity(state, BELL["psi_plus"]) < 1.0 or (pauli_a, pauli_c) == ("I", "I")
    corrected = np.kron(MATRIX[pauli_a], MATRIX[pauli_c]) @ state
    assert fidelity(corrected, BELL["psi_plus"]) == pytest.approx(1.0)


def test_the_frame_folds_in_every_pauli_the_link_layer_applied():
    """Paulis applied at B (on either qubit) and at the ends since the heralds: every
    combination of one per qubit, every link state and outcome (4^4 x 16)."""
    states = ("psi_plus", "psi_minus")
    for rb1, rb2, oa, oc in itertools.product("IXYZ", repeat=4):
        for s1, s2, (zz, xx) in itertools.product(states, states, PARITIES):
            args = (s1, s2, zz, xx, (rb1,), (rb2,), (oa,), (oc,))
            pauli_a, pauli_c = run_swap(*args)
            corrected = np.kron(MATRIX[pauli_a], MATRIX[pauli_c]) @ swapped_state(*args)
            assert fidelity(corrected, BELL["psi_plus"]) == pytest.approx(1.0), args


def test_happy_path_event_by_event():
    b, a, c = machines()
    at_a, at_b1 = pair_ab("psi_minus")
    at_c, at_b2 = pair_bc("psi_plus")
    assert a.on_link_pair(at_a, 10.0) == []
    assert b.on_link_pair(at_b1, 10.0) == []  # held in the memory, waiting for B-C
    assert c.on_link_pair(at_c, 10.01) == []
    actions = b.on_link_pair(at_b2, 10.01)
    e2e = swap_id("ab:1:7", "bc:1:3")
    assert actions == [MeasureBell(e2e, ("ab:1:7", "bc:1:3"))]

    actions = b.on_bsm(e2e, 1, 0, 10.012)
    assert [s.to for s in sends(actions, "swap_outcome")] == ["A", "C"]
    fields = sends(actions)[0].fields
    assert fields["goodness"] == pytest.approx(0.9 * 0.8 + 0.1 * 0.2 / 3)
    assert fields["made"] == [10.0, 10.01] and fields["t_bsm"] == 10.012
    assert fields["link_states"] == ["psi_minus", "psi_plus"] and (fields["zz"], fields["xx"]) == (
        1,
        0,
    )

    to_a, to_c = sends(actions)
    got_a = a.on_message("B", as_received(to_a), 10.013)
    assert [type(x) for x in got_a] == [ApplyPauli, Send]
    assert sends(got_a)[0].kind == "swap_applied" and sends(got_a)[0].to == "B"
    got_c = c.on_message("B", as_received(to_c), 10.014)
    assert b.on_message("A", as_received(sends(got_a)[0]), 10.015) == []  # one of two
    final = b.on_message("C", as_received(sends(got_c)[0]), 10.016)
    (entry,) = records(final)
    assert entry.status == DELIVERED and entry.swap == e2e
    assert (
        entry.applied == (10.013, 10.014) and entry.t_bsm == 10.012 and entry.made == (10.0, 10.01)
    )
    delivered = sends(final, "swap_delivered")
    assert [s.to for s in delivered] == ["A", "C"]
    for end, send in zip((a, c), delivered, strict=True):
        (entry,) = records(end.on_message("B", as_received(send), 10.02))
        assert entry.status == DELIVERED and entry.swap == e2e
        assert entry.applied == (10.013, 10.014) and entry.t_bsm == 10.012
        assert entry.goodness == pytest.approx(0.9 * 0.8 + 0.1 * 0.2 / 3)
    for m in (a, b, c):
        assert (m.ledger.attempted, m.ledger.delivered, sum(m.ledger.discarded.values())) == (
            1,
            1,
            0,
        )


def _b_sent(zz=0, xx=0):
    """B has sent the outcome; the ends hold their pairs. -> machines, outcome sends."""
    b, a, c = machines()
    at_a, at_b1 = pair_ab()
    at_c, at_b2 = pair_bc()
    a.on_link_pair(at_a, 10.0)
    b.on_link_pair(at_b1, 10.0)
    c.on_link_pair(at_c, 10.0)
    (measure,) = b.on_link_pair(at_b2, 10.0)
    return (b, a, c), sends(b.on_bsm(measure.swap, zz, xx, 10.0))


def test_cutoff_at_the_repeater_discards_on_the_end_that_knows():
    b, a, _ = machines()
    at_a, at_b1 = pair_ab()
    a.on_link_pair(at_a, 10.0)
    b.on_link_pair(at_b1, 10.0)
    actions = b.on_link_discarded("ab:1:7", "cut-off: F 0.61 < 0.7", 10.02)
    assert not [x for x in actions if isinstance(x, Release)]  # the link layer freed it
    (entry,) = records(actions)
    assert (entry.status, entry.kind, entry.link_pairs) == (DISCARDED, "cutoff", ("ab:1:7",))
    (told,) = sends(actions, "swap_discard")
    assert told.to == "A" and told.fields["cause"] == "cutoff"
    got = a.on_message("B", as_received(told), 10.021)
    assert Release("ab:1:7", "cut-off at B: F 0.61 < 0.7") in got  # where, and why
    (entry,) = records(got)
    assert (entry.status, entry.kind, entry.reason) == (
        DISCARDED,
        "cutoff",
        "cut-off at B: F 0.61 < 0.7",
    )
    assert a.ledger.discarded == {"cutoff": 1} == b.ledger.discarded
    # a new attempt starts afresh at B
    _, again = pair_ab(ident="ab:2:1")
    assert b.on_link_pair(again, 10.03) == [] and b.ledger.attempted == 2


def test_cutoff_at_an_end_reaches_the_other_end_through_the_repeater():
    b, a, c = machines()
    at_a, at_b1 = pair_ab()
    at_c, at_b2 = pair_bc()
    a.on_link_pair(at_a, 10.0)
    c.on_link_pair(at_c, 10.0)
    b.on_link_pair(at_b2, 10.0)  # B holds B-C first this time
    b.on_link_pair(at_b1, 10.0)  # ... then asks for the BSM
    actions = a.on_link_discarded("ab:1:7", "memory cut-off", 10.001)
    assert [(s.to, s.fields["cause"]) for s in sends(actions)] == [("B", "cutoff")]
    got = b.on_message("A", as_received(sends(actions)[0]), 10.002)
    assert [(s.to, s.fields["cause"]) for s in sends(got)] == [("C", "cutoff")]
    assert records(got)[0].status == DISCARDED
    got_c = c.on_message("B", as_received(sends(got)[0]), 10.003)
    assert (
        records(got_c)[0].kind == "cutoff"
        and Release("bc:1:3", "B: A: cut-off at A: memory cut-off") in got_c
    )
    # the BSM's result arrives after the discard: refused and recorded, nothing sent
    late = b.on_bsm(swap_id("ab:1:7", "bc:1:3"), 0, 0, 10.004)
    assert [r.status for r in records(late)] == [REFUSED] and not sends(late)
    for m in (a, b, c):
        assert m.ledger.attempted == 1 and m.ledger.discarded == {"cutoff": 1}


def test_no_second_link_in_time_discards_at_the_repeater():
    b, a, _ = machines()
    at_a, at_b1 = pair_ab()
    a.on_link_pair(at_a, 10.0)
    b.on_link_pair(at_b1, 10.0)
    assert b.on_tick(10.0 + SECOND_LINK_S) == []  # not yet
    actions = b.on_tick(10.0 + SECOND_LINK_S + 1e-3)
    assert Release("ab:1:7", f"no second link pair within {SECOND_LINK_S:g} s") in actions
    assert records(actions)[0].kind == "timeout"
    assert [s.to for s in sends(actions)] == ["A"]
    assert b.on_tick(11.0) == []  # once


def test_no_outcome_in_time_at_an_end_then_a_late_outcome_is_refused():
    (b, a, c), outcome = _b_sent()
    timed_out = a.on_tick(10.0 + OUTCOME_S + 1e-3)
    (entry,) = records(timed_out)
    assert (entry.kind, entry.reason) == (
        "timeout",
        f"no BSM outcome from B within {OUTCOME_S:g} s",
    )
    (told,) = sends(timed_out)
    late = a.on_message("B", as_received(outcome[0]), 10.2)  # the outcome, late
    assert not [x for x in late if isinstance(x, ApplyPauli)]
    assert [r.status for r in records(late)] == [REFUSED] and a.ledger.refused == 1
    assert sends(late)[0].fields["cause"] == "timeout"  # said again, as first said
    # B learns it, discards, tells C (which applied its frame meanwhile)
    c_applied = c.on_message("B", as_received(outcome[1]), 10.001)
    b.on_message("C", as_received(sends(c_applied)[0]), 10.002)
    got = b.on_message("A", as_received(told), 10.2)
    assert records(got)[0].kind == "timeout" and [s.to for s in sends(got)] == ["C"]
    got_c = c.on_message("B", as_received(sends(got)[0]), 10.21)
    assert (
        records(got_c)[0].kind == "timeout" and Release("bc:1:3", "B: A: " + entry.reason) in got_c
    )
    assert b.on_message("A", as_received(sends(late)[0]), 10.22) == []  # the same again: idempotent
    for m in (a, b, c):
        assert m.ledger.discarded == {"timeout": 1} and m.ledger.delivered == 0


def test_an_end_dying_mid_swap_discards_everywhere():
    (b, a, _c), outcome = _b_sent()
    applied = a.on_message("B", as_received(outcome[0]), 10.001)
    b.on_message("A", as_received(sends(applied)[0]), 10.002)
    # C never answers: B gives up
    actions = b.on_tick(10.0 + ACK_S + 1e-3)
    (entry,) = records(actions)
    assert (entry.kind, entry.reason) == ("timeout", f"no swap_applied from C within {ACK_S:g} s")
    assert [s.to for s in sends(actions)] == ["A", "C"]
    got = a.on_message("B", as_received(sends(actions)[0]), 10.06)
    assert records(got)[0].status == DISCARDED and Release("ab:1:7", "B: " + entry.reason) in got
    # a node known down: B's heartbeat monitor says so
    (b2, _a2, _c2), _ = _b_sent()
    actions = b2.on_node_down("C", 10.001)
    assert records(actions)[0].kind == "node_down" and [s.to for s in sends(actions)] == ["A"]


def test_the_repeater_dying_mid_swap_discards_at_the_ends():
    (_b, a, c), outcome = _b_sent()
    a.on_message("B", as_received(outcome[0]), 10.001)
    assert records(a.on_node_down("B", 10.01))[0].kind == "node_down"
    # or silence: C waits for its outcome, then gives up
    got = c.on_tick(10.0 + OUTCOME_S + 1e-3)
    assert records(got)[0].kind == "timeout"
    # A, having applied its frame, would have given up waiting for the decision too
    (_, a2, _), outcome2 = _b_sent()
    a2.on_message("B", as_received(outcome2[0]), 10.001)
    got = a2.on_tick(10.001 + DECISION_S + 1e-3)
    assert records(got)[0].reason == f"no decision from B within {DECISION_S:g} s"


def test_duplicates_are_ignored_and_answered_again():
    (b, a, c), outcome = _b_sent()
    first = a.on_message("B", as_received(outcome[0]), 10.001)
    again = a.on_message("B", as_received(outcome[0]), 10.002)
    assert [type(x) for x in again] == [Send]  # swap_applied again; no second ApplyPauli
    assert again[0] == sends(first)[0]
    applied_c = c.on_message("B", as_received(outcome[1]), 10.001)
    b.on_message("A", as_received(sends(first)[0]), 10.003)
    assert b.on_message("A", as_received(sends(first)[0]), 10.003) == []
    done = b.on_message("C", as_received(sends(applied_c)[0]), 10.004)
    assert records(b.on_message("C", as_received(sends(applied_c)[0]), 10.005)) == []
    delivered = sends(done, "swap_delivered")[0]
    assert records(a.on_message("B", as_received(delivered), 10.006))[0].status == DELIVERED
    assert a.on_message("B", as_received(delivered), 10.007) == []
    assert (a.ledger.delivered, a.ledger.duplicates, b.ledger.delivered) == (1, 2, 1)


def test_a_discard_after_delivery_turns_it_into_a_discard_everywhere():
    """C's decision was lost; C gave up and discarded; B had delivered: B and A follow."""
    (b, a, c), outcome = _b_sent()
    for end in (a, c):
        (applied,) = sends(end.on_message("B", as_received(outcome[ENDS.index(end.node)]), 10.001))
        done = b.on_message(end.node, as_received(applied), 10.002)
    a.on_message("B", as_received(sends(done)[0]), 10.003)
    assert (a.ledger.delivered, b.ledger.delivered) == (1, 1)
    gave_up = c.on_tick(10.001 + DECISION_S + 1e-3)
    got = b.on_message("C", as_received(sends(gave_up)[0]), 10.2)
    assert records(got)[0].kind == "conflict" and b.ledger.delivered == 0
    got_a = a.on_message("B", as_received(sends(got)[0]), 10.21)
    assert records(got_a)[0].kind == "conflict" and a.ledger.delivered == 0
    assert (a.ledger.attempted, sum(a.ledger.discarded.values())) == (1, 1)
    late = c.on_message("B", as_received(sends(done)[1]), 10.3)  # B's decision, late
    assert [r.status for r in records(late)] == [REFUSED]


def test_messages_from_the_wrong_station_change_nothing():
    (_b, a, _c), outcome = _b_sent()
    assert a.on_message("C", as_received(outcome[0]), 10.001) == []  # only B sends outcomes
    assert a.ledger.foreign == 1 and a.attempts["ab:1:7"].status == "waiting"
    forged = dict(as_received(outcome[0]), zz=1)
    forged["link_pairs"] = ["ab:9:9", "bc:1:3"]
    got = a.on_message("B", forged, 10.002)  # names a pair A does not hold
    assert not [x for x in got if isinstance(x, ApplyPauli)]


def test_every_message_is_bounded_and_checked_on_receipt():
    (_, _, _), outcome = _b_sent()
    fields = dict(outcome[0].fields)
    with pytest.raises(MessageError, match="link_pairs"):
        unpack(pack("swap_outcome", 1, **{**fields, "link_pairs": ["x" * 201, "y"]}), NETWORK)
    with pytest.raises(MessageError, match="zz 2 is not one of 0, 1"):
        unpack(pack("swap_outcome", 1, **{**fields, "zz": 2}), NETWORK)
    with pytest.raises(MessageError, match="link_states"):
        unpack(
            pack("swap_outcome", 1, **{**fields, "link_states": ["phi_plus", "psi_plus"]}), NETWORK
        )
    with pytest.raises(MessageError, match="cause"):
        unpack(pack("swap_discard", 1, swap="", link_pairs=["a"], cause="whim", reason=""), NETWORK)
    with pytest.raises(MessageError, match="reason"):
        unpack(
            pack("swap_discard", 1, swap="", link_pairs=["a"], cause="cutoff", reason="r" * 201),
            NETWORK,
        )


# the counting invariant under random event orders -----------------------------------------
class Net:
    """Three machines and the messages between them, stepped by hypothesis's choices."""

    def __init__(self, lossy: bool) -> None:
        self.b, self.a, self.c = machines()
        self.node = {"A": self.a, "B": self.b, "C": self.c}
        self.now = 0.0
        self.flight: list[tuple[str, str, dict]] = []
        self.bsm: list[str] = []
        self.lossy = lossy
        self.made = 0
        self.holds = {"A": None, "C": None}  # B's held link pair per end, as the link layer sees it
        self.records: dict[str, list] = {"A": [], "B": [], "C": []}

    def act(self, at: str, actions: list) -> None:
        for x in actions:
            if isinstance(x, Send):
                self.flight.append((x.to, at, as_received(x)))
            elif isinstance(x, MeasureBell):
                self.bsm.append(x.swap)
                self.holds = {"A": None, "C": None}
            elif isinstance(x, Record):
                self.records[at].append(x.entry)
            elif isinstance(x, Release) and at == "B":
                self.holds = {k: (None if v == x.link_pair else v) for k, v in self.holds.items()}

    def step(self, choice: int, pick: int, bit: int) -> None:
        if choice == 0:  # the link layer makes a pair with A or C
            end = "A" if bit else "C"
            if self.holds[end] is not None:
                return  # it never makes a second while one is held
            self.made += 1
            ident = f"{end}{self.made}"
            nodes = ("A", "B") if end == "A" else ("B", "C")
            pair = LinkPair(ident, nodes, ["psi_plus", "psi_minus"][pick % 2], 0.9, self.now)
            self.holds[end] = ident
            self.act(end, self.node[end].on_link_pair(pair, self.now))
            self.act("B", self.b.on_link_pair(pair, self.now))
        elif choice in (1, 2) and self.flight:  # deliver (2: and keep a duplicate in flight)
            to, sender, msg = self.flight[pick % len(self.flight)]
            if choice == 1:
                self.flight.pop(pick % len(self.flight))
            self.act(to, self.node[to].on_message(sender, msg, self.now))
        elif choice == 3:
            self.now += [0.001, 0.03, 0.2][pick % 3]
            for name, m in self.node.items():
                self.act(name, m.on_tick(self.now))
        elif choice == 4 and self.bsm:
            self.act("B", self.b.on_bsm(self.bsm.pop(0), pick % 2, bit, self.now))
        elif choice == 5:  # a cut-off by the link layer, at B or at the end
            end = "A" if bit else "C"
            held = self.holds[end]
            if held is not None:
                self.holds[end] = None
                at = "B" if pick % 2 else end
                self.act(at, self.node[at].on_link_discarded(held, "cut-off", self.now))
                self.act(
                    "B" if at == end else end,
                    self.node["B" if at == end else end].on_link_discarded(
                        held, "cut-off", self.now
                    ),
                )
        elif choice == 6:
            name, down = [("A", "B"), ("C", "B"), ("B", "A"), ("B", "C"), ("A", "C")][pick % 5]
            self.act(name, self.node[name].on_node_down(down, self.now))
        elif choice == 7 and self.flight and self.lossy:
            self.flight.pop(pick % len(self.flight))

    def drain(self) -> None:
        for _ in range(50):
            while self.flight or self.bsm:
                if self.bsm:
                    self.act("B", self.b.on_bsm(self.bsm.pop(0), 0, 1, self.now))
                if self.flight:
                    to, sender, msg = self.flight.pop(0)
                    self.act(to, self.node[to].on_message(sender, msg, self.now))
            self.now += 1.0
            for name, m in self.node.items():
                self.act(name, m.on_tick(self.now))
            if not self.flight and not self.bsm:
                return

    def check(self) -> None:
        for name, m in self.node.items():
            statuses = [x.status for x in m.attempts.values()]
            ledger = m.ledger
            assert ledger.attempted == len(statuses), name
            assert ledger.delivered == statuses.count(DELIVERED), name
            assert sum(ledger.discarded.values()) == statuses.count(DISCARDED), name
            assert ledger.open() == sum(s in OPEN for s in statuses) >= 0, name
            # the records say the same: each attempt's last record is its state
            last = {}
            for entry in self.records[name]:
                if entry.status != REFUSED:
                    last[entry.link_pairs[0] if name != "B" else entry.link_pairs] = entry.status
            assert list(last.values()).count(DELIVERED) == ledger.delivered, name


STEPS = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 1000), st.integers(0, 1)), min_size=1, max_size=80
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, lossy=st.booleans())
def test_every_attempt_is_counted_once_in_any_order(steps, lossy):
    net = Net(lossy)
    for choice, pick, bit in steps:
        net.step(choice, pick, bit)
        net.check()
    net.drain()
    net.check()
    for name, m in net.node.items():
        assert m.ledger.open() == 0, name
        assert m.ledger.delivered + sum(m.ledger.discarded.values()) == m.ledger.attempted
    if not lossy:  # every message arrived (late, twice, in any order): the nodes agree
        delivered = {
            name: {e.swap for e in net.records[name] if e.status == DELIVERED}
            - {e.swap for e in net.records[name] if e.status == DISCARDED}
            for name in "ABC"
        }
        assert delivered["A"] == delivered["B"] == delivered["C"]


# goodness -------------------------------------------------------------------------------------
def werner(f: float) -> np.ndarray:
    psi = BELL["psi_plus"]
    return f * np.outer(psi, psi.conj()) + (1 - f) / 3 * (np.eye(4) - np.outer(psi, psi.conj()))


@pytest.mark.parametrize("f1,f2", [(1.0, 1.0), (0.9, 0.8), (0.75, 0.6), (0.5, 0.5)])
def test_the_goodness_formula_is_the_swapped_werner_states_fidelity(f1, f2):
    """Two Werner-like pairs swapped, each outcome corrected by the frame, averaged."""
    rho = np.kron(werner(f1), werner(f2))  # (A, B1, B2, C)
    total = 0.0
    for (zz, xx), name in PARITIES.items():
        proj = np.kron(np.kron(I2, np.outer(BELL[name], BELL[name].conj())), I2)
        out = (proj @ rho @ proj).reshape([2] * 8)
        ac = np.einsum("abcdebch->adeh", out).reshape(4, 4)
        frame = swap_frame("psi_plus", "psi_plus", zz, xx)
        u = np.kron(MATRIX[frame.first.name], MATRIX[frame.second.name])
        ac = u @ ac @ u.conj().T
        total += float((BELL["psi_plus"].conj() @ ac @ BELL["psi_plus"]).real)
    assert total == pytest.approx(werner_swap_fidelity(f1, f2))
    assert werner_swap_fidelity(f1, f2) == pytest.approx(f1 * f2 + (1 - f1) * (1 - f2) / 3)


# GHZ -------------------------------------------------------------------------------------------
GHZ = (np.kron(np.kron(KET0, KET0), KET0) + np.kron(np.kron(KET1, KET1), KET1)) / np.sqrt(2)


def pauli_string(s: str) -> np.ndarray:
    out = MATRIX[s[0]]
    for ch in s[1:]:
        out = np.kron(out, MATRIX[ch])
    return out


def b_ghz_operation() -> np.ndarray:
    """B's GHZ operation (sequences.network_ops), ideal, on (A, B's memory, B's electron, C):
    exp(-i pi/4 Z_e X_m), the electron turned by -pi/2 about x (the compiled pi/2 as the
    model replays it, hil_tests/test_network_ops.py), Z on the memory; the electron is then
    read in Z. The memory's half, as SwapToMemory wrote it, is in the gate's own axes the
    heralded state with a Z on the memory (sequences.library.BELL_TABLE): a Z first."""
    zx = on_qubit(SZ, 2, 4) @ on_qubit(SX, 1, 4)
    gate = np.cos(np.pi / 4) * np.eye(16) - 1j * np.sin(np.pi / 4) * zx
    turn = np.cos(np.pi / 4) * np.eye(16) + 1j * np.sin(np.pi / 4) * on_qubit(SX, 2, 4)
    written = on_qubit(SZ, 1, 4)  # the write's frame, half a turn from the gate's axes
    return on_qubit(SZ, 1, 4) @ turn @ gate @ written  # Z: the frame the compiler keeps


def physical_string(stabiliser: str) -> tuple[np.ndarray, int]:
    """A GHZ stabiliser as the physical operator that measures it (GHZ_BASES) and its sign."""
    out, sign = np.eye(1), 1
    for k, b in enumerate(stabiliser):
        basis, s = GHZ_BASES[k][b] if b != "I" else ("I", 1)
        out, sign = np.kron(out, MATRIX[basis]), sign * s
    return out, sign


@pytest.mark.parametrize("s1,s2", list(itertools.product(["psi_plus", "psi_minus"], repeat=2)))
@pytest.mark.parametrize("bright", [0, 1])
def test_the_ghz_frame_gives_every_stabiliser_its_sign(s1, s2, bright):
    """B's operation on two link pairs, the electron's outcome `bright`: every stabiliser of
    the GHZ state, measured in GHZ_BASES, has its sign once the frame is applied (the seven
    fix the state)."""
    state = b_ghz_operation() @ np.kron(BELL[s1], BELL[s2])  # (A, B1, B2, C)
    tensor = np.moveaxis(state.reshape(2, 2, 2, 2), 2, 0)[1 - bright].reshape(8)
    state3 = tensor / np.linalg.norm(tensor)  # (A, B1, C); bright: the electron's |0>
    frame = ghz_frame(pair_pauli(s1), pair_pauli(s2), bright)
    for _setting, terms in GHZ_SETTINGS.items():
        for stabiliser, sign in terms:
            operator, basis_sign = physical_string(stabiliser)
            raw = float((state3.conj() @ operator @ state3).real) * basis_sign
            assert raw * frame_sign(frame, stabiliser) * sign == pytest.approx(1.0), stabiliser


def ghz_rho(p: float) -> np.ndarray:
    return p * np.outer(GHZ, GHZ.conj()) + (1 - p) * np.eye(8) / 8


def basis_change(b: str) -> np.ndarray:
    """The unitary whose rows are the +1 and -1 eigenvectors of the Pauli b."""
    vectors = {
        "Z": [KET0, KET1],
        "X": [(KET0 + KET1) / np.sqrt(2), (KET0 - KET1) / np.sqrt(2)],
        "Y": [(KET0 + 1j * KET1) / np.sqrt(2), (KET0 - 1j * KET1) / np.sqrt(2)],
    }[b]
    return np.array([v.conj() for v in vectors])


def outcome_probabilities(rho: np.ndarray, setting: str) -> tuple[np.ndarray, np.ndarray]:
    """The 8 outcomes (+-1 per qubit) of measuring `setting` on rho, and their probabilities."""
    u = basis_change(setting[0])
    for b in setting[1:]:
        u = np.kron(u, basis_change(b))
    probs = np.clip(np.real(np.diag(u @ rho @ u.conj().T)), 0, None)
    results = np.array(
        [[1 - 2 * bit for bit in bits] for bits in itertools.product((0, 1), repeat=3)]
    )
    return results, probs / probs.sum()


def sample_values(rho, shots, rng, terms=GHZ_SETTINGS):
    values = {}
    for setting in terms:
        results, probs = outcome_probabilities(rho, setting)
        draws = results[rng.choice(8, size=shots, p=probs)]
        values[setting] = stabiliser_values(setting, draws, terms=terms)
    return values


def exact_sigma(rho, shots, terms, weight):
    """The estimator's true sigma: each setting's per-shot value variance (exact) / shots."""
    variance = 0.0
    for setting in terms:
        results, probs = outcome_probabilities(rho, setting)
        v = stabiliser_values(setting, results, terms=terms)
        variance += (probs @ v**2 - (probs @ v) ** 2) / shots
    return float(np.sqrt(variance)) * weight


def test_ghz_estimators_on_exact_states():
    rng = np.random.default_rng(1)
    perfect = ghz_fidelity(sample_values(ghz_rho(1.0), 50, rng))
    # all shots perfect: the value is 1, yet 50 shots a setting cannot make it certain
    assert (perfect.value, perfect.high) == pytest.approx((1.0, 1.0))
    assert 0.95 < perfect.low < 0.995
    bound = ghz_fidelity_bound(sample_values(ghz_rho(1.0), 50, rng, GHZ_GENERATORS))
    assert bound.value == pytest.approx(1.0)
    p, shots = 0.6, 20000
    f_true, bound_true = p + (1 - p) / 8, (3 * p - 1) / 2
    estimate = ghz_fidelity(sample_values(ghz_rho(p), shots, rng))
    sigma = exact_sigma(ghz_rho(p), shots, GHZ_SETTINGS, 1 / 8)  # about 0.0024
    assert estimate.sigma == pytest.approx(sigma, rel=0.05)
    assert abs(estimate.value - f_true) < 5 * sigma  # 5 sigma: a 3-sigma draw passes
    lower = ghz_fidelity_bound(sample_values(ghz_rho(p), shots, rng, GHZ_GENERATORS))
    sigma_b = exact_sigma(ghz_rho(p), shots, GHZ_GENERATORS, 1 / 2)  # about 0.005
    assert abs(lower.value - bound_true) < 5 * sigma_b
    assert lower.value < estimate.value  # a bound, and here a loose one (0.4 against 0.65)


def test_ghz_interval_covers_the_truth_95_percent_of_the_time():
    """2000 experiments of 400 shots per setting at p = 0.7: coverage 0.95 +- 0.0049 (1
    sigma of a binomial fraction of 2000); 0.025 (5 sigma) leaves the normal interval's own
    small bias room."""
    rng = np.random.default_rng(7)
    p, shots, runs = 0.7, 400, 2000
    truth = p + (1 - p) / 8
    rho = ghz_rho(p)
    table = {s: outcome_probabilities(rho, s) for s in GHZ_SETTINGS}
    values = {s: stabiliser_values(s, table[s][0]) for s in GHZ_SETTINGS}
    covered = 0
    for _ in range(runs):
        sample = {s: values[s][rng.choice(8, size=shots, p=table[s][1])] for s in GHZ_SETTINGS}
        e = ghz_fidelity(sample)
        covered += e.low <= truth <= e.high
    assert abs(covered / runs - 0.95) < 0.025


# teleportation ------------------------------------------------------------------------------------
def input_state(name: str) -> np.ndarray:
    basis, sign = CARDINAL_STATES[name]
    return basis_change(basis)[0 if sign == 1 else 1].conj()


def teleport_success(resource_rho: np.ndarray, name: str) -> float:
    """Exact: the sender's BSM on (input, its half), each outcome's correction at the
    receiver, the probability the receiver's result in the state's basis is the state's."""
    psi = input_state(name)
    rho = np.kron(np.outer(psi, psi.conj()), resource_rho)  # (S, A, C)
    basis, sign = CARDINAL_STATES[name]
    success = 0.0
    for (zz, xx), bell in PARITIES.items():
        proj = np.kron(np.outer(BELL[bell], BELL[bell].conj()), I2)
        out = (proj @ rho @ proj).reshape([2] * 6)
        c = np.einsum("abcabf->cf", out)  # the receiver's (unnormalised) state
        correction = teleport_correction(pair_pauli("psi_plus"), zz, xx)
        for result in (1, -1):
            row = basis_change(basis)[0 if result == 1 else 1]
            prob = float((row @ c @ row.conj()).real)
            if corrected_outcome(basis, result, correction) == sign:
                success += prob
    return success


@pytest.mark.parametrize("f", [1.0, 0.85, 0.6])
def test_teleportation_through_a_werner_pair_gives_two_f_plus_one_over_three(f):
    for name in CARDINAL_STATES:
        assert teleport_success(werner(f), name) == pytest.approx((2 * f + 1) / 3), name


def test_teleport_estimator_on_exact_fractions_and_its_bound():
    perfect = teleport_fidelity({s: (500, 500) for s in CARDINAL_STATES})
    assert (perfect.value, perfect.high) == (1.0, 1.0)
    assert 0.99 < perfect.low < 0.9995  # 3000 successes: near 1, never certain
    few = teleport_fidelity({s: (5, 5) for s in CARDINAL_STATES})
    assert few.value == 1.0 and few.low < 0.9 and not few.above(0.95)
    f = 0.85
    expected = (2 * f + 1) / 3  # 0.9
    shots = 1000
    exact = teleport_fidelity({s: (round(expected * shots), shots) for s in CARDINAL_STATES})
    assert exact.value == pytest.approx(expected)
    adjusted = (round(expected * shots) + 2) / (shots + 4)  # Agresti-Coull
    assert exact.sigma == pytest.approx(np.sqrt(adjusted * (1 - adjusted) / (shots + 4) / 6))
    assert exact.above(CLASSICAL_BOUND)
    poor = teleport_fidelity({s: (34, 50) for s in CARDINAL_STATES})  # 0.68, sigma 0.027
    assert poor.value > CLASSICAL_BOUND and not poor.above(CLASSICAL_BOUND)


def test_teleport_interval_covers_the_truth_95_percent_of_the_time():
    """4000 experiments of 6 x 200 shots at F_avg 0.8: coverage 0.95 +- 0.0034 (1 sigma);
    tolerance 0.02 (about 6 sigma) for the normal interval's bias."""
    rng = np.random.default_rng(3)
    truth, shots, runs = 0.8, 200, 4000
    good = rng.binomial(shots, truth, size=(runs, 6))
    covered = 0
    for row in good:
        e = teleport_fidelity(
            {s: (int(k), shots) for s, k in zip(CARDINAL_STATES, row, strict=True)}
        )
        covered += e.low <= truth <= e.high
    assert abs(covered / runs - 0.95) < 0.02


def test_a_pauli_frame_flips_what_it_anticommutes_with():
    assert corrected_outcome("Z", 1, Pauli.named("X")) == -1
    assert corrected_outcome("X", 1, Pauli.named("X")) == 1
    assert corrected_outcome("X", -1, Pauli.named("Y")) == 1
    with pytest.raises(ValueError, match="'W' is not a Pauli"):
        Pauli.named("W")


def test_closing_discards_what_is_open_and_pruning_keeps_the_counts():
    (b, a, _c), outcome = _b_sent()
    applied = a.on_message("B", as_received(outcome[0]), 10.001)
    actions = b.close(10.01)
    assert records(actions)[0].kind == "shutdown" and [s.to for s in sends(actions)] == ["A", "C"]
    assert b.ledger.open() == 0 and b.ledger.discarded == {"shutdown": 1}
    assert b.prune(10.01 + 599) == 0  # kept a while: a late message is refused
    b.on_message("A", as_received(sends(applied)[0]), 10.02)
    assert b.ledger.refused == 1
    assert b.prune(10.01 + 601) == 1 and b.attempts == {}
    assert b.on_message("A", as_received(sends(applied)[0]), 700.0) == []
    assert (b.ledger.foreign, b.ledger.attempted, b.ledger.discarded) == (1, 1, {"shutdown": 1})


# the applications end to end on state vectors ----------------------------------------------
def measure(state: np.ndarray, setting: str, rng) -> tuple[int, ...]:
    """One shot of a pure state measured qubit by qubit in `setting`: +1/-1 each."""
    u = basis_change(setting[0])
    for b in setting[1:]:
        u = np.kron(u, basis_change(b))
    probs = np.abs(u @ state) ** 2
    index = rng.choice(len(probs), p=probs / probs.sum())
    bits = [(index >> (len(setting) - 1 - k)) & 1 for k in range(len(setting))]
    return tuple(1 - 2 * b for b in bits)


def test_ghz_through_the_protocol_gives_fidelity_one_whatever_the_links_heralded():
    """Every shot: random link states and Paulis applied, B's operation and readout drawn
    from the state, the three results drawn in the setting; the frame from B's ghz_outcome
    (checked against its schema) and the ends' Paulis makes every shot a perfect GHZ's."""
    rng = np.random.default_rng(11)
    tally = GhzTally()
    for shot in range(400):
        setting = list(GHZ_SETTINGS)[shot % 5]
        s1, s2 = rng.choice(["psi_plus", "psi_minus"], size=2)
        pa, pb1, pb2, pc = rng.choice(list("IXYZ"), size=4)
        state = np.kron(BELL[s1], BELL[s2])
        for k, p in enumerate((pa, pb1, pb2, pc)):
            state = on_qubit(MATRIX[p], k, 4) @ state
        state = b_ghz_operation() @ state
        branches = np.moveaxis(state.reshape(2, 2, 2, 2), 2, 0).reshape(2, 8)
        p_bright = float(np.vdot(branches[0], branches[0]).real)
        m = int(rng.random() < p_bright)
        state3 = branches[1 - m] / np.linalg.norm(branches[1 - m])
        msg = unpack(
            pack(
                "ghz_outcome",
                1,
                ghz=f"g{shot}",
                ends=["A", "C"],
                link_pairs=[f"ab{shot}", f"bc{shot}"],
                link_states=[str(s1), str(s2)],
                memory_applied=[str(pb1)],
                electron_applied=[str(pb2)],
                electron_bright=m,
                setting=setting,
            ),
            APPLICATIONS,
        )
        frame = ghz_frame_of(msg, (str(pa),), (str(pc),))
        physical = "".join(GHZ_BASES[k][b][0] for k, b in enumerate(setting))
        raw = measure(state3, physical, rng)
        tally.add(
            setting,
            tuple(
                r * GHZ_BASES[k][b][1] for k, (r, b) in enumerate(zip(raw, setting, strict=True))
            ),
            frame,
        )
    estimate = tally.fidelity()
    assert estimate.value == pytest.approx(1.0) and estimate.low > 0.9  # never certain
    assert tally.bound().value == pytest.approx(1.0)


def test_ghz_without_the_frame_is_not_a_ghz():
    """The same shots tallied with no frame: the estimate falls (so the frame matters)."""
    rng = np.random.default_rng(12)
    tally = GhzTally()
    no_frame = (Pauli(), Pauli(), Pauli())
    for shot in range(400):
        setting = list(GHZ_SETTINGS)[shot % 5]
        state = b_ghz_operation() @ np.kron(BELL["psi_minus"], BELL["psi_plus"])
        branch = np.moveaxis(state.reshape(2, 2, 2, 2), 2, 0).reshape(2, 8)[0]
        physical = "".join(GHZ_BASES[k][b][0] for k, b in enumerate(setting))
        raw = measure(branch / np.linalg.norm(branch), physical, rng)
        signs = tuple(GHZ_BASES[k][b][1] for k, b in enumerate(setting))
        tally.add(setting, tuple(r * g for r, g in zip(raw, signs, strict=True)), no_frame)
    assert tally.fidelity().high < 0.5


def test_teleportation_through_the_protocol_gives_fidelity_one():
    """Six cardinal states, 60 shots each: the sender's BSM drawn from the state, its
    parities through the message, the receiver's correction applied to its qubit, its result
    in the state's basis: every one right; without the correction, not."""
    rng = np.random.default_rng(5)
    sender, receiver = TeleportSender("A", "C"), TeleportReceiver("C", "A")
    uncorrected_good = 0
    for shot in range(360):
        name = list(CARDINAL_STATES)[shot % 6]
        basis, sign = CARDINAL_STATES[name]
        swap = f"ab{shot}|bc{shot}"
        receiver.on_pair_delivered(swap, f"bc{shot}")
        state = np.kron(input_state(name), BELL["psi_plus"])  # (S, A, C): the resource psi+
        probs = {k: project_pair(state, 0, 3, BELL[b])[1] for k, b in PARITIES.items()}
        keys = list(probs)
        zz, xx = keys[rng.choice(4, p=np.array(list(probs.values())) / sum(probs.values()))]
        received, _ = project_pair(state, 0, 3, BELL[PARITIES[(zz, xx)]])
        (send,) = sender.on_bsm(swap, zz, xx, 1.0, state=name)
        (apply,) = receiver.on_message(
            "A", unpack(pack(send.kind, 1, **send.fields), APPLICATIONS), 1.0
        )
        assert apply.link_pair == f"bc{shot}"
        result = measure(MATRIX[apply.pauli] @ received, basis, rng)[0]
        uncorrected_good += measure(received, basis, rng)[0] == sign
        assert receiver.on_result(swap, basis, result) == sign
    estimate = receiver.estimate()
    assert estimate.value == 1.0 and estimate.above(CLASSICAL_BOUND)
    assert uncorrected_good < 0.8 * 360  # without it 180 +- 9.5 right: 288 is 11 sigma above


def test_the_teleport_receiver_refuses_what_it_cannot_use():
    receiver = TeleportReceiver("C", "A")
    msg = {"type": "teleport_outcome", "swap": "x|y", "zz": 0, "xx": 1, "t_bsm": 1.0}
    assert receiver.on_message("A", msg, 1.0) == [] and receiver.ledger.refused == 1  # no pair
    receiver.on_pair_delivered("x|y", "y")
    receiver.on_pair_discarded("x|y")
    assert receiver.on_message("A", msg, 1.0) == [] and receiver.ledger.refused == 2
    receiver.on_pair_delivered("p|q", "q")
    assert receiver.on_message("B", dict(msg, swap="p|q"), 1.0) == []  # not the sender
    assert receiver.ledger.foreign == 1
    (apply,) = receiver.on_message("A", dict(msg, swap="p|q"), 1.0)
    assert receiver.on_message("A", dict(msg, swap="p|q"), 1.0) == []  # duplicate
    assert receiver.ledger.duplicates == 1 and apply.pauli == "Y"  # X (psi+) times Z (phi-)
    with pytest.raises(ValueError, match="no outcome arrived"):
        receiver.on_result("x|y", "Z", 1)


def test_a_link_pair_reported_twice_is_one_attempt():
    b, a, _ = machines()
    at_a, at_b1 = pair_ab()
    assert b.on_link_pair(at_b1, 10.0) == [] and b.on_link_pair(at_b1, 10.0) == []
    assert a.on_link_pair(at_a, 10.0) == [] and a.on_link_pair(at_a, 10.0) == []
    assert (b.ledger.attempted, b.ledger.duplicates, a.ledger.attempted) == (1, 1, 1)
    with pytest.raises(ValueError, match="must not make it"):
        b.on_link_pair(pair_ab(ident="ab:2:2")[1], 10.0)  # a second A-B pair while one is held


def test_a_pair_from_the_link_layers_memory_joins_a_swap():
    from controller.link.memory import StoredPair

    stored = StoredPair("ab:4:2", "AB", "A", "psi_minus", 0.92, 0.7, 10.0, "B.c13", goodness=0.85)
    pair = LinkPair.from_stored(stored, "B")
    assert (pair.nodes, pair.state, pair.goodness, pair.made) == (
        ("B", "A"),
        "psi_minus",
        0.85,
        10.0,
    )
    b, _, _ = machines()
    b.on_link_pair(pair, 10.0)
    (measure,) = b.on_link_pair(pair_bc()[1], 10.01)
    (to_a, _) = sends(b.on_bsm(measure.swap, 0, 0, 10.02))
    assert to_a.fields["goodness"] == pytest.approx(werner_swap_fidelity(0.85, 0.8))
