"""Image manipulations in the web app: ``POST /v1/variations``, ``/v1/text-diff``, ``/v1/inpaint``, ``/v1/outpaint``
and ``/v1/interpolate`` (docs/manipulations.md, docs/serve.md).

Images travel inside the JSON body as base64 or a ``data:image/...;base64,`` URL (the page sends data URLs).  An
upload over :data:`MAX_UPLOAD_BYTES` is a 413, a type that is not an image a 415, bad base64 or a bad setting a
422 naming the field; every error body is ``{"error": "<field>: <what is wrong>"}``.  An accepted request is a job
like ``/v1/generate``'s (same status, events and image URLs); manipulation jobs run one at a time on a worker
thread of their own, at most :data:`MAX_WAITING` waiting (then 503 with ``Retry-After``).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dalle2_pytorch.data.image_inputs import read_image, read_mask
from dalle2_pytorch.images import to_pil_images
from dalle2_pytorch.manipulations import outpaint_canvas, stage_canvas_sizes
from dalle2_pytorch.serve.engine import Settings
from dalle2_pytorch.serve.jobs import Job, JobStore
from dalle2_pytorch.serve.schemas import MAX_IMAGES_PER_PROMPT, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, SamplerName

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
UPLOAD_ROUTES = ("/v1/variations", "/v1/text-diff", "/v1/interpolate", "/v1/inpaint", "/v1/outpaint")
# a request body of these routes: two uploads at most (image + mask, or both ends), base64 (4 bytes per 3) in data
# URLs, and the settings
UPLOAD_BODY_BYTES = 2 * (4 * -(-MAX_UPLOAD_BYTES // 3) + 64) + 64 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")
MAX_WAITING = 4
Text = Field(None, min_length=1, max_length=MAX_PROMPT_CHARS)


class UploadError(ValueError):
    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status


# ---------------------------------------------------------------------------------- request bodies
class _ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="the image: base64, or a data URL data:image/png;base64,...")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="random when null")
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS)


class VariationsRequest(_ImageRequest):
    num: int = Field(4, ge=1, le=MAX_IMAGES_PER_PROMPT)
    eta: float = Field(1.0, ge=0.0, le=1.0, description="DDIM eta of unet 1")
    inverted: bool = Field(False, description="start from the image's inverted noise")


class TextDiffRequest(_ImageRequest):
    from_text: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    to_text: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    amounts: list[float] = Field([0.25, 0.5, 0.75], min_length=1, max_length=MAX_IMAGES_PER_PROMPT)


class InterpolateRequest(_ImageRequest):
    image_b: str = Field(description="the other end, like image")
    num: int = Field(5, ge=2, le=2 * MAX_IMAGES_PER_PROMPT)


class _PaintRequest(_ImageRequest):
    text: Optional[str] = Text
    sampler: Optional[SamplerName] = None
    num: int = Field(1, ge=1, le=MAX_IMAGES_PER_PROMPT)


class InpaintRequest(_PaintRequest):
    mask: str = Field(description="mask picture like image: light pixels kept, dark pixels regenerated")
    resample_times: Optional[int] = Field(None, ge=1, le=10)


class OutpaintRequest(_PaintRequest):
    pad: Optional[list[int]] = Field(None, min_length=4, max_length=4, description="left, top, right, bottom")
    scale: Optional[float] = Field(None, gt=1.0, le=4.0)


# ---------------------------------------------------------------------------------- uploads
def decode_upload(value: str, field: str, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The bytes of a base64 / data-URL upload; UploadError 413 (too large), 415 (not an image type), 422."""
    payload = value
    if value.startswith("data:"):
        header, comma, payload = value.partition(",")
        mime = header[5:].split(";")[0].strip().lower()
        if not comma or ";base64" not in header:
            raise UploadError(422, field, "expected a base64 data URL (data:image/png;base64,...)")
        if mime not in IMAGE_TYPES:
            raise UploadError(415, field, f"{mime or 'no type'} is not an image type this server reads; send one of "
                                          f"{', '.join(IMAGE_TYPES)}")
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:
        raise UploadError(413, field, f"the upload is larger than {max_bytes // 1024} KiB")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(422, field, "not valid base64") from None
    if not data:
        raise UploadError(422, field, "the upload is empty")
    return data


def upload_image(value: str, field: str, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1] from an upload; a non-image is a 415."""
    data = decode_upload(value, field)
    try:
        return read_image(data, size) if field != "mask" else read_mask(data, size)
    except ValueError as error:
        raise UploadError(415, field, str(error).split(": ", 1)[-1]) from None


# ---------------------------------------------------------------------------------- routes
def add_manipulation_routes(app: FastAPI, engine: Any, store: JobStore) -> None:
    """Register the five endpoints on ``app``; their jobs live in ``store`` beside the text-to-image ones."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dalle2-manipulate")
    waiting = threading.Semaphore(MAX_WAITING)
    app.state.manipulation_worker = worker

    def submit(captions: list[str], seed: int, settings: Settings, work: Callable[[Callable], torch.Tensor]):
        if not waiting.acquire(blocking=False):
            return JSONResponse({"error": f"{MAX_WAITING} image manipulations are waiting; retry later"},
                                status_code=503, headers={"Retry-After": "10"})
        job = Job(prompts=captions, seeds=[seed] * len(captions), settings=settings)
        store.add(job)
        num_unets = engine.dalle2.decoder.num_unets

        def progress(info: dict) -> None:
            done = (info["unet_number"] - 1 + (info["i"] + 1) / max(1, info["total"])) / num_unets
            store.update(job, status="running", progress=min(0.99, done))

        def run() -> None:
            try:
                store.update(job, status="running", batch_size=len(captions))
                store.finish(job, to_pil_images(work(progress)))
            except Exception as error:  # noqa: BLE001 - the job reports it; the server keeps running
                store.fail(job, f"{type(error).__name__}: {error}")
            finally:
                waiting.release()

        worker.submit(run)
        return JSONResponse({"id": job.id, "status_url": f"/v1/jobs/{job.id}",
                             "events_url": f"/v1/jobs/{job.id}/events"}, status_code=202)

    def handle(body: _ImageRequest, make: Callable[[Any, int, int], tuple]) -> JSONResponse:
        """Check the model and the uploads, then queue ``make(pipeline, size, seed) -> (captions, settings, work)``."""
        pipeline = getattr(engine, "dalle2", None)
        if pipeline is None or not hasattr(pipeline, "variations"):
            return JSONResponse({"error": "model: this server's model does not do image manipulations"},
                                status_code=501)
        seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1)
        try:
            captions, settings, work = make(pipeline, pipeline.decoder.image_sizes[-1], seed)
        except UploadError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        except (ValueError, TypeError) as error:
            return JSONResponse({"error": str(error)}, status_code=422)
        return submit(captions, seed, settings, work)

    responses = {413: {"description": "upload too large"}, 415: {"description": "not an image"},
                 422: {"description": "bad input; `error` names the field"}, 503: {"description": "busy"}}

    @app.post("/v1/variations", status_code=202, responses=responses)
    async def variations(body: VariationsRequest):
        """``num`` variations of the image (its CLIP embedding kept, unet 1 resampled with DDIM at ``eta``)."""
        def make(pipeline, size, seed):
            image = upload_image(body.image, "image", size)
            return ([f"variation {k + 1}" for k in range(body.num)], Settings(steps=body.steps),
                    lambda cb: pipeline.variations(image, num=body.num, eta=body.eta, seed=seed, steps=body.steps,
                                                   inverted=body.inverted, callback=cb))
        return handle(body, make)

    @app.post("/v1/text-diff", status_code=202, responses=responses)
    async def text_diff(body: TextDiffRequest):
        """The image edited towards ``to_text`` from ``from_text``, one image per amount."""
        def make(pipeline, size, seed):
            image = upload_image(body.image, "image", size)
            if not all(0 <= a <= 1 for a in body.amounts):
                raise ValueError(f"amounts: each must be in [0, 1], got {body.amounts}")
            return ([f"{body.to_text} ({a:g})" for a in body.amounts], Settings(steps=body.steps),
                    lambda cb: pipeline.text_diff(image, body.from_text, body.to_text, amounts=body.amounts,
                                                  steps=body.steps, seed=seed, callback=cb))
        return handle(body, make)

    @app.post("/v1/interpolate", status_code=202, responses=responses)
    async def interpolate(body: InterpolateRequest):
        """``num`` images from ``image`` to ``image_b``."""
        def make(pipeline, size, seed):
            a, b = upload_image(body.image, "image", size), upload_image(body.image_b, "image_b", size)
            return ([f"t={k / (body.num - 1):.2f}" for k in range(body.num)], Settings(steps=body.steps),
                    lambda cb: pipeline.interpolate(a, b, num=body.num, steps=body.steps, seed=seed, callback=cb))
        return handle(body, make)

    @app.post("/v1/inpaint", status_code=202, responses=responses)
    async def inpaint(body: InpaintRequest):
        """Regenerate the dark part of ``mask`` (``num`` times); the light part stays exactly as uploaded."""
        def make(pipeline, size, seed):
            image = upload_image(body.image, "image", size).expand(body.num, -1, -1, -1)
            mask = upload_image(body.mask, "mask", size)
            return ([body.text or "inpainted"] * body.num, Settings(sampler=body.sampler, steps=body.steps),
                    lambda cb: pipeline.inpaint(image, mask, text=body.text, sampler=body.sampler, steps=body.steps,
                                                resample_times=body.resample_times, seed=seed, callback=cb))
        return handle(body, make)

    @app.post("/v1/outpaint", status_code=202, responses=responses)
    async def outpaint(body: OutpaintRequest):
        """The image on a larger canvas (``pad`` or ``scale``), the new margins generated."""
        def make(pipeline, size, seed):
            image = upload_image(body.image, "image", size).expand(body.num, -1, -1, -1)
            canvas, _, _ = outpaint_canvas(image[:1], pad=body.pad, scale=body.scale)
            stage_canvas_sizes(pipeline.decoder, *canvas.shape[-2:])  # a canvas the unets cannot draw is a 422
            pad = None if body.pad is None else tuple(body.pad)
            return ([body.text or "outpainted"] * body.num, Settings(sampler=body.sampler, steps=body.steps),
                    lambda cb: pipeline.outpaint(image, pad=pad, scale=body.scale, text=body.text,
                                                 sampler=body.sampler, steps=body.steps, seed=seed, callback=cb))
        return handle(body, make)
