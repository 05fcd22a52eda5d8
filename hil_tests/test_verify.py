"""The verification's estimates from synthetic bits: pure code, no daemons. Each node's
pairs are session-file rows (delivered, measured in X, Y or Z, bit +1 bright / -1 dark)."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from controller.data.sessionfile import DELIVERED, PAIR_ROW
from controller.link.vocabulary import BASES
from controller.operator.entangle import EntangleReport, render
from controller.operator.verify import Z95, verify

READOUT = (0.95, 0.9)  # F0, F1: each node's readout, as calibrated


def rows(bits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Both nodes' pair rows from basis -> (n, 2) array of (bit A, bit B)."""
    n = sum(len(b) for b in bits.values())
    a, b = np.zeros(n, dtype=PAIR_ROW), np.zeros(n, dtype=PAIR_ROW)
    k = 0
    for basis, pairs in bits.items():
        for bit_a, bit_b in pairs:
            for side, bit in ((a, bit_a), (b, bit_b)):
                side[k]["id"] = f"s:{k}:1".encode()
                side[k]["shot"], side[k]["attempt"] = k, 1
                side[k]["basis"] = BASES.index(basis)
                side[k]["status"] = DELIVERED
                side[k]["bit"] = bit
            k += 1
    return a, b


def correlated(n: int, sign: int) -> np.ndarray:
    """n pairs, both bits alike (sign +1) or opposite (sign -1), each bit half bright."""
    first = np.where(np.arange(n) % 2 == 0, 1, -1)
    return np.stack([first, sign * first], axis=1)


def psi_plus(n: int) -> dict[str, np.ndarray]:
    """A perfect psi+ sample: XX = YY = +1, ZZ = -1."""
    return {"X": correlated(n, 1), "Y": correlated(n, 1), "Z": correlated(n, -1)}


def test_a_perfect_psi_plus_sample_has_fidelity_one():
    v = verify(*rows(psi_plus(100)), None, None)
    assert v.fidelity == 1.0 and v.low == 1.0 and v.high == 1.0
    assert v.warnings == () and not v.corrected
    assert {b: c.value for b, c in v.correlators.items()} == {"X": 1.0, "Y": 1.0, "Z": -1.0}


def test_a_perfect_sample_corrected_for_readout_stays_at_one():
    """The readout correction of perfect data reaches beyond +-1: clipped, warned, and the
    fidelity's interval ends at 1."""
    v = verify(*rows(psi_plus(100)), READOUT, READOUT, readout_shots=2000)
    assert v.corrected
    assert v.fidelity == 1.0 and v.high == 1.0 and 0.9 < v.low < 1.0
    assert v.low == pytest.approx(1.0 - Z95 * v.sigma)
    for c in v.correlators.values():
        assert abs(c.unclipped) > 1 and abs(c.value) == 1.0 and c.clipped
        assert abs(c.raw) == 1.0  # the uncorrected frequencies
    z = v.correlators["Z"]
    assert z.value == -1.0 and z.unclipped < -1
    assert f"ZZ correlator {z.unclipped:+.2f} before clipping to -1: " in "\n".join(v.warnings)
    assert any("readout correction beyond the data" in w for w in v.warnings)
    assert any(w.startswith("fidelity's 95 % interval") for w in v.warnings)
    assert v.unclipped[0] > 1 and v.unclipped[2] > 1


def test_a_correlator_beyond_minus_one_is_clipped_and_warned_the_raw_one_kept():
    bits = {"X": correlated(200, 1), "Y": correlated(200, 1), "Z": correlated(200, -1)}
    bits["X"][:60, 1] *= -1  # XX 0.4 raw: inside the range after the correction too
    v = verify(*rows(bits), READOUT, READOUT)
    x, z = v.correlators["X"], v.correlators["Z"]
    assert not x.clipped and x.value == x.unclipped and x.raw == pytest.approx(0.4)
    assert z.value == -1.0 and z.unclipped < -1.0 and z.raw == -1.0
    (zz,) = [w for w in v.warnings if w.startswith("ZZ")]
    assert zz == (
        f"ZZ correlator {z.unclipped:+.2f} before clipping to -1: "
        "readout correction beyond the data"
    )
    assert not any(w.startswith("XX") for w in v.warnings)
    assert v.fidelity == pytest.approx((1 + x.value + v.correlators["Y"].value + 1) / 4)
    d = v.as_dict()
    assert d["correlators"]["Z"]["raw"] == -1.0
    assert d["correlators"]["Z"]["unclipped"] == z.unclipped
    assert d["correlators"]["Z"]["value"] == -1.0
    assert d["raw_fidelity"] == pytest.approx((1 + 0.4 + 1 + 1) / 4)
    assert zz in d["warnings"]
    assert 0.0 <= d["ci95"][0] <= d["fidelity"] <= d["ci95"][1] <= 1.0


def test_the_fully_mixed_state_gives_a_quarter():
    rng = np.random.default_rng(7)
    bits = {b: rng.choice([-1, 1], size=(3000, 2)) for b in ("X", "Y", "Z")}
    v = verify(*rows(bits), None, None)
    assert abs(v.fidelity - 0.25) < 3 * v.sigma
    assert 0 < v.low < v.fidelity < v.high < 1 and v.warnings == ()


def test_an_even_mixture_of_psi_plus_and_psi_minus_gives_a_half():
    """|01> and |10> at random: ZZ = -1, no XX or YY coherence, F = (1 + 0 + 0 + 1) / 4."""
    rng = np.random.default_rng(8)
    bits = {b: rng.choice([-1, 1], size=(3000, 2)) for b in ("X", "Y")}
    bits["Z"] = correlated(3000, -1)
    v = verify(*rows(bits), None, None)
    assert abs(v.fidelity - 0.5) < 3 * v.sigma
    assert v.correlators["Z"].value == -1.0 and v.warnings == ()


def test_correlators_of_no_state_give_a_fidelity_clipped_to_zero():
    """XX = YY = -1 with ZZ = +1 is no state (XX YY = -ZZ): F = -0.5 is shown as 0."""
    bits = {"X": correlated(50, -1), "Y": correlated(50, -1), "Z": correlated(50, 1)}
    v = verify(*rows(bits), None, None)
    assert v.fidelity == 0.0 and v.low == 0.0 and v.high == 0.0
    assert v.raw_fidelity == -0.5 and v.unclipped[0] == -0.5
    assert any(w.startswith("fidelity -0.500 (from the clipped correlators)") for w in v.warnings)


def test_the_report_prints_the_warnings():
    v = verify(*rows(psi_plus(100)), READOUT, READOUT)
    summary = {
        "session": "s",
        "protocol": "single_click",
        "state": "completed",
        "pairs_requested": 300,
        "expected": {"alpha": 0.1, "p_success": 1e-4, "fidelity": 0.8},
        "stats": {"reasons": {}, "discarded": 0, "attempts": 1000},
        "p_success": 1e-4,
        "rate_per_virtual_s": 1.0,
        "rate_per_wall_s": 1.0,
        "reason": "",
    }
    report = EntangleReport(summary, summary, {"A": {"x"}, "B": {"x"}}, v, {})
    console = Console(record=True, width=200)
    render(report, console)
    text = console.export_text()
    for warning in v.warnings:
        assert f"warning: {warning}" in text
