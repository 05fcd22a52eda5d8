"""The optical table of one simulated node: which line gates which laser, what the AWG plays
into the microwave chain, and the node's physics on its virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim_backends.physics import NodePhysics


@dataclass
class SimLaserState:
    enabled: bool = False
    power_w: float = 0.0


@dataclass
class OpticalPath:
    ttl_line: int
    laser: SimLaserState
    nominal_power_w: float


@dataclass
class SimNode:
    name: str
    physics: NodePhysics | None = None
    awg: object | None = None  # SimAwg
    iq_channels: tuple[int, int] = (1, 2)
    optics: dict[str, OpticalPath] = field(default_factory=dict)
    ttl: int = 0
    midpoint: object | None = None  # photonics.Midpoint, where the node's photons go
    """With one link: its midpoint. With two (`links`), the one on port 0."""
    links: dict[int, object] = field(default_factory=dict)
    """Sync/herald port -> the midpoint of that link (photonics.Midpoint)."""
    fibre_switch_line: int | None = None
    """The TTL line of the fibre switch of a node with two links: low sends its photons to the
    midpoint on port 0, high to the one on port 1."""
    excitations: list = field(default_factory=list)
    """(time ns, emission probability) of every excitation pulse since the program started."""
    sync_epoch: int | None = None
    """The node's clock when the last shared sync released it."""
    sync_generation: int = 0
    sync_port: int = 0
    """The port (link) of the last sync."""
    attempt_index: int = 0
    emitter_state: np.ndarray | None = None
    """The memory's 2x2 state at its last optical pi pulse (what the heralding acts on)."""
    """Stepped attempts since the last sync (software heralding)."""
    now_ns: int = 0
    """The sequencer's clock. The physics clock may run ahead of it while an AWG pulse that a
    zero-time AWG_TRIG started is still playing; a WAIT then only adds what is left."""

    def photon_midpoint(self):
        """Where the node's photons go now: its one midpoint, or the one its fibre switch
        selects."""
        if self.fibre_switch_line is None or not self.links:
            return self.midpoint
        return self.links.get((self.ttl >> self.fibre_switch_line) & 1)

    def state_seen_by(self, midpoint) -> np.ndarray | None:
        """The memory's state at its last optical pi pulse, as a midpoint's heralding sees it:
        dark if the fibre switch sent the photon to another midpoint."""
        if self.emitter_state is None or self.photon_midpoint() is midpoint:
            return self.emitter_state
        return np.diag([0.0, 1.0]).astype(complex)

    def _gain(self, path: str) -> float:
        p = self.optics.get(path)
        if p is None or not (self.ttl >> p.ttl_line) & 1 or not p.laser.enabled:
            return 0.0
        return p.laser.power_w / p.nominal_power_w if p.nominal_power_w > 0 else 0.0

    def set_ttl(self, mask: int) -> None:
        before = self._gain("excitation") > 0
        self.ttl = mask
        if self.physics and not before and self._gain("excitation") > 0:
            self.excite()

    def excite(self) -> None:
        """An optical pi pulse: the bright state (|0>, ready) emits one photon toward M."""
        self.physics.advance(self.now_ns - self.physics.now_ns)
        if self.physics.ready:
            self.emitter_state = self.physics.register.reduced(self.name)
        else:  # a memory out of its charge state (or hot) emits nothing: dark
            self.emitter_state = np.diag([0.0, 1.0]).astype(complex)
        p_emit = float(self.emitter_state[0, 0].real)
        self.excitations.append((self.now_ns, p_emit))
        midpoint = self.photon_midpoint()
        if midpoint is not None:
            midpoint.excitations(self.name, np.array([float(self.now_ns)]), np.array([p_emit]))

    def mark(self, t_ns: int) -> None:
        """A loop body begins: remember the light exposure so far (for fast_forward)."""
        if self.physics is None:
            return
        self.begin_record()
        previous = getattr(self, "_exposure_at", {})
        recent = dict(list(previous.items())[-1:])  # the body that just ended began there
        self._exposure_at = {**recent, t_ns: self.physics.exposure_ns}
        if recent:  # older excitations can no longer be part of a body to fast-forward
            begin = next(iter(recent))
            self.excitations = [e for e in self.excitations if e[0] >= begin]

    def begin_record(self) -> None:
        """A loop body (or the attempts after a sync) begins: the physics, brought up to the
        sequencer's clock, records its operations from here, and the body that ended here is
        kept for fast_forward."""
        if self.physics is None or not self.physics.memories:
            return
        self.advance(0)
        self._last_body = self.physics.finish_record()
        self.physics.begin_record()

    def fast_forward(self, iterations: int, period_ns: int, since: int) -> bool:
        """Account for `iterations` more runs of a loop body, like the one that just ended at
        `now_ns` and began at `since`, without stepping them: allowed when every run starts
        afresh (the memory was re-initialised before its first excitation) and the body only
        switches lines and waits. The photons are drawn at once."""
        if self.physics is None or self.physics.last_reset_ns < since:
            return False
        body = [(t, p) for t, p in self.excitations if t >= since]
        if not body or since not in getattr(self, "_exposure_at", {}):
            return False
        exposure = self.physics.exposure_ns - self._exposure_at[since]
        lit = self.physics.stays_ready(exposure, iterations)
        midpoint = self.photon_midpoint()
        if midpoint is not None:
            for t, p in body:
                midpoint.excitation_train(self.name, t + period_ns, period_ns, iterations, p, lit)
        # the body's channel on the electron and its memories, N times
        body = getattr(self, "_last_body", None)
        self.physics.repeat_memory_channels(since, iterations, period_ns=period_ns, body=body)
        self.advance(iterations * period_ns)
        return True

    def _refresh_light(self) -> None:
        """Light on the memory now: TTL gates and the lasers' own state (either may change)."""
        for path in self.physics.light:
            self.physics.light[path] = self._gain(path)

    def advance(self, dt_ns: int) -> None:
        self.now_ns += dt_ns
        if self.physics:
            self._refresh_light()
            self.physics.advance(self.now_ns - self.physics.now_ns)

    def play_segment(self, index: int) -> None:
        if not self.physics or self.awg is None or not self.awg.running:
            return
        i = self.awg.segment(index, self.iq_channels[0])
        q = self.awg.segment(index, self.iq_channels[1])
        if i is None and q is None:
            return
        n = len(i) if i is not None else len(q)
        i = i if i is not None else np.zeros(n)
        q = q if q is not None else np.zeros(n)
        i = i if self.awg.outputs[self.iq_channels[0]] else np.zeros(n)
        q = q if self.awg.outputs[self.iq_channels[1]] else np.zeros(n)
        amplitude = self.awg.amplitude_vpp[self.iq_channels[0]]
        self.physics.advance(self.now_ns - self.physics.now_ns)
        self.physics.apply_iq(i, q, self.awg.sample_rate_hz, amplitude)

    def count(self, counter: int, window_ns: int) -> int:
        if not self.physics:
            self.now_ns += window_ns
            return 0
        self._refresh_light()
        self.physics.advance(self.now_ns - self.physics.now_ns)
        self.now_ns += window_ns
        return self.physics.count(window_ns)
