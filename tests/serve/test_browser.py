"""The web page in a real headless chromium: type a prompt, generate, watch progress, see the image.

Needs Debian's chromium (``apt-get install -y chromium``) and the ``playwright`` Python package; no
browser download (``playwright install`` is never needed: we point it at /usr/bin/chromium).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DALLE2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT_FOR_README = Path(__file__).resolve().parents[2] / "docs" / "serve_screenshot.png"

if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM}: install it with `apt-get install -y chromium`", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: "
                                      "pip install playwright (no `playwright install` needed)")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server_url(engine):
    """The app on a free loopback port; DALLE2_SERVE_CHECKPOINT swaps in a trained model (for the README's picture)."""
    from dalle2_pytorch.serve.app import create_app
    from dalle2_pytorch.serve.engine import DALLE2Engine

    if os.environ.get("DALLE2_SERVE_CHECKPOINT"):
        engine = DALLE2Engine.from_checkpoint(os.environ["DALLE2_SERVE_CHECKPOINT"])

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@contextmanager
def open_page(server_url: str, height: int = 640):
    """The app's page in a headless chromium (closed afterwards)."""
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": height})
            page.goto(server_url + "/")
            yield page
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.optional
def test_page_generates_an_image_in_chromium(server_url, tmp_path):
    with open_page(server_url) as page:
        page.wait_for_selector("#sampler option[value='ddim']", state="attached")  # /v1/health answered
        page.fill("#prompt", "a red circle")
        page.fill("#n", "2")
        page.fill("#seed", "42")
        page.select_option("#sampler", "ddpm")
        page.fill("#steps", "20")
        page.click("#generate")
        page.wait_for_selector("#status[data-state='done']", timeout=30_000)
        assert page.eval_on_selector("#progress", "p => p.value") == 1
        page.wait_for_function("() => [...document.querySelectorAll('#gallery img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length == 2", timeout=10_000)
        captions = page.inner_text("#gallery")
        assert "a red circle" in captions and "seed 42" in captions and "seed 43" in captions
        assert page.get_attribute("#gallery figure a", "download").endswith(".png")

        # a clear message for bad input
        page.fill("#n", "99")
        page.click("#generate")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error").startswith("n:")

        page.fill("#n", "2")
        page.click("#generate")  # clears the error message on resubmission
        page.wait_for_selector("#status[data-state='done']", timeout=30_000)
        assert page.is_hidden("#error")
        screenshot = tmp_path / "serve.png"
        page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 1000
    if os.environ.get("DALLE2_UPDATE_SCREENSHOT"):  # refresh docs/serve_screenshot.png
        shutil.copyfile(screenshot, SCREENSHOT_FOR_README)


@pytest.mark.slow
@pytest.mark.optional
def test_page_inpaints_an_uploaded_image_with_a_painted_mask(server_url, tmp_path):
    """Upload a picture, paint the mask on the canvas, inpaint: the kept pixels come back exactly."""
    import numpy as np
    import torch
    from PIL import Image

    from dalle2_pytorch.images import save_image

    source = save_image(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)), tmp_path / "source.png")
    with open_page(server_url, height=1400) as page:
        page.set_input_files("#m-file", str(source))
        page.wait_for_selector("#m-canvas[data-loaded='yes']")
        page.select_option("#m-mode", "inpaint")
        assert page.is_visible("#m-brush") and page.is_hidden("#m-from")
        box = page.locator("#m-canvas").bounding_box()
        page.mouse.move(box["x"] + 100, box["y"] + 128)
        page.mouse.down()
        page.mouse.move(box["x"] + 160, box["y"] + 128, steps=8)
        page.mouse.up()
        assert page.get_attribute("#m-canvas", "data-painted") == "yes"
        page.fill("#m-num", "1")
        page.fill("#m-steps", "3")
        page.fill("#m-seed", "7")
        page.select_option("#m-sampler", "dpmpp_2m")
        page.click("#m-run")
        page.wait_for_selector("#m-status[data-state='done']", timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('#m-gallery img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length == 1", timeout=10_000)
        url = page.get_attribute("#m-gallery img", "src")
        png = page.request.get(server_url + url).body()
    (tmp_path / "out.png").write_bytes(png)
    out, original = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")), np.asarray(Image.open(source))
    changed = (out != original).any(axis=-1)
    assert changed.any() and not changed[:, :4].any() and not changed[:3].any()  # painted middle only
