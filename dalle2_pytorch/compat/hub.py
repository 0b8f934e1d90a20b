"""Reference checkpoints on the Hugging Face Hub: ``hub:<org>/<repo>[@<revision>]/<path in the repo>``.

``hub:laion/DALLE2-PyTorch/decoder/1.5B_laion2B/latest.pth`` names LAION's published decoder.  Such a
name is fetched through ``huggingface_hub`` (the optional extra ``hub``) with its usual cache and offline
behaviour (``HF_HUB_OFFLINE=1`` uses the cache only; ``HF_HUB_CACHE`` / ``HF_HOME`` move it).  Only
names the caller wrote are fetched: nothing read from a file is ever turned into a download here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from dalle2_pytorch.errors import MissingExtraError, install_hint

HUB_PREFIX = "hub:"
_HUB_NAME = re.compile(r"hub:(?P<org>[\w.-]+)/(?P<repo>[\w.-]+)(?:@(?P<revision>[^/]+))?/(?P<file>.+)")


def is_hub_name(path: object) -> bool:
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def resolve_reference_path(path: str | Path, *, cache_dir: Optional[str | Path] = None) -> Path:
    """A local path unchanged, or the cached local copy of a ``hub:`` name (downloaded if needed and allowed)."""
    if not is_hub_name(path):
        return Path(path)
    match = _HUB_NAME.fullmatch(str(path))
    if match is None:
        raise ValueError(f"{path!r} is not a Hub name; write hub:<org>/<repo>[@<revision>]/<file in the repo>, "
                         "e.g. hub:laion/DALLE2-PyTorch/decoder/1.5B_laion2B/latest.pth")
    try:
        import huggingface_hub
    except ImportError as error:
        raise MissingExtraError(f"loading {path} needs huggingface_hub: {install_hint('hub')}") from error
    try:
        local = huggingface_hub.hf_hub_download(
            repo_id=f"{match['org']}/{match['repo']}", filename=match["file"], revision=match["revision"],
            cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as error:  # offline cache misses, 404s and network errors alike: say what was asked
        raise FileNotFoundError(f"could not get {path} from the Hugging Face Hub or its local cache "
                                f"({type(error).__name__}: {str(error).splitlines()[0][:300]})") from error
    return Path(local)
