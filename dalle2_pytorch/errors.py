"""Errors a user can cause and fix, raised where the library reads or writes files and data.

The `dalle2` command prints a :class:`UserError` as one line (``error: ...``) and exits with status 2; anything
else that escapes is a bug in this package and is shown with its traceback.  Each subclass also derives from the
built-in exception a caller would have caught before (``ValueError``, ``OSError``, ``ImportError``), so existing
``except ValueError`` code keeps working.

The converters (:func:`reading`, :func:`writing`, :func:`loading_state_dict`) wrap the few places where a third-party
library raises on a user's file -- safetensors, torch's unpickler, the OS -- and re-raise with the file's name and
what to do.  This module is the package's lowest layer: it imports nothing from ``dalle2_pytorch``.
"""

from __future__ import annotations

import errno
import os
import pickle
from contextlib import contextmanager
from typing import Iterator

__all__ = ["DISTRIBUTION", "UserError", "BadFileError", "UnsafeFileError", "DiskFullError", "ModelMismatchError",
           "BadDataError", "MissingExtraError", "install_hint", "loading_state_dict", "reading", "writing"]

DISTRIBUTION = "unclip-pytorch"
"""The name this package is installed under (``pip install unclip-pytorch``); the import package is dalle2_pytorch."""


class UserError(Exception):
    """Something the user can fix (a file, a setting, the data, the disk); the message says what and how."""


class BadFileError(UserError, ValueError):
    """A file that exists but cannot be read: truncated, corrupt, or not the kind of file expected."""


class UnsafeFileError(BadFileError):
    """A pickle file holding objects other than tensors: refused, never unpickled."""


class DiskFullError(UserError, OSError):
    """A save failed for lack of space (or quota); the previous file is untouched (saves are atomic)."""


class ModelMismatchError(UserError, ValueError):
    """Saved weights do not fit the model built from the config (the model was changed after saving)."""


class BadDataError(UserError, ValueError):
    """Training or sampling data that cannot be used (no decodable image, malformed embeddings)."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


def install_hint(extra: str) -> str:
    """``pip install 'unclip-pytorch[extra]'``: the command that installs an optional extra of this package."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


@contextmanager
def reading(path: str | os.PathLike, what: str = "file", fix: str = "") -> Iterator[None]:
    """Turn a third-party reader's failure on ``path`` into a :class:`BadFileError` naming the file.

    Converted: safetensors errors (truncated or corrupt header/data), unpickling errors, EOF, and OS errors other
    than a missing file (a missing file stays ``FileNotFoundError``, which callers already name).  ``fix`` is what
    to do about it (default: re-create or re-download the file).
    """
    advice = fix or "re-create or re-download it"
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise UnsafeFileError(
                f"{path}: refused to load this {what}: it holds pickled Python objects besides tensors, which are "
                "not unpickled for safety (they could run code); convert it where you trust it "
                "(torch.save(model.state_dict()) or save_pretrained) and load that") from error
        raise BadFileError(f"{path}: cannot read this {what} ({_first_line(error)}); {advice}") from error
    except (EOFError, OSError) as error:
        raise BadFileError(f"{path}: cannot read this {what} ({_first_line(error)}); {advice}") from error
    except Exception as error:
        if type(error).__name__ != "SafetensorError" and "PytorchStreamReader" not in str(error):
            raise
        raise BadFileError(f"{path}: this {what} is truncated or corrupt ({_first_line(error)}); {advice}") \
            from error


@contextmanager
def writing(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Turn a full disk (or quota) while writing ``path`` into a :class:`DiskFullError` naming the file.

    safetensors reports a full disk as ``SafetensorError: Error while serializing: I/O error: No space left on
    device``; the OS as ``OSError(ENOSPC)``.  Other write failures (permissions, a read-only disk) become a
    :class:`UserError` naming the file as well.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        if _is_disk_full(error):
            full = DiskFullError(f"{path}: no space left on the device while saving this {what}; free some space "
                                 "(or save to another disk) and run again; the previous file is untouched")
            full.errno = errno.ENOSPC
            raise full from error
        if isinstance(error, PermissionError) or (isinstance(error, OSError) and error.errno == errno.EROFS):
            raise BadFileError(f"{path}: cannot write this {what} ({_first_line(error)}); choose a folder you can "
                               "write to") from error
        raise


@contextmanager
def loading_state_dict(source: str | os.PathLike, model_name: str) -> Iterator[None]:
    """Turn ``load_state_dict``'s missing/unexpected keys or size mismatches into a :class:`ModelMismatchError`."""
    try:
        yield
    except RuntimeError as error:
        text = str(error)
        if "Error(s) in loading state_dict" not in text:
            raise
        details = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        first = details[0] if details else text.splitlines()[0]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        raise ModelMismatchError(
            f"{source}: the saved weights do not fit this {model_name}: {first[:300]}{more}; the model's settings "
            "differ from the ones it was saved with -- use the saved settings, or start a new run (another "
            "checkpoint folder)") from error
