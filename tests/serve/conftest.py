"""Shared fixtures: a tiny real DALLE2 saved as a checkpoint once, its engine, and app factories."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="httpx (for fastapi's TestClient) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from dalle2_pytorch.serve.app import create_app  # noqa: E402
from dalle2_pytorch.serve.engine import DALLE2Engine  # noqa: E402
from tests.serve.tiny_model import save_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A DALLE2.save_pretrained folder whose pipeline.json holds few-step sampling defaults (FAST_SAMPLING)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "dalle2")


@pytest.fixture(scope="session")
def engine(checkpoint) -> DALLE2Engine:
    return DALLE2Engine.from_checkpoint(checkpoint)


@pytest.fixture
def make_client(engine):
    """``make_client(**create_app options)`` -> a started TestClient; closed at the end of the test."""
    clients = []

    def make(**options) -> TestClient:
        client = TestClient(create_app(engine, **options))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def wait_for(client: TestClient, job_id: str, timeout: float = 30.0) -> dict:
    """Poll ``GET /v1/jobs/{id}`` until the job is done or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")
