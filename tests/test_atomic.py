"""dalle2_pytorch.atomic: files and folders are replaced whole or not at all, and an interrupted swap is undone."""

from __future__ import annotations

import pytest

from dalle2_pytorch.atomic import (atomic_folder, atomic_write_bytes, atomic_write_with, begin_folder, commit_folder,
                                   recover_interrupted_swap)


def test_atomic_write_bytes_replaces_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]
    with pytest.raises(TypeError, match="encode text first"):
        atomic_write_bytes(path, "text")


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_folder_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as staging:
        (staging / "a.txt").write_text("1")
        (staging / "nested").mkdir()
        (staging / "nested" / "b.txt").write_text("2")
    with atomic_folder(target) as staging:
        assert not target.joinpath("missing").exists() and staging.name == ".ckpt.partial"
        (staging / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failing_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_folder(target) as staging:
            (staging / "a.txt").write_text("new")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_recover_interrupted_swap(tmp_path):
    target, old = tmp_path / "ckpt", tmp_path / ".ckpt.old"
    old.mkdir()
    (old / "a.txt").write_text("previous")
    recover_interrupted_swap(target)  # killed between the renames: only the old folder exists
    assert (target / "a.txt").read_text() == "previous" and not old.exists()
    old.mkdir()
    recover_interrupted_swap(target)  # killed after the swap, before the clean-up
    assert not old.exists() and (target / "a.txt").read_text() == "previous"
    recover_interrupted_swap(tmp_path / "nothing")  # nothing to do
    old.mkdir()
    (old / "a.txt").write_text("previous")
    target.joinpath("a.txt").unlink()
    target.rmdir()
    staging = begin_folder(target)  # a new write first restores the interrupted one's folder
    assert (target / "a.txt").read_text() == "previous" and not any(staging.iterdir())
    (staging / "b.txt").write_text("new")
    commit_folder(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_commit_folder_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="not the staging folder"):
        commit_folder(tmp_path / "elsewhere", tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="call begin_folder"):
        commit_folder(tmp_path / ".ckpt.partial", tmp_path / "ckpt")
