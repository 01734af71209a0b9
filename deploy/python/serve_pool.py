"""A small pool of predictors behind a bounded queue (deploy/python/serve.py).

Each of ``workers`` threads owns one predictor (Paddle Inference and
onnxruntime release the GIL while they compute, so the threads run in
parallel). A job is admitted only while fewer than ``workers + max_queue``
jobs are waiting or running; beyond that :meth:`PredictorPool.submit`
raises :class:`PoolFull`, which the service answers with 503 and a
``Retry-After`` estimated from the recent service time. Memory therefore
stays bounded however many clients call at once. A request that waits or
runs longer than ``timeout_s`` is answered 504; its job still finishes (a
running inference cannot be interrupted) and keeps its place in the count
until it does, so timeouts cannot let the queue grow past its bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import queue
import threading
import time
from typing import Any, Callable, List, TypeVar

T = TypeVar("T")


class PoolFull(Exception):
    """Every worker is busy and the queue is full; ``retry_after`` is a whole number of seconds."""

    def __init__(self, retry_after: int, pending: int) -> None:
        super().__init__(f"the service is busy ({pending} requests waiting or running); retry in "
                         f"{retry_after} s")
        self.retry_after = retry_after


class PoolTimeout(Exception):
    """A job did not finish within the per-request timeout."""


class PredictorPool:
    """``workers`` predictors, each used by one thread at a time, behind a bounded queue.

    Args:
        predictors: one predictor per worker (made by the caller: any object ``job`` accepts).
        max_queue: jobs that may wait while every worker is busy.
        timeout_s: longest a request waits for its answer (queueing included).
    """

    def __init__(self, predictors: List[Any], max_queue: int, timeout_s: float) -> None:
        if not predictors:
            raise ValueError("PredictorPool needs at least one predictor")
        if max_queue < 0:
            raise ValueError(f"--max_queue must be >= 0, got {max_queue}")
        if timeout_s <= 0:
            raise ValueError(f"--timeout_s must be > 0, got {timeout_s}")
        self.workers = len(predictors)
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._free: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        for p in predictors:
            self._free.put(p)
        self._executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="predictor")
        self._lock = threading.Lock()
        self._pending = 0
        self._service_s = 0.0  # moving average of one job's run time

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

    def _run(self, job: Callable[[Any], T]) -> T:
        predictor = self._free.get()  # never blocks: one predictor per executor thread
        start = time.perf_counter()
        try:
            return job(predictor)
        finally:
            self._free.put(predictor)
            took = time.perf_counter() - start
            with self._lock:
                self._pending -= 1
                self._service_s = took if not self._service_s else 0.8 * self._service_s + 0.2 * took

    async def submit(self, job: Callable[[Any], T]) -> T:
        """Run ``job(predictor)`` on a free worker and return its result.

        Raises:
            PoolFull: no room in the queue (answer 503).
            PoolTimeout: no answer within ``timeout_s`` (answer 504).
        """
        self._admit()
        try:
            future = self._executor.submit(self._run, job)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # a job still queued never runs; a running one finishes and frees its slot
            if future.cancelled():
                with self._lock:
                    self._pending -= 1
            raise PoolTimeout(f"no answer within {self.timeout_s:g} s (serve.py --timeout_s); the service "
                              f"is overloaded or the image is too large for it") from None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
