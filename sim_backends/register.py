"""The memory qubits of every node of the lab as ONE density matrix.

Each node's qubit is one factor; operations on a node act on its factor only. Until a herald
correlates them the state stays a product, and after one it is the joint (entangled) state
that the midpoint's clicks and both nodes' measurements depend on: that is why the simulated
lab is a single process.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

I2 = np.eye(2, dtype=complex)
Z = np.array([[1, 0], [0, -1]], dtype=complex)


MAX_QUBITS = 9
"""A density matrix of 2^9 x 2^9 complex numbers is 4 MiB and every step touches it; at 15
qubits (three nodes with four memories each) it would be 16 GiB."""


BLAS_THREAD_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
_blas_limited = False


def single_threaded_blas() -> None:
    """One BLAS thread in this process (the simulator's). Its matrices are small (a 2^n
    density matrix, n <= 9, and superoperators on a node's few qubits): OpenBLAS's threads
    cost more than they gain on them, and on a loaded machine their spinning made a 16 x 16
    by 16 x 256 product 200 times slower than on one thread (docs/simulation.md "Speed").
    numpy has no call for it, so the loaded OpenBLAS libraries are told directly; without
    them this does nothing."""
    global _blas_limited
    if _blas_limited:
        return
    _blas_limited = True
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    libraries = {line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()}
    for path in sorted(libraries):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in BLAS_THREAD_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(1))
                break


class QubitRegister:
    def __init__(self, names: list[str]) -> None:
        single_threaded_blas()
        if not names:
            raise ValueError("a register needs at least one qubit")
        self.names = list(names)
        dim = 2 ** len(self.names)
        self.rho = np.eye(dim, dtype=complex) / dim  # every qubit maximally mixed at power-on
        self._index_qubits()

    def add_qubit(self, name: str, rho1: np.ndarray) -> None:
        """A further qubit (a node's memory), last, in state rho1 beside the others; a name
        already held is left as it is (the lab may list the memories itself)."""
        if name in self.names:
            return
        if len(self.names) >= MAX_QUBITS:
            raise ValueError(
                f"the simulated lab holds at most {MAX_QUBITS} qubits in its one density matrix "
                f"({', '.join(self.names)}): {name} would be one too many (fewer memories)"
            )
        self.names.append(name)
        self.rho = np.kron(self.rho, np.asarray(rho1, dtype=complex))
        self._index_qubits()

    def _index_qubits(self) -> None:
        self.index = {name: k for k, name in enumerate(self.names)}
        self.n = len(self.names)
        dim = 2**self.n
        # per qubit: which basis states have it 0 / 1, and the projector masks on rho
        self._bit_masks = [
            [((np.arange(dim) >> (self.n - 1 - k)) & 1) == b for b in (0, 1)] for k in range(self.n)
        ]
        self._keep = [[np.outer(m, m).astype(float) for m in masks] for masks in self._bit_masks]
        self._bit_of = [masks[1].astype(int) for masks in self._bit_masks]
        self._differs = [np.not_equal.outer(b, b) for b in self._bit_of]
        self._orders: dict[tuple[str, ...], tuple[tuple, tuple]] = {}
        self._decays: dict[tuple[int, float, float], tuple] = {}

    def _order(self, names: list[str]) -> tuple[tuple, tuple]:
        """(perm, inverse), np.ix_ index pairs of the basis permutation that puts the qubits
        `names` first (in that order) and the rest after, both most significant first:
        rho[perm] is rho in that order and rho[inverse] undoes it: one fancy index instead
        of a chain of moveaxis (the hot path of a memory node's every step,
        docs/simulation.md "Speed")."""
        key = tuple(names)
        cached = self._orders.get(key)
        if cached is None:
            ks = [self.index[name] for name in names]
            rest = [k for k in range(self.n) if k not in ks]
            axes = ks + rest
            perm = np.arange(2**self.n).reshape([2] * self.n).transpose(axes).reshape(-1)
            cached = self._orders[key] = (np.ix_(perm, perm), np.ix_(*[np.argsort(perm)] * 2))
        return cached

    def _tensor(self) -> np.ndarray:
        return self.rho.reshape([2] * (2 * self.n))

    def _full(self, k: int, op: np.ndarray) -> np.ndarray:
        """op on qubit k, identity on the others (qubit 0 is the most significant bit)."""
        full = np.ones((1, 1), dtype=complex)
        for j in range(self.n):
            factor = op if j == k else I2
            d = full.shape[0]
            full = (full[:, None, :, None] * factor[None, :, None, :]).reshape(2 * d, 2 * d)
        return full

    def apply_diagonal(self, name: str, diagonal: np.ndarray) -> None:
        """A diagonal operator (a Z rotation) on one qubit: an elementwise phase on rho."""
        d = np.asarray(diagonal)[self._bit_of[self.index[name]]]
        self.rho = self.rho * np.outer(d, d.conj())

    def apply(self, name: str, op: np.ndarray) -> None:
        """rho -> A rho A^dagger with A acting on `name`'s qubit (a unitary or a projector)."""
        full = self._full(self.index[name], op) if self.n > 1 else op
        self.rho = full @ self.rho @ full.conj().T

    def reduced(self, name: str) -> np.ndarray:
        """The 2x2 state of one node's qubit (the others traced out)."""
        if self.n == 1:
            return self.rho.copy()
        k = self.index[name]
        if self.n == 2:  # the two-node lab: a direct partial trace
            t = self.rho.reshape(2, 2, 2, 2)
            return np.einsum("ijkj->ik", t) if k == 0 else np.einsum("jijk->ik", t)
        t = np.moveaxis(self._tensor(), [k, self.n + k], [0, self.n])
        rest = 2 ** (self.n - 1)
        return np.einsum("aibi->ab", t.reshape(2, rest, 2, rest))

    def reduced_joint(self, names: list[str]) -> np.ndarray:
        """The joint state of the qubits `names` (in that order; the others traced out)."""
        if len(set(names)) != len(names):
            raise ValueError(f"qubits named twice: {names}")
        rows, _ = self._order(list(names))
        ordered = self.rho[rows]
        kept = 2 ** len(names)
        rest = 2 ** (self.n - len(names))
        return np.einsum("aibi->ab", ordered.reshape(kept, rest, kept, rest))

    def replace(self, name: str, rho1: np.ndarray, weight: float = 1.0) -> None:
        """With probability `weight`, the qubit is re-prepared in rho1 (its correlations go)."""
        if weight <= 0:
            return
        if self.n == 1:
            fresh = np.asarray(rho1, dtype=complex)
        else:  # rho1 on qubit k times the rest's state: Tr_k(rho) summed elementwise
            perm, inverse = self._order([name])
            half = 2 ** (self.n - 1)
            t = self.rho[perm].reshape(2, half, 2, half)
            rest = t[0, :, 0, :] + t[1, :, 1, :]
            fresh = np.asarray(rho1, dtype=complex)[:, None, :, None] * rest[None, :, None, :]
            fresh = fresh.reshape(2 * half, 2 * half)[inverse]
        self.rho = fresh if weight >= 1.0 else (1 - weight) * self.rho + weight * fresh

    def _axes(self, names: list[str]) -> tuple[list[int], list[int]]:
        ks = [self.index[name] for name in names]
        return ks, [self.n + k for k in ks]

    def apply_joint(self, names: list[str], op: np.ndarray) -> None:
        """rho -> A rho A^dagger with A acting on the qubits `names` (in that order, the first
        the most significant): a node's electron and its memories."""
        perm, inverse = self._order(names)
        a = 2 ** len(names)
        dim = 2**self.n
        b = dim // a
        rho = self.rho[perm]
        if b == 1:
            self.rho = (op @ rho @ op.conj().T)[inverse]
            return
        rows = (op @ rho.reshape(a, b * dim)).reshape(dim, a, b)
        both = np.matmul(op.conj(), rows).reshape(dim, dim)
        self.rho = both[inverse]

    def apply_channel(self, names: list[str], superop: np.ndarray) -> None:
        """A channel on the qubits `names`, as a superoperator on their row-major vec(rho)."""
        perm, inverse = self._order(names)
        a = 2 ** len(names)
        dim = 2**self.n
        b = dim // a
        t = self.rho[perm].reshape(a, b, a, b).transpose(0, 2, 1, 3)
        t = (superop @ t.reshape(a * a, b * b)).reshape(a, a, b, b).transpose(0, 2, 1, 3)
        self.rho = t.reshape(dim, dim)[inverse]

    def set_pair(self, first: str, second: str, rho4: np.ndarray) -> None:
        """Put two qubits in a joint state: the whole register of a two-node lab; in a larger
        one the two are re-prepared (their correlations with the rest go), the rest kept."""
        if {first, second} - set(self.names) or first == second:
            raise ValueError(f"set_pair needs two qubits of the register, not {first}, {second}")
        if self.n != 2:
            self._set_factor([first, second], np.asarray(rho4, dtype=complex))
            return
        rho = np.asarray(rho4, dtype=complex)
        if self.names != [first, second]:  # swap the qubit order
            rho = rho.reshape(2, 2, 2, 2).transpose(1, 0, 3, 2).reshape(4, 4)
        self.rho = rho.copy()
        self._clean()

    def _set_factor(self, names: list[str], rho_sub: np.ndarray) -> None:
        rows, cols = self._axes(names)
        k, n = len(names), self.n
        front = list(range(2 * k))
        t = np.moveaxis(self._tensor(), rows + cols, front)
        sub = 2**k
        rest = np.einsum("iiab->ab", t.reshape(sub, sub, 2 ** (n - k), 2 ** (n - k)))
        fresh = np.multiply.outer(rho_sub, rest).reshape(t.shape)
        self.rho = np.moveaxis(fresh, front, rows + cols).reshape(2**n, 2**n)
        self._clean()

    def decay(self, name: str, coherence: float, weight: float) -> None:
        """dephase(name, coherence) then replace(name, I/2, weight) (T2 then T1 of a wait),
        as two elementwise products: the depolarised part is the state averaged with its
        copy whose qubit `name` is flipped, on the entries where that qubit agrees."""
        k = self.index[name]
        if weight <= 0:
            self.dephase(name, coherence)
            return
        key = (k, coherence, weight)
        cached = self._decays.get(key)
        if cached is None:  # waits repeat: so do their factors
            index = np.arange(2**self.n) ^ (1 << (self.n - 1 - k))
            same = ~self._differs[k]
            kept = np.where(same, 1.0 - weight + 0.5 * weight, (1.0 - weight) * coherence)
            if len(self._decays) > 256:
                self._decays.clear()
            cached = self._decays[key] = (
                np.ix_(index, index),
                kept,
                np.where(same, 0.5 * weight, 0.0),
            )
        flip, kept, moved = cached
        self.rho = kept * self.rho + moved * self.rho[flip]

    def dephase(self, name: str, coherence: float) -> None:
        """Multiply the qubit's coherences by `coherence` (phase-flip channel)."""
        if coherence >= 1.0:
            return
        self.rho = np.where(self._differs[self.index[name]], self.rho * coherence, self.rho)

    def measure(self, name: str, rng: np.random.Generator) -> int:
        """Projective Z measurement of one qubit: 0 or 1, and the state collapses."""
        k = self.index[name]
        p0 = float(np.clip(self.rho.diagonal().real[self._bit_masks[k][0]].sum(), 0.0, 1.0))
        outcome = 0 if rng.random() < p0 else 1
        self.rho = self.rho * self._keep[k][outcome]
        self._clean()
        return outcome

    def _clean(self) -> None:
        """Hermitian with unit trace again. A measurement divides by its outcome's
        probability: rounding errors would grow by that factor each time, and over millions
        of operations turn the state into garbage."""
        rho = (self.rho + self.rho.conj().T) / 2
        trace = float(np.trace(rho).real)
        self.rho = rho / trace if trace > 0 else np.eye(len(rho), dtype=complex) / len(rho)
