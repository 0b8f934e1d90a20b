"""The FastAPI application: the web page, the JSON API and the server-sent progress events.

    app = create_app(DALLE2Engine.from_checkpoint("outputs/checkpoints"))
    uvicorn.run(app, host="127.0.0.1", port=7860)

Every error comes back as JSON ``{"error": "<what is wrong>", "field": <JSON path or null>}``
(:mod:`dalle2_pytorch.serve.guards`): 422 for bad input (the field is named; ``detail`` lists every one), 404 for
unknown jobs, images and routes, 413 for a body over the limit, 400 for a ``Host`` not allowed, 503 with
``Retry-After`` when the queue is full.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from typing import Iterable, Optional

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from dalle2_pytorch.serve.batching import BatchQueue, QueueFull
from dalle2_pytorch.serve.engine import ImageEngine, Settings
from dalle2_pytorch.serve.guards import DEFAULT_MAX_BODY_BYTES, error_response, guard, unprocessable
from dalle2_pytorch.serve.jobs import Job, JobStore
from dalle2_pytorch.serve.manipulate import UPLOAD_BODY_BYTES, UPLOAD_ROUTES, add_manipulation_routes
from dalle2_pytorch.serve.schemas import MAX_SEED, Accepted, GenerateRequest, JobView

STATIC = Path(__file__).parent / "static"
EVENT_POLL_SECONDS = 0.05


def create_app(engine: ImageEngine, *, max_batch: int = 8, batch_window: float = 0.05, max_queue: int = 32,
               max_jobs: int = 256, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               allowed_hosts: Optional[Iterable[str]] = None) -> FastAPI:
    """The app serving ``engine``; its batching worker runs while the app's lifespan is open.

    ``max_body_bytes``: larger request bodies get 413 unread; ``allowed_hosts``: the ``Host`` names answered (None:
    any -- ``dalle2 serve`` passes the names it is bound to, see :func:`~dalle2_pytorch.serve.guards.default_allowed_hosts`).
    """
    store = JobStore(max_jobs=max_jobs)
    queue = BatchQueue(engine, store, max_batch=max_batch, batch_window=batch_window, max_queue=max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        queue.start()
        try:
            yield
        finally:
            queue.stop()

    app = FastAPI(title="unclip-pytorch", summary="Text to image with a trained DALL-E 2 (unCLIP) model",
                  version="1", lifespan=lifespan)
    app.state.engine, app.state.store, app.state.queue = engine, store, queue
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    guard(app, max_body_bytes=max_body_bytes, allowed_hosts=allowed_hosts,
          path_limits={route: max(max_body_bytes, UPLOAD_BODY_BYTES) for route in UPLOAD_ROUTES})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/v1/health")
    async def health() -> dict:
        """Liveness, what the model accepts, and the queue's state."""
        return {"status": "ok", "model": engine.describe(), "queue": {
            "waiting": queue.waiting, "max_queue": queue.max_queue, "max_batch": queue.max_batch,
            "batch_window": queue.batch_window, "forward_passes": queue.forward_passes}}

    @app.post("/v1/generate", status_code=202, response_model=Accepted,
              responses={422: {"description": "bad input; `error` names the field"},
                         503: {"description": "queue full; see Retry-After"}})
    async def generate(body: GenerateRequest):
        """Queue a job of ``n`` images per prompt; poll ``status_url`` or follow ``events_url``."""
        settings = Settings(cond_scale=body.cond_scale, prior_cond_scale=body.prior_cond_scale,
                            sampler=body.sampler, steps=body.steps)
        problems = engine.check(settings)
        if problems:
            return unprocessable([{"loc": ["body", name], "msg": message, "type": "model_limit"}
                                  for name, message in problems])
        seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1)
        prompts = [p for p in body.prompts() for _ in range(body.n)]
        job = Job(prompts=prompts, seeds=[seed + i for i in range(len(prompts))], settings=settings)
        try:
            queue.submit(job)
        except QueueFull as full:
            return error_response(503, str(full), None, headers={"Retry-After": str(full.retry_after)})
        return {"id": job.id, "status_url": f"/v1/jobs/{job.id}", "events_url": f"/v1/jobs/{job.id}/events"}

    @app.get("/v1/jobs/{job_id}", response_model=JobView, responses={404: {"description": "unknown job"}})
    async def job_status(job_id: str):
        """Status, progress in [0, 1], and the image URLs once done."""
        snapshot = store.snapshot(job_id)
        if snapshot is None:
            return error_response(404, f"job_id: no job {job_id!r} (finished jobs are kept for the last "
                                       f"{store.max_jobs})", "job_id")
        return snapshot[1]

    @app.get("/v1/jobs/{job_id}/events", responses={200: {"content": {"text/event-stream": {}}}})
    async def job_events(job_id: str):
        """Server-sent events: ``progress`` on every change, then ``done`` or ``failed`` (data: the job)."""
        if store.snapshot(job_id) is None:
            return error_response(404, f"job_id: no job {job_id!r}", "job_id")

        async def stream():
            last_version = -1
            while True:
                snapshot = store.snapshot(job_id)
                if snapshot is None:
                    yield f"event: failed\ndata: {json.dumps({'error': 'job was evicted'})}\n\n"
                    return
                version, view = snapshot
                if version != last_version:
                    last_version = version
                    event = view["status"] if view["status"] in ("done", "failed") else "progress"
                    yield f"event: {event}\ndata: {json.dumps(view)}\n\n"
                    if event != "progress":
                        return
                await asyncio.sleep(EVENT_POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/images/{name}.png", responses={200: {"content": {"image/png": {}}}, 404: {}})
    async def image(name: str):
        """A generated image as PNG (``<job id>-<index>``)."""
        data = store.image(name)
        if data is None:
            return error_response(404, f"name: no image {name!r}", "name")
        return Response(data, media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="{name}.png"'})

    add_manipulation_routes(app, engine, store)  # /v1/variations, /v1/text-diff, /v1/inpaint, ... (manipulate.py)
    return app
