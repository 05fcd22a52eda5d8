"""The whole single-node chain against hidden truth: MW carrier + AWG IQ pulse + sequencer +
lasers + readout. A pi pulse made from the true Rabi frequency must flip the spin."""

import time

import numpy as np
import pytest

from sequences.program import assemble

SHOTS = 300
CR_THRESHOLD = 5


def square(samples: int) -> np.ndarray:
    return np.full(max(samples, 1), 1.0 if samples else 0.0)


def run_shots(lab, resources, node, pulse: np.ndarray, frequency_hz: float) -> float:
    """Fraction of bright shots (>= 1 photon) after playing `pulse` on I (1.2 GS/s, 1 Vpp)."""
    cfg = lab.nodes[node]
    drivers = {name: lab.make_driver(node, name, resources) for name in cfg.instruments}
    for d in drivers.values():
        d.open()
    try:
        mw, awg, seq = drivers["mw"], drivers["awg"], drivers["seq"]
        for path in cfg.optics.values():
            drivers[path.laser].set_power(path.nominal_power_w)
            drivers[path.laser].set_enabled(True)
        mw.set_frequency(frequency_hz)
        mw.set_power(10.0)
        mw.set_output(True)
        i_ch, q_ch = cfg.channels.awg["mw_i"], cfg.channels.awg["mw_q"]
        n = pulse.size
        awg.upload_waveform("pulse_i", pulse)
        awg.upload_waveform("pulse_q", np.zeros(n))
        awg.set_sequence([{i_ch: "pulse_i", q_ch: "pulse_q"}])
        awg.set_sample_rate(1.2e9)
        awg.set_amplitude(i_ch, 1.0)
        awg.set_amplitude(q_ch, 1.0)
        awg.set_output(i_ch, True)
        awg.set_output(q_ch, True)
        awg.run()
        line = {path: 1 << cfg.channels.ttl[p.ttl] for path, p in cfg.optics.items()}
        pulse_ns = int(np.ceil(n / 1.2e9 * 1e9 / 4)) * 4 + 20
        seq.load(
            assemble(f"""
        shot:
        cr:                                     # charge repump, then CR check, until it passes
            TTL_SET {line["repump"]}
            WAIT 5us
            TTL_CLR {line["repump"]}
            TTL_SET {line["pump"] | line["readout"]}
            COUNT c0, r0, 50us
            TTL_CLR {line["pump"] | line["readout"]}
            BRANCH_GE r0, {CR_THRESHOLD}, ready
            LOOP cr, 100
        ready:
            TTL_SET {line["pump"]}
            WAIT 3us
            TTL_CLR {line["pump"]}
            WAIT 200
            AWG_TRIG 0
            WAIT {pulse_ns}
            TTL_SET {line["readout"]}
            COUNT c0, r1, 10us
            TTL_CLR {line["readout"]}
            EVENT 1, r1
            LOOP shot, {SHOTS}
            HALT
        """)
        )
        seq.run()
        deadline = time.monotonic() + 20
        while seq.state() != "HALTED":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        counts = np.array([e.value for e in seq.read_events()])
        assert counts.size == SHOTS
        return float(np.mean(counts > 0))
    finally:
        for d in drivers.values():
            d.safe_state()
            d.close()


def test_pi_pulse_from_true_rabi_frequency_flips_the_spin(lab, resources, sim):
    truth = sim.truth("A")
    # square pulse at AWG amplitude 1 Vpp (0.5 V) and 10 dBm: Rabi = rabi_hz_per_v * 0.5
    t_pi = 1.0 / (2 * truth["rabi_hz_per_v"] * 0.5)
    pi_samples = round(t_pi * 1.2e9)
    bright_unflipped = run_shots(lab, resources, "A", square(0), truth["qubit_hz"])
    bright_pi = run_shots(lab, resources, "A", square(pi_samples), truth["qubit_hz"])
    bright_2pi = run_shots(lab, resources, "A", square(2 * pi_samples), truth["qubit_hz"])
    assert bright_unflipped > 0.85
    assert bright_pi < 0.08
    assert bright_2pi > 0.85


def test_far_detuned_pulse_does_nothing(lab, resources, sim):
    truth = sim.truth("A")
    pi_samples = round(1.0 / truth["rabi_hz_per_v"] * 1.2e9)
    detuned = truth["qubit_hz"] + 60e6
    assert run_shots(lab, resources, "A", square(pi_samples), detuned) > 0.85


@pytest.mark.parametrize(
    ("gap_in_t2star", "bright_low", "bright_high"), [(0, 0.0, 0.08), (4, 0.35, 0.62)]
)
def test_ramsey_contrast_decays_with_the_true_t2star(
    lab, resources, sim, gap_in_t2star, bright_low, bright_high
):
    """pi/2 - tau - pi/2 on resonance: dark at tau = 0, half bright once tau >> T2*."""
    truth = sim.truth("A")
    half_pi = round(1.0 / truth["rabi_hz_per_v"] / 2 * 1.2e9)
    gap = round(gap_in_t2star * truth["t2star_s"] * 1.2e9)
    pulse = np.concatenate([np.ones(half_pi), np.zeros(gap), np.ones(half_pi)])
    bright = run_shots(lab, resources, "A", pulse, truth["qubit_hz"])
    assert bright_low <= bright <= bright_high


def test_readout_without_the_laser_gives_no_light(lab, resources, sim):
    """Real coupling across instruments: readout light off at the laser means no counts."""
    cfg = lab.nodes["A"]
    laser = lab.make_driver("A", cfg.optics["readout"].laser, resources)
    with laser:
        laser.set_enabled(False)
    assert pytest.approx(0.0, abs=0.02) == _dark_run(lab, resources)


def _dark_run(lab, resources) -> float:
    cfg = lab.nodes["A"]
    seq = lab.make_driver("A", "seq", resources)
    readout = 1 << cfg.channels.ttl[cfg.optics["readout"].ttl]
    with seq:
        lines = [f"s: TTL_SET {readout}", "COUNT c0, r1, 10us", f"TTL_CLR {readout}"]
        lines += ["EVENT 1, r1", "LOOP s, 100", "HALT"]
        seq.load(assemble("\n".join(lines)))
        seq.run()
        while seq.state() != "HALTED":
            time.sleep(0.01)
        counts = np.array([e.value for e in seq.read_events()])
    return float(np.mean(counts > 0))


def test_cr_check_counts_follow_the_charge_state(lab, resources, sim):
    """After a charge repump, CR-check counts are Poisson(true mean) when NV- and dark when
    NV0: the mean over many checks is recovery_success * true mean."""
    from sim_backends.physics import NV

    truth = sim.truth("A")
    cfg = lab.nodes["A"]
    line = {path: 1 << cfg.channels.ttl[p.ttl] for path, p in cfg.optics.items()}
    drivers = {
        name: lab.make_driver("A", name, resources) for name in ("seq", "laser_green", "laser_red")
    }
    for d in drivers.values():
        d.open()
    try:
        for path in cfg.optics.values():
            drivers[path.laser].set_power(path.nominal_power_w)
            drivers[path.laser].set_enabled(True)
        both = line["pump"] | line["readout"]
        window_ns = truth["check_window_ns"]
        drivers["seq"].load(
            assemble(f"""
        s:  TTL_SET {line["repump"]}
            WAIT 10us
            TTL_CLR {line["repump"]}
            TTL_SET {both}
            COUNT c0, r0, {window_ns}
            TTL_CLR {both}
            EVENT 1, r0
            LOOP s, 600
            HALT
        """)
        )
        drivers["seq"].run()
        while drivers["seq"].state() != "HALTED":
            time.sleep(0.01)
        counts = np.array([e.value for e in drivers["seq"].read_events()])
    finally:
        for d in drivers.values():
            d.safe_state()
            d.close()
    expected = NV.recovery_success * truth["check_mean"]
    assert counts.mean() == pytest.approx(expected, rel=0.12)
    # bimodal: a dark population (NV0) near zero and a bright one near the true mean
    assert np.mean(counts <= 2) == pytest.approx(1 - NV.recovery_success, abs=0.07)
