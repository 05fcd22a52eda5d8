"""The sequence compiler (pure: no lab)."""

import numpy as np
import pytest

from qnode.errors import QnodeError
from sequences.compiler import (
    CR_COUNTS,
    SHOT_END,
    CompileError,
    Hardware,
    SweepError,
    compile_sequence,
    decoupling_phases,
)
from sequences.operations import (
    CountWindow,
    CRCheck,
    Decoupling,
    EntanglementAttempt,
    LaserPulse,
    MwPulse,
    Parallel,
    Param,
    Readout,
    Sequence,
    SequenceDataError,
    SpinInit,
    Sweep,
    SweepAxis,
    Wait,
    from_data,
    pi_pulse,
    to_data,
)
from sequences.parameters import defaults
from sequences.program import Op

HW = Hardware(
    ttl={"repump_aom": 0, "readout_aom": 1, "spin_pump_aom": 2},
    optics={"repump": "repump_aom", "readout": "readout_aom", "pump": "spin_pump_aom"},
    counters={"readout": 0},
    iq_channels=(1, 2),
    awg_sample_rate_hz=1.2e9,
    awg_amplitude_vpp=2.0,
    awg_memory_points=10_000,
)
PARAMS = {**defaults(), "mw_frequency_hz": 2.87e9, "pi_amplitude_v": 0.6, "pi2_amplitude_v": 0.3}


def ops_of(compiled):
    return [(i.op, i.a, i.b, i.c, i.d) for i in compiled.program.instructions]


def test_known_sequence_compiles_to_the_expected_program():
    seq = Sequence("t", (SpinInit(3000), MwPulse(0.5, 100, 90.0), Wait(1000), Readout(10_000)), 7)
    c = compile_sequence(seq, PARAMS, HW)
    assert ops_of(c) == [
        (Op.SET, 15, 0, 0, 0),
        (Op.TTL_SET, 0, 0, 0b100, 0),  # spin pump line 2
        (Op.WAIT, 0, 0, 0, 3000),
        (Op.TTL_CLR, 0, 0, 0b100, 0),
        (Op.AWG_TRIG, 0, 0, 0, 0),
        (Op.WAIT, 0, 0, 0, 100),  # 120 samples at 1.2 GS/s
        (Op.WAIT, 0, 0, 0, 1000),
        (Op.TTL_SET, 0, 0, 0b10, 0),
        (Op.COUNT, 0, 1, 0, 10_000),
        (Op.EVENT, 1, 1, 0, 0),
        (Op.TTL_CLR, 0, 0, 0b10, 0),
        (Op.EVENT, 15, SHOT_END, 0, 0),
        (Op.LOOP, 0, 0, 0, 7),
        (Op.HALT, 0, 0, 0, 0),
    ]
    assert c.shot_duration_ns == 3000 + 100 + 1000 + 10_000
    ((i, q),) = c.waveforms.values()
    assert len(i) == 120
    assert np.allclose(i, 0.0, atol=1e-12) and np.allclose(q, 0.5)  # 90 deg: all on Q, 0.5 V of 1 V
    assert c.settings == {"mw_frequency_hz": 2.87e9, "mw_power_dbm": 10.0}
    assert c.readouts == ["readout"]


def test_cr_check_block_retries_and_flags():
    c = compile_sequence(Sequence("t", (CRCheck(max_tries=3), Readout()), 1), PARAMS, HW)
    text = c.listing
    assert "COUNT c0, r0, 50000" in text and "BRANCH_GE r0, 5, passed" in text
    assert "LOOP check1, 3" in text and "SET r15, 1" in text and f"EVENT {CR_COUNTS}, r0" in text
    assert c.has_check


def test_identical_pulses_share_one_waveform_and_sweeps_override_params():
    seq = Sequence("t", (pi_pulse(), Wait(100), pi_pulse(), MwPulse(Param("a"), 50)), 1)
    c = compile_sequence(seq, PARAMS, HW, {"a": 0.2})
    assert len(c.waveforms) == 2 and c.listing.count("AWG_TRIG 0") == 2
    assert "AWG_TRIG 1" in c.listing


def test_a_sweep_of_a_name_the_sequence_never_reads_is_refused():
    """A misspelt sweep name would otherwise sweep nothing, point after point."""
    seq = Sequence("t", (pi_pulse(), Wait(Param("free_time_ns"))), 1)
    point = {"free_time_ns": 100.0, "mw_frequency_hz": 2.9e9, "pi_amplitude_v": 0.5}
    compile_sequence(seq, PARAMS, HW, point)  # read by the Wait, the carrier, the pulse
    with pytest.raises(SweepError, match=r"sweep of pi_amplitud_v: sequence t does not use it"):
        compile_sequence(seq, PARAMS, HW, {"free_time_ns": 100.0, "pi_amplitud_v": 0.5})


@pytest.mark.parametrize("stop", [float("inf"), float("nan")])
def test_a_sweep_axis_needs_finite_ends(stop):
    with pytest.raises(ValueError, match="start and stop must be finite"):
        SweepAxis.linspace("duration_ns", 0, stop, 3)


def test_decoupling_alternates_phases():
    c = compile_sequence(Sequence("t", (Decoupling(4, 1000),), 1), PARAMS, HW)
    assert c.listing.count("AWG_TRIG") == 4 and len(c.waveforms) == 2  # X and Y pi pulses
    (_, qx), (iy, _) = c.waveforms.values()
    assert np.allclose(qx, 0) and np.allclose(iy, 0, atol=1e-12)


def test_xy8_blocks_play_xyxyyxyx():
    c = compile_sequence(Sequence("t", (Decoupling(16, 1000),), 1), PARAMS, HW)
    segments = [int(line.split()[1]) for line in c.listing.splitlines() if "AWG_TRIG" in line]
    x, y = segments[0], segments[1]
    assert segments == [x, y, x, y, y, x, y, x] * 2
    assert decoupling_phases(6) == [0.0, 90.0] * 3


def test_parallel_cr_light_and_a_count_window():
    op = Parallel((LaserPulse("pump", 20_000), CountWindow(20_000, path="readout")))
    c = compile_sequence(Sequence("t", (op,), 1), PARAMS, HW)
    assert "TTL_SET 0x6\nCOUNT c0, r1, 20000\nEVENT 1, r1\nTTL_CLR 0x6" in c.listing


@pytest.mark.parametrize(
    ("ops", "index", "kind", "reason"),
    [
        ((Wait(100), Wait(2)), 1, "Wait", "below the sequencer clock resolution of 4 ns"),
        ((LaserPulse("readout", 1),), 0, "LaserPulse", "below the sequencer clock"),
        (
            (Parallel((LaserPulse("readout", 100), Readout(100))),),
            0,
            "Parallel",
            "use light path 'readout' (TTL 1) at the same time",
        ),
        (
            (Parallel((MwPulse(0.1, 100), MwPulse(0.2, 100))),),
            0,
            "Parallel",
            "use the microwave IQ channels at the same time",
        ),
        ((SpinInit(), MwPulse(1.5, 100)), 1, "MwPulse", "exceeds the lab limit of 1 V peak"),
        (
            (MwPulse(0.5, 5000), MwPulse(0.4, 5000)),
            1,
            "MwPulse",
            "beyond the AWG memory limit of 10000",
        ),
        ((MwPulse(Param("ghost"), 100),), 0, "MwPulse", "'ghost', which has no value"),
        ((LaserPulse("excitation", 100),), 0, "LaserPulse", "light path 'excitation' is not wired"),
        ((MwPulse(0.5, 0.1),), 0, "MwPulse", "shorter than one AWG sample"),
        ((MwPulse(0.5, 100, shape="sinc"),), 0, "MwPulse", "unknown pulse shape"),
        ((Wait(-5),), 0, "Wait", "negative"),
    ],
)
def test_rejections_name_the_operation(ops, index, kind, reason):
    with pytest.raises(CompileError) as err:
        compile_sequence(Sequence("bad", ops, 1), PARAMS, HW)
    assert err.value.index == index
    assert str(err.value).startswith(f"operation {index} ({kind}): ")
    assert reason in str(err.value)


def test_zero_duration_pulse_is_nothing():
    c = compile_sequence(Sequence("t", (MwPulse(0.5, 0), Readout()), 1), PARAMS, HW)
    assert "AWG_TRIG" not in c.listing and not c.waveforms


def test_sequences_travel_as_plain_data():
    seq = Sequence(
        "rt",
        (
            CRCheck(),
            SpinInit(),
            Parallel((LaserPulse("pump", 100), Readout())),
            MwPulse(Param("amp"), 40, 90.0, "gaussian"),
        ),
        33,
    )
    sweep = Sweep((SweepAxis.linspace("amp", 0, 1, 3, "V"),))
    back_seq, back_sweep = from_data(to_data(seq, sweep))
    assert back_seq == seq and back_sweep == sweep
    assert sweep.points()[1] == {"amp": 0.5}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "operations": [{"op": "teleport"}]}, "unknown operation 'teleport'"),
        ({"name": "x", "operations": [{"op": "wait"}]}, "missing 1 required positional argument"),
        (
            {"name": "x", "operations": [{"op": "wait", "duration_ns": 1, "colour": 3}]},
            "unknown field",
        ),
        ({"name": "x", "shots": -1, "operations": [{"op": "wait", "duration_ns": 4}]}, "'shots'"),
        ({"name": "x", "operations": []}, "non-empty list"),
        (
            {
                "name": "x",
                "operations": [{"op": "wait", "duration_ns": 4}],
                "sweep": [{"name": "a", "values": ["1"]}],
            },
            "list of numbers",
        ),
        ([1, 2], "a sequence is a map"),
    ],
)
def test_malformed_sequence_data_is_a_clear_error(data, message):
    with pytest.raises(SequenceDataError, match=message):
        from_data(data)


HW_ENT = Hardware(
    ttl={**HW.ttl, "excitation_aom": 3},
    optics={**HW.optics, "excitation": "excitation_aom"},
    counters=HW.counters,
    iq_channels=HW.iq_channels,
    awg_sample_rate_hz=HW.awg_sample_rate_hz,
    awg_amplitude_vpp=HW.awg_amplitude_vpp,
    awg_memory_points=HW.awg_memory_points,
)


def test_single_click_attempt_block():
    params = {**PARAMS, "alpha_amplitude_v": 0.1}
    c = compile_sequence(Sequence("e", (EntanglementAttempt(max_attempts=50),), 1), params, HW_ENT)
    text = c.listing
    assert "ADD r2, 1" in text and "WAIT_HERALD r3, 1000" in text
    assert "BRANCH_GE r3, 1, heralded" in text and "LOOP attempt1, 50" in text
    assert "EVENT 1100, r3" in text and "EVENT 1101, r2" in text and "EVENT 1102, r2" in text
    ((i, _),) = c.waveforms.values()
    assert np.allclose(i, 0.1)  # the alpha rotation at its own amplitude


def test_barrett_kok_needs_both_rounds():
    c = compile_sequence(
        Sequence("e", (EntanglementAttempt("barrett_kok", max_attempts=9),), 1), PARAMS, HW_ENT
    )
    assert c.listing.count("WAIT_HERALD") == 2
    assert "BRANCH_LT r3, 1, failed" in c.listing and "BRANCH_GE r4, 1, heralded" in c.listing
    assert len(c.waveforms) == 2  # pi/2 and pi


def test_two_photon_attempt_excites_from_the_pumped_state_without_a_rotation():
    c = compile_sequence(
        Sequence("e", (EntanglementAttempt("two_photon", max_attempts=9),), 1), PARAMS, HW_ENT
    )
    assert c.listing.count("WAIT_HERALD") == 1 and "AWG_TRIG" not in c.listing
    assert "BRANCH_GE r3, 1, heralded" in c.listing and "EVENT 1100, r3" in c.listing
    assert not c.waveforms  # no microwave pulse: the photon's polarisation is the qubit


def test_attempt_needs_the_excitation_path_and_a_known_protocol():
    with pytest.raises(CompileError, match="light path 'excitation' is not wired"):
        compile_sequence(
            Sequence("e", (EntanglementAttempt(),), 1), {**PARAMS, "alpha_amplitude_v": 0.1}, HW
        )
    with pytest.raises(CompileError, match="unknown protocol 'double_click'"):
        compile_sequence(Sequence("e", (EntanglementAttempt("double_click"),), 1), PARAMS, HW_ENT)


def _shots_run(compiled, herald: bool) -> list[int]:
    """The simulated sequencer (in-process, a node without optics) runs the program; with
    `herald`, the herald input has fired before the first attempt waits on it. The codes of
    its events."""
    import asyncio
    import time

    from sequences.program import encode
    from sim_backends.instruments.sequencer import SimSequencer
    from sim_backends.node import SimNode

    seq = SimSequencer("A:sequencer", SimNode("A", None), 1)

    async def run() -> None:
        seq._load("", block=encode(compiled.program.instructions))
        seq._start()
        if herald:
            seq._herald("1")
        deadline = time.monotonic() + 10
        while seq.status != "HALTED":
            assert time.monotonic() < deadline, seq.status
            await asyncio.sleep(0.005)

    asyncio.run(run())
    return [e.code for e in seq.events]


def test_a_program_ending_at_its_herald_runs_its_shots_until_the_first_herald():
    """last_shot_on_herald: a round that wants one pair runs many shots (a waiting memory
    initialised again each shot) in one program and stops at the shot that heralded; without
    a herald it runs them all. Without the flag every shot runs."""
    from sequences.compiler import HERALD, R_LAST, SHOT_END

    params = {**PARAMS, "alpha_amplitude_v": 0.1}
    ending = compile_sequence(
        Sequence("e", (EntanglementAttempt(max_attempts=3, last_shot_on_herald=True),), 5),
        params,
        HW_ENT,
    )
    assert ending.ends_at_herald
    assert (
        f"SET r{R_LAST}, 1" in ending.listing and f"BRANCH_GE r{R_LAST}, 1, end" in ending.listing
    )
    heralded = _shots_run(ending, herald=True)
    assert heralded.count(SHOT_END) == 1 and heralded.count(HERALD) == 1
    assert _shots_run(ending, herald=False).count(SHOT_END) == 5
    plain = compile_sequence(
        Sequence("e", (EntanglementAttempt(max_attempts=3),), 5), params, HW_ENT
    )
    assert not plain.ends_at_herald and f"r{R_LAST}" not in plain.listing
    assert _shots_run(plain, herald=True).count(SHOT_END) == 5


def test_a_run_point_ending_at_its_herald_leaves_the_later_shots_unrun():
    """The node's run file keeps `shots` rows a point: those after the herald are zero counts
    and not valid; a program not ending at its herald must report every shot."""
    from controller.node.runtime import parse_shots
    from sequences.compiler import HERALD, SHOT_END
    from sequences.program import Event

    params = {**PARAMS, "alpha_amplitude_v": 0.1}
    attempt = EntanglementAttempt(max_attempts=3, last_shot_on_herald=True)
    ending = compile_sequence(Sequence("e", (attempt, Readout()), 5), params, HW_ENT)
    events = [Event(10, HERALD, 1), Event(20, 1, 7), Event(30, SHOT_END, 0)]
    counts, valid, _ = parse_shots(ending, events)
    assert counts[:, 0].tolist() == [7, 0, 0, 0, 0] and valid.tolist() == [1, 0, 0, 0, 0]
    with pytest.raises(QnodeError, match="reported 0 shots, the program has 5"):
        parse_shots(ending, [])
    plain = compile_sequence(
        Sequence("e", (EntanglementAttempt(max_attempts=3), Readout()), 5), params, HW_ENT
    )
    with pytest.raises(QnodeError, match="reported 1 shots, the program has 5"):
        parse_shots(plain, events)
