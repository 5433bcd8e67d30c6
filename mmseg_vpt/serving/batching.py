"""Dynamic batching: concurrent requests, of any tasks, share forward
passes."""
import asyncio
import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Sequence

import numpy as np


@dataclass
class Request:
    image: np.ndarray  # BGR uint8
    task: str
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class BatchStats:
    """Counters for ``/metrics`` (thread-safe; latencies over a window)."""

    def __init__(self, window: int = 2048) -> None:
        self._lock = threading.Lock()
        self.batches = 0
        self.samples = 0
        self.failed = 0
        self.batch_sizes: Dict[int, int] = collections.Counter()
        self.latencies: Deque[float] = collections.deque(maxlen=window)
        self.forward_seconds = 0.0

    def record_batch(self, size: int, seconds: float, failed: int) -> None:
        with self._lock:
            self.batches += 1
            self.samples += size
            self.failed += failed
            self.batch_sizes[size] += 1
            self.forward_seconds += seconds

    def record_latency(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)

    def snapshot(self) -> dict:
        with self._lock:
            lat = np.asarray(self.latencies) * 1000.0
            return dict(
                batches=self.batches, samples=self.samples,
                failed_samples=self.failed,
                mean_batch_size=self.samples / self.batches
                if self.batches else 0.0,
                batch_sizes={str(k): v for k, v in
                             sorted(self.batch_sizes.items())},
                forward_seconds=round(self.forward_seconds, 3),
                latency_ms=dict(
                    count=int(lat.size),
                    p50=float(np.percentile(lat, 50)) if lat.size else None,
                    p95=float(np.percentile(lat, 95)) if lat.size else None))


class DynamicBatcher:
    """Collects requests into batches of at most ``max_batch_size``, waiting
    at most ``max_wait_ms`` after the first one, and runs each batch on one
    worker thread (so forward passes never compete for the cores) while
    the event loop keeps accepting requests.

    Args:
        predict: ``predict(images, task_names) -> results`` (e.g.
            :meth:`MultiTaskSegmentor.predict`). If a batch raises, its
            requests are retried one by one, so one bad request fails alone.
    """

    def __init__(self, predict: Callable[[List[np.ndarray], List[str]],
                                         Sequence[Any]],
                 max_batch_size: int = 8, max_wait_ms: float = 10.0) -> None:
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f'max_batch_size must be an int >= 1, got '
                             f'{max_batch_size!r}')
        if not max_wait_ms >= 0:
            raise ValueError(f'max_wait_ms must be >= 0, got {max_wait_ms!r}')
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: 'asyncio.Queue[Request]' = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix='forward')
        self._task = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            req = self._queue.get_nowait()
            if not req.future.done():
                req.future.set_exception(RuntimeError('server shutting '
                                                      'down'))
        self._worker.shutdown(wait=True)

    async def submit(self, image: np.ndarray, task: str) -> Any:
        """The prediction for ``image`` under ``task`` (raises what the
        model raised for it)."""
        if self._task is None or self._task.done():
            raise RuntimeError('the batcher is not running')
        req = Request(image, task, asyncio.get_running_loop().create_future())
        await self._queue.put(req)
        try:
            return await req.future
        finally:
            self.stats.record_latency(time.perf_counter() - req.queued)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(),
                                                        timeout))
                except asyncio.TimeoutError:
                    break
            batch = [r for r in batch if not r.future.done()]  # cancelled
            if not batch:
                continue
            outcomes = await loop.run_in_executor(self._worker, self._run,
                                                  batch)
            for req, (ok, value) in zip(batch, outcomes):
                if req.future.done():
                    continue
                if ok:
                    req.future.set_result(value)
                else:
                    req.future.set_exception(value)

    def _run(self, batch: List[Request]) -> List[tuple]:
        t0 = time.perf_counter()
        try:
            results = self.predict([r.image for r in batch],
                                   [r.task for r in batch])
            outcomes = [(True, r) for r in results]
        except Exception:  # noqa: BLE001 - isolate the failing request
            outcomes = []
            for r in batch:
                try:
                    outcomes.append((True, self.predict([r.image],
                                                        [r.task])[0]))
                except Exception as err:  # noqa: BLE001
                    outcomes.append((False, err))
        failed = sum(not ok for ok, _ in outcomes)
        self.stats.record_batch(len(batch), time.perf_counter() - t0, failed)
        return outcomes
