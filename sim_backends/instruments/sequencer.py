"""Simulated real-time sequencer: validates uploaded programs as firmware would and runs them
on the node's virtual clock, stamping events in virtual nanoseconds since RUN.

Waits for the sync trigger or a herald block; while blocked, virtual time runs at wall speed
and the timeout counts in that time. The node's physics advances by the waited time when the
wait ends, under the light its lines leave on (normally none): a stored memory (half of a
pair) decoheres over the host's latency as in a lab (hil_tests/test_sim_memory.py).

The host watchdog: with a timeout set (`WDOG:TIME <s>`, off at power-on), a running program
needs a host heartbeat (`WDOG:PET`) at least that often, in wall time; when none comes, the
sequencer halts the program with every line at its safe level (low: AOMs closed, microwave
switch open), as if the host had sent SAFE, and says so (`WDOG:TRIP?` 1, the state's
`halt_reason`) until the next RUN.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from qnode.errors import ProgramError
from sequences.program import (
    CLOCK_NS,
    N_LINK_PORTS,
    N_REGISTERS,
    NO_REGISTER,
    Event,
    Instruction,
    Op,
    align_offset_ps,
    align_wait_ns,
    decode,
    encode_events,
)
from sim_backends.device import CommandError, Device, number
from sim_backends.node import SimNode

PROGRAM_ERROR_CODE = 101
HERALD_TIMEOUT = -1
SIMPLE_OPS = frozenset({Op.TTL_SET, Op.TTL_CLR, Op.WAIT, Op.AWG_TRIG})
ATTEMPT_OPS = SIMPLE_OPS | {Op.ADD, Op.WAIT_HERALD, Op.BRANCH_GE, Op.BRANCH_LT}
YIELD_EVERY_S = 0.001
"""Run the program in slices this long, so replies and output keep flowing meanwhile."""
FIFO_READ_MAX = 4096
SAFE_TTL = 0
"""Every line's safe level: low (AOMs closed, the microwave switch open)."""
WATCHDOG_MIN_S, WATCHDOG_MAX_S = 0.1, 60.0
"""A watchdog timeout is 0 (off) or within these bounds."""
WATCHDOG_CHECK_S = 0.02


def quantise_up(ns: float) -> int:
    """The sequencer's clock cycles that cover `ns`."""
    return -(-round(ns) // CLOCK_NS) * CLOCK_NS


class SimSequencer(Device):
    identity = "QNODE,RTSEQ-1,{serial},1.0-sim"

    def __init__(self, name: str, node: SimNode, serial: int) -> None:
        self.node = node
        self.identity = self.identity.format(serial=serial)
        self._task: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self.watchdog_s = 0.0
        self.watchdog_trips = 0
        self.sync_sources: dict[int, object] = {}
        """Port -> the midpoint whose sync (and herald) reach that input pair: one per link
        of the node (photonics.Midpoint), none in a lab without midpoint."""
        self._simple_bodies: dict[int, bool] = {}
        self._attempt_loops: dict[int, tuple | None] = {}
        self._second_round: int | None = None
        super().__init__(name)

    def setup(self) -> None:
        self.add("PROGram:LOAD", self._load)
        self.add("PROGram:SIZE?", lambda a: str(len(self.program)))
        self.add("RUN", lambda a: self._start())
        self.add("STOP", lambda a: self._stop("IDLE"))
        self.add("STATus?", lambda a: self.status)
        self.add("TIME?", lambda a: str(self.node.now_ns - self.t0_ns))
        self.add("EVT:COUNt?", lambda a: str(len(self.events)))
        self.add("EVT:DATA?", lambda a: self._drain_events(a))
        self.add("HERALD", self._herald)
        self.add("SYNC", lambda a: self._wake("sync", 1, self._port(a)))
        self.add("TTL?", lambda a: str(self.node.ttl))
        self.add("SAFE", lambda a: self._safe())
        self.add("WDOG:TIME?", lambda a: f"{self.watchdog_s:g}")
        self.add("WDOG:TIME", self._set_watchdog)
        self.add("WDOG:PET", lambda a: self._pet())
        self.add("WDOG:TRIP?", lambda a: "1" if self.halt_reason else "0")

    def reset_state(self) -> None:
        self._stop("IDLE")
        self.program: list[Instruction] = []
        self.events: list[Event] = []
        self.status = "IDLE"
        self.t0_ns = self.node.now_ns
        self.pending: defaultdict[tuple[str, int], list[int]] = defaultdict(list)
        self.wakeup = asyncio.Event()
        self.watchdog_s = 0.0
        self.halt_reason = ""
        self.last_pet = time.monotonic()
        self.node.set_ttl(SAFE_TTL)

    # commands -------------------------------------------------------------------------------
    def _load(self, args: str, block: bytes | None = None) -> None:
        if block is None:
            raise CommandError(-109, "Missing parameter: program image block")
        if self.status in ("RUNNING", "WAITING"):
            raise CommandError(-221, "Settings conflict: STOP before loading a program")
        try:
            self.program = decode(block)
            self._simple_bodies = {}
            self._attempt_loops = {}
        except ProgramError as e:
            self.program = []
            raise CommandError(PROGRAM_ERROR_CODE, str(e)) from None

    def _start(self) -> None:
        if not self.program:
            raise CommandError(-221, "Settings conflict: no program loaded")
        if self.status in ("RUNNING", "WAITING"):
            raise CommandError(-221, "Settings conflict: already running")
        self.events = []
        self._second_round = None
        self.pending = defaultdict(list)
        self.t0_ns = self.node.now_ns
        self.status = "RUNNING"
        self.halt_reason = ""
        self.last_pet = time.monotonic()  # RUN is the first heartbeat
        self.wakeup = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._execute(list(self.program)))
        self._ensure_watch()

    def _still_current(self) -> None:
        """A program that STOP/SAFE/reset ended must not run on: asyncio.wait_for (3.11) can
        swallow a cancellation that arrives as its wait completes, and the stopped program
        would then set RUNNING/WAITING again under the next one's feet."""
        if asyncio.current_task() is not self._task:
            raise asyncio.CancelledError

    def _stop(self, status: str) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        self.status = status

    def _safe(self) -> None:
        self._stop("IDLE")
        self.node.set_ttl(SAFE_TTL)

    # the host watchdog ----------------------------------------------------------------------
    def _set_watchdog(self, args: str) -> None:
        seconds = number(args)
        if seconds != 0 and not WATCHDOG_MIN_S <= seconds <= WATCHDOG_MAX_S:
            raise CommandError(
                -222,
                f"Data out of range: watchdog {seconds:g} s "
                f"(0: off, or {WATCHDOG_MIN_S:g}..{WATCHDOG_MAX_S:g} s)",
            )
        self.watchdog_s = seconds
        self.last_pet = time.monotonic()
        self._ensure_watch()

    def _ensure_watch(self) -> None:
        """A watch task while a program runs under a watchdog (one at a time)."""
        running = self.status in ("RUNNING", "WAITING")
        if running and self.watchdog_s > 0 and (self._watch is None or self._watch.done()):
            self._watch = asyncio.get_running_loop().create_task(self._watchdog())

    def _pet(self) -> None:
        self.last_pet = time.monotonic()

    async def _watchdog(self) -> None:
        """While a program runs: halt it safe when the host's heartbeat lapses."""
        while self.status in ("RUNNING", "WAITING") and self.watchdog_s > 0:
            silent = time.monotonic() - self.last_pet
            if silent > self.watchdog_s:
                self._stop("HALTED")
                self.node.set_ttl(SAFE_TTL)
                self.halt_reason = f"watchdog: no host heartbeat for {silent:.2f} s"
                self.watchdog_trips += 1
                return
            await asyncio.sleep(min(WATCHDOG_CHECK_S, self.watchdog_s - silent + 0.001))

    @property
    def sync_source(self):
        """The midpoint on port 0 (the only one of a node with one link)."""
        return self.sync_sources.get(0)

    def _port(self, text: str) -> int:
        return int(number(text, 0, N_LINK_PORTS - 1)) if text.strip() else 0

    def _herald(self, args: str) -> None:
        """`HERALD <outcome>[,<port>]`: the herald input of a port fires (software heralding:
        the host forwards the midpoint's verdict)."""
        outcome, _, port = args.partition(",")
        self._wake("herald", int(number(outcome, 0, 2)), self._port(port))

    def _wake(self, kind: str, value: int, port: int = 0) -> None:
        self.pending[(kind, port)].append(value)
        self.wakeup.set()

    def _drain_events(self, args: str) -> bytes:
        """Up to `args` events (default and most: the FIFO read size), oldest first."""
        limit = int(number(args, 1, FIFO_READ_MAX)) if args.strip() else FIFO_READ_MAX
        events, self.events = self.events[:limit], self.events[limit:]
        return encode_events(events)

    def _received(self, kind: str, port: int) -> int:
        value = self.pending[(kind, port)].pop(0)
        if kind == "sync":
            self.node.sync_epoch = self.node.now_ns  # the shared time reference of this sync
            self.node.sync_generation = value
            self.node.sync_port = port
            self.node.attempt_index = 0
            self.node.begin_record()  # the first attempt's operations: what a drawn one repeats
        return value

    # execution ------------------------------------------------------------------------------
    async def _wait_for(self, kind: str, timeout_ns: int, port: int = 0) -> int | None:
        """Block until a sync/herald arrives on this port or the timeout passes.

        A sync from a midpoint advances the clock by the partners' virtual lateness (the
        midpoint's sync_wait_ns: the lab armed its sequencers together), whatever wall time
        the simulator took to get them there. Otherwise (a herald, a sync with no midpoint
        on the port), while blocked virtual time runs at wall speed."""
        if self.pending[(kind, port)]:
            return self._received(kind, port)
        self.status = "WAITING"
        source = self.sync_sources.get(port)
        if kind == "sync" and source is not None:
            source.arrived(self)
        started = time.monotonic()
        deadline = started + timeout_ns * 1e-9
        try:
            while not self.pending[(kind, port)]:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.node.advance(timeout_ns)
                    return None
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=left)
                except TimeoutError:
                    pass
                self._still_current()
            if kind == "sync" and source is not None:
                waited = source.sync_wait_ns(self)
            else:
                waited = int((time.monotonic() - started) * 1e9)
            self.node.advance(min(waited - waited % 4, timeout_ns))
            return self._received(kind, port)
        finally:
            if kind == "sync" and source is not None:
                source.left(self)  # its ready line drops: no sync on its behalf
            if self.status == "WAITING":  # not if STOP/SAFE/reset cancelled the wait
                self.status = "RUNNING"

    async def _execute(self, program: list[Instruction]) -> None:
        node = self.node
        regs = [0] * N_REGISTERS
        loops: dict[int, int] = {}
        marks: dict[int, int] = {}  # LOOP index -> clock when its body last began
        node.excitations = []
        pc, steps = 0, 0
        slice_end = time.perf_counter() + YIELD_EVERY_S
        try:
            while True:
                ins = program[pc]
                op = ins.op
                pc_next = pc + 1
                if op is Op.TTL_SET:
                    node.set_ttl(node.ttl | ins.c)
                elif op is Op.TTL_CLR:
                    node.set_ttl(node.ttl & ~ins.c)
                elif op is Op.AWG_TRIG:
                    node.play_segment(ins.c)
                elif op is Op.WAIT:
                    node.advance(ins.d)
                elif op is Op.COUNT:
                    regs[ins.b] = node.count(ins.a, ins.d)
                elif op is Op.BRANCH_LT:
                    if regs[ins.a] < ins.d:
                        pc_next = ins.c
                elif op is Op.BRANCH_GE:
                    if regs[ins.a] >= ins.d:
                        pc_next = ins.c
                elif op is Op.LOOP:
                    left = loops.get(pc, ins.d) - 1
                    if left > 0 and self._fast_forward(program, pc, ins, left, marks):
                        left = 0
                    if left > 0:
                        loops[pc] = left
                        pc_next = ins.c
                    else:
                        loops.pop(pc, None)
                        marks.pop(pc, None)
                elif op is Op.WAIT_SYNC:
                    await self._wait_for("sync", ins.d, ins.b)
                elif op is Op.WAIT_HERALD:
                    shortcut = await self._attempts_at_once(program, pc, ins, loops, regs)
                    self._still_current()
                    if shortcut is not None:
                        outcome = shortcut or None
                    else:
                        source = self.sync_sources.get(ins.b)
                        if source is not None and source.software and node.physics is not None:
                            await source.software_attempt(self)
                        outcome = await self._wait_for("herald", ins.d, ins.b)
                    regs[ins.a] = HERALD_TIMEOUT if outcome is None else outcome
                elif op is Op.EVENT:
                    value = regs[ins.a] if ins.a != NO_REGISTER else 0
                    self.events.append(Event(node.now_ns - self.t0_ns, ins.b, value))
                elif op is Op.SET:
                    regs[ins.a] = ins.d
                elif op is Op.ADD:
                    regs[ins.a] += ins.d
                elif op is Op.JUMP:
                    pc_next = ins.c
                elif op is Op.ALIGN:  # the node's virtual clock runs on through every RUN
                    node.advance(align_wait_ns(node.now_ns, ins.d, align_offset_ps(ins, regs)))
                elif op is Op.HALT:
                    self.status = "HALTED"
                    return
                if pc_next > pc + 1 and loops:
                    # a forward jump over a LOOP leaves that loop: its count starts afresh
                    for index in [k for k in loops if pc < k < pc_next]:
                        del loops[index]
                pc = pc_next
                steps += 1
                # the clock read every 8 steps: on a memory node under load one step (a pulse
                # on the electron and its 13C) can take a millisecond, and 256 of them kept
                # the event loop, and every reply, waiting longer than a driver's timeout
                if steps & 0x7 == 0 and time.perf_counter() > slice_end:
                    await asyncio.sleep(0)
                    slice_end = time.perf_counter() + YIELD_EVERY_S
        except asyncio.CancelledError:
            raise
        except Exception as e:  # firmware fault: report, never hang the lab
            self.queue_error(-300, f"Device-specific error: {type(e).__name__} at instruction {pc}")
            self.status = "IDLE"

    def _attempt_loop(self, program, pc: int):
        """(LOOP index, attempt duration ns, register increments, herald waits) if the
        WAIT_HERALD at pc is the first herald wait of a plain attempt loop (one wait:
        single-click; two: Barrett-Kok's rounds), else None."""
        cached = self._attempt_loops.get(pc)
        if cached is not None or pc in self._attempt_loops:
            return cached
        found = None
        for end in range(pc + 1, len(program)):
            if program[end].op is Op.LOOP:
                if program[end].c <= pc:
                    body = program[program[end].c : end]
                    waits = [k for k, i in enumerate(body) if i.op is Op.WAIT_HERALD]
                    ok = (
                        all(i.op in ATTEMPT_OPS for i in body)
                        and len(waits) in (1, 2)
                        and program[end].c + waits[0] == pc
                        and all(i.c >= end for i in body if i.op in (Op.BRANCH_GE, Op.BRANCH_LT))
                    )
                    if ok:
                        duration = sum(i.d for i in body if i.op in (Op.WAIT, Op.WAIT_HERALD))
                        adds: dict[int, int] = {}
                        for i in body:
                            if i.op is Op.ADD:
                                adds[i.a] = adds.get(i.a, 0) + i.d
                        found = (end, duration, adds, len(waits))
                break
        self._attempt_loops[pc] = found
        return found

    async def _attempts_at_once(self, program, pc: int, ins, loops, regs) -> int | None:
        """The attempt loops of both nodes, released by the same shared sync, are not stepped:
        the midpoint draws at which attempt the herald comes (geometric) and its outcome, and
        both sequencers jump there. Returns the herald (1, 2), 0 if none came within the
        loop's attempts, or None to step normally."""
        midpoint, node = self.sync_sources.get(ins.b), self.node
        if midpoint is None or node.sync_generation == 0 or node.physics is None:
            return None
        if midpoint.software:  # software heralding: every attempt is stepped
            return None
        if node.sync_generation != midpoint.generation or not node.excitations:
            return None
        if node.sync_port != ins.b:  # the last sync came from another link's midpoint
            return None
        round_trip = quantise_up(midpoint.round_trip_ns(node.name))
        if round_trip > ins.d:  # every herald comes after the wait gave up: stepped, none seen
            return None
        if self._second_round is not None:  # Barrett-Kok's second herald wait of a drawn attempt
            outcome, self._second_round = self._second_round, None
            node.advance(round_trip)
            return outcome
        loop = self._attempt_loop(program, pc)
        if loop is None:
            return None
        end, duration, adds, rounds = loop
        available = loops.get(end, program[end].d)
        protocol = "barrett_kok" if rounds == 2 else "single_click"
        state = node.state_seen_by(midpoint)
        result = await midpoint.attempts(self, state, available, ins.d, protocol)
        if result is None:
            return None
        attempts, outcome = result
        if protocol == "barrett_kok" and outcome:
            self._second_round = outcome  # the second wait gives the outcome
            outcome = 1  # the first round clicked
        skipped = min(attempts, available) - 1
        if node.physics.memories and node.sync_epoch is not None:
            # the skipped attempts dephase a memory as the ones stepped since the sync did
            done = program[end].d - available + 1
            node.advance(0)  # the physics up to the herald wait: the recorded body ends here
            body = node.physics.finish_record()  # the attempt so far, from the sync or LOOP
            top = program[end].c
            before_wait = sum(i.d for i in program[top:pc] if i.op is Op.WAIT)
            if body is not None and body[1] != before_wait:
                body = None  # more than this attempt was recorded: the older approximation
            node.physics.repeat_memory_channels(
                node.sync_epoch, skipped, runs_seen=done, period_ns=duration, body=body
            )
        node.advance(skipped * duration)
        for register, step in adds.items():
            regs[register] += skipped * step
        loops[end] = available - skipped
        if outcome:
            # the pair exists from the heralding attempt on and ages while the herald's news
            # travels back through the fibre
            await midpoint.settle(node.sync_generation, node.name)
            node.advance(round_trip)
        return outcome

    def _fast_forward(self, program, pc: int, ins, left: int, marks: dict[int, int]) -> bool:
        """The attempt-loop shortcut: a body that only switches lines, triggers the AWG and
        waits, and re-initialises the memory each time, runs the same way every time, so the
        rest of its runs are drawn at once (photons included) rather than stepped."""
        now = self.node.now_ns
        since, marks[pc] = marks.get(pc), now
        self.node.mark(now)
        if since is None or now <= since:
            return False
        simple = self._simple_bodies.get(pc)
        if simple is None:
            simple = all(i.op in SIMPLE_OPS for i in program[ins.c : pc])
            self._simple_bodies[pc] = simple
        return simple and self.node.fast_forward(left, now - since, since)

    def state(self) -> dict:
        return {
            "status": self.status,
            "halt_reason": self.halt_reason,
            "ttl": self.node.ttl,
            "safe_ttl": SAFE_TTL,
            "watchdog_s": self.watchdog_s,
            "watchdog_trips": self.watchdog_trips,
            "program_size": len(self.program),
            "events_pending": len(self.events),
            "clock_ns": self.node.now_ns - self.t0_ns,
        }
