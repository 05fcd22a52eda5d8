"""A 13C nuclear spin beside an NV electron: the memory qubit's physics (docs/simulation.md,
"Memory qubits (13C)").

Secular hyperfine Hamiltonian in the electron's {ms=0, ms=-1} = {|0>, |1>} subspace, nucleus in
its lab frame (Taminiau et al., PRL 109, 137602 (2012), eq. (1); Nat. Nanotechnol. 9, 171 (2014)):

    H = omega_L I_z + |1><1| (A_par I_z + A_perp I_x)

so the nucleus precesses at omega_L about z with the electron in |0> and at
omega_1 = sqrt((omega_L + A_par)^2 + A_perp^2) about a tilted axis with it in |1>. Written from
the papers; nothing here knows the controller.

The spin pump resets the electron (|1> -> |0>) at an exponentially distributed time; the nucleus
precesses at omega_1 until then. The channel averaged over that time is the Lindblad evolution
with the jump operator sqrt(gamma)|0><1| (and a weak back-pump that leaves the pump's true
initialisation fidelity), computed exactly as exp(L dt) on the electron and its memories.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg

GAMMA_13C_HZ_PER_T = 10.705e6
"""Gyromagnetic ratio of 13C / 2 pi."""

SZ = np.array([[1, 0], [0, -1]], dtype=complex)
SX = np.array([[0, 1], [1, 0]], dtype=complex)
SY = np.array([[0, -1j], [1j, 0]], dtype=complex)
I2 = np.eye(2, dtype=complex)
P0 = np.diag([1.0, 0.0]).astype(complex)
P1 = np.diag([0.0, 1.0]).astype(complex)


@dataclass(frozen=True)
class MemoryRanges:
    """What a 13C memory's hidden truth is drawn from (docs/simulation.md has the sources)."""

    field_t: tuple[float, float] = (0.185, 0.195)  # Delft's labs: about 0.19 T along the NV axis
    a_par_hz: tuple[float, float] = (20e3, 60e3)  # |A_par| / 2 pi, either sign
    a_perp_hz: tuple[float, float] = (15e3, 45e3)  # A_perp / 2 pi
    t2star_s: tuple[float, float] = (8e-3, 14e-3)
    t2_hahn_s: tuple[float, float] = (0.3, 1.0)
    t2_s: float = 10.0  # Markovian floor under decoupling
    t1_s: float = 6 * 3600.0


C13 = MemoryRanges()


@dataclass(frozen=True)
class MemoryTruth:
    """A memory's hidden parameters (Hz are cycles per second; the physics uses rad/s)."""

    kind: str
    field_t: float
    larmor_hz: float
    a_par_hz: float
    a_perp_hz: float
    t2star_s: float
    t2_hahn_s: float
    bath_tau_c_s: float
    t2_s: float
    t1_s: float

    @property
    def omega_l(self) -> float:
        return 2 * math.pi * self.larmor_hz

    @property
    def a_par(self) -> float:
        return 2 * math.pi * self.a_par_hz

    @property
    def a_perp(self) -> float:
        return 2 * math.pi * self.a_perp_hz

    @property
    def omega_1(self) -> float:
        """Precession frequency (rad/s) with the electron in |1>."""
        return math.hypot(self.omega_l + self.a_par, self.a_perp)

    def as_dict(self) -> dict:
        return asdict(self)


def draw_memory_truth(
    kind: str, rng: np.random.Generator, correlation_time, ranges: MemoryRanges = C13
) -> MemoryTruth:
    """`correlation_time(t2star, t2_hahn)`: the bath's OU correlation time (physics.py's)."""
    field_t = float(rng.uniform(*ranges.field_t))
    a_par = float(rng.uniform(*ranges.a_par_hz)) * (1.0 if rng.random() < 0.5 else -1.0)
    a_perp = float(rng.uniform(*ranges.a_perp_hz))
    t2star = float(rng.uniform(*ranges.t2star_s))
    t2_hahn = float(rng.uniform(*ranges.t2_hahn_s))
    return MemoryTruth(
        kind=kind,
        field_t=field_t,
        larmor_hz=GAMMA_13C_HZ_PER_T * field_t,
        a_par_hz=a_par,
        a_perp_hz=a_perp,
        t2star_s=t2star,
        t2_hahn_s=t2_hahn,
        bath_tau_c_s=float(correlation_time(t2star, t2_hahn)),
        t2_s=ranges.t2_s,
        t1_s=ranges.t1_s,
    )


def kron2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.kron of two square matrices, without its general-case overhead (the hot path of a
    memory node's every step)."""
    n, m = len(a), len(b)
    return (a[:, None, :, None] * b[None, :, None, :]).reshape(n * m, n * m)


def kron_all(ops: list[np.ndarray]) -> np.ndarray:
    if len(ops) == 1:
        return np.asarray(ops[0], dtype=complex)
    out = np.asarray(ops[0], dtype=complex)
    for op in ops[1:]:
        out = kron2(out, op)
    return out


def nuclear_hamiltonians(
    truths: list[MemoryTruth], detunings: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(H0, H1) of all the memories (rad/s, on their joint space), electron in |0> and in |1>;
    `detunings` are the memories' bath detunings (rad/s), added to omega_L."""
    m = len(truths)
    h0 = np.zeros((2**m, 2**m), dtype=complex)
    h1 = np.zeros((2**m, 2**m), dtype=complex)
    for k, (t, d) in enumerate(zip(truths, detunings, strict=True)):
        ops = [I2] * m
        ops[k] = (t.omega_l + d) * SZ / 2
        h0 += kron_all(ops)
        ops[k] = (t.omega_l + d + t.a_par) * SZ / 2 + t.a_perp * SX / 2
        h1 += kron_all(ops)
    return h0, h1


def joint_hamiltonian(h0: np.ndarray, h1: np.ndarray, electron: np.ndarray) -> np.ndarray:
    """Electron first: electron term x 1 + |0><0| x H0 + |1><1| x H1."""
    eye = np.eye(len(h0), dtype=complex)
    return kron2(electron, eye) + kron2(P0, h0) + kron2(P1, h1)


def expm_hermitian(h: np.ndarray, t: float) -> np.ndarray:
    energies, vectors = np.linalg.eigh(h)
    return (vectors * np.exp(-1j * energies * t)) @ vectors.conj().T


def free_propagator(
    truths: list[MemoryTruth], nuclear_phases: list[float], electron_phase: float, dt: float
) -> np.ndarray:
    """Joint propagator of free evolution for dt (s): the electron's Z phase (its detuning times
    dt, bath included) and each memory's precession; `nuclear_phases` are the memories' bath
    phases integrated over dt. Block-diagonal in the electron: each block a product of 2x2s
    (written out with scalar arithmetic: this runs at every wait of a memory node)."""
    block0 = np.ones((1, 1), dtype=complex)
    block1 = np.ones((1, 1), dtype=complex)
    for t, phi in zip(truths, nuclear_phases, strict=True):
        z = t.omega_l * dt + phi
        f0 = np.array([[cmath.exp(-0.5j * z), 0], [0, cmath.exp(0.5j * z)]])
        # tilted axis: exp(-i dt ((w_L + A_par + d) Z + A_perp X) / 2)
        zz = z + t.a_par * dt
        xx = t.a_perp * dt
        norm = math.hypot(zz, xx)
        if norm:
            c, s = math.cos(norm / 2), math.sin(norm / 2) / norm
            f1 = np.array([[c - 1j * s * zz, -1j * s * xx], [-1j * s * xx, c + 1j * s * zz]])
        else:
            f1 = I2
        block0, block1 = kron2(block0, f0), kron2(block1, f1)
    dim = len(block0)
    u = np.zeros((2 * dim, 2 * dim), dtype=complex)
    u[:dim, :dim] = cmath.exp(-0.5j * electron_phase) * block0
    u[dim:, dim:] = cmath.exp(0.5j * electron_phase) * block1
    return u


class JointOperators:
    """The joint (electron + memories) operators of one node, built once: the drive and
    detuning terms of the electron, the static hyperfine Hamiltonian and each memory's bath
    term, so that a pulse's Hamiltonians are a weighted sum of fixed matrices (no Kronecker
    products rebuilt per pulse; docs/simulation.md "Speed")."""

    def __init__(self, truths: list[MemoryTruth]) -> None:
        m = len(truths)
        h0, h1 = nuclear_hamiltonians(truths, [0.0] * m)
        self.static = joint_hamiltonian(h0, h1, np.zeros((2, 2), dtype=complex))
        eye = np.eye(2**m, dtype=complex)
        self.electron = np.stack([kron2(op / 2, eye) for op in (SX, SY, SZ)])
        baths = []
        for k in range(m):  # d_k I_z of memory k, whatever the electron's state
            ops = [I2] * m
            ops[k] = SZ / 2
            baths.append(kron2(I2, kron_all(ops)))
        self.baths = np.stack(baths) if baths else np.zeros((0, 2 * m, 2 * m), dtype=complex)
        self.dim = 2 ** (m + 1)

    def pulse(
        self,
        detunings: list[float],
        electron_detuning: float,
        omegas: np.ndarray,
        phases: np.ndarray,
        durations: np.ndarray,
    ) -> np.ndarray:
        """pulse_propagator's propagator, from the prepared operators."""
        base = self.static + (electron_detuning * self.electron[2])
        for detuning, bath in zip(detunings, self.baths, strict=True):
            base += detuning * bath
        if len(omegas) == 1:  # a square pulse: one segment
            omega, phase = float(omegas[0]), float(phases[0])
            ham = base + (omega * math.cos(phase)) * self.electron[0]
            ham += (omega * math.sin(phase)) * self.electron[1]
            energies1, v = np.linalg.eigh(ham)
            return (v * np.exp(-1j * energies1 * durations[0])) @ v.conj().T
        keys = np.stack([omegas, phases], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        unique_o, unique_p, inverse = unique[:, 0], unique[:, 1], np.ravel(inverse)
        weights = np.stack([unique_o * np.cos(unique_p), unique_o * np.sin(unique_p)], axis=1)
        hams = base + np.tensordot(weights, self.electron[:2], axes=1)
        energies, vectors = np.linalg.eigh(hams)
        v = vectors[inverse]
        phases_t = np.exp(-1j * energies[inverse] * np.asarray(durations)[:, None])
        segments = (v * phases_t[:, None, :]) @ v.conj().transpose(0, 2, 1)
        u_total = segments[0]
        for segment in segments[1:]:
            u_total = segment @ u_total
        return u_total


def pulse_propagator(
    truths: list[MemoryTruth],
    detunings: list[float],
    electron_detuning: float,
    omegas: np.ndarray,
    phases: np.ndarray,
    durations: np.ndarray,
) -> np.ndarray:
    """Joint propagator of a run-length encoded IQ waveform: per segment the electron drive
    (omega/2)(cos phase X + sin phase Y) + (detuning/2) Z plus the hyperfine Hamiltonian, each
    segment exactly (its eigenbasis); identical segments share one diagonalisation. A node
    keeps its JointOperators (this builds them afresh)."""
    return JointOperators(truths).pulse(detunings, electron_detuning, omegas, phases, durations)


def pump_superoperator(
    truths: list[MemoryTruth], rate: float, init_fidelity: float, dt: float
) -> np.ndarray:
    """exp(L dt) (row-major vec) of the spin pump on the electron and its memories: the
    hyperfine Hamiltonian (no bath detuning: the electron's is a phase that commutes with this
    channel, the memories' is applied beside it), the reset jump sqrt(rate)|0><1| and the
    back-pump sqrt(rate (1-F)/F)|1><0| whose steady state is the pump's fidelity F. Averaging
    the reset time over its exponential law is what this evolution does exactly."""
    h0, h1 = nuclear_hamiltonians(truths, [0.0] * len(truths))
    dim = 2 * len(h0)
    eye_n = np.eye(len(h0), dtype=complex)
    ham = joint_hamiltonian(h0, h1, np.zeros((2, 2), dtype=complex))
    lower = np.kron(np.array([[0, 1], [0, 0]], dtype=complex), eye_n)
    jumps = [math.sqrt(rate) * lower]
    if init_fidelity < 1.0:
        jumps.append(math.sqrt(rate * (1 - init_fidelity) / init_fidelity) * lower.conj().T)
    eye = np.eye(dim, dtype=complex)
    generator = -1j * (np.kron(ham, eye) - np.kron(eye, ham.T))
    for jump in jumps:
        jd = jump.conj().T @ jump
        generator += np.kron(jump, jump.conj()) - 0.5 * np.kron(jd, eye) - 0.5 * np.kron(eye, jd.T)
    return scipy.linalg.expm(generator * dt)


def pump_coherence_factors(
    truths: list[MemoryTruth], superop: np.ndarray, dt: float
) -> list[tuple[complex, complex]]:
    """Per memory, (g0, g1): the factor by which the pump multiplies the memory's coherence
    rho01 relative to free precession at omega_L, with the electron entering the pump in |0>
    and in |1>. Only the part of the channel that commutes with the precession (rho01 -> g
    rho01; the tilted axis also feeds a little of rho10 and of the populations into rho01,
    which the precession between attempts averages away): what a fast-forwarded attempt loop
    repeats (docs/simulation.md)."""
    m = len(truths)
    raising = np.array([[0, 1], [0, 0]], dtype=complex)  # |0><1|: rho01 alone (linear map)
    out = []
    for k, t in enumerate(truths):
        nuclear = [0.5 * I2] * m
        nuclear[k] = raising
        rho_n = kron_all(nuclear)
        factors = []
        for electron in (P0, P1):
            rho = np.kron(electron, rho_n)
            dim = len(rho)
            after = (superop @ rho.reshape(-1)).reshape(dim, dim)
            t4 = after.reshape([2] * (2 * (m + 1)))
            keep = k + 1  # reduce to memory k: trace the electron and the other memories
            t4 = np.moveaxis(t4, [keep, m + 1 + keep], [0, 1])
            rest = 2**m
            reduced = np.einsum("abii->ab", t4.reshape(2, 2, rest, rest))
            factors.append(complex(reduced[0, 1] / np.exp(-1j * t.omega_l * dt)))
        out.append((factors[0], factors[1]))
    return out
