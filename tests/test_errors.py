"""The user-error kinds are raised where the library reads and writes files: each names the file and says what to do,
and each is still the built-in exception callers caught before."""

import errno
import pickle

import pytest
import torch
from torch import nn

from dalle2_pytorch.atomic import atomic_write_bytes
from dalle2_pytorch.errors import (BadFileError, DiskFullError, ModelMismatchError, UnsafeFileError, UserError,
                                   install_hint, loading_state_dict, reading, writing)
from dalle2_pytorch.serialization import load_legacy_state_dict, load_tensors, save_tensors


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_objects_is_refused_naming_the_file_without_inviting_weights_only_false(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(UnsafeFileError) as caught:
        load_legacy_state_dict(path)
    assert str(path) in str(caught.value) and "weights_only" not in str(caught.value)
    assert isinstance(caught.value, ValueError) and "this must never run" not in capsys.readouterr().out
    from dalle2_pytorch.compat.checkpoint import read_reference_checkpoint

    with pytest.raises(UnsafeFileError, match="evil.pt"):
        read_reference_checkpoint(path)


def test_truncated_files_are_bad_file_errors_naming_them(tmp_path):
    save_tensors({"w": torch.ones(64, 64)}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[:100])
    with pytest.raises(BadFileError, match="w.safetensors.*truncated or corrupt"):
        load_tensors(tmp_path / "w.safetensors")
    torch.save({"w": torch.ones(64, 64)}, tmp_path / "w.pt")
    (tmp_path / "w.pt").write_bytes((tmp_path / "w.pt").read_bytes()[:200])
    with pytest.raises(BadFileError, match="w.pt"):
        load_legacy_state_dict(tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError):  # a missing file keeps its own error
        load_tensors(tmp_path / "absent.safetensors")


def test_a_full_disk_is_a_disk_full_error_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"old")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as caught:
        with writing(target, "checkpoint"):
            full()
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert str(target) in str(caught.value) and "free some space" in str(caught.value)
    import dalle2_pytorch.atomic as atomic

    original = atomic._fsync_file
    try:
        atomic._fsync_file = full
        with pytest.raises(DiskFullError, match="state.json"):
            atomic_write_bytes(target, b"new")
    finally:
        atomic._fsync_file = original
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with pytest.raises(ZeroDivisionError):  # not a write failure: passes through unchanged
        with writing(target):
            1 / 0


def test_a_state_dict_that_does_not_fit_is_a_model_mismatch_error():
    with pytest.raises(ModelMismatchError) as caught:
        with loading_state_dict("run/latest/trainer.safetensors", "Linear"):
            nn.Linear(2, 3).load_state_dict(nn.Linear(2, 4).state_dict())
    message = str(caught.value)
    assert message.startswith("run/latest/trainer.safetensors: the saved weights do not fit this Linear")
    assert "size mismatch" in message and "(and 1 more)" in message and "\n" not in message
    with pytest.raises(RuntimeError, match="other"):
        with loading_state_dict("x", "Linear"):
            raise RuntimeError("other")


def test_reading_converts_only_file_failures():
    with pytest.raises(KeyError):
        with reading("f"):
            raise KeyError("a bug, not the file")
    with pytest.raises(BadFileError, match="f: cannot read this file"):
        with reading("f"):
            raise pickle.UnpicklingError("invalid load key")
    assert issubclass(UnsafeFileError, UserError) and install_hint("serve") == "pip install 'unclip-pytorch[serve]'"
