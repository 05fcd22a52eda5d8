"""The simulator's cost on a memory node (docs/simulation.md "Speed"), as ratios to a baseline
measured in the same run, so that a loaded machine changes the figures but not the ratios much.

  gate step     one microwave pi pulse and a 4 us wait of a decoupling gate on an NV node with
                a 13C (the two-node lab's register: two electrons, two memories), against the
                same step on an NV node without memories
  attempt       one single-click attempt (spin pump, alpha pulse, optical pi pulse, echo pi,
                1 us herald wait) on the memory node, stepped, against the same step without
                memories; and 1000 attempts stepped against 1000 forwarded (one stepped, the
                rest as the recorded body's channel to the power 999)

`python -m bench.sim_speed` prints them; `make bench` includes them. Each figure is the best of a
few repeats (the least disturbed by the machine).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from sim_backends.physics import NodePhysics, draw_truth
from sim_backends.register import QubitRegister

REPEAT = 3
STEPS = 400
ATTEMPTS = 1000


def node(memories: bool, seed: int = 5) -> NodePhysics:
    """Node A of a two-node register (with B's memory too when `memories`), driven on
    resonance, ready."""
    rng = np.random.default_rng(seed)
    register = QubitRegister(["A", "B"])
    kinds = ["c13"] if memories else None
    physics = NodePhysics("A", draw_truth("nv", rng), rng, register, memories=kinds)
    other = np.random.default_rng(seed + 1)
    NodePhysics("B", draw_truth("nv", other), other, register, memories=kinds)
    physics.ready = True
    physics.drive.frequency_hz = physics.truth.qubit_hz
    physics.drive.power_dbm = physics.platform.mw_reference_dbm
    physics.drive.output = True
    return physics


def pulse(physics: NodePhysics, angle: float, phase: float = 0.0) -> None:
    """A square pulse at 1.2 GS/s (as the lab's AWG plays them)."""
    rate = 1.2e9
    samples = max(1, round(angle / (2 * math.pi * physics.truth.rabi_hz_per_v) * rate))
    amplitude = angle / (2 * math.pi * physics.truth.rabi_hz_per_v * samples / rate)
    ones = np.ones(samples) * amplitude / 2
    physics.apply_iq(ones * math.cos(phase), ones * math.sin(phase), rate, 2.0)


def gate_steps(physics: NodePhysics, steps: int) -> None:
    for k in range(steps):
        pulse(physics, math.pi, 0.0 if k % 2 == 0 else math.pi / 2)
        physics.advance(4000)


def attempt(physics: NodePhysics) -> None:
    physics.light["pump"] = 1.0
    physics.advance(2000)
    physics.light["pump"] = 0.0
    pulse(physics, 2 * math.asin(math.sqrt(0.2)))
    physics.advance(20)
    pulse(physics, math.pi)
    physics.advance(1000)


def per_call_us(run, calls: int) -> float:
    """Best of REPEAT: microseconds of CPU per call."""
    best = math.inf
    for _ in range(REPEAT):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best / calls * 1e6


def bench_sim_speed() -> dict:
    memory, plain = node(True), node(False)
    gate_memory = per_call_us(lambda: gate_steps(memory, STEPS), STEPS)
    gate_plain = per_call_us(lambda: gate_steps(plain, STEPS), STEPS)
    attempt_memory = per_call_us(lambda: [attempt(memory) for _ in range(STEPS)], STEPS)
    attempt_plain = per_call_us(lambda: [attempt(plain) for _ in range(STEPS)], STEPS)
    results = {
        "gate_step_us": gate_memory,
        "gate_step_plain_us": gate_plain,
        "gate_step_ratio": gate_memory / gate_plain,
        "attempt_us": attempt_memory,
        "attempt_plain_us": attempt_plain,
        "attempt_ratio": attempt_memory / attempt_plain,
    }
    if hasattr(memory, "begin_record"):  # the forwarded body (absent before it existed)

        def forwarded() -> None:
            memory.begin_record()
            attempt(memory)
            body = memory.finish_record()
            assert body is not None
            period = body[1]
            memory.repeat_memory_channels(0, ATTEMPTS - 1, period_ns=period, body=body)
            memory.advance((ATTEMPTS - 1) * period)

        stepped_s = per_call_us(lambda: [attempt(memory) for _ in range(ATTEMPTS)], 1) * 1e-6
        forwarded_s = per_call_us(forwarded, 1) * 1e-6
        results.update(
            {
                "attempts_stepped_s": stepped_s,
                "attempts_forwarded_s": forwarded_s,
                "attempts_forwarding_gain": stepped_s / forwarded_s,
            }
        )
    return results


def main() -> int:
    print(json.dumps(bench_sim_speed(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
