"""Every kind of bad input is a 422 whose error names the field."""

from __future__ import annotations

import pytest

BAD_INPUTS = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 301}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["ok"] * 9}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "ok", "n": 0}, "n"),
    ({"prompt": "ok", "n": 9}, "n"),
    ({"prompt": "ok", "n": "two"}, "n"),
    ({"prompt": "ok", "steps": 0}, "steps"),
    ({"prompt": "ok", "steps": 1001}, "steps"),
    ({"prompt": "ok", "steps": 51}, "steps"),  # more than the tiny model's 50 timesteps
    ({"prompt": "ok", "sampler": "plms"}, "sampler"),
    ({"prompt": "ok", "cond_scale": -1}, "cond_scale"),
    ({"prompt": "ok", "prior_cond_scale": 31}, "prior_cond_scale"),
    ({"prompt": "ok", "seed": -1}, "seed"),
    ({"prompt": "ok", "seed": 2 ** 31}, "seed"),
    ({"prompt": "ok", "colour": "red"}, "colour"),
]


@pytest.fixture(scope="module")
def client(engine):
    from fastapi.testclient import TestClient

    from dalle2_pytorch.serve.app import create_app

    with TestClient(create_app(engine)) as started:
        yield started


@pytest.mark.parametrize("body,field", BAD_INPUTS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_INPUTS)])
def test_bad_input_is_422_naming_the_field(client, body, field):
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"].startswith(field) or f"; {field}" in payload["error"], payload
    assert field in [d["field"].split(".")[0] for d in payload["detail"]]
    assert client.get("/v1/health").json()["queue"]["forward_passes"] == 0


def test_malformed_json_is_422(client):
    response = client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]
