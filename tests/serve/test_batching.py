"""Batching, the bounded queue, and seeded reproducibility (alone or batched)."""

from __future__ import annotations

from tests.serve.conftest import wait_for


def test_two_concurrent_requests_share_one_forward_pass(make_client):
    client = make_client(max_batch=8, batch_window=1.0)
    first = client.post("/v1/generate", json={"prompt": "a red circle", "seed": 1}).json()
    second = client.post("/v1/generate", json={"prompt": "a blue square", "n": 2, "seed": 2}).json()
    jobs = [wait_for(client, first["id"]), wait_for(client, second["id"])]
    assert [job["status"] for job in jobs] == ["done", "done"]
    assert client.app.state.queue.forward_passes == 1
    assert [job["batch_size"] for job in jobs] == [3, 3]


def test_batching_off_runs_one_image_per_forward_pass(make_client):
    client = make_client(max_batch=1, batch_window=1.0)
    job = wait_for(client, client.post("/v1/generate", json={"prompt": "a red circle", "n": 2}).json()["id"])
    assert job["status"] == "done" and job["batch_size"] == 1
    assert client.app.state.queue.forward_passes == 2


def test_different_settings_are_not_batched_together(make_client):
    client = make_client(max_batch=8, batch_window=0.5)
    ids = [client.post("/v1/generate", json={"prompt": "a red circle", "steps": steps}).json()["id"]
           for steps in (3, 4)]
    assert [wait_for(client, i)["batch_size"] for i in ids] == [1, 1]
    assert client.app.state.queue.forward_passes == 2


def test_full_queue_is_503_with_retry_after(make_client):
    client = make_client(max_queue=2, batch_window=3.0)
    for _ in range(2):
        assert client.post("/v1/generate", json={"prompt": "a red circle"}).status_code == 202
    response = client.post("/v1/generate", json={"prompt": "a red circle"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "queue is full" in response.json()["error"]


def _png(client, body: dict) -> bytes:
    job = wait_for(client, client.post("/v1/generate", json=body).json()["id"])
    assert job["status"] == "done", job
    return client.get(job["images"][0]["url"]).content


def test_same_seed_and_settings_give_the_same_image(make_client):
    client = make_client(batch_window=0.0)
    body = {"prompt": "a yellow triangle", "seed": 1234, "sampler": "ddpm", "steps": 5, "cond_scale": 3.0}
    first, again = _png(client, body), _png(client, body)
    assert first == again
    assert _png(client, {**body, "seed": 1235}) != first


def test_a_seeded_image_does_not_depend_on_its_batch(make_client):
    client = make_client(max_batch=8, batch_window=1.0)
    body = {"prompt": "a yellow triangle", "seed": 99, "sampler": "ddpm", "steps": 4}
    alone = _png(client, body)
    other = client.post("/v1/generate", json={**body, "prompt": "a blue circle", "n": 3, "seed": 5}).json()
    batched = _png(client, body)
    assert wait_for(client, other["id"])["batch_size"] == 4
    assert alone == batched
    # and image i of an n-image request is the single image of seed + i
    multi = wait_for(client, client.post("/v1/generate", json={**body, "n": 2, "seed": 98}).json()["id"])
    assert client.get(multi["images"][1]["url"]).content == alone
