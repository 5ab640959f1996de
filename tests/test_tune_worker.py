"""The measuring worker's scheduling: which queued config the GPU takes next.

On a GPU the worker compiles queued configs ahead on CPU threads; the GPU measures the
oldest config whose compile is done, so one slow compile (the largest tiles take tens of
seconds) does not idle it. These tests drive the choice with controlled futures.
"""

import threading
import time
from collections import deque
from concurrent.futures import Future

from moeplan.engines.knobs import KernelConfig
from moeplan.tune import worker
from moeplan.tune.job import compile_weight
from moeplan.tune.measure import Bench


def _cfg(bm: int, bn: int = 64, bk: int = 64, w: int = 4, s: int = 3) -> KernelConfig:
    return KernelConfig(bm, bn, bk, 1, w, s)


def _bench_with(futures: dict) -> Bench:
    """A Bench holding only its compile-ahead bookkeeping (no GPU, no job)."""
    b = Bench.__new__(Bench)
    b._precompiled = dict(futures)
    b._submitted = {c: 0.0 for c in futures}
    return b


def _done() -> Future:
    f = Future()
    f.set_result(None)
    return f


def test_takes_the_oldest_compiled_config_not_the_queue_head():
    slow, fast1, fast2 = _cfg(256), _cfg(16), _cfg(32)
    bench = _bench_with({slow: Future(), fast1: _done(), fast2: _done()})
    bench._submitted = {c: float("inf") for c in (slow, fast1, fast2)}  # just queued: not stalled
    q = deque([(0, slow, []), (1, fast1, []), (2, fast2, [])])
    assert worker._next_task(q, bench) == 1


def test_a_failed_compile_counts_as_ready():
    # the error is recorded as the config's result when it is measured; it must not wait
    bad = Future()
    bad.set_exception(RuntimeError("compile error"))
    pending = Future()
    bench = _bench_with({_cfg(128): pending, _cfg(16): bad})
    bench._submitted = {c: float("inf") for c in bench._precompiled}
    q = deque([(0, _cfg(128), []), (1, _cfg(16), [])])
    assert worker._next_task(q, bench) == 1


def test_configs_without_a_compile_pass_are_ready():
    # check-phase tasks and the interpreter have no compile-ahead pass
    bench = _bench_with({})
    q = deque([(0, _cfg(64), []), (1, _cfg(16), [])])
    assert worker._next_task(q, bench) == 0


def test_nothing_ready_waits_then_a_stalled_head_is_begun():
    a, b = _cfg(256), _cfg(128)
    bench = _bench_with({a: Future(), b: Future()})
    now = time.monotonic()
    bench._submitted = {a: now, b: now}
    q = deque([(0, a, []), (1, b, [])])
    assert worker._next_task(q, bench) is None  # both compiling, neither stalled: wait
    # a compile running past the stall limit is begun anyway, so the parent's deadline covers it
    bench._submitted[a] = now - worker.STALLED_COMPILE_S - 1
    assert worker._next_task(q, bench) == 0


def test_wait_compiled_returns_when_one_finishes():
    slow, fast = Future(), Future()
    bench = _bench_with({_cfg(256): slow, _cfg(16): fast})
    threading.Timer(0.05, fast.set_result, args=(None,)).start()
    bench.wait_compiled([_cfg(256), _cfg(16)], timeout=5.0)
    assert fast.done() and not slow.done()
    assert bench.compiled(_cfg(16)) and not bench.compiled(_cfg(256))


def test_compile_weight_orders_large_tiles_first():
    small, wide, staged, warped = _cfg(16), _cfg(256, 256, 128), _cfg(16, s=5), _cfg(256, 256, 128, w=8)
    order = sorted([small, warped, staged, wide], key=lambda c: (-compile_weight(c), c))
    assert order == [wide, warped, staged, small]
