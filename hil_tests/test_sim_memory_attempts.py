"""A memory holding a state while its node attempts entanglement: the attempts the simulated
midpoint draws at once (not stepped) dephase the memory as the stepped ones do.

In process: the three-node lab's sim, A and B attempting on link AB until M1 heralds. B's
electron is initialised imperfectly (1 % left in |1>), so every spin pump resets it at a random
time with that probability and B's 13C picks up the random phase of the hyperfine coupling:
its coherence shrinks by the same factor per attempt (Kalb et al., PRA 97, 062330 (2018)).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from controller.labconfig import load_lab
from hil_tests.test_three_node_lab import (
    ATTEMPTS_EVENT,
    THREE,
    attempt_program,
    by_code,
    lasers_on,
    send,
    sequencer_of,
)
from sequences.program import assemble, decode_events
from sim_backends.lab import SimLab

PLUS = np.full((2, 2), 0.5, dtype=complex)


def attempts_with_a_stored_state(seed: int) -> tuple[int, complex, float]:
    """(attempts to the herald, the first attempt's coherence factor of B.c13, B.c13's
    coherence |rho01| after the herald), B.c13 prepared in |+> before the sync."""
    config = load_lab(THREE)
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as tmp:

            async def run():
                lab = SimLab(config.model_dump(), seed, Path(tmp), Path(tmp) / "resources.json")
                physics = lab.nodes["B"].physics
                physics.truth = replace(physics.truth, init_fidelity=0.99)
                herald = lab.midpoints["M1"].herald_logic
                send(herald, "SYNC:MODE AUTO")
                for node in ("A", "B"):
                    lasers_on(lab, node)
                lab.register.replace("B.c13", PLUS)
                for node in ("A", "B"):
                    channels = config.nodes[node].channels
                    source = attempt_program(
                        channels.port("AB"), channels.ttl.get("fibre_switch"), 1000, 10**7
                    )
                    seq = sequencer_of(lab, node)
                    send(seq, "PROGram:LOAD", assemble(source).encode())
                    send(seq, "RUN")
                seq_b = sequencer_of(lab, "B")
                for node in ("A", "B"):
                    seq = sequencer_of(lab, node)
                    while send(seq, "STATus?") in ("RUNNING", "WAITING"):
                        await asyncio.sleep(0.001)
                events = decode_events(send(seq_b, "EVT:DATA?"))
                attempts = by_code(events)[ATTEMPTS_EVENT].value
                epoch = lab.nodes["B"].sync_epoch
                first = next(f for t, f in physics.memory_factors if t >= epoch)[0]
                coherence = abs(lab.register.reduced("B.c13")[0, 1])
                return attempts, first, coherence

            return loop.run_until_complete(run())
    finally:
        loop.close()


def test_drawn_attempts_dephase_a_stored_memory_like_stepped_ones():
    for seed in (3, 4):
        attempts, factor, coherence = attempts_with_a_stored_state(seed)
        assert attempts > 100  # the herald was drawn after many attempts, not stepped to
        expected = 0.5 * abs(factor) ** attempts
        # a measurable decay (else the test could not tell), and the drawn attempts gave it:
        # without them the memory would keep 0.5 |factor|, one attempt's worth
        assert expected < 0.45
        assert math.log(coherence / 0.5) == pytest.approx(math.log(expected / 0.5), rel=0.05)


def test_an_optical_pi_pulse_leaves_a_heralded_pairs_coherence():
    """Barrett-Kok's second round excites both memories of a pair the first round heralded:
    the pair keeps its coherence (psi+ stays psi+), on nodes with memories too (the
    simulator used to erase the electron's coherence at every excitation there, which left
    Barrett-Kok pairs between memory nodes at fidelity 1/2: the review of session 7)."""
    config = load_lab(THREE)
    psi = np.zeros(4, dtype=complex)
    psi[1] = psi[2] = 2**-0.5

    async def run() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            lab = SimLab(config.model_dump(), 3, Path(tmp), Path(tmp) / "resources.json")
            for node in ("A", "B"):
                lasers_on(lab, node)
            lab.register.set_pair("A", "B", np.outer(psi, psi.conj()))
            before = pair_fidelity(lab, psi)
            for name in ("A", "B"):
                node = lab.nodes[name]
                line = 1 << node.optics["excitation"].ttl_line
                node.set_ttl(node.ttl | line)
                node.set_ttl(node.ttl & ~line)
            return before, pair_fidelity(lab, psi)

    before, after = asyncio.run(run())
    assert before == pytest.approx(1.0)
    assert after > 0.99


def pair_fidelity(lab: SimLab, psi: np.ndarray) -> float:
    """<psi| rho_AB |psi>, A and B's electrons with every other qubit traced out."""
    names = lab.register.names
    n = len(names)
    keep = [names.index("A"), names.index("B")]
    others = [k for k in range(n) if k not in keep]
    order = keep + [n + k for k in keep] + others + [n + k for k in others]
    t = np.moveaxis(lab.register.rho.reshape([2] * (2 * n)), order, list(range(2 * n)))
    rho_ab = np.einsum("abii->ab", t.reshape(4, 4, 2 ** (n - 2), 2 ** (n - 2)))
    return float(np.real(psi.conj() @ rho_ab @ psi))
