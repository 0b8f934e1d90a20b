"""A bounded queue of jobs and the one worker thread that runs them on the model in batches.

Jobs with the same settings that arrive within ``batch_window`` seconds of the oldest waiting one
share one forward pass of up to ``max_batch`` images (a job larger than that runs in chunks).  When
the worker is busy, everything that piled up meanwhile is batched the same way.  At most
``max_queue`` jobs may wait; beyond that :meth:`BatchQueue.submit` raises :class:`QueueFull` with a
Retry-After estimate.  ``max_batch=1`` turns batching off (one image per forward pass).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Optional

from dalle2_pytorch.serve.engine import ImageEngine
from dalle2_pytorch.serve.jobs import Job, JobStore


class QueueFull(RuntimeError):
    """The queue holds ``max_queue`` waiting jobs; try again after ``retry_after`` seconds."""

    def __init__(self, max_queue: int, retry_after: int) -> None:
        super().__init__(f"the queue is full ({max_queue} jobs waiting); retry in about {retry_after} s")
        self.retry_after = retry_after


class BatchQueue:
    def __init__(self, engine: ImageEngine, store: JobStore, *, max_batch: int = 8, batch_window: float = 0.05,
                 max_queue: int = 32) -> None:
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive int")
        if not isinstance(batch_window, (int, float)) or batch_window < 0:
            raise ValueError(f"batch_window={batch_window!r}: expected seconds >= 0")
        self.engine, self.store = engine, store
        self.max_batch, self.batch_window, self.max_queue = max_batch, float(batch_window), max_queue
        self.forward_passes = 0  # calls of engine.generate, for tests and /v1/health
        self.last_batch_seconds = 1.0
        self._pending: deque[Job] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ producer side
    @property
    def waiting(self) -> int:
        with self._condition:
            return len(self._pending)

    def submit(self, job: Job) -> None:
        with self._condition:
            if len(self._pending) >= self.max_queue:
                batches_ahead = math.ceil(sum(j.num_images for j in self._pending) / self.max_batch) + 1
                raise QueueFull(self.max_queue, max(1, math.ceil(batches_ahead * self.last_batch_seconds)))
            self.store.add(job)
            self._pending.append(job)
            self._condition.notify()

    # ------------------------------------------------------------------ worker
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="dalle2-serve-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _matching_images(self) -> int:
        settings = self._pending[0].settings
        return sum(job.num_images for job in self._pending if job.settings == settings)

    def _next_batch(self) -> list[Job]:
        """Wait for a first job, then up to the window for companions; take them off the queue."""
        with self._condition:
            while not self._pending and not self._stopping:
                self._condition.wait()
            if self._stopping:
                return []
            deadline = self._pending[0].created + self.batch_window
            while not self._stopping and self._matching_images() < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            first = self._pending.popleft()
            batch, images = [first], first.num_images
            for job in list(self._pending):
                if job.settings == first.settings and images + job.num_images <= self.max_batch:
                    self._pending.remove(job)
                    batch.append(job)
                    images += job.num_images
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        started = time.monotonic()
        prompts = [p for job in batch for p in job.prompts]
        seeds = [s for job in batch for s in job.seeds]
        for job in batch:
            self.store.update(job, status="running", batch_size=min(len(prompts), self.max_batch))
        chunks = range(0, len(prompts), self.max_batch)

        def progress_of(chunk: int):
            def report(fraction: float) -> None:
                for job in batch:
                    self.store.update(job, progress=(chunk + fraction) / len(chunks))
            return report

        try:
            images = []
            for chunk, start in enumerate(chunks):
                self.forward_passes += 1
                stop = start + self.max_batch
                images += self.engine.generate(prompts[start:stop], seeds[start:stop], batch[0].settings,
                                               progress_of(chunk))
        except Exception as error:  # the job reports it; the server keeps serving
            if len(batch) > 1:
                # one bad job must not fail the others: run each alone (its images depend only on its own
                # prompts, seeds and settings, so they are the images it would have had in the batch)
                for job in batch:
                    self._run([job])
                return
            self.store.fail(batch[0], f"{type(error).__name__}: {error}")
            return
        finally:
            self.last_batch_seconds = max(0.001, time.monotonic() - started)
        offset = 0
        for job in batch:
            self.store.finish(job, images[offset:offset + job.num_images])
            offset += job.num_images
