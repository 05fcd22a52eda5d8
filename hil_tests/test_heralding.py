"""The heralded state model against its analytic limits (pure numpy, no lab)."""

import numpy as np
import pytest

from qnode.heralding import Link, alpha_for_fidelity, barrett_kok, fidelity, single_click

ETA = 3.5e-4


def ideal(**changes) -> Link:
    return Link(**{"eta_a": ETA, "eta_b": ETA, "visibility": 1.0, "dark_prob": 0.0, **changes})


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.3])
def test_single_click_ideal_limit(alpha):
    herald = single_click(alpha, ideal())
    assert herald.p_success == pytest.approx(2 * alpha * ETA, rel=1e-3)
    for outcome, state in herald.states.items():
        assert np.trace(state).real == pytest.approx(1.0)
        assert fidelity(state, outcome) == pytest.approx(1 - alpha, abs=1e-3)


def test_single_click_losses_of_fidelity():
    alpha = 0.1
    base = fidelity(single_click(alpha, ideal()).states["psi_plus"], "psi_plus")
    with_v = fidelity(single_click(alpha, ideal(visibility=0.9)).states["psi_plus"], "psi_plus")
    # the coherence drops by V: F = (1 - alpha)(1 + V)/2 to leading order
    assert with_v == pytest.approx((1 - alpha) * (1 + 0.9) / 2, abs=2e-3)
    sigma = np.radians(15)
    with_phase = single_click(alpha, ideal(phase_sigma_rad=sigma)).states["psi_plus"]
    assert fidelity(with_phase, "psi_plus") == pytest.approx(
        (1 - alpha) * (1 + np.exp(-(sigma**2) / 2)) / 2, abs=2e-3
    )
    dark = single_click(alpha, ideal(dark_prob=20 * 25e-9)).states["psi_plus"]
    assert fidelity(dark, "psi_plus") < base
    assert fidelity(single_click(alpha, ideal()).states["psi_minus"], "psi_minus") == pytest.approx(
        base
    )


def test_barrett_kok_ideal_and_phase_insensitive():
    herald = barrett_kok(ideal())
    assert herald.p_success == pytest.approx(ETA**2 / 2, rel=1e-6)
    assert fidelity(herald.states["psi_minus"], "psi_minus") == pytest.approx(1.0)
    noisy = barrett_kok(ideal(visibility=0.9, phase_sigma_rad=np.radians(40)))
    assert fidelity(noisy.states["psi_plus"], "psi_plus") == pytest.approx((1 + 0.9) / 2)


def test_alpha_for_a_target_fidelity():
    link = ideal(visibility=0.9, dark_prob=5e-7, phase_sigma_rad=np.radians(15))
    alpha = alpha_for_fidelity(0.8, link)
    got = fidelity(single_click(alpha, link).states["psi_plus"], "psi_plus")
    assert got == pytest.approx(0.8, abs=1e-6)
    assert fidelity(single_click(alpha * 1.1, link).states["psi_plus"], "psi_plus") < 0.8
    with pytest.raises(ValueError, match="out of reach"):
        alpha_for_fidelity(0.99, link)


def test_a_dark_node_heralds_nothing_entangled():
    herald = single_click(0.1, ideal(), alpha_b=0.0)
    assert herald.p_success == pytest.approx(0.1 * ETA, rel=1e-3)  # only A emits
    state = herald.states["psi_plus"]
    assert state[1, 1].real == pytest.approx(1.0)  # |01>: A bright, B dark, no coherence
    assert fidelity(state, "psi_plus") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="neither node is bright"):
        single_click(0.0, ideal(), alpha_b=0.0)
