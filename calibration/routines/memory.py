"""The 13C memory's calibrations: where its decoupling resonance is, how many pulses make the
conditional pi/2, how fast it precesses with the electron in |0> and in |1>, and how much of
its coherence each entanglement attempt costs. Only nodes whose lab file names the memory
(`memories = ["c13"]`) run them.

    c13_spectroscopy -> c13_gate -> c13_ramsey -> c13_dephasing
                                             -> c13_move
                                             -> c13_t2

The physics they fit is the one the compiler plans with (sequences/memory.py; Taminiau et al.,
PRL 109, 137602 (2012); Nat. Nanotechnol. 9, 171 (2014); Kalb et al., PRA 97, 062330 (2018)).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import curve_fit

from calibration.fits import (
    Fit,
    FitFailed,
    fit_attempt_decay,
    fit_dips,
    fit_gate,
    fit_precession,
    resonance_order,
)
from calibration.interface import NodeAccess
from calibration.plots import xy_plot
from calibration.routine import Analysis, Routine, bright_fraction
from sequences.memory import (
    MemoryGate,
    MemoryInit,
    MemoryReadout,
    SwapToMemory,
    gate_pulses_near,
    parameter,
)
from sequences.operations import (
    LaserPulse,
    MwPulse,
    Param,
    Readout,
    Repeat,
    Sequence,
    SpinInit,
    Sweep,
    SweepAxis,
    Wait,
    memory_check,
    pi_half_pulse,
    pi_pulse,
)
from sequences.program import CLOCK_NS

MEMORY = "c13"


def has_memory(node: NodeAccess) -> bool:
    """Whether the node's lab file names this memory (its routines are in its graph)."""
    return MEMORY in getattr(node, "memories", ())


def p(quantity: str) -> str:
    return parameter(MEMORY, quantity)


def point_sigma(acq) -> np.ndarray:
    """The binomial error of each point's bright fraction (at its worst, p = 1/2)."""
    kept = np.maximum(acq.valid.sum(axis=1), 1)
    return np.sqrt(0.25 / kept)


def coherence_sequence(name: str, platform: str, shots: int) -> Sequence:
    """Electron pi/2, the DD gate (c13_tau_ns, c13_n_pulses), pi/2 back: bright while the
    electron keeps its coherence, darker where the nucleus is turned conditionally."""
    ops = (
        memory_check(platform),
        SpinInit(),
        pi_half_pulse(0.0),
        MemoryGate(MEMORY, 90.0, frame="ignore"),
        pi_half_pulse(180.0),
        Readout(),
    )
    return Sequence(name, ops, shots)


class MemoryRoutine(Routine):
    platforms = ("nv",)
    needs_memory = True


# ---- spectroscopy -----------------------------------------------------------------------------
SEARCH_NS = (1_000.0, 4_000.0)
"""Without a prior: the range of tau searched (at 0.03-0.07 T it holds two or more
resonances); `c13_search_start_ns`, `c13_search_stop_ns` override it."""
TARGET_TAU_NS = 2_000.0
"""With a prior Larmor frequency (`c13_larmor_hz` set from the magnet's field): the two
resonances next to this tau are scanned (gates of a few hundred us at the pulse counts below)."""
SPECTROSCOPY_SHOTS = 200


def spectroscopy_plan(node: NodeAccess) -> tuple[np.ndarray, int]:
    """(taus, pulses): the scan, from the prior Larmor frequency if there is one. A dip's
    width in tau is about 1 / (2 N f) and a weak spin turns by about A_perp / omega_L per
    pulse pair, so at a higher field more pulses (deep enough dips) on a finer grid (down to
    the 2 ns a 4 ns clock puts 2 tau on)."""
    start, stop = node.stored(p("search_start_ns")), node.stored(p("search_stop_ns"))
    prior = node.stored(p("larmor_hz"))
    if prior is None or start is not None or stop is not None:
        lo, hi = start or SEARCH_NS[0], stop or SEARCH_NS[1]
        f = prior or 0.5e6
    else:
        f = prior
        spacing = 1e9 / (2 * f)
        k = max(round((4 * TARGET_TAU_NS * 1e-9 * f + 1) / 2), 1)
        first = (2 * k - 1) / (4 * f) * 1e9
        lo, hi = first - 0.4 * spacing, first + 1.4 * spacing
    pulses = 4 * max(4, round(8 * f / 1e6))
    step = min(8.0, max(2.0, 2 * round(1e9 / (6 * pulses * f) / 2)))
    lo = max(2 * round(lo / 2), 100.0)
    return np.arange(lo, hi + step / 2, step), pulses


class C13SpectroscopyRoutine(MemoryRoutine):
    name = "c13_spectroscopy"
    title = "13C spectroscopy: decoupling resonances"
    depends = ("ramsey",)
    reads = ("pi_amplitude_v", "readout_threshold", p("search_start_ns"), p("search_stop_ns"))
    updates = (p("tau_ns"), p("larmor_hz"), p("omega1_hz"))

    def acquire(self, node: NodeAccess):
        taus, pulses = spectroscopy_plan(node)
        sweep = Sweep(
            (
                SweepAxis(p("n_pulses"), (float(pulses),)),
                SweepAxis(p("tau_ns"), tuple(map(float, taus)), "ns"),
            )
        )
        seq = coherence_sequence("c13_spectroscopy", node.platform, SPECTROSCOPY_SHOTS)
        return [node.run(seq, sweep)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        (acq,) = data
        threshold = node.values()["readout_threshold"]
        taus = acq.axes[p("tau_ns")][0]
        bright = bright_fraction(acq, threshold)
        noise = float(np.max(point_sigma(acq)))
        found = fit_dips(taus, bright, noise * 0.8)
        # side lobes and weaker spins' dips are shallower: the resonances of the spin with
        # the deepest dips are those at least half as deep
        deepest_depth = max((d.params["depth"] for d in found), default=0.0)
        dips = [d for d in found if d.params["depth"] >= deepest_depth / 2]
        centres = [d.params["centre_ns"] for d in dips]
        info: dict = {"dips": [d.params for d in dips], "dip_errors": [d.errors for d in dips]}

        def plot(path, title):
            marks = {f"k={k}": c for k, c in zip(info.get("orders", []), centres, strict=False)}
            xy_plot(
                path,
                title,
                taus,
                bright,
                marks=marks,
                x_scale=1e-3,
                xlabel="tau (us): half the pulse spacing",
                ylabel="bright fraction (electron coherence)",
            )

        try:
            mean_hz, orders = resonance_order(centres)
        except FitFailed as e:
            at = ", ".join(f"{c:.0f}" for c in centres) or "none"
            return Analysis(
                {},
                False,
                f"{e} (dips at {at} ns): widen c13_search_start_ns..c13_search_stop_ns",
                info=info,
                plot=plot,
            )
        info["orders"] = orders
        info["mean_precession_hz"] = mean_hz
        deepest = max(range(len(dips)), key=lambda i: dips[i].params["depth"])
        gate = dips[deepest]
        tau, tau_err = gate.params["centre_ns"], gate.errors["centre_ns"]
        tau_on_grid = CLOCK_NS / 2 * round(tau / (CLOCK_NS / 2))  # 2 tau on the clock
        quality = min(d.quality for d in dips)
        info["gate_resonance"] = {"k": orders[deepest], "tau_ns": tau, "sigma_ns": tau_err}
        if not math.isfinite(tau_err) or tau_err > CLOCK_NS / 2:
            return Analysis(
                {},
                False,
                f"resonance k={orders[deepest]} at {tau:.0f} ns is uncertain by "
                f"{tau_err:.1f} ns, more than the {CLOCK_NS / 2:g} ns grid of tau: more shots",
                quality,
                info,
                plot,
            )
        # until c13_ramsey tells omega_0 and omega_1 apart, both are their mean (the echoed
        # waits of the memory's sequences need only the mean)
        return Analysis(
            {p("tau_ns"): tau_on_grid, p("larmor_hz"): mean_hz, p("omega1_hz"): mean_hz},
            True,
            f"{len(dips)} resonances, mean precession {mean_hz / 1e3:.2f} kHz; gate on k="
            f"{orders[deepest]} at tau {tau:.1f} +- {tau_err:.1f} ns",
            quality,
            info,
            plot,
        )


# ---- the conditional rotation's pulse count -----------------------------------------------------
GATE_PULSES = (*range(4, 68, 4), *range(72, 264, 8))
"""Multiples of 4 (XY-4 cycles: the electron's own phase is the same at every point), dense
where a strongly coupled spin turns fast, sparser up to a weak spin's hundreds."""
GATE_SHOTS = 200


class C13GateRoutine(MemoryRoutine):
    name = "c13_gate"
    title = "13C gate: pulses for the conditional pi/2"
    depends = ("c13_spectroscopy",)
    reads = (p("tau_ns"), "readout_threshold")
    updates = (p("n_pulses"),)

    def acquire(self, node: NodeAccess):
        sweep = Sweep((SweepAxis(p("n_pulses"), tuple(map(float, GATE_PULSES))),))
        return [node.run(coherence_sequence("c13_gate", node.platform, GATE_SHOTS), sweep)]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        (acq,) = data
        threshold = node.values()["readout_threshold"]
        pulses = acq.axes[p("n_pulses")][0]
        bright = bright_fraction(acq, threshold)
        try:
            fit = fit_gate(pulses, bright)
        except FitFailed as e:
            return Analysis({}, False, f"fit failed: {e}")
        n_pi2 = fit.params["n_pi2"]
        chosen = gate_pulses_near(n_pi2)  # 2 modulo 4: see there
        info = {"fit": fit.params, "errors": fit.errors, "quality": fit.quality}

        def plot(path, title):
            xy_plot(
                path,
                title,
                pulses,
                bright,
                fit=fit,
                marks={"pi/2": chosen, "pi": 2 * chosen},
                xlabel="pi pulses on the resonance",
                ylabel="bright fraction (electron coherence)",
            )

        if fit.params["amplitude"] < 0.1 or fit.quality < 0.7:
            return Analysis(
                {},
                False,
                f"fit rejected: contrast {fit.params['amplitude']:.2f} (min 0.1), R^2 "
                f"{fit.quality:.2f} (min 0.7)",
                fit.quality,
                info,
                plot,
            )
        if n_pi2 > max(GATE_PULSES):
            return Analysis(
                {},
                False,
                f"the pi/2 needs {n_pi2:.0f} pulses, beyond the {max(GATE_PULSES)} scanned: "
                "a weakly coupled spin, or tau off its resonance",
                fit.quality,
                info,
                plot,
            )
        return Analysis(
            {p("n_pulses"): float(chosen)},
            True,
            f"conditional pi/2 in {chosen} pulses (fit {n_pi2:.1f} +- {fit.errors['n_pi2']:.1f})",
            fit.quality,
            info,
            plot,
        )


# ---- nuclear Ramsey: omega_0 and omega_1 -------------------------------------------------------
RAMSEY_POINTS = 121
RAMSEY_SAMPLES_PER_PERIOD = 2.5
"""Points per mean precession period: fringes up to 1.25 x the mean stay unaliased."""
RAMSEY_SHOTS = 200
BRANCHES = ("larmor_hz", "omega1_hz")


def ramsey_sequence(platform: str, electron_one: bool, shots: int) -> Sequence:
    """Memory to |0>, conditional pi/2 (with the electron in |0>: an x rotation), a wait with
    the electron in |0> or flipped to |1>, pi/2 again, the memory's population."""
    flip = (pi_pulse(),) if electron_one else ()
    ops = (
        memory_check(platform),
        MemoryInit(MEMORY),
        MemoryGate(MEMORY, 90.0, frame="ignore"),
        *flip,
        Wait(Param("free_time_ns")),
        *flip,
        MemoryGate(MEMORY, 90.0, frame="ignore"),
        MemoryReadout(MEMORY, "z"),
    )
    return Sequence("c13_ramsey_" + ("one" if electron_one else "zero"), ops, shots)


class C13RamseyRoutine(MemoryRoutine):
    name = "c13_ramsey"
    title = "13C Ramsey: precession with the electron in |0> and |1>"
    depends = ("c13_gate",)
    reads = (p("larmor_hz"), p("omega1_hz"), p("tau_ns"), p("n_pulses"), "readout_threshold")
    updates = (p("larmor_hz"), p("omega1_hz"))

    def acquire(self, node: NodeAccess):
        values = node.values()
        mean = (values[p("larmor_hz")] + values[p("omega1_hz")]) / 2
        step = math.floor(1e9 / (RAMSEY_SAMPLES_PER_PERIOD * mean) / CLOCK_NS) * CLOCK_NS
        times = tuple(float(step * i) for i in range(RAMSEY_POINTS))
        sweep = Sweep((SweepAxis("free_time_ns", times, "ns"),))
        return [
            node.run(ramsey_sequence(node.platform, one, RAMSEY_SHOTS), sweep)
            for one in (False, True)
        ]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        threshold = node.values()["readout_threshold"]
        mean = (node.values()[p("larmor_hz")] + node.values()[p("omega1_hz")]) / 2
        fits, curves = [], []
        for acq in data:
            t = acq.axes["free_time_ns"][0] * 1e-9
            bright = bright_fraction(acq, threshold)
            curves.append((t, bright))
            try:
                fits.append(fit_precession(t, bright, mean))
            except FitFailed as e:
                return Analysis({}, False, f"fit failed: {e}")
        f0, f1 = (f.params["frequency_hz"] for f in fits)
        errors = [f.errors["frequency_hz"] for f in fits]
        quality = min(f.quality for f in fits)
        info = {
            "fit_zero": fits[0].params,
            "fit_one": fits[1].params,
            "errors": errors,
            "a_par_estimate_hz": f1 - f0,
        }

        def plot(path, title):
            (t0, b0), (t1, b1) = curves
            xy_plot(
                path,
                title,
                t0,
                b0,
                fit=fits[0],
                extra=[(t1, b1, "electron in |1>")],
                x_scale=1e6,
                xlabel="free precession (us)",
                ylabel="memory bright fraction",
            )

        if quality < 0.5 or min(f.params["amplitude"] for f in fits) < 0.1:
            return Analysis(
                {},
                False,
                f"fit rejected: R^2 {quality:.2f} (min 0.5) or no fringes",
                quality,
                info,
                plot,
            )
        return Analysis(
            {p("larmor_hz"): f0, p("omega1_hz"): f1},
            True,
            f"omega_0/2pi {f0 / 1e3:.3f} +- {errors[0] / 1e3:.3f} kHz, omega_1/2pi "
            f"{f1 / 1e3:.3f} +- {errors[1] / 1e3:.3f} kHz",
            quality,
            info,
            plot,
        )


# ---- dephasing and phase per entanglement attempt ---------------------------------------------
DEPHASING_ALPHA = 0.1
"""The bright population of the attempts' alpha rotation (Kalb et al. 2018: the dephasing
grows with alpha, so the result is stored with the alpha it was measured at)."""
ATTEMPTS = (0, 10, 20, 40, 80, 160, 320, 640, 1280, 2560)
"""Doubling from 10: each point's phase is unwrapped from the line through the ones before,
so up to ~18 deg an attempt is unambiguous (an attempt with a 1 us herald window at A_par
53 kHz turns a stored state by ~4.6 deg, its pump alone by ~0.7 deg), and the decay is
sampled on every scale up to a quiet memory's thousands. The NV loses its charge state in
some attempts (~0.16 % each on the simulator): fewer shots are kept at long trains."""
DEPHASING_SHOTS = 200


def attempt_block(values: dict[str, float]) -> tuple:
    """One entanglement attempt as the link layer plays it for a node holding a stored state
    (EntanglementAttempt with protect_memory; sequences/compiler.py), without the herald: the
    spin pump, the alpha rotation (alpha left in the bright |0>, as
    controller/link/plan.py `alpha_amplitude`), the optical pi pulse, the electron's echo pi
    pulse, the herald window. The link's attempt is also padded (after the pump, the electron
    in |0>) to whole Larmor periods; here the compiler tracks the memory's frame over the
    loop's known time instead, which is the same precession."""
    theta = 2 * math.acos(math.sqrt(DEPHASING_ALPHA))
    amplitude = values["pi_amplitude_v"] * theta / math.pi
    return (
        SpinInit(),
        MwPulse(amplitude, Param("pi_duration_ns")),
        LaserPulse("excitation", Param("excitation_duration_ns")),
        pi_pulse(),
        Wait(Param("herald_window_ns")),
    )


def dephasing_sequence(
    platform: str, values: dict[str, float], attempts: int, basis: str
) -> Sequence:
    """|+x> stored in the memory, `attempts` attempts, the memory read in `basis`, then the
    electron pumped to the bright |0> and read again: a shot dark there lost its charge state
    (hundreds of excitations ionise some shots' NV, which then read dark in either basis and
    would bias <X> and <Y> towards -1: seen on the simulator, lengths above 1 after 800
    attempts). A charge check (CRCheck) would say it directly, but the compiler refuses one
    after a memory was written, even once it is read."""
    repeat = (Repeat(attempt_block(values), attempts),) if attempts else ()
    ops = (
        memory_check(platform),
        MemoryInit(MEMORY),
        pi_half_pulse(90.0),
        SwapToMemory(MEMORY),
        *repeat,
        MemoryReadout(MEMORY, basis),
        SpinInit(),
        Readout(label="charge"),
    )
    return Sequence(f"c13_dephasing_{attempts}_{basis}", ops, DEPHASING_SHOTS)


def phase_per_attempt(
    attempts: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: np.ndarray
) -> tuple[float, float, float, np.ndarray]:
    """(phase at 0 attempts, phase per attempt, its sigma, the unwrapped phases), radians,
    from the stored state's Bloch vector (x, y) after each number of attempts (sorted,
    rising) with `sigma` the error of each component. Points whose length is under 3 sigma
    carry no phase. Each phase is unwrapped to the turn nearest the weighted line through
    the points before it (the first two: nearest the first), then all are fitted by
    weighted least squares (a phase's sigma is sigma / length)."""
    length = np.hypot(x, y)
    usable = length > 3 * sigma
    if usable.sum() < 3:
        raise FitFailed(f"only {int(usable.sum())} points keep a phase (need 3)")
    n, raw = attempts[usable], np.arctan2(y, x)[usable]
    weight = (length[usable] / sigma[usable]) ** 2
    phase = raw.copy()
    for i in range(1, len(n)):
        if i == 1:
            predicted = phase[0]
        else:
            slope, offset = np.polyfit(n[:i], phase[:i], 1, w=np.sqrt(weight[:i]))
            predicted = offset + slope * n[i]
        phase[i] = raw[i] + 2 * math.pi * round((predicted - raw[i]) / (2 * math.pi))
    design = np.vstack([np.ones_like(n), n]).T
    cov = np.linalg.inv(design.T @ (design * weight[:, None]))
    offset, slope = cov @ design.T @ (weight * phase)
    return float(offset), float(slope), float(math.sqrt(cov[1, 1])), phase


def charged_bright(acq, threshold: float) -> tuple[float, int]:
    """(the memory readout's bright fraction, shots kept) of one point, over the shots whose
    check passed and whose second readout (after a pump to the bright |0>) was bright: the NV
    still charged. That readout's own error (1 - F0) drops a few good shots, independently of
    the memory's result."""
    valid = acq.valid[0] & (acq.counts[0, :, 1] >= threshold)
    kept = int(valid.sum())
    return float(((acq.counts[0, :, 0] >= threshold) & valid).sum() / max(kept, 1)), kept


class C13DephasingRoutine(MemoryRoutine):
    """The stored state's Bloch vector in the x-y plane after n protected attempts: its
    length decays (the reset of the formerly bright part at a random time: Kalb et al. 2018)
    and it turns by a mean phase each attempt (the electron's time in |1>: the dark part
    until the echo, the bright part after it and through the pump), which the link layer can
    undo at readout (Hermans et al., Nature 605, 663 (2022), feed the phase forward). Both
    are stored with the alpha they were measured at (`c13_n_1e_alpha`)."""

    name = "c13_dephasing"
    title = "13C dephasing and phase per entanglement attempt"
    depends = ("c13_ramsey",)
    reads = ("pi_amplitude_v", p("larmor_hz"), p("omega1_hz"), "readout_threshold")
    updates = (
        p("n_1e_at_alpha"),
        p("n_1e_alpha"),
        p("phase_per_attempt_deg"),
        p("phase_per_attempt_sigma_deg"),
    )

    def acquire(self, node: NodeAccess):
        values = node.values()
        return [
            node.run(dephasing_sequence(node.platform, values, n, basis), Sweep())
            for n in ATTEMPTS
            for basis in ("x", "y")
        ]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        threshold = node.values()["readout_threshold"]
        attempts = np.array(ATTEMPTS, float)
        charged = [charged_bright(acq, threshold) for acq in data]
        bright = np.array([b for b, _ in charged])
        sigmas = np.array([2 * math.sqrt(0.25 / max(kept, 1)) for _, kept in charged])
        kept_share = [
            kept / max(int(acq.valid[0].sum()), 1)
            for (_, kept), acq in zip(charged, data, strict=True)
        ]
        x, y = 2 * bright[0::2] - 1, 2 * bright[1::2] - 1
        # the length's bias from the noise (E|v|^2 = |v|^2 + 2 sigma^2) taken out
        sigma = np.hypot(sigmas[0::2], sigmas[1::2]) / math.sqrt(2)
        coherence = np.sqrt(np.clip(x**2 + y**2 - 2 * sigma**2, 0, None))
        try:
            fit = fit_attempt_decay(attempts, coherence, sigma)
            phase0, slope, slope_err, phases = phase_per_attempt(attempts, x, y, sigma)
        except FitFailed as e:
            return Analysis({}, False, f"fit failed: {e}")
        n_1e, err = fit.params["n_1e"], fit.errors["n_1e"]
        per_deg, per_err_deg = math.degrees(slope), math.degrees(slope_err)
        info = {
            "fit": fit.params,
            "errors": fit.errors,
            "x": x.tolist(),
            "y": y.tolist(),
            "coherence": coherence.tolist(),
            "phase_deg": np.degrees(phases).tolist(),
            "charged_share": kept_share,
            "phase_at_zero_deg": math.degrees(phase0),
            "phase_per_attempt_deg": per_deg,
            "phase_per_attempt_sigma_deg": per_err_deg,
        }

        def plot(path, title):
            # the phase as x-y components rotated back by the fitted turn: flat if it fits
            back = np.exp(-1j * slope * attempts) * (x + 1j * y)
            xy_plot(
                path,
                title,
                attempts,
                coherence,
                fit=fit,
                extra=[
                    (attempts, x, "<X>"),
                    (attempts, y, "<Y>"),
                    (attempts, back.real, "<X> turned back by the fitted phase"),
                    (attempts, back.imag, "<Y> turned back by the fitted phase"),
                ],
                marks={"N_1/e": n_1e} if n_1e < 2 * attempts.max() else None,
                xlabel=f"entanglement attempts (alpha {DEPHASING_ALPHA}, echoed)",
                ylabel="memory coherence |<X> + i<Y>|",
            )

        if fit.params["amplitude"] < 0.2:
            return Analysis(
                {},
                False,
                f"the stored state's coherence is only {fit.params['amplitude']:.2f} before any "
                "attempt (min 0.2): check c13_gate and c13_ramsey",
                fit.quality,
                info,
                plot,
            )
        if n_1e > 3 * attempts.max() or not math.isfinite(err) or err > n_1e / 2:
            return Analysis(
                {},
                False,
                f"N_1/e {n_1e:.0f} +- {err:.0f} is not resolved by up to {attempts.max():.0f} "
                "attempts",
                fit.quality,
                info,
                plot,
            )
        if not math.isfinite(per_err_deg):
            return Analysis({}, False, "the phase per attempt did not fit", fit.quality, info, plot)
        return Analysis(
            {
                p("n_1e_at_alpha"): n_1e,
                p("n_1e_alpha"): DEPHASING_ALPHA,
                p("phase_per_attempt_deg"): per_deg,
                p("phase_per_attempt_sigma_deg"): per_err_deg,
            },
            True,
            f"N_1/e {n_1e:.0f} +- {err:.0f} attempts at alpha {DEPHASING_ALPHA}; phase per "
            f"attempt {per_deg:.5f} +- {per_err_deg:.5f} deg",
            fit.quality,
            info,
            plot,
        )


# ---- a move's fidelity -------------------------------------------------------------------------
CARDINAL_STATES = {  # electron preparations from |0>, and the basis and sign they are read in
    "+z": ((), "z", +1),
    "-z": ((pi_pulse(0.0),), "z", -1),
    "+x": ((pi_half_pulse(90.0),), "x", +1),
    "-x": ((pi_half_pulse(270.0),), "x", -1),
    "+y": ((pi_half_pulse(180.0),), "y", +1),
    "-y": ((pi_half_pulse(0.0),), "y", -1),
}
MOVE_SHOTS = 200


def move_sequence(platform: str, state: str, shots: int) -> Sequence:
    """A cardinal state stored (SwapToMemory) and read back in its own basis."""
    prep, basis, _ = CARDINAL_STATES[state]
    ops = (
        memory_check(platform),
        MemoryInit(MEMORY),
        *prep,
        SwapToMemory(MEMORY),
        MemoryReadout(MEMORY, basis),
    )
    sign = "p" if state[0] == "+" else "m"  # run names allow letters, digits, _ . -
    return Sequence(f"c13_move_{sign}{state[1]}", ops, shots)


def reference_sequence(platform: str, flipped: bool, shots: int) -> Sequence:
    """The electron's own readout: prepared |0>, or |1> (a pi pulse)."""
    flip = (pi_pulse(),) if flipped else ()
    return Sequence(
        "c13_move_reference", (memory_check(platform), SpinInit(), *flip, Readout()), shots
    )


class C13MoveRoutine(MemoryRoutine):
    """The six cardinal states stored and read back, corrected for the electron's readout
    (its bright fractions of prepared |0> and |1>, measured alongside): their mean fidelity
    F is the round trip's; its process fidelity (3F - 1)/2 = (1 + 3 l)/4 gives a
    depolarising parameter l of the two transfers together, and one move (the two taken
    alike, l_move = sqrt(l)) keeps a Bell pair's fidelity (1 + 3 sqrt(l))/4. Memory
    initialisation errors count as the move's."""

    name = "c13_move"
    title = "13C move: fidelity of a state moved into the memory"
    depends = ("c13_ramsey",)
    reads = (p("tau_ns"), p("n_pulses"), p("larmor_hz"), p("omega1_hz"), "readout_threshold")
    updates = (p("move_fidelity"),)

    def acquire(self, node: NodeAccess):
        runs = [
            node.run(reference_sequence(node.platform, flipped, MOVE_SHOTS), Sweep())
            for flipped in (False, True)
        ]
        runs += [
            node.run(move_sequence(node.platform, state, MOVE_SHOTS), Sweep())
            for state in CARDINAL_STATES
        ]
        return runs

    def analyse(self, node: NodeAccess, data) -> Analysis:
        threshold = node.values()["readout_threshold"]
        bright = [float(bright_fraction(acq, threshold)[0]) for acq in data]
        kept = [max(int(acq.valid.sum()), 1) for acq in data]
        b0, b1 = bright[0], bright[1]
        contrast = b0 - b1
        if contrast < 0.5:
            return Analysis(
                {}, False, f"the electron's readout contrast {contrast:.2f} is too low (min 0.5)"
            )
        fidelities, variances = [], []
        for (_, (_, _, sign)), value, n in zip(
            CARDINAL_STATES.items(), bright[2:], kept[2:], strict=True
        ):
            plus = (value - b1) / contrast
            fidelities.append(plus if sign > 0 else 1 - plus)
            variances.append(value * (1 - value) / n / contrast**2)
        mean = float(np.mean(fidelities))
        sigma = math.sqrt(sum(variances)) / len(variances)
        round_trip = (4 * (3 * mean - 1) / 2 - 1) / 3
        info: dict = {"fidelities": dict(zip(CARDINAL_STATES, fidelities, strict=True))}
        info.update({"reference": [b0, b1], "round_trip_fidelity": mean, "sigma": sigma})
        states = list(CARDINAL_STATES)

        def plot(path, title):
            xy_plot(
                path,
                title,
                np.arange(len(states)),
                fidelities,
                xlabel="stored state (" + ", ".join(states) + ")",
                ylabel="fidelity after storing and reading",
            )

        if round_trip <= 0:
            return Analysis(
                {},
                False,
                f"stored states come back with mean fidelity {mean:.2f}: no better than a guess",
                info=info,
                plot=plot,
            )
        move = (1 + 3 * math.sqrt(min(round_trip, 1.0))) / 4
        # d move / d mean = (9/8) / sqrt(l)
        move_sigma = 9 / 8 * sigma / math.sqrt(min(round_trip, 1.0))
        info.update({"move_fidelity": move, "move_sigma": move_sigma})
        return Analysis(
            {p("move_fidelity"): move},
            True,
            f"round trip {mean:.3f} +- {sigma:.3f} mean state fidelity; a move keeps a Bell "
            f"pair's fidelity {move:.3f} +- {move_sigma:.3f}",
            None,
            info,
            plot,
        )


# ---- coherence under decoupling: the nuclear Hahn echo -----------------------------------------
ECHO_TIMES_S = (0.002, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)
"""Total free times of the echo: 13C echo times are 0.3-1 s (Bradley et al., PRX 9, 031045
(2019)); up to 2 s (the sequencer's WAIT holds up to 4.29 s)."""
ECHO_SHOTS = 200


def echo_sequence(platform: str, total_s: float, shots: int) -> Sequence:
    """|+x> stored, half the time, a nuclear pi, the other half, read in x. With the electron
    in |0> (a pump before each part) the DD gate CRx(pi) is an unconditional rotation of the
    nucleus, so it refocuses the quasi-static bath. The gate keeps the memory's frame, where
    its axis is the stored frame's x (the model replay shows it: a stored |+y> comes back as
    -y): the state lies on the pi's axis, so the pi's own error barely touches it (as in
    CPMG) and the readout sees the coherence, whatever the bath did."""
    half = Wait(float(CLOCK_NS * round(total_s * 1e9 / 2 / CLOCK_NS)))
    ops = (
        memory_check(platform),
        MemoryInit(MEMORY),
        pi_half_pulse(90.0),
        SwapToMemory(MEMORY),
        SpinInit(),
        half,
        MemoryGate(MEMORY, 180.0),
        SpinInit(),
        half,
        MemoryReadout(MEMORY, "x"),
    )
    return Sequence(f"c13_t2_{total_s:g}s", ops, shots)


def echo_decay(t_s, amplitude, t2_s, exponent):
    return amplitude * np.exp(-((np.asarray(t_s) / t2_s) ** exponent))


def fit_echo_decay(t_s: np.ndarray, value: np.ndarray, sigma: np.ndarray) -> Fit:
    """amplitude exp(-(t / T2)^n), n in [1, 4] (1: Markovian; 3: a slow Gaussian bath seen by
    one echo; Bradley 2019 fit 13C echoes this way). T2 is the 1/e time either way."""
    t_s, value = np.asarray(t_s, float), np.asarray(value, float)
    top = float(np.max(t_s))
    guess = [float(value[0]) or 0.5, top / 3, 2.0]
    try:
        popt, pcov = curve_fit(
            echo_decay,
            t_s,
            value,
            p0=guess,
            sigma=np.maximum(np.asarray(sigma, float), 1e-3),
            absolute_sigma=True,
            bounds=([-1.2, top / 200, 1.0], [1.2, 50 * top, 4.0]),
            maxfev=20000,
        )
    except (RuntimeError, ValueError) as e:
        raise FitFailed(f"the echo decay did not fit ({e})") from None
    residual = value - echo_decay(t_s, *popt)
    total = np.sum((value - value.mean()) ** 2)
    names = ["amplitude", "t2_s", "exponent"]
    errs = np.sqrt(np.clip(np.diag(pcov), 0, None))
    return Fit(
        dict(zip(names, map(float, popt), strict=True)),
        dict(zip(names, map(float, errs), strict=True)),
        float(1 - np.sum(residual**2) / total) if total > 0 else 0.0,
        lambda x: echo_decay(x, *popt),
    )


class C13T2Routine(MemoryRoutine):
    """The stored state's coherence time under decoupling (`c13_t2_s`, which the planning
    model's storage term e^(-t / T2) reads): a nuclear Hahn echo, its 1/e time. A node that
    stores a state for long must decouple the memory this way (without it the bath's T2*, of
    milliseconds, is what a stored state keeps)."""

    name = "c13_t2"
    title = "13C T2: coherence under a nuclear echo"
    depends = ("c13_ramsey",)
    reads = (p("tau_ns"), p("n_pulses"), p("larmor_hz"), p("omega1_hz"), "readout_threshold")
    updates = (p("t2_s"),)

    def acquire(self, node: NodeAccess):
        return [
            node.run(echo_sequence(node.platform, t, ECHO_SHOTS), Sweep()) for t in ECHO_TIMES_S
        ]

    def analyse(self, node: NodeAccess, data) -> Analysis:
        threshold = node.values()["readout_threshold"]
        times = np.array(ECHO_TIMES_S, float)
        x = np.array([2 * float(bright_fraction(acq, threshold)[0]) - 1 for acq in data])
        sigma = np.array([2 * float(point_sigma(acq)[0]) for acq in data])
        try:
            fit = fit_echo_decay(times, x, sigma)
        except FitFailed as e:
            return Analysis({}, False, f"fit failed: {e}")
        t2, err = fit.params["t2_s"], fit.errors["t2_s"]
        info = {"fit": fit.params, "errors": fit.errors, "x": x.tolist(), "times_s": times.tolist()}

        def plot(path, title):
            xy_plot(
                path,
                title,
                times,
                x,
                fit=fit,
                marks={"T2": t2} if t2 < 2 * times.max() else None,
                xlabel="total free time (s), a nuclear pi in its middle",
                ylabel="memory <X>",
            )

        if abs(fit.params["amplitude"]) < 0.2:
            return Analysis(
                {},
                False,
                f"the echo's contrast is only {abs(fit.params['amplitude']):.2f} (min 0.2): check "
                "c13_gate and c13_ramsey",
                fit.quality,
                info,
                plot,
            )
        if t2 > 2 * times.max() or not math.isfinite(err) or err > t2 / 2:
            return Analysis(
                {},
                False,
                f"T2 {t2:.3g} +- {err:.2g} s is not resolved by free times up to {times.max():g} s",
                fit.quality,
                info,
                plot,
            )
        return Analysis(
            {p("t2_s"): t2},
            True,
            f"T2 {t2:.4f} +- {err:.4f} s (echo, exponent {fit.params['exponent']:.1f})",
            fit.quality,
            info,
            plot,
        )


MEMORY_ROUTINES = (
    C13SpectroscopyRoutine(),
    C13GateRoutine(),
    C13RamseyRoutine(),
    C13DephasingRoutine(),
    C13MoveRoutine(),
    C13T2Routine(),
)
