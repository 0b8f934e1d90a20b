"""The JSON API against a tiny real DALLE2: generate, poll, fetch, events, errors, health, schema."""

from __future__ import annotations

import io
import json

from PIL import Image

from tests.serve.conftest import wait_for


def test_generate_poll_and_fetch_png(make_client):
    client = make_client()
    response = client.post("/v1/generate", json={"prompt": ["a red circle", "a blue square"], "n": 2, "seed": 7})
    assert response.status_code == 202, response.text
    accepted = response.json()
    job = wait_for(client, accepted["id"])
    assert job["status"] == "done", job
    assert job["progress"] == 1.0
    assert [i["prompt"] for i in job["images"]] == ["a red circle"] * 2 + ["a blue square"] * 2
    assert [i["seed"] for i in job["images"]] == [7, 8, 9, 10]
    png = client.get(job["images"][0]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (16, 16) and image.mode == "RGB"


def test_event_stream_reports_progress_then_done(make_client):
    client = make_client()
    accepted = client.post("/v1/generate", json={"prompt": "a green star", "seed": 1}).json()
    events = []
    with client.stream("GET", accepted["events_url"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line[len("event: "):])
            elif line.startswith("data: "):
                last = json.loads(line[len("data: "):])
    assert events[-1] == "done" and last["status"] == "done"
    assert set(events[:-1]) <= {"progress"} and len(events) >= 2
    assert len(last["images"]) == 1


def test_unknown_job_and_image_are_404_naming_them(make_client):
    client = make_client()
    for url in ("/v1/jobs/nope", "/v1/jobs/nope/events", "/v1/images/nope-0.png"):
        response = client.get(url)
        assert response.status_code == 404 and "nope" in response.json()["error"]


def test_health_describes_model_and_queue(make_client):
    client = make_client(max_batch=4, max_queue=5)
    health = client.get("/v1/health").json()
    assert health["status"] == "ok"
    assert health["model"]["image_size"] == 16 and health["model"]["max_steps"] == 50
    assert "ddim" in health["model"]["samplers"]
    assert health["queue"]["max_batch"] == 4 and health["queue"]["max_queue"] == 5


def test_openapi_schema_lists_the_api(make_client):
    schema = make_client().get("/openapi.json").json()
    for path in ("/v1/generate", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/images/{name}.png",
                 "/v1/health"):
        assert path in schema["paths"], path
    fields = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert set(fields) == {"prompt", "n", "cond_scale", "prior_cond_scale", "sampler", "steps", "seed"}


def test_page_and_its_assets_are_served(make_client):
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and 'id="generate"' in page.text and 'id="progress"' in page.text
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"]
