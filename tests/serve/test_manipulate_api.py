"""The manipulation endpoints: an uploaded image runs as a job like /v1/generate's, and each bad upload or setting
is one clear 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from dalle2_pytorch.images import to_pil
from dalle2_pytorch.serve.manipulate import MAX_UPLOAD_BYTES

from .conftest import wait_for


def data_url(picture: Image.Image, kind: str = "png") -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format=kind.upper())
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode()


SOURCE = to_pil(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))
MASK = np.full((16, 16), 255, dtype=np.uint8)
MASK[4:12, 4:12] = 0


def pixels(client, url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(client.get(url).content)).convert("RGB"))


@pytest.mark.parametrize("path, body, count", [
    ("/v1/variations", {"num": 2, "steps": 3}, 2),
    ("/v1/text-diff", {"from_text": "a red circle", "to_text": "a blue circle", "amounts": [0.5], "steps": 3}, 1),
    ("/v1/interpolate", {"image_b": data_url(SOURCE.rotate(90)), "num": 3, "steps": 3}, 3),
    ("/v1/outpaint", {"scale": 2, "steps": 3, "sampler": "dpmpp_2m"}, 1),
])
def test_each_manipulation_runs_as_a_job(make_client, path, body, count):
    client = make_client()
    accepted = client.post(path, json={"image": data_url(SOURCE), "seed": 5, **body})
    assert accepted.status_code == 202, accepted.text
    job = wait_for(client, accepted.json()["id"], timeout=120)
    assert job["status"] == "done", job
    assert len(job["images"]) == count and all(image["seed"] == 5 for image in job["images"])
    first = pixels(client, job["images"][0]["url"])
    if path == "/v1/outpaint":
        assert first.shape == (32, 32, 3) and np.array_equal(first[8:24, 8:24], np.asarray(SOURCE))


def test_inpaint_keeps_the_light_part_of_the_mask_exactly(make_client):
    client = make_client()
    accepted = client.post("/v1/inpaint", json={"image": data_url(SOURCE), "mask": data_url(Image.fromarray(MASK)),
                                                "num": 2, "sampler": "ddim", "steps": 3, "seed": 1,
                                                "text": "a red circle"})
    assert accepted.status_code == 202, accepted.text
    job = wait_for(client, accepted.json()["id"], timeout=120)
    assert job["status"] == "done" and [i["prompt"] for i in job["images"]] == ["a red circle"] * 2
    out, keep = pixels(client, job["images"][0]["url"]), MASK > 127
    assert np.array_equal(out[keep], np.asarray(SOURCE)[keep]) and not np.array_equal(out, np.asarray(SOURCE))


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/variations", {"image": "data:text/plain;base64,aGVsbG8="}, 415, "image: text/plain is not an image type"),
    ("/v1/variations", {"image": base64.b64encode(b"not an image at all").decode()}, 415,
     "image: the upload is not a readable image"),
    ("/v1/variations", {"image": "data:image/png;base64,@@@"}, 422, "image: not valid base64"),
    ("/v1/variations", {"image": "A" * (MAX_UPLOAD_BYTES // 3 * 4 + 400)}, 413, "image: the upload is larger than"),
    ("/v1/variations", {"image": "{png}", "num": 0}, 422, "num"),
    ("/v1/inpaint", {"image": "{png}", "mask": "data:image/png;base64,"}, 422, "mask: the upload is empty"),
    ("/v1/inpaint", {"image": "{png}"}, 422, "mask"),
    ("/v1/outpaint", {"image": "{png}", "pad": [3, 0, 0, 0]}, 422, "multiples of"),
    ("/v1/outpaint", {"image": "{png}"}, 422, "exactly one of pad"),
    ("/v1/text-diff", {"image": "{png}", "from_text": "a", "to_text": "b", "amounts": [2]}, 422, "amounts"),
])
def test_bad_uploads_and_settings_are_one_clear_4xx(make_client, path, body, status, message):
    client = make_client()
    body = {key: data_url(SOURCE) if value == "{png}" else value for key, value in body.items()}
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
