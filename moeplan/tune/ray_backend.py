"""The Ray backend: a table's configs measured on every GPU of a Ray cluster.

One actor per GPU (`num_gpus=1`) holds a measuring bench built from the job payload, sent
by value once per table (`ray.put`). The driver hands each idle actor one config (all its
batch sizes) at a time, two deep so an actor never waits on the driver, and records every
point as it comes back; only the driver writes the checkpoint, the CSV and the table.

Failures:
- an actor that dies (its node was lost, or the process crashed) costs only its calls in
  flight: they go back to the queue and run on another actor. A config whose actor dies a
  second time is recorded as `crash` (it is the config, not the node), as the local pool does;
- a call that overruns its points' deadline gets its actor killed and the config recorded
  as `timeout`;
- new GPUs joining the cluster get actors between rounds; lost ones are not waited for.

Ray is imported only here, and this module only when `--ray` is asked for.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import ray

from moeplan.base.errors import TuneError

DEPTH = 2  # calls queued per actor


@ray.remote
class Measurer:
    """One GPU's bench (or one interpreter bench in tests)."""

    def __init__(self, job: dict, measure_ceilings: bool):
        if job.get("interpret"):  # decided by the payload, before the kernels are imported
            os.environ["TRITON_INTERPRET"] = "1"
        from moeplan.tune.measure import Bench
        from moeplan.tune.worker import bench_job

        self.bench = Bench(bench_job(job), None if job.get("interpret") else 0)  # Ray exposes one GPU: index 0
        self.facts = self.bench.device_facts()
        if measure_ceilings:
            self.facts["ceilings"] = self.bench.roofline_ceilings()
        gpus = ray.get_gpu_ids()
        self.label = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:6]}" + (
            f"/gpu{gpus[0]}" if gpus else "")

    def where(self) -> tuple[str, dict]:
        return self.label, self.facts

    def measure(self, cfg: dict, points: list) -> dict:
        from moeplan.engines.knobs import KernelConfig

        config = KernelConfig.from_dict(cfg)
        out, fatal = [], False
        for M, phase in points:
            res = self.bench.measure(config, int(M), phase)
            out.append((int(M), phase, res.to_dict()))
            if res.fatal:  # the CUDA context is broken: the driver retires this actor
                fatal = True
                break
        self.bench.forget(config)
        return {"points": out, "fatal": fatal}


def _reachable(address: str) -> Optional[str]:
    """Why `address` (host:port, ray://host:port) cannot be reached, or None."""
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return "expected host:port (e.g. 10.0.0.1:6379), ray://host:port or 'local'"
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        return f"nothing answers there ({e.strerror or e})"
    return None


class RayBackend:
    name = "ray"

    def __init__(self, address: str):
        self.address = address
        self.owned = False
        if not ray.is_initialized():  # else a caller (or a test) already connected this process
            self._connect(address)
        if int(ray.cluster_resources().get("GPU", 0)) < 1:  # before anything is printed or created
            self.close()
            raise TuneError(f"--ray {address!r}: the Ray cluster has no GPU resources; run on a machine with GPUs "
                            "or start the cluster's nodes with them (ray start --num-gpus N)")

    def _connect(self, address: str) -> None:
        if address != "local":
            why = _reachable(address)
            if why:
                raise TuneError(f"--ray {address!r}: cannot reach a Ray cluster: {why}; pass the head's address "
                                "or 'local'")
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     logging_level="ERROR", log_to_driver=False)
        except Exception as e:  # noqa: BLE001 - any connection failure is one line
            raise TuneError(f"--ray {address!r}: cannot connect to a Ray cluster ({' '.join(str(e).split())[:200]})")
        self.owned = True

    def pool(self, gpus: list, job: dict, **kw) -> "RayPool":
        return RayPool(job, **kw)

    def close(self) -> None:
        if self.owned:
            ray.shutdown()
            self.owned = False


@dataclass
class _Actor:
    handle: object
    ready_ref: object
    ready: bool = False
    label: str = "?"
    inflight: deque = field(default_factory=deque)  # (ref, task), in the order the actor runs them
    head_since: float = 0.0  # when the first call in flight became the one running
    created: float = field(default_factory=time.monotonic)


class RayPool:
    """A table's pool on a Ray cluster (the interface of WorkerPool)."""

    def __init__(self, job: dict, *, restart_every: int = 0, point_timeout_s: float = 120.0,
                 setup_timeout_s: float = 600.0, prefetch: int = DEPTH,
                 on_status: Optional[Callable[[int, str], None]] = None, log: Optional[Callable[[str], None]] = None):
        self.job = job
        self.point_timeout_s, self.setup_timeout_s = point_timeout_s, setup_timeout_s
        self.on_status = on_status or (lambda i, s: None)
        self.log = log or (lambda s: None)
        self.facts: dict = {}
        self.restarts = 0
        self.actors: list[_Actor] = []
        self.done_by: dict[str, int] = {}
        self.setup_failures = 0
        self.job_ref = None

    def start(self) -> None:
        self.job_ref = ray.put(self.job)
        self._top_up()

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a.handle)
        self.actors = []

    def _top_up(self) -> None:
        """One actor per GPU the cluster has now."""
        gpus = int(ray.cluster_resources().get("GPU", 0))
        while len(self.actors) < gpus:
            ceilings = bool(self.job.get("measure_ceilings")) and "ceilings" not in self.facts and not self.actors
            h = Measurer.options(num_gpus=1, num_cpus=0, max_restarts=0).remote(self.job_ref, ceilings)
            self.actors.append(_Actor(h, h.where.remote()))
        if not self.actors:
            raise TuneError("the Ray cluster has no GPU resources; start its nodes with GPUs (ray start --num-gpus N)")

    def _drop(self, a: _Actor, why: str) -> None:
        self.actors.remove(a)
        self.restarts += 1
        try:
            ray.kill(a.handle)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.log(f"ray: lost worker {a.label} ({why}); its configs in flight run elsewhere")

    def run(self, tasks: list, on_point: Callable) -> None:
        queue: deque = deque(tasks)
        losses: dict[int, int] = {}
        last_top_up = time.monotonic()

        def fail(task, status: str, why: str, where: str):
            for M, phase in task.points:
                on_point(task, M, phase, {"status": status, "error": why}, where)

        while queue or any(a.inflight for a in self.actors):
            now = time.monotonic()
            if now - last_top_up > 5:
                self._top_up()
                last_top_up = now
            for a in list(self.actors):  # actors that finished setting up
                if not a.ready and now - a.created > self.setup_timeout_s:  # never placed (its GPU went away)
                    self._drop(a, f"not started within {self.setup_timeout_s:g} s")
                    continue
                if a.ready or not ray.wait([a.ready_ref], timeout=0)[0]:
                    continue
                try:
                    a.label, facts = ray.get(a.ready_ref)
                except ray.exceptions.RayError as e:
                    self.setup_failures += 1
                    self._drop(a, "set-up failed")
                    if self.setup_failures > 2 * max(1, len(self.actors)) + 2:
                        raise TuneError(f"Ray workers keep failing to set up: {' '.join(str(e).split())[:300]}")
                    continue
                a.ready = True
                self.facts = {**facts, **self.facts} if self.facts else dict(facts)
            for a in self.actors:  # keep every ready actor DEPTH calls deep
                while a.ready and queue and len(a.inflight) < DEPTH:
                    t = queue.popleft()
                    if not a.inflight:
                        a.head_since = time.monotonic()
                    a.inflight.append((a.handle.measure.remote(t.config.to_dict(), [list(p) for p in t.points]), t))
            refs = {ref: a for a in self.actors for ref, _ in a.inflight}
            if not refs:
                if not any(not a.ready for a in self.actors):
                    self._top_up()
                time.sleep(0.2)
                continue
            done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in done:
                a = refs[ref]
                if a not in self.actors:
                    continue
                task = next(t for r, t in a.inflight if r is ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as e:
                    for _, t in a.inflight:  # lost with the actor: run again elsewhere, once
                        losses[t.task_id] = losses.get(t.task_id, 0) + 1
                        if t is task and losses[t.task_id] > 1:
                            fail(t, "crash", f"its Ray worker died twice ({type(e).__name__})", a.label)
                        else:
                            queue.appendleft(t)
                    self._drop(a, type(e).__name__)
                    continue
                a.inflight = deque((r, t) for r, t in a.inflight if r is not ref)
                a.head_since = time.monotonic()
                for M, phase, res in out["points"]:
                    on_point(task, M, phase, res, a.label)
                measured = {(M, ph) for M, ph, _ in out["points"]}
                rest = [(M, ph) for M, ph in task.points if (M, ph) not in measured]
                if rest:  # the worker stopped early (fatal CUDA error)
                    fail(type(task)(task.task_id, task.config, rest), "crash", "the worker's CUDA context broke",
                         a.label)
                self.done_by[a.label] = self.done_by.get(a.label, 0) + 1
                self.on_status(0, "ray: " + ", ".join(f"{k} {v}" for k, v in sorted(self.done_by.items())))
                if out.get("fatal"):
                    for _, t in a.inflight:
                        queue.appendleft(t)
                    self._drop(a, "its CUDA context broke")
            now = time.monotonic()
            for a in list(self.actors):  # a running call past its deadline: the config is recorded as timed out
                if a.inflight:
                    _, t = a.inflight[0]
                    if now - a.head_since > self.point_timeout_s * len(t.points) + (0 if a.ready else self.setup_timeout_s):
                        fail(t, "timeout", f"no result within {self.point_timeout_s:g} s per point", a.label)
                        for _, other in list(a.inflight)[1:]:
                            queue.appendleft(other)
                        a.inflight.clear()
                        self._drop(a, "timed out")
