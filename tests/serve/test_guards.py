"""The server's guards: prompts are checked as text, one bad job never fails the others in its batch, bodies over
the limit are refused unread, only allowed Host names are answered, and every error has one body shape."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from dalle2_pytorch.serve.app import create_app
from dalle2_pytorch.serve.guards import ALLOWED_HOSTS_ENV, default_allowed_hosts
from tests.serve.conftest import wait_for


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine)) as started:
        yield started


def assert_error_body(response, status: int, field):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "field"} and body["error"] and body["field"] == field, body
    return body


@pytest.mark.parametrize("raw,reason", [
    (b'{"prompt": "a \\udc80 circle"}', "lone surrogate"),        # valid JSON, not valid Unicode
    ('{"prompt": "%s"}' % ("\U0001f600" * 299), "bytes"),         # 299 characters, 1196 bytes
    (b'{"prompt": "a red\\u0000circle"}', "control characters"),
])
def test_prompts_must_be_encodable_text_of_limited_bytes(client, raw, reason):
    response = client.post("/v1/generate", content=raw.encode() if isinstance(raw, str) else raw,
                           headers={"content-type": "application/json"})
    body = assert_error_body(response, 422, "prompt")
    assert reason in body["error"]


class PoisonedEngine:
    """The tiny engine, failing any forward pass that holds the prompt 'poison'."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, prompts, seeds, settings, progress=None):
        if "poison" in prompts:
            raise RuntimeError("this prompt breaks the model")
        return self.engine.generate(prompts, seeds, settings, progress)


def test_one_bad_job_never_fails_the_others_in_its_batch(engine):
    with TestClient(create_app(PoisonedEngine(engine), batch_window=2.0, max_batch=8)) as client:
        ids = [client.post("/v1/generate", json={"prompt": prompt, "seed": 3, "steps": 2}).json()["id"]
               for prompt in ("a red circle", "poison", "a blue square")]
        jobs = [wait_for(client, job_id) for job_id in ids]
        # one forward pass for the three together, then one each after the failure
        assert client.get("/v1/health").json()["queue"]["forward_passes"] == 4
    assert [job["status"] for job in jobs] == ["done", "failed", "done"]
    assert "breaks the model" in jobs[1]["error"]


def test_bodies_over_the_limit_are_refused_unread(engine):
    with TestClient(create_app(engine, max_body_bytes=1000)) as client:
        big = b'{"prompt": "' + b"x" * 10_000_000 + b'"}'
        body = assert_error_body(client.post("/v1/generate", content=big,
                                             headers={"content-type": "application/json"}), 413, "body")
        assert "at most 1000 bytes" in body["error"]

        def chunks():  # no Content-Length: counted while it streams
            yield b'{"prompt": "'
            for _ in range(100):
                yield b"x" * 100
            yield b'"}'

        assert_error_body(client.post("/v1/generate", content=chunks(),
                                      headers={"content-type": "application/json"}), 413, "body")
        assert client.post("/v1/generate", json={"prompt": "ok", "steps": 2}).status_code == 202


def test_image_routes_take_upload_sized_bodies_and_text_routes_do_not(engine):
    from dalle2_pytorch.serve.manipulate import MAX_UPLOAD_BYTES, UPLOAD_BODY_BYTES

    body = b'{"image": "' + b"A" * (MAX_UPLOAD_BYTES // 2) + b'"}'  # 1 MiB of base64: over the text limit
    with TestClient(create_app(engine)) as client:
        assert_error_body(client.post("/v1/generate", content=body, headers={"content-type": "application/json"}),
                          413, "body")
        answer = client.post("/v1/variations", content=body, headers={"content-type": "application/json"})
        assert answer.status_code != 413 or answer.json()["field"] != "body"  # read and judged by the route itself
        huge = b'{"image": "' + b"A" * (UPLOAD_BODY_BYTES + 1) + b'"}'
        assert_error_body(client.post("/v1/variations", content=huge, headers={"content-type": "application/json"}),
                          413, "body")


def test_only_allowed_host_names_are_answered(engine, monkeypatch):
    app = create_app(engine, allowed_hosts=["localhost", "127.0.0.1"])
    with TestClient(app, base_url="http://evil.example") as client:
        body = assert_error_body(client.get("/v1/health"), 400, "headers.host")
        assert "evil.example" in body["error"]
    with TestClient(app, base_url="http://localhost:7860") as client:
        assert client.get("/v1/health").status_code == 200
    assert {"127.0.0.1", "localhost", "::1"} <= set(default_allowed_hosts("127.0.0.1"))
    assert "evil.example" not in default_allowed_hosts("127.0.0.1")
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "dalle.example.org, other.example")
    assert {"dalle.example.org", "other.example"} <= set(default_allowed_hosts("0.0.0.0"))


def test_every_error_has_the_same_body(client):
    body = assert_error_body(client.get("/no/such/route"), 404, None)
    assert "no route GET /no/such/route" in body["error"]
    assert_error_body(client.post("/v1/health"), 405, None)
    body = assert_error_body(client.post("/v1/generate", content=b'{"prompt": "a", oops}',
                                         headers={"content-type": "application/json"}), 422, "body")
    assert "not valid JSON" in body["error"] and body["detail"][0]["field"] == "body"
    assert_error_body(client.get("/v1/jobs/nope"), 404, "job_id")
    assert_error_body(client.get("/v1/images/nope.png"), 404, "name")
    body = assert_error_body(client.post("/v1/generate", json={"prompt": ["ok", 3]}), 422, "prompt")
    assert "prompt.1" in [d["field"] for d in body["detail"]]  # a JSON path, without pydantic's union tags


def test_a_full_queue_still_answers_with_the_error_body(engine):
    with TestClient(create_app(engine, max_queue=1, batch_window=5.0, max_batch=1)) as client:
        answers = [client.post("/v1/generate", json={"prompt": "ok", "steps": 2}) for _ in range(4)]
        full = [a for a in answers if a.status_code == 503]
        assert full and "Retry-After" in full[0].headers
        assert_error_body(full[0], 503, None)
        time.sleep(0)


def test_serve_allowed_host_flag_reaches_the_served_app(tmp_path, monkeypatch):
    """`dalle2 serve --allowed-host NAME` answers NAME besides localhost; a malformed name is refused before the
    model loads."""
    import uvicorn

    from dalle2_pytorch.cli.main import main
    from tests.serve.tiny_model import save_tiny_checkpoint

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    checkpoint = save_tiny_checkpoint(tmp_path / "pipeline")
    assert main(["serve", "--checkpoint", str(checkpoint), "--port", "0",
                 "--allowed-host", "dalle.example.org", "--allowed-host", "Proxy.Example"]) == 0
    for name, status in [("dalle.example.org", 200), ("proxy.example", 200), ("localhost", 200),
                         ("evil.example", 400)]:
        with TestClient(served["app"], base_url=f"http://{name}") as client:
            assert client.get("/v1/health").status_code == status, name

    served.clear()
    assert main(["serve", "--checkpoint", str(tmp_path / "missing"), "--allowed-host", "http://x.org/"]) == 2
    assert not served
    with pytest.raises(ValueError, match="bare host names"):
        default_allowed_hosts("127.0.0.1", ["a.org,b.org"])
    assert "*" in default_allowed_hosts("127.0.0.1", ["*"])
