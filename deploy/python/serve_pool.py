"""A small pool of predictors behind a bounded queue, batching what waits (deploy/python/serve.py).

Each of ``workers`` threads owns one predictor (Paddle Inference, onnxruntime
and OpenVINO release the GIL while they compute, so the threads run in
parallel). A job is admitted only while fewer than ``workers + max_queue``
jobs are waiting or running; beyond that :meth:`PredictorPool.submit`
raises :class:`PoolFull`, which the service answers with 503 and a
``Retry-After`` estimated from the recent service time. Memory therefore
stays bounded however many clients call at once. A request that waits or
runs longer than ``timeout_s`` is answered 504; its job still finishes (a
running inference cannot be interrupted) and keeps its place in the count
until it does, so timeouts cannot let the queue grow past its bound.

Micro-batching: a :class:`BatchJob` is prepared (decoded, pre-processed), run
and finished in three steps. A worker that takes one from the queue also
takes the batch jobs already waiting behind it (up to ``max_batch`` in all
and its share of the queue among the workers, never waiting for more),
prepares each, runs those whose inputs have the same
shape as one stacked predictor call, and finishes each with its own row of
the output. One call over ``n`` small images costs less than ``n`` calls
(larger GEMMs, one dispatch), so under concurrent load the service does more
per core, while a lone request still runs at once, alone. A job whose
preparation fails (a broken upload) fails alone; the rest of its batch runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Optional, Tuple, TypeVar

import numpy as np

T = TypeVar("T")


#: glibc's mallopt parameter for the number of malloc arenas (M_ARENA_MAX in malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process at ``arenas``; True if set.

    glibc gives a thread that finds the arenas busy a new one (up to 8 per core), and the pages a new
    arena touches stay resident. With the service's worker threads on glibc's default, resident
    memory stepped up by ~10 MB partway through a run of load; with two arenas that step did not
    come and the level was the lowest of every run, at the same throughput
    (benchmarks/serve_memory.py). Not on other C libraries, and not over a ``MALLOC_ARENA_MAX`` the
    user set.
    """
    import ctypes
    import ctypes.util
    import os

    if os.environ.get("MALLOC_ARENA_MAX") or not ctypes.util.find_library("c"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):  # not glibc: no mallopt
        return False


class PoolFull(Exception):
    """Every worker is busy and the queue is full; ``retry_after`` is a whole number of seconds."""

    def __init__(self, retry_after: int, pending: int) -> None:
        super().__init__(f"the service is busy ({pending} requests waiting or running); retry in "
                         f"{retry_after} s")
        self.retry_after = retry_after


class PoolTimeout(Exception):
    """A job did not finish within the per-request timeout."""


class BatchJob:
    """One input that may share a predictor call with others of the same shape.

    Subclasses (or instances given callables) define the three steps; all run on a worker thread.
    """

    def prepare(self) -> Tuple[Hashable, np.ndarray]:
        """``(key, input)``: inputs with equal keys are stacked along a new first axis into one call."""
        raise NotImplementedError

    def run(self, predictor: Any, batch: np.ndarray) -> np.ndarray:
        """The predictor's output for a stacked ``batch`` (first axis: the jobs)."""
        return predictor.run(batch)

    def finish(self, output: np.ndarray, batch_size: int, call_ms: float) -> Any:
        """This job's answer from its row ``output`` of a call over ``batch_size`` jobs that took
        ``call_ms``."""
        raise NotImplementedError


@dataclass
class _Entry:
    job: Any  # a BatchJob, or a callable taking the predictor
    future: "concurrent.futures.Future[Any]" = field(default_factory=concurrent.futures.Future)


class PredictorPool:
    """``workers`` predictors, each used by one thread at a time, behind a bounded queue.

    Args:
        predictors: one predictor per worker (made by the caller: any object the jobs accept).
        max_queue: jobs that may wait while every worker is busy.
        timeout_s: longest a request waits for its answer (queueing included).
        max_batch: most :class:`BatchJob` s one predictor call takes (1: no batching).
    """

    def __init__(self, predictors: List[Any], max_queue: int, timeout_s: float, max_batch: int = 1) -> None:
        if not predictors:
            raise ValueError("PredictorPool needs at least one predictor")
        if max_queue < 0:
            raise ValueError(f"--max_queue must be >= 0, got {max_queue}")
        if timeout_s <= 0:
            raise ValueError(f"--timeout_s must be > 0, got {timeout_s}")
        if max_batch < 1:
            raise ValueError(f"--max_batch must be >= 1, got {max_batch}")
        self.workers = len(predictors)
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self._queue: "queue.Queue[Optional[_Entry]]" = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._service_s = 0.0  # moving average of one job's share of a worker's time
        self.batches: Dict[int, int] = {}  # predictor calls by batch size, for /health
        self._threads = [threading.Thread(target=self._work, args=(p,), name=f"predictor-{i}", daemon=True)
                         for i, p in enumerate(predictors)]
        for t in self._threads:
            t.start()

    @property
    def pending(self) -> int:
        """Jobs waiting or running now."""
        return self._pending

    def _retry_after(self) -> int:
        per_job = self._service_s or 1.0
        return max(1, math.ceil(per_job * self._pending / self.workers))

    def _admit(self) -> None:
        with self._lock:
            if self._pending >= self.workers + self.max_queue:
                raise PoolFull(self._retry_after(), self._pending)
            self._pending += 1

    def _timed(self, jobs: int, took: float) -> None:
        with self._lock:
            per_job = took / max(1, jobs)
            self._service_s = per_job if not self._service_s else 0.8 * self._service_s + 0.2 * per_job

    def _settle(self, entry: _Entry, result: Any = None, error: Optional[BaseException] = None) -> None:
        """Answer ``entry`` and free its place in the count first: its client may send the next request
        the moment it has this answer, while the rest of the batch is still being finished."""
        if entry.future.done():
            return
        with self._lock:
            self._pending -= 1
        if error is None:
            entry.future.set_result(result)
        else:
            entry.future.set_exception(error)

    def _take(self, first: _Entry) -> List[_Entry]:
        """``first`` and the batch jobs queued behind it, without waiting: up to ``max_batch``, and
        no more than this worker's share of the queue, so that two requests waiting for two idle
        workers run side by side rather than one after the other in one call."""
        entries = [first]
        limit = min(self.max_batch, math.ceil((self._queue.qsize() + 1) / self.workers))
        while isinstance(first.job, BatchJob) and len(entries) < limit:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None or not isinstance(entry.job, BatchJob):
                self._queue.put(entry)  # a plain job or the stop signal: it goes on after this batch
                break
            entries.append(entry)
        # A job whose request timed out while queued was cancelled: it never runs (submit counted it out).
        return [e for e in entries if e.future.set_running_or_notify_cancel()]

    def _work(self, predictor: Any) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            entries = self._take(first)
            if not entries:
                continue
            start = time.perf_counter()
            try:
                if isinstance(entries[0].job, BatchJob):
                    self._run_batch(predictor, entries)
                else:
                    try:
                        self._settle(entries[0], entries[0].job(predictor))
                    except BaseException as e:  # noqa: BLE001 - the request's answer, not the worker's end
                        self._settle(entries[0], error=e)
            finally:
                for entry in entries:  # none is left unanswered, whatever went wrong
                    self._settle(entry, error=RuntimeError("the worker failed before answering"))
                self._timed(len(entries), time.perf_counter() - start)

    def _run_batch(self, predictor: Any, entries: List[_Entry]) -> None:
        groups: Dict[Hashable, List[Tuple[_Entry, np.ndarray]]] = {}
        for entry in entries:
            try:
                key, arr = entry.job.prepare()
            except BaseException as e:  # noqa: BLE001 - a bad upload fails its own request only
                self._settle(entry, error=e)
                continue
            groups.setdefault(key, []).append((entry, arr))
        for group in groups.values():
            start = time.perf_counter()
            try:
                out = group[0][0].job.run(predictor, np.stack([arr for _, arr in group]))
            except BaseException as e:  # noqa: BLE001
                for entry, _ in group:
                    self._settle(entry, error=e)
                continue
            call_ms = 1e3 * (time.perf_counter() - start)
            with self._lock:
                self.batches[len(group)] = self.batches.get(len(group), 0) + 1
            for i, (entry, _) in enumerate(group):
                try:
                    self._settle(entry, entry.job.finish(out[i], len(group), call_ms))
                except BaseException as e:  # noqa: BLE001
                    self._settle(entry, error=e)

    async def submit(self, job: Any) -> Any:
        """Run ``job`` on a free worker and return its result: a :class:`BatchJob` (batched with
        others waiting), or a callable ``job(predictor)`` (alone).

        Raises:
            PoolFull: no room in the queue (answer 503).
            PoolTimeout: no answer within ``timeout_s`` (answer 504).
        """
        self._admit()
        entry = _Entry(job)
        self._queue.put(entry)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(entry.future), self.timeout_s)
        except asyncio.TimeoutError:
            # A job still queued never runs; a running one finishes and frees its slot then.
            if entry.future.cancel():
                with self._lock:
                    self._pending -= 1
            raise PoolTimeout(f"no answer within {self.timeout_s:g} s (serve.py --timeout_s); the service "
                              f"is overloaded or the image is too large for it") from None

    def close(self) -> None:
        """Stop the workers after their current jobs; jobs still queued are cancelled."""
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not None:
                entry.future.cancel()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
