"""Jobs (one per accepted request) and the in-memory store that keeps them and their PNGs.

A job is written by the batching worker thread and read by the request handlers; the store's lock
guards both.  ``version`` grows on every change so the event stream knows when to send an update.
Only the newest ``max_jobs`` jobs are kept (with their images): a local server must not grow forever.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from dalle2_pytorch.serve.engine import Settings


@dataclass
class Job:
    prompts: list[str]  # one per image
    seeds: list[int]  # one per image
    settings: Settings
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    created: float = field(default_factory=time.monotonic)
    status: str = "queued"
    progress: float = 0.0
    error: Optional[str] = None
    image_names: list[str] = field(default_factory=list)
    batch_size: Optional[int] = None
    seconds: Optional[float] = None
    version: int = 0

    @property
    def num_images(self) -> int:
        return len(self.prompts)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def view(self, image_url: str = "/v1/images/{name}.png") -> dict[str, Any]:
        """The JSON body of ``GET /v1/jobs/{id}`` (see ``schemas.JobView``)."""
        images = [{"url": image_url.format(name=name), "prompt": prompt, "seed": seed}
                  for name, prompt, seed in zip(self.image_names, self.prompts, self.seeds)]
        return {"id": self.id, "status": self.status, "progress": round(self.progress, 4), "error": self.error,
                "settings": asdict(self.settings), "images": images, "batch_size": self.batch_size,
                "seconds": self.seconds}


class JobStore:
    """Thread-safe map of job id -> :class:`Job`, and image name -> PNG bytes."""

    def __init__(self, *, max_jobs: int = 256) -> None:
        if not isinstance(max_jobs, int) or max_jobs < 1:
            raise ValueError(f"max_jobs={max_jobs!r}: expected a positive int")
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._images: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.max_jobs:
                _, old = self._jobs.popitem(last=False)
                for name in old.image_names:
                    self._images.pop(name, None)

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(job_id)

    def snapshot(self, job_id: str) -> Optional[tuple[int, dict[str, Any]]]:
        """(version, view) of a job read under the lock, or None when unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else (job.version, job.view())

    def image(self, name: str) -> Optional[bytes]:
        with self._lock:
            return self._images.get(name)

    def update(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            job.version += 1

    def finish(self, job: Job, images: list) -> None:
        """Store ``images`` (PIL) as PNGs named ``<job id>-<index>`` and mark the job done."""
        encoded = {}
        for index, image in enumerate(images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            encoded[f"{job.id}-{index}"] = buffer.getvalue()
        with self._lock:
            if job.id in self._jobs:
                self._images.update(encoded)
            job.image_names = list(encoded)
            job.status, job.progress = "done", 1.0
            job.seconds = round(time.monotonic() - job.created, 3)
            job.version += 1

    def fail(self, job: Job, message: str) -> None:
        self.update(job, status="failed", error=message, seconds=round(time.monotonic() - job.created, 3))
