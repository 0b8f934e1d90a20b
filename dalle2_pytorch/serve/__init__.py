"""`dalle2 serve`: a local web page and JSON API for text-to-image, batching concurrent requests.

Needs the optional ``serve`` extra (fastapi, uvicorn) only to run the app; the engine does not.
"""

from dalle2_pytorch.serve.engine import DALLE2Engine, ImageEngine, Settings
from dalle2_pytorch.serve.server import DEFAULT_CHECKPOINT, serve_main

__all__ = ["DALLE2Engine", "DEFAULT_CHECKPOINT", "ImageEngine", "Settings", "serve_main"]
