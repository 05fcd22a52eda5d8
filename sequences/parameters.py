"""Node parameters that sequences refer to by name, with their units.

Calibration fills them (issue: calibration); a sequence never hard-codes them. A parameter
with a default can be used before calibration; one without must be calibrated or set by hand
(`qnode params set`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    unit: str
    description: str
    default: float | None = None
    ion: float | None = None
    """The trapped-ion platform's default, where it differs (slower light, longer pulses)."""

    def default_for(self, platform: str) -> float | None:
        return self.ion if platform == "ion" and self.ion is not None else self.default


PARAMETERS: dict[str, ParameterSpec] = {
    p.name: p
    for p in (
        ParameterSpec("mw_frequency_hz", "Hz", "microwave carrier: the qubit resonance"),
        ParameterSpec("mw_power_dbm", "dBm", "microwave source power", 10.0),
        ParameterSpec("pi_amplitude_v", "V", "AWG peak amplitude of a pi pulse"),
        ParameterSpec("pi2_amplitude_v", "V", "AWG peak amplitude of a pi/2 pulse"),
        ParameterSpec("pi_duration_ns", "ns", "duration of pi and pi/2 pulses", 100.0, 5_000.0),
        ParameterSpec("rabi_amplitude_v", "V", "AWG peak amplitude for Rabi and ESR scans", 0.5),
        ParameterSpec("esr_pulse_ns", "ns", "pulse length of a pulsed ESR scan", 400.0, 2_000.0),
        ParameterSpec(
            "readout_duration_ns", "ns", "single-shot readout window", 10_000.0, 1_500_000.0
        ),
        ParameterSpec("readout_threshold", "counts", "bright if counts >= threshold", 1.0),
        ParameterSpec("cr_threshold", "counts", "CR / cooling check passes at >= this", 5.0),
        ParameterSpec("cr_window_ns", "ns", "CR / cooling check window", 50_000.0, 1_000_000.0),
        ParameterSpec(
            "repump_duration_ns", "ns", "charge repump / Doppler cooling", 5_000.0, 1_000_000.0
        ),
        ParameterSpec(
            "spin_pump_duration_ns", "ns", "spin initialisation pulse", 3_000.0, 30_000.0
        ),
        ParameterSpec("detuning_hz", "Hz", "fine detuning from the Ramsey fit", 0.0),
        ParameterSpec("alpha_amplitude_v", "V", "AWG amplitude of the alpha rotation"),
        ParameterSpec("excitation_duration_ns", "ns", "optical pi pulse gate", 8.0),
        ParameterSpec("herald_window_ns", "ns", "wait for the herald after each attempt", 1_000.0),
        ParameterSpec("t2star_s", "s", "dephasing time from the Ramsey fit"),
        ParameterSpec("esr_start_hz", "Hz", "start of the ESR search scan (default: platform's)"),
        ParameterSpec("esr_stop_hz", "Hz", "end of the ESR search scan (default: platform's)"),
        ParameterSpec(
            "detection_window_start_ns", "ns", "photon arrival at the midpoint, after the sync"
        ),
        ParameterSpec("detection_window_ns", "ns", "length of the detection window"),
        ParameterSpec(
            "detection_probability",
            "",
            "photons detected at the midpoint per excitation (the whole wavepacket)",
        ),
        ParameterSpec("photon_onset_ns", "ns", "the photons' earliest arrival after the sync"),
        ParameterSpec("photon_lifetime_ns", "ns", "the emitter's lifetime: the photons' decay"),
        ParameterSpec(
            "double_excitation", "", "P(an optical pi pulse excites twice: an early photon)"
        ),
        ParameterSpec("double_excitation_sigma", "", "the double excitation's error"),
        ParameterSpec("visibility", "", "two-photon interference visibility of A and B"),
        ParameterSpec(
            "phase_noise_deg", "deg", "interferometer phase spread at heralding (lock in bursts)"
        ),
        ParameterSpec("target_fidelity", "", "the alpha routine's target (default 0.8)"),
        ParameterSpec("single_click_alpha", "", "bright population for the target fidelity"),
        ParameterSpec("piezo_deg_per_volt", "deg/V", "interferometer phase per piezo volt"),
        ParameterSpec("fringe_contrast", "", "reference light's fringe contrast at the detectors"),
        ParameterSpec("phase_lock_interval_s", "s", "time between phase-lock bursts"),
        ParameterSpec(
            "reference_power_w", "W", "reference laser's power for the lock (lab limit caps it)"
        ),
        ParameterSpec("piezo_settle_s", "s", "wait after a piezo move before counting"),
        ParameterSpec(
            "phase_setpoint_deg", "deg", "phase the lock holds (0: reference top on psi_plus)"
        ),
        ParameterSpec("check_mean_counts", "counts", "mean CR / cooling check counts when ready"),
        ParameterSpec("f0", "", "readout fidelity of |0>: P(bright | |0>), the readout's own"),
        ParameterSpec("f1", "", "readout fidelity of |1>: P(dark | |1>), the readout's own"),
        ParameterSpec("init_fidelity", "", "spin initialisation fidelity: P(|0> after init)"),
        ParameterSpec("init_fidelity_sigma", "", "the initialisation fidelity's error"),
        ParameterSpec("visibility_sigma", "", "the two-photon visibility's error"),
        # an NV node's 13C memory (sequences/memory.py, calibration/routines/memory.py)
        ParameterSpec("c13_tau_ns", "ns", "13C: half the DD pulse spacing, on a resonance"),
        ParameterSpec("c13_n_pulses", "", "13C: DD pulses of the conditional pi/2 (even)"),
        ParameterSpec("c13_larmor_hz", "Hz", "13C: precession with the electron in |0>"),
        ParameterSpec("c13_omega1_hz", "Hz", "13C: precession with the electron in |1>"),
        ParameterSpec("c13_n_1e_at_alpha", "", "13C: attempts to 1/e of a stored coherence"),
        ParameterSpec("c13_n_1e_alpha", "", "13C: the alpha c13_n_1e_at_alpha holds at"),
        ParameterSpec("c13_t2_s", "s", "13C: coherence time under decoupling"),
        ParameterSpec(
            "c13_phase_per_attempt_deg", "deg", "13C: a stored state's mean turn per attempt"
        ),
        ParameterSpec("c13_phase_per_attempt_sigma_deg", "deg", "13C: that turn's error (1 sigma)"),
        ParameterSpec("c13_move_fidelity", "", "13C: fidelity of a move into the memory"),
        ParameterSpec("c13_search_start_ns", "ns", "13C spectroscopy: start of the tau search"),
        ParameterSpec("c13_search_stop_ns", "ns", "13C spectroscopy: end of the tau search"),
    )
}


SUFFIX_UNITS = {"_hz": "Hz", "_ns": "ns", "_s": "s", "_v": "V", "_dbm": "dBm", "_w": "W"}


def unit_of(name: str) -> str:
    spec = PARAMETERS.get(name)
    if spec:
        return spec.unit
    return next((unit for suffix, unit in SUFFIX_UNITS.items() if name.endswith(suffix)), "")


def defaults(platform: str = "nv") -> dict[str, float]:
    values = {name: p.default_for(platform) for name, p in PARAMETERS.items()}
    return {name: v for name, v in values.items() if v is not None}
