"""Where pretrained files come from: a local path, or a Hugging Face Hub id, and when a download may happen.

:func:`resolve_pretrained` is the one place a name the user typed becomes a local folder or file:

* a local path that exists always wins;
* ``org/repo``, ``org/repo/sub/folder/or/file`` and ``org/repo@revision[/...]`` (optionally written
  ``hub:org/repo...``) are fetched through ``huggingface_hub`` (the optional extra ``hub``) with its usual cache
  and offline behaviour: ``HF_HUB_OFFLINE=1`` uses the cache only, ``HF_HUB_CACHE`` / ``HF_HOME`` move it;
* anything else is returned as a path, so the caller's own error says what it expected there.

Loading a checkpoint never downloads anything because of what the checkpoint's files say: inside
:func:`loading_checkpoint` (which every ``from_pretrained`` enters), models named in a ``config.json`` (CLIP
adapters) are built from their architecture alone, because the checkpoint's weights replace theirs, and they may
download (an architecture's ``config.json``) only with an explicit opt-in: ``allow_download=True``, or
``with allow_downloads():`` around the call (what ``dalle2 ... --allow-download`` does).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from pathlib import Path
from typing import Iterator, Optional, Union

HUB_PREFIX = "hub:"
HUB_ID_FORMS = "org/repo, org/repo/<folder or file in the repo>, org/repo@<revision>[/...] (optionally hub:org/repo...)"
_PART = r"[A-Za-z0-9][\w.-]*"
_HUB_ID = re.compile(rf"(?P<org>{_PART})/(?P<repo>{_PART})(?:@(?P<revision>[^/@\s]+))?(?:/(?P<path>[^@\s]+))?")

_LOADING: contextvars.ContextVar[Optional[bool]] = contextvars.ContextVar("dalle2_loading_checkpoint", default=None)
_OPT_IN: contextvars.ContextVar[bool] = contextvars.ContextVar("dalle2_allow_download", default=False)


def parse_hub_id(name: str) -> Optional[tuple[str, Optional[str], Optional[str]]]:
    """``(repo_id, revision, path in the repo)`` if ``name`` has the form of a Hub id, else None."""
    match = _HUB_ID.fullmatch(name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name)
    if match is None or ".." in match["repo"] or (match["path"] and ".." in match["path"].split("/")):
        return None
    return f"{match['org']}/{match['repo']}", match["revision"], (match["path"] or "").strip("/") or None


def _looks_local(name: str) -> bool:
    """Written as a path (absolute, ./, ~, backslashes) or under a folder that exists here."""
    if name.startswith(("/", ".", "~")) or "\\" in name or os.path.isabs(name):
        return True
    return Path(name.split("/", 1)[0]).is_dir()


def resolve_pretrained(path_or_id: Union[str, os.PathLike], revision: Optional[str] = None, *,
                       cache_dir: Optional[Union[str, os.PathLike]] = None, local_files_only: bool = False) -> Path:
    """A local folder or file for ``path_or_id``: an existing local path as given, else a Hub id fetched into
    (or found in) huggingface_hub's cache, else the path as given (the caller reports it missing).

    ``revision`` (a branch, tag or commit; Hub ids only) is the same as writing ``org/repo@revision``; giving both
    differently is an error.  Only what the id names is fetched (``org/repo/decoder`` fetches that folder,
    ``org/repo/x.pth`` one file); ``local_files_only`` looks in the cache only.  Raises ValueError for a ``hub:``
    name that is not an id, ImportError without huggingface_hub, and FileNotFoundError when neither the Hub nor
    the local cache has it (offline: ``HF_HUB_OFFLINE=1``)."""
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise TypeError(f"expected a path or a Hugging Face Hub id ({HUB_ID_FORMS}), got {type(path_or_id).__name__}")
    name = path_or_id
    forced = isinstance(name, str) and name.startswith(HUB_PREFIX)
    local = not isinstance(name, str) or os.path.exists(name) or (not forced and _looks_local(name))
    parsed = None if local else parse_hub_id(name)
    if parsed is None:
        if forced and not local:
            raise ValueError(f"{name!r} is not a Hugging Face Hub id; write {HUB_ID_FORMS}, e.g. "
                             "hub:laion/DALLE2-PyTorch/decoder/1.5B_laion2B/latest.pth")
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hugging Face Hub ids ({HUB_ID_FORMS}); "
                             f"{str(name)!r} is a local path")
        return Path(name)
    repo_id, written_revision, inner = parsed
    if revision is not None and written_revision is not None and revision != written_revision:
        raise ValueError(f"{name!r} names revision {written_revision!r} but revision={revision!r} was also given")
    revision = revision or written_revision
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError(f"{name!r} is not a local path, and loading it from the Hugging Face Hub needs "
                          "huggingface_hub: pip install 'unclip-pytorch[hub]'") from error
    try:
        snapshot = huggingface_hub.snapshot_download(
            repo_id=repo_id, revision=revision, allow_patterns=None if inner is None else [inner, f"{inner}/*"],
            cache_dir=None if cache_dir is None else str(cache_dir), local_files_only=local_files_only)
    except Exception as error:  # offline cache misses, 404s and network errors alike: say what was asked
        where = "" if forced else f"{name!r} is not a local path (it does not exist), and "
        raise FileNotFoundError(f"{where}could not get {name} from the Hugging Face Hub or its local cache "
                                f"({type(error).__name__}: {str(error).splitlines()[0][:300]})") from error
    local = Path(snapshot) / inner if inner else Path(snapshot)
    if not local.exists():
        raise FileNotFoundError(f"could not get {name}: the Hub repo {repo_id} (revision {revision or 'main'}) "
                                f"has no {inner!r} (or it is not in the local cache)")
    return local


# ----------------------------------------------------------------------------- download permission
@contextlib.contextmanager
def allow_downloads(allowed: bool = True) -> Iterator[None]:
    """Opt in (or out) of downloads by checkpoint loaders called inside, that were not given ``allow_download``."""
    token = _OPT_IN.set(bool(allowed))
    try:
        yield
    finally:
        _OPT_IN.reset(token)


@contextlib.contextmanager
def loading_checkpoint(allow_download: Optional[bool] = None) -> Iterator[None]:
    """Mark the code inside as rebuilding a model from a checkpoint's config: models named there are built
    without their pretrained weights, and download only if ``allow_download`` (None: the :func:`allow_downloads`
    setting, default False; nested inside another, that one's)."""
    inherited = _LOADING.get()
    if allow_download is None:
        allow_download = _OPT_IN.get() if inherited is None else inherited
    token = _LOADING.set(bool(allow_download))
    try:
        yield
    finally:
        _LOADING.reset(token)


def building_from_checkpoint() -> bool:
    """True inside :func:`loading_checkpoint`: the weights about to be loaded replace any pretrained ones."""
    return _LOADING.get() is not None


def download_allowed() -> bool:
    """False inside :func:`loading_checkpoint` without an opt-in; True in ordinary code (the caller named it)."""
    state = _LOADING.get()
    return True if state is None else state


def download_refused(what: str) -> str:
    """The message for a download a checkpoint's files asked for without an opt-in."""
    return (f"{what} is not in the local cache, and loading a checkpoint downloads nothing that its files name "
            "unless asked: pass allow_download=True to from_pretrained (the CLI: --allow-download), or fetch it "
            "first (e.g. huggingface-cli download)")
