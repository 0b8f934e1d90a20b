"""``serve_main``: load a checkpoint once and run the web app with uvicorn (behind ``dalle2 serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

DEFAULT_CHECKPOINT = "outputs/checkpoints"  # where `dalle2 demo` saves its pipeline
from dalle2_pytorch.errors import MissingExtraError, install_hint

INSTALL_HINT = f"the web app needs the 'serve' extra: {install_hint('serve')} (fastapi and uvicorn)"


def require_serve_dependencies() -> None:
    """Raise an ImportError that says how to install the extra when fastapi or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as missing:
        raise MissingExtraError(f"{INSTALL_HINT} ({missing})") from missing


def serve_main(checkpoint: str | Path = DEFAULT_CHECKPOINT, host: str = "127.0.0.1", port: int = 7860, *,
               max_batch: int = 8, batch_window: float = 0.05, max_queue: int = 32,
               threads: Optional[int] = None, device: Optional[str] = None, log_level: str = "info",
               extra_allowed_hosts: Sequence[str] = ()) -> None:
    """Serve the DALLE2 saved in ``checkpoint`` at ``http://host:port/`` until interrupted.

    ``checkpoint``: a pipeline folder as :meth:`DALLE2.from_pretrained` reads it (its saved sampling
    defaults are the settings a request leaves out).
    ``max_batch``: most images per forward pass (1 turns batching off); ``batch_window``: seconds a
    request waits for companions; ``max_queue``: waiting jobs before 503; ``threads``: torch CPU
    threads (unchanged when None); ``device``: where the model runs (``"cuda"``; CPU when None);
    ``log_level``: uvicorn's (``"info"``, ``"warning"``, ...); ``extra_allowed_hosts``: ``Host`` names answered
    besides the bound address and localhost (``"*"``: any), as ``DALLE2_ALLOWED_HOSTS`` adds them.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port={port!r}: expected an int in [0, 65535]")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r}: expected a positive int or None")
    require_serve_dependencies()
    import torch
    import uvicorn

    from dalle2_pytorch.serve.app import create_app
    from dalle2_pytorch.serve.engine import DALLE2Engine

    if threads is not None:
        torch.set_num_threads(threads)
    from dalle2_pytorch.serve.guards import default_allowed_hosts

    allowed_hosts = default_allowed_hosts(host, extra_allowed_hosts)  # checked before the model loads
    engine = DALLE2Engine.from_checkpoint(checkpoint, device=device)
    app = create_app(engine, max_batch=max_batch, batch_window=batch_window, max_queue=max_queue,
                     allowed_hosts=allowed_hosts)
    print(f"dalle2 serve: {checkpoint} loaded; open http://{host}:{port}/ (API schema at /openapi.json)")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
