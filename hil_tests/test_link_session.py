"""The link layer's decisions as pure code: LinkSession fed its own shots, herald messages, the
peer's checks and a clock it is given, and ShotParser fed sequencer events. No sockets, no
daemons: what is sent to the peer is collected, what is recorded is read back from the
session file."""

from __future__ import annotations

import time

import numpy as np
import pytest

from controller.data.sessionfile import DELIVERED, DISCARDED, SessionFile, read_session
from controller.link.messages import FROM_MIDPOINT
from controller.link.plan import Expectation, plan_round, shares
from controller.link.session import LinkSession
from controller.link.shots import ROUND_READOUT, OwnShot, ShotParser
from controller.link.vocabulary import HERALD_TIMEOUT_S, OUTCOMES, PEER_TIMEOUT_S
from controller.messaging.wire import MessageError, pack, unpack
from sequences.compiler import ATTEMPTS, ATTEMPTS_EXHAUSTED, CR_COUNTS, HERALD, SHOT_END
from sequences.program import Event

THRESHOLD = 5
PSI_PLUS, PSI_MINUS = OUTCOMES.index("psi_plus"), OUTCOMES.index("psi_minus")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """What the session sends its peer, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def __call__(self, kind: str, **fields) -> None:
        self.sent.append((kind, fields))

    def of(self, kind: str) -> list[dict]:
        return [fields for k, fields in self.sent if k == kind]


@pytest.fixture
def make(tmp_path):
    sessions = []

    def make(
        role: str,
        node: str = "A",
        basis: str = "X",
        forward=None,
        heralding="hardware",
        pairs: int = 10,
        delivery: str | None = None,
    ):
        peer, clock = Peer(), Clock()
        nodes = ["A", "B"]
        file = SessionFile(
            tmp_path / f"s_{node}_{role}.h5",
            session="s",
            node=node,
            role=role,
            protocol="single_click",
            request={"protocol": "single_click"},
            lab_text="",
            parameters={},
            software_version="test",
        )
        session = LinkSession(
            session="s",
            node=node,
            role=role,
            peer=nodes[1] if node == nodes[0] else nodes[0],
            nodes=nodes,
            request={
                "protocol": "single_click",
                "pairs": pairs,
                "heralding": heralding,
                **({"delivery": delivery} if delivery else {}),
            },
            expected=Expectation(0.1, 1e-4, 0.8),
            file=file,
            readout_threshold=THRESHOLD,
            send_to_peer=peer,
            forward=forward,
            clock=clock,
        )
        for shot in range(10):
            session.basis_of[shot] = basis
        sessions.append(session)
        return session, peer, clock

    yield make
    for session in sessions:
        if session.file.is_open:
            session.finish("completed")


def shot(attempts: int = 7, outcome: int = PSI_PLUS, counts: int = 9, valid: bool = True):
    return OwnShot(True, attempts, outcome, counts, valid, 1000)


def herald(seq: int, shot_index: int, attempt: int = 7, outcome: str = "psi_plus") -> dict:
    """A herald message as the node receives it: packed and checked against its schema."""
    fields = dict(session="s", seq=seq, shot=shot_index, sync=shot_index + 1, attempt=attempt)
    return unpack(pack("herald", seq, outcome=outcome, reason="", **fields), FROM_MIDPOINT)


def pairs_in(session: LinkSession) -> np.ndarray:
    session.flush_heralds()
    session.file.flush()
    return read_session(session.file.path)["pairs"]


# the responder checks, the initiator decides ---------------------------------------------------
def test_a_matching_herald_is_checked_good_and_sent_to_the_initiator(make):
    session, peer, _ = make("responder", node="B")
    session.on_shots(0, [(0, shot())])
    assert peer.of("pair_check") == []  # waits for the midpoint
    session.on_herald(herald(1, 0))
    (check,) = peer.of("pair_check")
    assert check == {
        "session": "s",
        "shot": 0,
        "attempt": 7,
        "outcome": PSI_PLUS,
        "ok": True,
        "reason": "",
    }


def test_the_initiator_delivers_only_when_both_checks_agree(make):
    session, peer, _ = make("initiator")
    session.on_herald(herald(1, 0))  # the herald may come before the node's own shot
    session.on_shots(0, [(0, shot())])
    assert peer.of("pair_decision") == []  # its peer's check is still missing
    session.on_peer_check({"shot": 0, "attempt": 7, "outcome": PSI_PLUS, "ok": True, "reason": ""})
    (decision,) = peer.of("pair_decision")
    assert decision["delivered"] is True and decision["reason"] == ""
    (row,) = pairs_in(session)
    assert row["status"] == DELIVERED and row["id"] == b"s:0:7"
    assert session.stats.delivered == 1


def test_the_peer_disagreeing_on_the_attempt_discards_the_pair(make):
    session, peer, _ = make("initiator")
    session.on_shots(0, [(0, shot())])
    session.on_herald(herald(1, 0))
    session.on_peer_check({"shot": 0, "attempt": 8, "outcome": PSI_PLUS, "ok": True, "reason": ""})
    (decision,) = peer.of("pair_decision")
    assert decision["delivered"] is False
    assert decision["reason"] == "the nodes disagree on the attempt or outcome"


def test_the_peers_bad_verdict_is_the_reason_for_the_discard(make):
    session, peer, _ = make("initiator")
    session.on_shots(0, [(0, shot())])
    session.on_herald(herald(1, 0))
    session.on_peer_check(
        {"shot": 0, "attempt": 7, "outcome": PSI_PLUS, "ok": False, "reason": "memory check failed"}
    )
    (decision,) = peer.of("pair_decision")
    assert (decision["delivered"], decision["reason"]) == (False, "B: memory check failed")


# a herald that disagrees with the node's own shot ------------------------------------------------
@pytest.mark.parametrize(
    ("own", "message", "reason"),
    [
        (shot(attempts=7), herald(1, 0, attempt=8), "attempt id mismatch: sequencer 7, midpoint 8"),
        (
            shot(outcome=PSI_PLUS),
            herald(1, 0, outcome="psi_minus"),
            "outcome mismatch: sequencer psi_plus, midpoint psi_minus",
        ),
        (shot(valid=False), herald(1, 0), "memory check failed"),
        (
            OwnShot(False, 7, 0, -1, True, 1000),
            herald(1, 0),
            "the midpoint heralded, the sequencer did not",
        ),
        (shot(), herald(1, 0, outcome="fail"), "midpoint: fail, "),
    ],
)
def test_a_herald_that_disagrees_with_the_sequencer_is_a_bad_check(make, own, message, reason):
    session, peer, _ = make("responder", node="B")
    session.on_shots(0, [(0, own)])
    session.on_herald(message)
    (check,) = peer.of("pair_check")
    assert check["ok"] is False
    assert check["reason"] == reason


# sequence numbers -------------------------------------------------------------------------------
def test_a_duplicated_herald_is_dropped_not_checked_twice(make):
    session, peer, _ = make("responder", node="B")
    session.on_shots(0, [(0, shot()), (1, shot())])
    session.on_herald(herald(1, 0))
    session.on_herald(herald(1, 0))
    assert session.stats.duplicates == 1
    assert session.stats.herald_messages == 1
    assert len(peer.of("pair_check")) == 1


def test_a_gap_in_the_sequence_is_counted_and_the_missing_shot_times_out(make):
    session, peer, clock = make("responder", node="B")
    session.on_shots(0, [(0, shot()), (1, shot()), (2, shot())])
    session.on_herald(herald(1, 0))
    session.on_herald(herald(3, 2))  # herald 2 (shot 1) never arrives
    assert session.stats.gaps == 1
    assert [c["shot"] for c in peer.of("pair_check")] == [0, 2]
    clock.now += HERALD_TIMEOUT_S - 0.1
    session.sweep_timeouts()
    assert session.pending() == 1  # shot 1 still waits
    clock.now += 0.2
    session.sweep_timeouts()
    check = peer.of("pair_check")[-1]
    assert check["shot"] == 1 and check["ok"] is False
    assert check["reason"] == f"no herald message within {HERALD_TIMEOUT_S:g} s"
    assert session.pending() == 0


def test_a_herald_of_another_session_is_dropped(make):
    session, peer, _ = make("responder", node="B")
    session.on_shots(0, [(0, shot())])
    other = herald(1, 0)
    other["session"] = "another"
    session.on_herald(other)
    assert session.stats.unmatched == 1 and session.last_seq == 0
    assert peer.of("pair_check") == []


def test_two_heralds_for_one_shot_discard_it(make):
    session, peer, _ = make("responder", node="B")
    session.on_shots(0, [(0, shot())])
    session.on_herald(herald(1, 0))
    session.on_herald(herald(2, 0))
    checks = peer.of("pair_check")
    assert [c["ok"] for c in checks] == [True, False]
    assert checks[-1]["reason"] == "two heralds for one shot"


# timeouts on the initiator ---------------------------------------------------------------
def test_a_peer_that_never_checks_a_shot_gets_it_discarded(make):
    session, peer, clock = make("initiator")
    session.on_shots(0, [(0, shot())])
    session.on_herald(herald(1, 0))
    clock.now += PEER_TIMEOUT_S + 0.1
    session.sweep_timeouts()
    (decision,) = peer.of("pair_decision")
    assert decision["delivered"] is False
    assert decision["reason"] == f"no check from B within {PEER_TIMEOUT_S:g} s"


def test_a_delivery_the_peer_never_recorded_becomes_a_discard_at_the_end(make):
    session, _peer, _ = make("initiator")
    session.on_shots(0, [(0, shot()), (1, shot())])
    for seq, index in ((1, 0), (2, 1)):
        session.on_herald(herald(seq, index))
        session.on_peer_check(
            {"shot": index, "attempt": 7, "outcome": PSI_PLUS, "ok": True, "reason": ""}
        )
    session.on_recorded({"shot": 0})  # shot 1's acknowledgement never comes
    session.finish("completed")
    rows = read_session(session.file.path)["pairs"]
    assert [int(r["status"]) for r in rows] == [DELIVERED, DISCARDED]
    assert rows[1]["reason"] == b"B never recorded it"
    assert session.stats.delivered == 1 and session.stats.discarded == 1


def test_the_responder_records_a_decision_then_acknowledges_it(make):
    session, peer, _ = make("responder", node="B")
    session.on_shots(0, [(0, shot())])
    session.on_herald(herald(1, 0))
    decision = {
        "shot": 0,
        "attempt": 7,
        "outcome": PSI_PLUS,
        "delivered": True,
        "reason": "",
    }
    session.on_decision(decision)
    session.on_decision(decision)  # a repeat is acknowledged, not recorded twice
    assert len(pairs_in(session)) == 1
    assert peer.of("pair_recorded") == [{"session": "s", "shot": 0}] * 2


# the Pauli frame -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("node", "outcome", "basis", "counts", "bit"),
    [
        ("A", PSI_PLUS, "X", 9, 1),
        ("A", PSI_PLUS, "X", 1, -1),
        ("B", PSI_PLUS, "X", 9, 1),
        ("B", PSI_MINUS, "X", 9, -1),  # Z on B turns psi- into psi+: X flips
        ("B", PSI_MINUS, "Y", 1, 1),  # ... and so does Y
        ("B", PSI_MINUS, "Z", 9, 1),  # Z commutes with Z: no flip
        ("A", PSI_MINUS, "X", 9, 1),  # the frame is B's, not A's
    ],
)
def test_each_outcome_carries_its_pauli_frame(make, node, outcome, basis, counts, bit):
    role = "initiator" if node == "A" else "responder"
    session, _, _ = make(role, node=node, basis=basis)
    session.on_shots(0, [(0, shot(outcome=outcome, counts=counts))])
    name = OUTCOMES[outcome]
    session.on_herald(herald(1, 0, outcome=name))
    if role == "initiator":
        session.on_peer_check(
            {"shot": 0, "attempt": 7, "outcome": outcome, "ok": True, "reason": ""}
        )
    else:
        session.on_decision(
            {"shot": 0, "attempt": 7, "outcome": outcome, "delivered": True, "reason": ""}
        )
    (row,) = pairs_in(session)
    assert row["status"] == DELIVERED
    assert (row["outcome"], row["bit"], row["bell_state"]) == (outcome, bit, 1)


def test_a_kept_pair_has_no_bit(make):
    session, _, _ = make("responder", node="B", basis="keep")
    session.on_shots(0, [(0, OwnShot(True, 7, PSI_MINUS, -1, True, 1000))])
    session.on_herald(herald(1, 0, outcome="psi_minus"))
    session.on_decision(
        {"shot": 0, "attempt": 7, "outcome": PSI_MINUS, "delivered": True, "reason": ""}
    )
    (row,) = pairs_in(session)
    assert (row["bit"], row["counts"], row["outcome"]) == (0, -1, PSI_MINUS)


# software heralding ------------------------------------------------------------------------------
def test_software_heralds_go_to_the_sequencer_first_and_fails_are_not_checked(make):
    forwarded = []
    session, peer, _ = make("responder", node="B", forward=forwarded.append, heralding="software")
    session.on_herald(herald(1, 0, attempt=1, outcome="fail"))
    session.on_herald(herald(2, 0, attempt=2))
    assert forwarded == ["fail", "psi_plus"]
    assert peer.of("pair_check") == []  # the node's own shot is not in yet
    assert len(read_session(session.file.path)["heralds"]) == 0  # batched...
    session.flush_heralds()
    assert len(read_session(session.file.path)["heralds"]) == 2  # ...never lost


def test_software_heralding_without_a_way_to_forward_is_refused(make):
    with pytest.raises(ValueError, match="forward"):
        make("responder", node="B", heralding="software")


# schemas at the door ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"outcome": "psi_zero"}, "herald: outcome 'psi_zero' is not one of fail, psi_plus"),
        ({"attempt": "7"}, "herald: field 'attempt' is str, expected int"),
        ({"seq": True}, "herald: field 'seq' is bool, expected int"),
        ({"shot": None}, "herald: field 'shot' is NoneType, expected int"),
    ],
)
def test_a_herald_with_a_bad_field_never_reaches_the_session(change, error):
    fields = dict(session="s", seq=1, shot=0, sync=1, attempt=7, outcome="psi_plus")
    with pytest.raises(MessageError, match=error):
        unpack(pack("herald", 1, **{**fields, **change}), FROM_MIDPOINT)


# shot parsing ----------------------------------------------------------------------------------
def events(*records: tuple[int, int]) -> list[Event]:
    return [Event(100 * k, code, value) for k, (code, value) in enumerate(records)]


def test_shots_are_parsed_across_chunk_boundaries():
    parser = ShotParser(first_shot=40, measured=True)
    stream = events(
        (CR_COUNTS, 30),
        (ATTEMPTS, 12),
        (HERALD, PSI_MINUS),
        (ROUND_READOUT, 4),
        (SHOT_END, 0),
        (CR_COUNTS, 2),
        (ATTEMPTS_EXHAUSTED, 5000),
        (SHOT_END, 1),
    )
    first = parser.feed(stream[:3])
    assert first == []  # the shot is not over yet
    rest = parser.feed(stream[3:])
    assert rest == [
        (40, OwnShot(True, 12, PSI_MINUS, 4, True, 400)),
        (41, OwnShot(False, 5000, 0, -1, False, 700)),
    ]


def test_a_kept_round_ignores_readout_codes():
    parser = ShotParser(first_shot=0, measured=False)
    done = parser.feed(events((ATTEMPTS, 3), (HERALD, PSI_PLUS), (ROUND_READOUT, 9), (SHOT_END, 0)))
    assert done == [(0, OwnShot(True, 3, PSI_PLUS, -1, True, 300))]


# rounds ----------------------------------------------------------------------------------------
def test_verification_rounds_go_to_the_basis_furthest_from_its_share():
    assert plan_round("verify", 30, {}) == ("X", 12)
    assert plan_round("verify", 30, {"X": 10, "Y": 4}) == ("Z", 12)
    assert plan_round("verify", 3000, {}) == ("X", 200)  # rounds are bounded
    assert plan_round("Z", 5, {"Z": 4}) == ("Z", 3)


def test_the_shares_add_up_to_the_pairs_asked_for():
    assert shares("verify", 300) == {"X": 100, "Y": 100, "Z": 100}
    assert shares("verify", 100) == {"X": 34, "Y": 33, "Z": 33}
    assert shares("verify", 2) == {"X": 1, "Y": 1, "Z": 0}
    assert all(sum(shares("verify", n).values()) == n for n in range(1, 200))
    assert shares("X", 7) == {"X": 7}
    assert plan_round("verify", 100, {"X": 34, "Y": 33, "Z": 30}) == ("Z", 5)


def test_a_keep_round_is_one_shot_as_the_memory_holds_one_pair():
    assert plan_round("keep", 1, {}) == ("keep", 1)
    assert plan_round("keep", 5, {"keep": 4}) == ("keep", 1)


def good_pair(session: LinkSession, index: int, seq: int) -> None:
    """At the initiator: its own shot, the midpoint's herald and the peer's good check."""
    session.on_shots(0, [(index, shot())])
    session.on_herald(herald(seq, index))
    session.on_peer_check(
        {"shot": index, "attempt": 7, "outcome": PSI_PLUS, "ok": True, "reason": ""}
    )


def test_good_pairs_beyond_the_pairs_asked_for_are_discarded_on_both_sides(make):
    session, peer, _ = make("initiator", pairs=2, delivery="X")
    for k in range(4):
        good_pair(session, k, k + 1)
    decisions = peer.of("pair_decision")
    assert [d["delivered"] for d in decisions] == [True, True, False, False]
    assert decisions[2]["reason"] == "beyond the 2 pairs asked for"
    assert session.stats.delivered == 2 and session.delivered_by_basis == {"X": 2}
    assert session.stats.reasons == {"beyond the N pairs asked for": 2}
    rows = pairs_in(session)
    assert list(rows["status"]) == [DELIVERED, DELIVERED, DISCARDED, DISCARDED]
    assert rows[3]["reason"] == b"beyond the 2 pairs asked for" and rows[3]["bit"] == 0

    responder, answers, _ = make("responder", node="B", pairs=2, delivery="X")
    for k, decision in enumerate(decisions):
        responder.on_shots(0, [(k, shot())])
        responder.on_decision(decision)
    assert list(pairs_in(responder)["status"]) == list(rows["status"])
    assert responder.stats.delivered == 2
    assert len(answers.of("pair_recorded")) == 4


def test_a_bad_pair_beyond_the_request_keeps_its_own_reason(make):
    session, peer, _ = make("initiator", pairs=1, delivery="X")
    good_pair(session, 0, 1)
    session.on_shots(0, [(1, shot(valid=False))])
    session.on_herald(herald(2, 1))
    session.on_peer_check({"shot": 1, "attempt": 7, "outcome": PSI_PLUS, "ok": True, "reason": ""})
    assert [d["reason"] for d in peer.of("pair_decision")] == ["", "memory check failed"]


def test_verification_delivers_each_basis_its_share_and_no_more(make):
    session, peer, _ = make("initiator", pairs=4, delivery="verify")  # X 2, Y 1, Z 1
    bases = ["X", "X", "X", "Y", "Y", "Z"]
    for k, basis in enumerate(bases):
        session.basis_of[k] = basis
        good_pair(session, k, k + 1)
    delivered = [d["delivered"] for d in peer.of("pair_decision")]
    assert delivered == [True, True, False, True, False, True]
    assert peer.of("pair_decision")[2]["reason"] == "beyond the 4 pairs asked for (2 in X)"
    assert session.delivered_by_basis == {"X": 2, "Y": 1, "Z": 1}
    assert session.stats.delivered == 4


def test_one_pair_kept_is_one_pair_delivered(make):
    session, peer, _ = make("initiator", basis="keep", pairs=1, delivery="keep")
    good_pair(session, 0, 1)
    good_pair(session, 1, 2)
    assert [d["delivered"] for d in peer.of("pair_decision")] == [True, False]
    assert session.stats.delivered == 1 and session.delivered_by_basis == {"keep": 1}


def test_the_wall_clock_stamps_each_decision(make):
    session, _, _ = make("responder", node="B")
    before = time.time()
    session.on_shots(0, [(0, shot())])
    session.on_herald(herald(1, 0))
    session.on_decision({"shot": 0, "attempt": 7, "outcome": 1, "delivered": False, "reason": "x"})
    (row,) = pairs_in(session)
    assert before <= row["t"] <= time.time()
    assert row["status"] == DISCARDED and row["reason"] == b"x"


# the session's life -------------------------------------------------------------------------
def test_silence_of_the_peer_or_the_midpoint_ends_the_session(make):
    session, _, clock = make("initiator")
    assert session.silence(3.0, "M") is None
    clock.now += 2.0
    session.on_peer_message()
    assert session.on_midpoint_heartbeat("s", "m1")  # confirms the session
    clock.now += 2.0
    assert session.silence(3.0, "M") is None
    clock.now += 1.5
    session.on_midpoint_heartbeat("s", "m1")
    assert session.silence(3.0, "M") == "peer B fell silent"
    session.on_peer_message()
    clock.now += 3.5
    session.on_peer_message()
    assert session.silence(3.0, "M") == "midpoint M fell silent"


def test_a_midpoint_that_never_confirms_or_restarts_loses_the_session(make):
    session, _, clock = make("responder", node="B")
    for _ in range(3):  # beats about another session (or none) keep it alive, no more
        clock.now += 2.5
        session.on_peer_message()
        assert session.on_midpoint_heartbeat("", "m1")
    assert session.silence(3.0, "M") == "midpoint M never confirmed the session"
    assert session.on_midpoint_heartbeat("s", "m1")
    assert session.silence(3.0, "M") is None
    assert not session.on_midpoint_heartbeat("", "m2")  # a new instance: it never heard of s


def test_the_first_reason_to_end_wins(make):
    session, _, _ = make("initiator")
    assert session.end_with("aborted", "aborted by the operator")
    assert not session.end_with("failed", "peer B fell silent")
    assert session.ending == ("aborted", "aborted by the operator")


def test_a_round_done_before_the_round_began_here_is_not_lost(make):
    """The responder may report its round (a failure, at once) before the initiator has
    prepared its own run: the status waits for it."""
    session, _, _ = make("initiator")
    session.expect_peer_round()
    session.on_peer_round_done("run failed: B.mw does not answer")
    session.begin_round(0, 5, "Z")
    assert session.peer_round_status == "run failed: B.mw does not answer"
    assert [session.basis_of[k] for k in range(5)] == ["Z"] * 5
