"""The real-time sequencer over its serial line: upload, run, events on the virtual clock."""

import time

import pytest

from qnode.errors import ProgramError
from sequences.program import Instruction, Op, assemble, encode


def wait_state(seq, states, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (state := seq.state()) not in states:
        assert time.monotonic() < deadline, f"sequencer stuck in {state}"
        time.sleep(0.01)
    return state


def test_events_carry_virtual_times_of_the_program(open_driver):
    seq = open_driver("sequencer")
    program = assemble(
        """
        SET r2, 0
        EVENT 1, r2
        WAIT 1000
    loop:
        ADD r2, 1
        WAIT 2500
        EVENT 2, r2
        LOOP loop, 4
        WAIT 12us
        EVENT 3
        HALT
        """
    )
    seq.load(program)
    assert seq.program_size() == len(program.instructions)
    seq.run()
    assert wait_state(seq, {"HALTED"}) == "HALTED"
    events = seq.read_events()
    assert [(e.time_ns, e.code, e.value) for e in events] == [
        (0, 1, 0),
        (3500, 2, 1),
        (6000, 2, 2),
        (8500, 2, 3),
        (11000, 2, 4),
        (23000, 3, 0),
    ]
    assert seq.read_events() == []  # the FIFO was drained


def test_ttl_lines_follow_the_program(open_driver, maybe_sim):
    seq = open_driver("sequencer")
    seq.load(assemble("TTL_SET 0x5\nTTL_CLR 0x1\nHALT"))
    seq.run()
    wait_state(seq, {"HALTED"})
    assert seq.ttl_lines() == 0x4
    seq.safe_state()
    assert seq.ttl_lines() == 0
    if maybe_sim:
        assert maybe_sim.state(seq.name)["ttl"] == 0


def test_software_herald_and_sync(open_driver):
    seq = open_driver("sequencer")
    text = """
        WAIT_SYNC 1s
        WAIT_HERALD r3, 1s
        EVENT 9, r3
        WAIT_HERALD r4, 200us
        EVENT 10, r4
        HALT
    """
    seq.load(assemble(text))
    seq.run()
    assert wait_state(seq, {"WAITING"}) == "WAITING"
    seq.sync()
    seq.send_herald("psi_minus")
    wait_state(seq, {"HALTED"})
    events = seq.read_events()
    assert [(e.code, e.value) for e in events] == [(9, 2), (10, -1)]  # -1: herald timeout
    assert events[1].time_ns - events[0].time_ns == 200_000


def test_firmware_rejects_an_invalid_image_with_instruction_and_reason(open_driver):
    seq = open_driver("sequencer")
    good = encode([Instruction(Op.WAIT, d=100), Instruction(Op.HALT)])
    bad = bytearray(good)
    bad[8] = 0x42  # opcode of instruction 0
    import zlib

    bad[-4:] = zlib.crc32(bytes(bad[:-4])).to_bytes(4, "little")
    with pytest.raises(ProgramError, match=r"instruction 0: unknown opcode 0x42"):
        seq.load_image(bytes(bad))
    assert seq.program_size() == 0
    bad[-1] ^= 0xFF
    with pytest.raises(ProgramError, match="CRC mismatch"):
        seq.load_image(bytes(bad))


def test_rejection_names_the_source_line(open_driver):
    """A program the host let through but the firmware refuses maps back to its text line."""
    seq = open_driver("sequencer")
    program = assemble("WAIT 100\nWAIT 200\nHALT")
    # tamper after assembly: instruction 1 (source line 2) gets a sub-resolution duration
    program.instructions[1] = Instruction(Op.WAIT, d=2)
    from sequences import program as fmt

    body = bytearray(fmt._HEADER.pack(fmt.MAGIC, fmt.FORMAT_VERSION, 3))
    for ins in program.instructions:
        body += fmt._INSTRUCTION.pack(int(ins.op), ins.a, ins.b, ins.c, ins.d)
    body += fmt._CRC.pack(__import__("zlib").crc32(body))
    with pytest.raises(ProgramError) as err:
        seq.load_image(bytes(body), program)
    assert err.value.line == 2 and "clock resolution" in err.value.reason


def _attempt_program(lab, window_ns: int, max_attempts: int):
    from controller.node.runtime import hardware_of
    from sequences.compiler import compile_sequence
    from sequences.operations import EntanglementAttempt, Sequence
    from sequences.parameters import defaults

    params = {
        **defaults(),
        "mw_frequency_hz": 2.87e9,
        "alpha_amplitude_v": 0.1,
        "herald_window_ns": window_ns,
    }
    seq = Sequence("attempt", (EntanglementAttempt(max_attempts=max_attempts),), 1)
    return compile_sequence(seq, params, hardware_of(lab, "A")).program


def test_attempt_loop_ends_on_a_software_herald(open_driver, lab):
    seq = open_driver("sequencer", node="A")
    seq.load(_attempt_program(lab, window_ns=2_000_000_000, max_attempts=5))
    seq.run()
    wait_state(seq, {"WAITING"})
    seq.send_herald("psi_minus")
    wait_state(seq, {"HALTED"})
    events = {e.code: e.value for e in seq.read_events()}
    assert events[1100] == 2 and events[1101] == 1 and events[1000] == 0


def test_attempt_loop_gives_up_after_max_attempts(open_driver, lab):
    seq = open_driver("sequencer", node="A")
    seq.load(_attempt_program(lab, window_ns=4_000_000, max_attempts=3))
    seq.run()
    wait_state(seq, {"HALTED"})
    events = {e.code: e.value for e in seq.read_events()}
    assert events[1102] == 3 and events[1000] == 1 and 1100 not in events


def test_shared_sync_starts_both_nodes_together(lab, resources, sim):
    """AUTO: the midpoint's sync fires once both sequencers wait for it, not before."""
    seqs = [lab.make_driver(node, "seq", resources) for node in ("A", "B")]
    tagger = lab.make_driver("M", "herald", resources)  # the herald logic: sync output, windows
    program = assemble("WAIT_SYNC 5s\nEVENT 1\nHALT")
    with seqs[0], seqs[1], tagger:
        tagger.set_sync_auto(True)
        try:
            before = tagger.sync_count()
            seqs[0].load(program)
            seqs[1].load(program)
            started = time.monotonic()
            seqs[0].run()
            time.sleep(0.3)
            assert seqs[0].state() == "WAITING"  # alone, A waits for B
            assert tagger.sync_count() == before
            seqs[1].run()
            for seq in seqs:
                wait_state(seq, {"HALTED"})
            assert time.monotonic() - started < 3.0  # released by the sync, not the timeout
            assert tagger.sync_count() == before + 1
            a_waited = seqs[0].read_events()[0].time_ns
            b_waited = seqs[1].read_events()[0].time_ns
            # armed together, both reach the sync at B's virtual lateness (none here), not
            # after the 0.3 s of wall time A waited (docs/simulation.md "Virtual time")
            assert a_waited == b_waited
        finally:
            tagger.set_sync_auto(False)
        # OFF: only a fired sync releases
        seqs[0].load(program)
        seqs[0].run()
        wait_state(seqs[0], {"WAITING"})
        tagger.fire_sync()
        wait_state(seqs[0], {"HALTED"})
        assert [e.code for e in seqs[0].read_events()] == [1]
        seqs[1].stop()
