"""Measurement worker processes (one per GPU, spawn context) and the pool that drives them.

Protocol over one duplex pipe per worker (parent -> worker):
  ("task", task_id, config_dict, [[M, phase], ...])   queued; the worker compiles queued
                                                      tasks ahead on its CPU threads and
                                                      measures whichever is compiled first
  ("stop",)
(worker -> parent):
  ("ready", facts)            after set-up (weights, inputs, routing pools)
  ("begin", task_id)          it starts measuring this task's config
  ("point", task_id, M, phase, result_dict)
  ("end", task_id)
  ("retire",)                 it measured `restart_every` configs and exits to free memory
  ("fatal", message)          set-up failed

A worker that dies (segfault, illegal address, os._exit) or overruns a point's deadline
loses only the config in flight: its unmeasured points are recorded as `crash` /
`timeout`, queued tasks go back to the queue, and a fresh worker is started.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Callable, Optional

from moeplan.base.errors import TuneError
from moeplan.engines.knobs import KernelConfig


@dataclass
class Task:
    task_id: int
    config: KernelConfig
    points: list[tuple[int, str]]  # (M, phase)


# ---- the worker process ------------------------------------------------------------------

def bench_job(job: dict) -> dict:
    """The payload as Bench reads it: the routing pools arrive as bytes (so that a worker on
    another machine needs no file of the driver's) and are loaded from memory."""
    if "routing_bytes" not in job:
        return job
    import io
    return {**job, "routing_path": io.BytesIO(job["routing_bytes"])}


# A queued config whose compile-ahead pass has run this long is begun even while it is still
# compiling, so that the parent's per-point deadline covers a compile that never ends.
STALLED_COMPILE_S = 60.0


def _next_task(queue: deque, bench) -> Optional[int]:
    """Index of the queued task to measure next: the first (oldest) whose compile is done.

    Measuring in arrival order would make the GPU wait for every slow compile at the head of
    the queue (the largest tiles take tens of seconds) while later configs sit compiled; the
    records do not depend on the order, so the GPU takes whatever is ready. None: nothing is
    ready yet (the caller waits briefly and asks again)."""
    for i, (_, cfg, _) in enumerate(queue):
        if bench.compiled(cfg):
            return i
    if queue and bench.compiling_for(queue[0][1]) > STALLED_COMPILE_S:
        return 0
    return None


def worker_main(conn, gpu: Optional[int], job: dict, restart_every: int) -> None:  # pragma: no cover - subprocess
    if job.get("interpret"):
        os.environ["TRITON_INTERPRET"] = "1"
    elif gpu is not None:
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    try:
        from moeplan.tune.measure import Bench, rss_mb
        bench = Bench(bench_job(job), gpu)
        facts = bench.device_facts()
        if job.get("measure_ceilings"):
            facts["ceilings"] = bench.roofline_ceilings()
        conn.send(("ready", facts))
    except BaseException as e:  # noqa: BLE001
        try:
            conn.send(("fatal", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
        finally:
            os._exit(3)
    queue: deque = deque()
    measured = 0
    try:
        while True:
            # take every waiting message; block only when there is nothing to do
            while queue == deque() or conn.poll():
                msg = conn.recv()
                if msg[0] == "stop":
                    bench.close()
                    os._exit(0)
                if msg[0] == "task":
                    _, tid, cfgd, pts = msg
                    cfg = KernelConfig.from_dict(cfgd)
                    queue.append((tid, cfg, pts))
                    bench.precompile(cfg, [m for m, ph in pts if not ph.endswith("check")])
            i = _next_task(queue, bench)
            if i is None:
                bench.wait_compiled([c for _, c, _ in queue], timeout=0.05)
                continue  # a compile finished, a message may have come, or the wait timed out
            tid, cfg, pts = queue[i]
            del queue[i]
            conn.send(("begin", tid))
            for M, phase in pts:
                res = bench.measure(cfg, int(M), phase)
                conn.send(("point", tid, int(M), phase, res.to_dict() | {"rss_mb": rss_mb()}))
                if res.fatal:
                    os._exit(5)  # CUDA context broken: the parent restarts us
            conn.send(("end", tid))
            bench.forget(cfg)
            measured += 1
            if restart_every and measured >= restart_every and not queue and not conn.poll():
                conn.send(("retire",))
                bench.close()
                os._exit(0)
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        os._exit(0)  # the parent is gone


# ---- the pool (parent side) -----------------------------------------------------------------

def _where(gpu: Optional[int]) -> str:
    """How a log line names a worker: `GPU 3`, or `the interpreter` (--interpret has no GPU)."""
    return "the interpreter" if gpu is None else f"GPU {gpu}"


@dataclass
class _Slot:
    gpu: Optional[int]
    index: int
    proc: Optional[mp.Process] = None
    conn: object = None
    ready: bool = False
    facts: dict = field(default_factory=dict)
    sent: deque = field(default_factory=deque)  # tasks sent, not ended (first = in flight once begun)
    current: Optional[int] = None  # task id in flight
    done_points: set = field(default_factory=set)  # (M, phase) of the in-flight task already reported
    deadline: float = 0.0
    started_at: float = 0.0
    configs_done: int = 0
    status: str = "starting"


class WorkerPool:
    """One worker per GPU (or one interpreter worker), restarted when it dies or retires."""

    def __init__(self, gpus: list[Optional[int]], job: dict, *, restart_every: int = 150,
                 point_timeout_s: float = 120.0, setup_timeout_s: float = 600.0, prefetch: int = 4,
                 on_status: Optional[Callable[[int, str], None]] = None, log: Optional[Callable[[str], None]] = None):
        self.ctx = mp.get_context("spawn")
        self.job = job
        self.restart_every = restart_every
        self.point_timeout_s = point_timeout_s
        self.setup_timeout_s = setup_timeout_s
        self.prefetch = max(1, prefetch)
        self.on_status = on_status or (lambda i, s: None)
        self.log = log or (lambda s: None)
        self.slots = [_Slot(g, i) for i, g in enumerate(gpus)]
        self.facts: dict = {}
        self.restarts = 0
        self.setup_failures = 0
        self._measure_ceilings = bool(job.get("measure_ceilings"))

    # -- lifecycle ------------------------------------------------------------------------
    def _spawn(self, slot: _Slot) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        job = dict(self.job)
        job["measure_ceilings"] = self._measure_ceilings and slot.index == 0 and "ceilings" not in self.facts
        p = self.ctx.Process(target=worker_main, args=(child, slot.gpu, job, self.restart_every), daemon=True)
        p.start()
        child.close()
        slot.proc, slot.conn, slot.ready = p, parent, False
        slot.sent.clear()
        slot.current = None
        slot.done_points = set()
        slot.configs_done = 0
        slot.started_at = time.monotonic()
        slot.deadline = slot.started_at + self.setup_timeout_s
        slot.status = "starting"
        self.on_status(slot.index, "starting worker")

    def start(self) -> None:
        for s in self.slots:
            self._spawn(s)

    def close(self) -> None:
        for s in self.slots:
            self._kill(s, graceful=True)

    def _kill(self, slot: _Slot, graceful: bool = False) -> None:
        p = slot.proc
        if p is None:
            return
        if graceful and p.is_alive():
            try:
                slot.conn.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
            p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=10)
        try:
            slot.conn.close()
        except OSError:
            pass
        slot.proc = None
        slot.conn = None
        slot.ready = False

    # -- running tasks ----------------------------------------------------------------------
    def run(self, tasks: list[Task], on_point: Callable[[Task, int, str, dict, Optional[int]], None]) -> None:
        """Measure every task; `on_point(task, M, phase, result, gpu)` for each point (failures too)."""
        pending: deque = deque(tasks)
        by_id = {t.task_id: t for t in tasks}
        remaining = {t.task_id: len(t.points) for t in tasks}
        for s in self.slots:
            if s.proc is None:
                self._spawn(s)

        def finish_point(task: Task, M: int, phase: str, res: dict, gpu):
            on_point(task, M, phase, res, gpu)
            remaining[task.task_id] -= 1

        def lose_slot(slot: _Slot, status: str, why: str):
            """The worker died or hung: fail the in-flight config, requeue the rest, restart."""
            if slot.current is not None:
                task = by_id[slot.current]
                for M, phase in task.points:
                    if (M, phase) not in slot.done_points:
                        finish_point(task, M, phase, {"status": status, "error": why}, slot.gpu)
                self.log(f"{_where(slot.gpu)}: {task.config.short()} {status}: {why}")
            for tid in reversed([t for t in slot.sent if t != slot.current]):
                pending.appendleft(by_id[tid])
            self._kill(slot)
            self.restarts += 1
            self._spawn(slot)

        while any(v > 0 for v in remaining.values()):
            # hand out work
            for s in self.slots:
                while s.ready and pending and len(s.sent) < self.prefetch:
                    t = pending.popleft()
                    try:
                        s.conn.send(("task", t.task_id, t.config.to_dict(), [[m, ph] for m, ph in t.points]))
                    except (OSError, BrokenPipeError):
                        pending.appendleft(t)
                        break
                    s.sent.append(t.task_id)
            conns = {s.conn: s for s in self.slots if s.conn is not None}
            sentinels = {s.proc.sentinel: s for s in self.slots if s.proc is not None}
            now = time.monotonic()
            timeout = max(0.05, min(s.deadline for s in self.slots) - now) if self.slots else 1.0
            ready = wait(list(conns) + list(sentinels), timeout=min(timeout, 1.0))
            for obj in ready:
                if obj in conns:
                    s = conns[obj]
                    try:
                        while s.conn is not None and s.conn.poll():
                            self._handle(s, s.conn.recv(), by_id, finish_point)
                    except (EOFError, OSError):
                        pass  # the sentinel reports the death
            now = time.monotonic()
            for s in self.slots:
                if s.proc is None:
                    continue
                if not s.proc.is_alive():
                    # drain what it sent before dying
                    try:
                        while s.conn.poll():
                            self._handle(s, s.conn.recv(), by_id, finish_point)
                    except (EOFError, OSError):
                        pass
                    code = s.proc.exitcode
                    if s.status == "retired":
                        for tid in reversed(list(s.sent)):
                            pending.appendleft(by_id[tid])
                        self._kill(s)
                        self._spawn(s)
                    elif not s.ready and s.current is None and not s.sent:
                        self.setup_failures += 1
                        if self.setup_failures > 3 * len(self.slots):
                            raise TuneError(f"the measuring worker on {_where(s.gpu)} failed to start "
                                            f"(exit code {code}): {s.status}")
                        self._kill(s)
                        self._spawn(s)
                    else:
                        lose_slot(s, "crash", f"worker process died (exit code {code})")
                elif now > s.deadline:
                    if s.current is not None:
                        lose_slot(s, "timeout", f"no result within {self.point_timeout_s:.0f} s")
                    elif not s.ready:
                        raise TuneError(f"the measuring worker on {_where(s.gpu)} did not start within "
                                        f"{self.setup_timeout_s:.0f} s")
                    else:
                        s.deadline = now + self.point_timeout_s

    def _handle(self, s: _Slot, msg, by_id, finish_point) -> None:
        kind = msg[0]
        now = time.monotonic()
        if kind == "ready":
            s.ready = True
            s.facts = msg[1]
            if "ceilings" in msg[1]:
                self.facts["ceilings"] = msg[1]["ceilings"]
            self.facts.update({k: v for k, v in msg[1].items() if k != "ceilings"})
            s.deadline = now + 3600 * 24
            s.status = "ready"
            self.on_status(s.index, "ready")
        elif kind == "fatal":
            s.status = msg[1].splitlines()[0] if msg[1] else "set-up failed"
            raise TuneError(f"the measuring worker on {_where(s.gpu)} could not set up the job: {s.status}")
        elif kind == "begin":
            s.current = msg[1]
            s.done_points = set()
            s.deadline = now + self.point_timeout_s
            t = by_id[msg[1]]
            self.on_status(s.index, f"{t.config.short()} ({len(t.points)} points)")
        elif kind == "point":
            _, tid, M, phase, res = msg
            s.done_points.add((M, phase))
            s.deadline = now + self.point_timeout_s
            finish_point(by_id[tid], M, phase, res, s.gpu)
        elif kind == "end":
            tid = msg[1]
            if s.sent and s.sent[0] == tid:
                s.sent.popleft()
            elif tid in s.sent:
                s.sent.remove(tid)
            s.current = None
            s.done_points = set()
            s.configs_done += 1
            s.deadline = now + 3600 * 24
        elif kind == "retire":
            s.status = "retired"
            s.ready = False
            self.on_status(s.index, "restarting (memory)")
